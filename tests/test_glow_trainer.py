"""GLOWTrainer on a real tiny Qwen2 model, on CPU: equivalence with TRL, the weights it applies, GA and resume.

python -m pytest tests/test_glow_trainer.py
"""

import math
from collections import defaultdict

import pytest
import torch
from transformers import AutoTokenizer, TrainerCallback
from trl import SFTConfig, SFTTrainer
from utils import cpu_training_args, read_jsonl

from glowrl import GLOWConfig, GLOWTrainer, glow_weights
from glowrl.data import TrajectoryArguments, build_trajectory_dataset
from glowrl.glow.samples import INDEX_COLUMN


@pytest.fixture(scope="module")
def dataset(trajectory_file):
    return build_trajectory_dataset(TrajectoryArguments(dataset_paths=[trajectory_file]))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def make_trainer(tiny_model_dir, tokenizer, dataset, output_dir, trainer_cls=GLOWTrainer, config_cls=GLOWConfig, **kw):
    args = config_cls(**cpu_training_args(output_dir, per_device_train_batch_size=8, **kw))
    return trainer_cls(model=tiny_model_dir, args=args, train_dataset=dataset, processing_class=tokenizer)


def losses(trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture(scope="module")
def sft_reference(tiny_model_dir, tokenizer, dataset, tmp_path_factory):
    """Plain TRL SFTTrainer, one epoch: the ground truth GLOW must reproduce when it applies no weights."""
    trainer = make_trainer(
        tiny_model_dir, tokenizer, dataset, tmp_path_factory.mktemp("sft"), SFTTrainer, SFTConfig, num_train_epochs=1
    )
    trainer.train()
    return losses(trainer), {n: p.detach().clone() for n, p in trainer.model.named_parameters()}


@pytest.mark.parametrize(
    "glow_kwargs",
    [
        {"glow": False},  # GLOW off is plain SFT
        {"glow": False, "glow_log_samples": True},  # and stays so while logging the baseline's per-sample losses
        {"glow": True, "glow_reduction": "token"},  # first epoch is unweighted, token reduction is TRL's
    ],
)
def test_matches_trl_sft_exactly_when_unweighted(
    tiny_model_dir, tokenizer, dataset, tmp_path, sft_reference, glow_kwargs
):
    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, num_train_epochs=1, **glow_kwargs)
    trainer.train()
    ref_losses, ref_params = sft_reference
    assert losses(trainer) == ref_losses
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, ref_params[name]), name


@pytest.fixture(scope="module")
def glow_run(tiny_model_dir, tokenizer, dataset, tmp_path_factory):
    """Three epochs of GLOW with the published defaults and the per-visit log on."""
    out = tmp_path_factory.mktemp("glow")
    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, out, num_train_epochs=3, glow_log_samples=True)
    trainer.train()
    return trainer, read_jsonl(out / "glow_samples.jsonl")


def test_history_and_weights_follow_the_definition(glow_run, dataset):
    trainer, visits = glow_run
    assert len(visits) == 3 * len(dataset)  # every sample visited once per epoch
    loss_at = {(v["epoch"], v["sample_id"]): v["loss"] for v in visits}
    correct = dict(zip(dataset["sample_id"], dataset["correct"], strict=True))
    for v in visits:
        assert v["correct"] == correct[v["sample_id"]]
        if v["epoch"] == 0:  # no history yet: unweighted
            assert v["prev_loss"] is None and v["gain"] is None and v["weight"] == 1.0
            continue
        # gain = loss at the previous visit (one epoch earlier) - loss now; weight = glow_weights(gain)
        assert v["prev_loss"] == pytest.approx(loss_at[(v["epoch"] - 1, v["sample_id"])], rel=1e-6)
        assert v["gain"] == pytest.approx(v["prev_loss"] - v["loss"], abs=1e-9)
        expected = glow_weights(torch.tensor(v["gain"], dtype=torch.float64), 1.0, 20.0, 0.0, 0.5, 5.0).item()
        assert v["weight"] == pytest.approx(expected, abs=1e-6)
    # The trainer's history holds each sample's latest loss.
    history = trainer._glow_history.tolist()
    for sample_id in dataset["sample_id"]:
        assert history[sample_id] == pytest.approx(loss_at[(2, sample_id)], rel=1e-6)


