"""RLOO, DPO and KTO on the GLOW SFT checkpoint through `glowrl rl`, and how `rl.algorithm` finds an algorithm.

GRPO has its own file (tests/test_grpo.py).

python -m pytest tests/test_rl_algorithms.py
"""

import json

import pytest
import torch
import yaml
from utils import REPO, assert_entropy_split_recombines, flags, read_jsonl

from glowrl.cli import main as glowrl_main
from glowrl.data import TrajectoryArguments
from glowrl.rl import available_algorithms
from glowrl.rl.dpo import build_dpo_dataset
from glowrl.rl.kto import build_kto_dataset
from glowrl.stages import get_stage, parse_stage_args
from glowrl.vllm_support import vllm_installed


ROLLOUTS = ["--num_generations", "4", "--per_device_train_batch_size", "8", "--max_completion_length", "32"]
# name: (recipe, --algorithm, extra overrides, the config values that must have reached the trainer)
RUNS = {
    "rloo": ("rloo", "rloo", ROLLOUTS, {"beta": 0.05}),
    "dpo": ("dpo", "dpo", ["--per_device_train_batch_size", "8"], {"beta": 0.1}),
    "kto": ("kto", "kto", ["--per_device_train_batch_size", "8"], {"beta": 0.1}),
}
LOGGED = {  # keys every logged training step must have
    "rloo": [
        "reward",
        "rewards/math_accuracy/mean",
        "entropy",
        "entropy/seq_p10",
        "entropy/seq_p50",
        "entropy/seq_p90",
    ],
    "dpo": [
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
    ],
    "kto": ["kl", "logps/chosen", "logps/rejected", "rewards/chosen", "rewards/rejected"],
}


def rl_argv(recipe, algorithm, model, data, out, *extra):
    return [
        *["rl", "--config", str(REPO / f"recipes/tiny/{recipe}.yaml"), "--algorithm", algorithm],
        *flags(model_name_or_path=model, dataset_paths=data, output_dir=out, max_steps=2, logging_steps=1),
        *["--save_strategy", "no", *extra],
    ]


@pytest.mark.parametrize("name", list(RUNS))
def test_two_steps_from_the_sft_checkpoint_save_a_model_and_log_the_algorithm_metrics(
    tmp_path, sft_checkpoint, addition_file, trajectory_file, name
):
    recipe, algorithm, extra, expected_args = RUNS[name]
    # Rollouts on the problems SFT taught; preference pairs need several trajectories per problem.
    data = addition_file if algorithm in ("grpo", "rloo") else trajectory_file
    out = tmp_path / "rl"
    assert glowrl_main(rl_argv(recipe, algorithm, sft_checkpoint, data, out, *extra)) == 0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    args = torch.load(out / "training_args.bin", weights_only=False)
    assert {k: getattr(args, k) for k in expected_args} == expected_args
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    steps = [e for e in state["log_history"] if "loss" in e]
    assert len(steps) == 2
    for key in LOGGED[algorithm]:
        assert all(e.get(key) is not None for e in steps), (key, steps)
    if algorithm == "rloo":
        assert steps[0]["rewards/boxed_format/mean"] > 0.5  # rollouts of the GLOW model, which learned the format
        rows = read_jsonl(out / "entropy.jsonl")
        assert [r["step"] for r in rows] == [1, 2]
        assert "entropy/initial" in rows[0] and sum("entropy/initial" in e for e in state["log_history"]) == 1
        assert_entropy_split_recombines(rows)


def test_dpo_pairs_each_incorrect_trajectory_with_a_correct_one_of_its_problem(trajectory_file):
    rows = read_jsonl(trajectory_file)
    pairs = build_dpo_dataset(TrajectoryArguments(dataset_paths=[trajectory_file]))
    assert pairs.column_names == ["prompt", "chosen", "rejected"]
    assert len(pairs) == sum(not r["correct"] for r in rows)  # every negative once
    by_text = {r["completion"]: r for r in rows}
    for pair in pairs:
        chosen, rejected = by_text[pair["chosen"][0]["content"]], by_text[pair["rejected"][0]["content"]]
        assert chosen["correct"] and not rejected["correct"] and chosen["problem"] == rejected["problem"]
        assert pair["prompt"][-1]["role"] == "user" and pair["chosen"][0]["role"] == "assistant"


def test_dpo_cycles_the_correct_trajectories_of_a_problem(tmp_path):
    rows = [{"problem": "1+1?", "completion": f"wrong {i}", "answer": "2", "correct": False} for i in range(3)]
    rows += [{"problem": "1+1?", "completion": f"right {i}", "answer": "2", "correct": True} for i in range(2)]
    rows += [{"problem": "2+2?", "completion": "only wrong", "answer": "4", "correct": False}]
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = build_dpo_dataset(TrajectoryArguments(dataset_paths=[str(path)]))
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("right 0", "wrong 0"),
        ("right 1", "wrong 1"),
        ("right 0", "wrong 2"),
    ]