def test_sample_reduction_loss_is_mean_of_weighted_sample_losses(glow_run):
    # With GA 1 and logging every step, the logged loss of step s is mean_i(w_i * l_i) over the samples of step s.
    trainer, visits = glow_run
    by_step = defaultdict(list)
    for v in visits:
        by_step[v["step"]].append(v["weight"] * v["loss"])
    logged = {e["step"]: e["loss"] for e in trainer.state.log_history if "loss" in e}
    for step, weighted in by_step.items():
        assert logged[step] == pytest.approx(sum(weighted) / len(weighted), rel=1e-4), step


def test_logs_glow_and_trl_metrics(glow_run):
    trainer, _ = glow_run
    entries = [e for e in trainer.state.log_history if "loss" in e]
    for key in (
        "entropy",
        "mean_token_accuracy",
        "num_tokens",
        "glow/weight_mean",
        "glow/weight_std",
        "glow/weight_min",
        "glow/weight_max",
    ):
        assert all(key in e for e in entries), key
    later = [e for e in entries if e["epoch"] > 1]  # steps of epochs 1-2 have gains
    assert later and all("glow/gain_mean" in e and 0 <= e["glow/frac_regressed"] <= 1 for e in later)
    assert all(0.5 <= e["glow/weight_min"] <= e["glow/weight_mean"] <= e["glow/weight_max"] <= 1.0 for e in later)
    first = [e for e in entries if e["epoch"] <= 1]
    assert all(e["glow/weight_mean"] == 1.0 and e["glow/weight_std"] == 0.0 for e in first)


@pytest.mark.parametrize("reduction", ["sample", "token"])
def test_gradient_accumulation_invariance(tiny_model_dir, tokenizer, dataset, tmp_path, reduction):
    """Batch 16 × GA 1 and batch 4 × GA 4 give the same weights, losses and parameters."""
    runs = []
    for batch, accumulation in ((16, 1), (4, 4)):
        out = tmp_path / f"{batch}x{accumulation}"
        args = GLOWConfig(
            **cpu_training_args(out, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation),
            num_train_epochs=3,
            glow_log_samples=True,
            glow_reduction=reduction,
            glow_alpha=2.0,
            glow_beta=10.0,
        )
        trainer = GLOWTrainer(model=tiny_model_dir, args=args, train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
        weights = {(v["epoch"], v["sample_id"]): v["weight"] for v in read_jsonl(out / "glow_samples.jsonl")}
        runs.append((losses(trainer), weights, dict(trainer.model.named_parameters())))
    (losses_a, weights_a, params_a), (losses_b, weights_b, params_b) = runs
    assert losses_a == pytest.approx(losses_b, rel=1e-4)
    assert weights_a.keys() == weights_b.keys()
    assert any(w != 1.0 for w in weights_a.values())  # the weights actually did something
    for key, weight in weights_a.items():
        assert weights_b[key] == pytest.approx(weight, abs=1e-4), key
    for name, param in params_a.items():
        torch.testing.assert_close(param, params_b[name], atol=1e-5, rtol=1e-4)


class StopAfterEpoch(TrainerCallback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.epoch >= self.epoch:
            control.should_training_stop = True


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_model_dir, tokenizer, dataset, tmp_path):
    kwargs = {
        "num_train_epochs": 3,
        "glow_log_samples": True,
        "save_strategy": "epoch",
        "glow_alpha": 2.0,
        "glow_beta": 10.0,
    }
    full = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "full", **kwargs)
    full.train()
    interrupted = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "resumed", **kwargs)
    interrupted.add_callback(StopAfterEpoch(2))
    interrupted.train()
    checkpoint = tmp_path / "resumed" / f"checkpoint-{interrupted.state.global_step}"
    assert (checkpoint / "glow_state.pt").is_file()
    resumed = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "resumed", **kwargs)
    resumed.train(resume_from_checkpoint=True)  # the latest checkpoint, as a user would

    def epoch_rows(path, epoch):
        return {v["sample_id"]: v for v in read_jsonl(path) if v["epoch"] == epoch}

    full_rows = epoch_rows(tmp_path / "full" / "glow_samples.jsonl", 2)
    resumed_rows = epoch_rows(tmp_path / "resumed" / "glow_samples.jsonl", 2)
    assert full_rows.keys() == resumed_rows.keys() == set(dataset["sample_id"])
    for sample_id, row in full_rows.items():
        assert resumed_rows[sample_id]["prev_loss"] == pytest.approx(row["prev_loss"], abs=1e-6)
        assert resumed_rows[sample_id]["weight"] == pytest.approx(row["weight"], abs=1e-6)
    # The log holds each visit exactly once across the interruption.
    assert len(read_jsonl(tmp_path / "resumed" / "glow_samples.jsonl")) == 3 * len(dataset)


def test_resume_from_a_checkpoint_without_glow_state_is_refused(tiny_model_dir, tokenizer, dataset, tmp_path):
    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, num_train_epochs=1, save_strategy="epoch")
    trainer.train()
    checkpoint = tmp_path / f"checkpoint-{trainer.state.global_step}"
    (checkpoint / "glow_state.pt").unlink()
    with pytest.raises(ValueError, match="glow_state.pt"):
        make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, num_train_epochs=2).train(str(checkpoint))


def test_eval_loss_is_unweighted_and_leaves_history_alone(glow_run, dataset, tokenizer, tmp_path):
    trainer, _ = glow_run
    history = trainer._glow_history.clone()
    eval_loss = trainer.evaluate(eval_dataset=dataset)["eval_loss"]
    torch.testing.assert_close(history, trainer._glow_history, equal_nan=True, rtol=0, atol=0)
    assert not trainer._glow_pending
    reference = SFTTrainer(
        model=trainer.model,
        args=SFTConfig(**cpu_training_args(tmp_path), per_device_eval_batch_size=8),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    assert eval_loss == pytest.approx(reference.evaluate(eval_dataset=dataset)["eval_loss"], rel=1e-6)
    assert not math.isnan(eval_loss)


def test_adds_sample_ids_when_the_dataset_has_none(tiny_model_dir, tokenizer, dataset, tmp_path):
    trainer = make_trainer(
        tiny_model_dir, tokenizer, dataset.remove_columns("sample_id"), tmp_path, num_train_epochs=1
    )
    assert trainer._glow_ids == list(range(len(dataset)))
    assert sorted(trainer.train_dataset[INDEX_COLUMN]) == list(range(len(dataset)))


def test_any_unique_sample_ids_cost_four_bytes_a_sample(tiny_model_dir, tokenizer, dataset, tmp_path):
    """String ids and a huge integer id are mapped to a dense index: the history has one float32 per sample."""
    ids = [f"traj-{i}" for i in range(len(dataset) - 1)] + [10**8]
    trainer = make_trainer(
        tiny_model_dir,
        tokenizer,
        dataset.remove_columns("sample_id").add_column("sample_id", [str(i) for i in ids]),
        tmp_path,
        num_train_epochs=2,
        glow_log_samples=True,
    )
    assert trainer._glow_history.shape == (len(dataset),) and trainer._glow_history.dtype == torch.float32
    trainer.train()
    visits = read_jsonl(tmp_path / "glow_samples.jsonl")
    assert {v["sample_id"] for v in visits} == {str(i) for i in ids}  # logged with the user's ids
    assert sum(v["weight"] != 1.0 for v in visits) > 0


def test_duplicate_sample_ids_are_refused(tiny_model_dir, tokenizer, dataset, tmp_path):
    duplicated = dataset.remove_columns("sample_id").add_column("sample_id", [0] + list(range(len(dataset) - 1)))
    with pytest.raises(ValueError, match="row 1 has sample_id 0 again"):
        make_trainer(tiny_model_dir, tokenizer, duplicated, tmp_path, num_train_epochs=1)


def test_baseline_logs_its_per_sample_losses_with_weight_one(tiny_model_dir, tokenizer, dataset, tmp_path):
    """glow: false with glow_log_samples: the same glow_samples.jsonl as a GLOW arm, every weight 1."""
    trainer = make_trainer(
        tiny_model_dir, tokenizer, dataset, tmp_path, num_train_epochs=2, glow=False, glow_log_samples=True
    )
    trainer.train()
    visits = read_jsonl(tmp_path / "glow_samples.jsonl")
    assert len(visits) == 2 * len(dataset)
    assert all(v["weight"] == 1.0 for v in visits)
    loss_at = {(v["epoch"], v["sample_id"]): v["loss"] for v in visits}
    for v in visits:
        assert v["correct"] in (True, False) and math.isfinite(v["loss"])
        if v["epoch"] == 1:
            assert v["prev_loss"] == pytest.approx(loss_at[(0, v["sample_id"])], rel=1e-6)
            assert v["gain"] == pytest.approx(v["prev_loss"] - v["loss"], abs=1e-9)
    assert not any(key.startswith("glow/") for entry in trainer.state.log_history for key in entry)


def test_resume_on_other_data_of_the_same_size_is_refused(tiny_model_dir, tokenizer, dataset, tmp_path):
    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, num_train_epochs=1, save_strategy="epoch")
    trainer.train()
    checkpoint = tmp_path / f"checkpoint-{trainer.state.global_step}"
    completions = [[{"role": "assistant", "content": "Step 1: changed."}]] * len(dataset)
    other = dataset.remove_columns("completion").add_column("completion", completions)
    with pytest.raises(ValueError, match="trained on other data of the same size"):
        make_trainer(tiny_model_dir, tokenizer, other, tmp_path, num_train_epochs=2).train(str(checkpoint))