def test_kto_keeps_every_labelled_trajectory_in_a_seeded_order(trajectory_file):
    rows = read_jsonl(trajectory_file)
    examples = build_kto_dataset(TrajectoryArguments(dataset_paths=[trajectory_file]), seed=0)
    assert examples.column_names == ["prompt", "completion", "label"]
    assert sorted(examples["label"]) == sorted(r["correct"] for r in rows)
    assert examples["label"] != [r["correct"] for r in rows]  # shuffled: KTO reads its rows in order
    again = build_kto_dataset(TrajectoryArguments(dataset_paths=[trajectory_file]), seed=0)
    assert again["completion"] == examples["completion"]


@pytest.mark.parametrize(
    ("algorithm", "keep", "message"),
    [
        ("dpo", lambda r: r["correct"], "rl.algorithm: dpo needs problems with both a correct and an incorrect"),
        ("kto", lambda r: r["correct"], "rl.algorithm: kto needs both correct (desirable) and incorrect"),
        ("kto", lambda r: not r["correct"], "has 0 correct, 16 incorrect"),
        # positives and negatives, but never for the same problem: KTO could train, DPO has nothing to pair
        ("dpo", lambda r: r["correct"] == (int(r["problem_id"][-1]) % 2 == 0), "none of the 8 problems"),
    ],
)
def test_preference_data_without_both_kinds_is_one_clear_error_and_writes_nothing(
    tmp_path, capsys, tiny_model_dir, trajectory_file, algorithm, keep, message
):
    data = tmp_path / "subset.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(trajectory_file) if keep(r)))
    argv = rl_argv(algorithm, algorithm, tiny_model_dir, str(data), tmp_path / "rl")
    assert glowrl_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("glowrl: error:") and message in err, err
    assert "trajectories" in err  # the fix
    assert not (tmp_path / "rl").exists()


@pytest.mark.parametrize("where", ["flag", "flat", "sectioned"])
def test_unknown_algorithm_lists_the_valid_ones(tmp_path, capsys, where):
    recipe = {
        "flag": {"seed": 1},
        "flat": {"algorithm": "ppo"},
        "sectioned": {"output_root": "o", "rl": {"algorithm": "ppo"}},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe[where]))
    argv = ["rl", "--config", str(tmp_path / "r.yaml"), *(["--algorithm", "ppo"] if where == "flag" else [])]
    assert glowrl_main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown algorithm 'ppo'" in err and ", ".join(available_algorithms()) in err, err
    assert available_algorithms()[:4] == ["dpo", "grpo", "kto", "rloo"]
    assert not (tmp_path / "rl").exists()


@pytest.mark.parametrize(
    ("recipe", "flag", "expected"),
    [
        ({"learning_rate": 0.1}, None, "grpo"),
        ({"algorithm": "kto", "learning_rate": 0.1}, None, "kto"),
        ({"algorithm": "kto", "learning_rate": 0.1}, "rloo", "rloo"),
        ({"output_root": "o", "learning_rate": 0.1, "rl": {"algorithm": "dpo"}}, None, "dpo"),
        ({"output_root": "o", "learning_rate": 0.1, "rl": {"algorithm": "dpo"}}, "grpo", "grpo"),
    ],
)
def test_algorithm_comes_from_the_flag_then_the_recipe_and_picks_the_dataclasses(tmp_path, recipe, flag, expected):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    argv = ["--config", str(tmp_path / "r.yaml"), *(["--algorithm", flag] if flag else []), "--seed", "3"]
    argv += ["--use_cpu", "true", "--bf16", "false"]
    rl_args, *_, training_args, _ = parse_stage_args(get_stage("rl"), argv)
    assert rl_args.algorithm == expected
    config_classes = {"grpo": "RolloutEntropyGRPOConfig", "rloo": "RolloutEntropyRLOOConfig", "dpo": "DPOConfig"}
    assert type(training_args).__name__ == config_classes.get(expected, "KTOConfig")
    assert (training_args.learning_rate, training_args.seed) == (0.1, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--per_device_train_batch_size", "6"], "make it a multiple of num_generations"),
        (["--num_generations", "1", "--per_device_train_batch_size", "4"], "num_generations must be at least 2"),
        # the tiny model's heads are 16 wide: vLLM's CPU attention takes 32 and up (where vLLM is installed)
        (["--use_vllm", "true"], "which vLLM's CPU attention cannot run" if vllm_installed() else "not installed"),
    ],
)
def test_rloo_batch_and_vllm_errors_name_the_fix(tmp_path, capsys, tiny_model_dir, addition_file, extra, message):
    argv = rl_argv("rloo", "rloo", tiny_model_dir, addition_file, tmp_path / "rl", "--num_generations", "4", *extra)
    assert glowrl_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("glowrl: error:") and message in err, err
    assert not (tmp_path / "rl").exists()