def test_resume_on_other_pretokenized_data_of_the_same_size_is_refused(tiny_model_dir, tokenizer, dataset, tmp_path):
    """Pre-tokenized rows (input_ids + completion_mask) are fingerprinted too: other tokens, same size, refused."""
    prepared = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "prepare", num_train_epochs=1)
    rows = prepared.train_dataset
    masks = [[int(label != -100) for label in labels] for labels in rows["labels"]]
    tokenized = rows.select_columns(["sample_id", "input_ids"]).add_column("completion_mask", masks)
    trainer = make_trainer(tiny_model_dir, tokenizer, tokenized, tmp_path, num_train_epochs=1, save_strategy="epoch")
    trainer.train()
    checkpoint = tmp_path / f"checkpoint-{trainer.state.global_step}"
    swapped = [ids[:-2] + ids[-1:] + ids[-2:-1] for ids in tokenized["input_ids"]]  # the last two tokens swapped
    other = tokenized.remove_columns("input_ids").add_column("input_ids", swapped)
    with pytest.raises(ValueError, match="trained on other data of the same size"):
        make_trainer(tiny_model_dir, tokenizer, other, tmp_path, num_train_epochs=2).train(str(checkpoint))


@pytest.fixture(scope="module")
def checkpoint_1024(tiny_model_dir, tokenizer, dataset, tmp_path_factory):
    """A GLOW checkpoint after one epoch at max_length 1024 (nothing truncated)."""
    out = tmp_path_factory.mktemp("checkpoint_1024")
    trainer = make_trainer(
        tiny_model_dir, tokenizer, dataset, out, num_train_epochs=1, save_strategy="epoch", max_length=1024
    )
    trainer.train()
    return out / f"checkpoint-{trainer.state.global_step}"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_length": 2048}, "max_length is 2048 but .* max_length: 1024, which changes the tokens"),
        ({"completion_only_loss": False}, "completion_only_loss is False but .* completion_only_loss: None"),
        ({"truncation_mode": "keep_end"}, "set truncation_mode: 'keep_start'"),
        ({"chat_template": "{{ messages }}"}, "the chat template differs"),
    ],
)
def test_resume_with_other_tokenization_settings_is_refused_by_name(
    tiny_model_dir, tokenizer, dataset, tmp_path, checkpoint_1024, change, message
):
    changed = AutoTokenizer.from_pretrained(tiny_model_dir)
    if "chat_template" in change:
        changed.chat_template = tokenizer.chat_template + change.pop("chat_template")
    settings = {"per_device_train_batch_size": 8, "num_train_epochs": 2, "max_length": 1024, **change}
    args = GLOWConfig(**cpu_training_args(tmp_path, **settings))
    trainer = GLOWTrainer(model=tiny_model_dir, args=args, train_dataset=dataset, processing_class=changed)
    with pytest.raises(ValueError, match=message):
        trainer.train(str(checkpoint_1024))


def test_resume_from_a_checkpoint_without_fingerprints_is_refused(
    tiny_model_dir, tokenizer, dataset, tmp_path, checkpoint_1024
):
    """A glow_state.pt as older glowrl wrote it (no version, no fingerprint) cannot be checked, so it is refused."""
    import shutil

    checkpoint = tmp_path / checkpoint_1024.name
    shutil.copytree(checkpoint_1024, checkpoint)
    state = torch.load(checkpoint / "glow_state.pt", weights_only=True)
    torch.save(
        {"loss_history": state["loss_history"], "num_samples": state["num_samples"]}, checkpoint / "glow_state.pt"
    )
    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, num_train_epochs=2, max_length=1024)
    with pytest.raises(ValueError, match="has no fingerprint of its training data and tokenization"):
        trainer.train(str(checkpoint))


def test_compute_loss_func_set_after_construction_is_refused(tiny_model_dir, tokenizer, dataset, tmp_path):
    def loss_func(outputs, labels, num_items_in_batch=None):
        return outputs.loss

    trainer = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "glow", num_train_epochs=1)
    with pytest.raises(ValueError, match="compute_loss_func replaces the per-token loss"):
        trainer.compute_loss_func = loss_func
    assert trainer.compute_loss_func is None
    baseline = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "sft", num_train_epochs=1, glow=False)
    baseline.compute_loss_func = loss_func  # plain SFT keeps TRL's option
    assert baseline.compute_loss_func is loss_func


def test_compute_loss_func_and_context_parallelism_are_refused(tiny_model_dir, tokenizer, dataset, tmp_path):
    with pytest.raises(ValueError, match="compute_loss_func replaces the per-token loss"):
        GLOWTrainer(
            model=tiny_model_dir,
            args=GLOWConfig(**cpu_training_args(tmp_path)),
            train_dataset=dataset,
            processing_class=tokenizer,
            compute_loss_func=lambda outputs, labels, num_items_in_batch=None: outputs.loss,
        )
    from accelerate import ParallelismConfig

    for size in ("cp_size", "sp_size"):
        with pytest.raises(ValueError, match=f"parallelism_config.{size}: 2"):
            GLOWConfig(**cpu_training_args(tmp_path), parallelism_config=ParallelismConfig(**{size: 2}))


def test_unlabelled_trajectories_are_logged_without_a_correct_field(tiny_model_dir, tokenizer, dataset, tmp_path):
    labels = [None if i % 3 == 0 else c for i, c in enumerate(dataset["correct"])]
    partly_labelled = dataset.remove_columns("correct").add_column("correct", labels)
    trainer = make_trainer(
        tiny_model_dir, tokenizer, partly_labelled, tmp_path, num_train_epochs=1, glow_log_samples=True
    )
    trainer.train()
    visits = {v["sample_id"]: v for v in read_jsonl(tmp_path / "glow_samples.jsonl")}
    for sample_id, label in zip(partly_labelled["sample_id"], labels, strict=True):
        assert visits[sample_id].get("correct") == label


def test_rejects_trajectories_truncated_to_nothing(tiny_model_dir, tokenizer, dataset, tmp_path):
    with pytest.raises(ValueError, match="no trainable tokens"):
        make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path, max_length=8)


def test_completions_cut_before_their_end_of_turn_token_are_counted(
    tiny_model_dir, tokenizer, dataset, tmp_path, capsys
):
    from glowrl.stages.sft import warn_cut_completions

    whole = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "whole", max_length=None)
    eos = tokenizer.eos_token_id
    first_eos = [row["labels"].index(eos) for row in whole.train_dataset]  # every whole completion ends its turn
    max_length = sorted(first_eos)[len(first_eos) // 2]  # cuts about half of them just before their EOS
    expected = sum(position >= max_length for position in first_eos)
    assert 0 < expected < len(first_eos)

    warn_cut_completions(whole)
    assert capsys.readouterr().out == ""
    cut = make_trainer(tiny_model_dir, tokenizer, dataset, tmp_path / "cut", max_length=max_length)
    warn_cut_completions(cut)
    out = capsys.readouterr().out
    assert f"{expected} of {len(dataset)} trajectories are longer than max_length={max_length} tokens" in out, out
