"""`glowrl pipeline`: SFT then RL from one recipe, each stage a real `accelerate launch` process.

The tests that launch real processes are marked slow; the rules (skip, refuse, re-run, overrides) are tested with a
stand-in launcher in seconds.

python -m pytest tests/test_pipeline.py
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from utils import REPO, read_jsonl

from glowrl.cli import main as glowrl_main
from glowrl.pipeline import MANIFEST_NAME, run


@pytest.fixture
def pipeline_recipe(tmp_path, tiny_model_dir, addition_file):
    """The tiny pipeline recipe, shrunk to seconds, with local paths; returns a writer taking section changes."""

    def write(name="recipe.yaml", sft=None, rl=None, **shared):
        recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
        recipe.update(
            {
                "model_name_or_path": tiny_model_dir,
                "dataset_paths": [addition_file],
                "output_root": str(tmp_path / "run"),
                "logging_steps": 1,
                **shared,
            }
        )
        recipe["sft"].update({"num_train_epochs": 2, "per_device_train_batch_size": 16, **(sft or {})})
        recipe["rl"].update(
            {
                "max_steps": 2,
                "num_generations": 4,
                "per_device_train_batch_size": 8,
                "max_completion_length": 32,
                "save_strategy": "no",
                **(rl or {}),
            }
        )
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return str(path)

    return write


def manifest(root) -> dict:
    return json.loads((Path(root) / MANIFEST_NAME).read_text())


def refuse_to_launch(command):
    pytest.fail(f"a finished stage was launched again: {command}")


def launched_stage(command) -> str:
    """The stage a launcher was asked to run: `... -m glowrl <stage> --config ...`."""
    return command[command.index("glowrl", command.index("-m", 3)) + 1]


@pytest.mark.slow
def test_runs_sft_then_rl_and_skips_finished_stages(pipeline_recipe, tmp_path, capsys):
    recipe = pipeline_recipe()
    assert glowrl_main(["pipeline", "--config", recipe]) == 0
    root = tmp_path / "run"
    info = manifest(root)
    assert [info["stages"][s]["status"] for s in ("sft", "rl")] == ["done", "done"]
    assert info["stages"]["rl"]["config"]["model_name_or_path"] == str(root / "sft")  # RL starts from SFT's output
    assert info["stages"]["rl"]["config"]["algorithm"] == "grpo"
    assert {"trl", "transformers", "torch", "accelerate"} <= info["versions"].keys() and "git_commit" in info
    for stage in ("sft", "rl"):
        assert (root / stage / "model.safetensors").is_file()
        assert info["stages"][stage]["started"] <= info["stages"][stage]["ended"]
        assert "accelerate.commands.launch" in " ".join(info["stages"][stage]["command"])
        assert launched_stage(info["stages"][stage]["command"]) == stage
    assert "reward_first" in info["stages"]["rl"]["metrics"] and "final_loss" in info["stages"]["sft"]["metrics"]
    out = capsys.readouterr().out
    assert "stage 1/2: sft" in out and "stage 2/2: rl (grpo)" in out and "summary" in out

    # Same recipe again: both stages are skipped, nothing is launched or rewritten.
    assert run(recipe, [], launcher=refuse_to_launch) == 0
    assert manifest(root)["stages"] == info["stages"]
    assert "skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failed_sft_stage_stops_the_pipeline(pipeline_recipe, tmp_path):
    recipe = pipeline_recipe(model_name_or_path=str(tmp_path / "no_such_model"))
    assert glowrl_main(["pipeline", "--config", recipe]) != 0
    info = manifest(tmp_path / "run")
    assert info["stages"]["sft"]["status"] == "failed" and info["stages"]["sft"]["returncode"] != 0
    assert info["stages"]["rl"]["status"] == "pending"
    assert not (tmp_path / "run" / "rl").exists()


@pytest.mark.slow
def test_an_interrupted_sft_stage_resumes_from_its_last_checkpoint(pipeline_recipe, tmp_path):
    recipe = pipeline_recipe(sft={"num_train_epochs": 4, "save_strategy": "epoch", "save_total_limit": None})
    root = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "glowrl", "pipeline", "--config", recipe],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 300
        while not list((root / "sft").glob("checkpoint-*/glow_state.pt")) and time.time() < deadline:
            assert process.poll() is None, "the pipeline ended before its first checkpoint"
            time.sleep(0.5)
        time.sleep(1)  # let the checkpoint finish writing
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert manifest(root)["stages"]["sft"]["status"] == "running"
    assert run(recipe, []) == 0
    info = manifest(root)
    assert "checkpoint-" in info["stages"]["sft"]["resumed_from"]
    assert info["stages"]["rl"]["status"] == "done"
    # Every sample was visited exactly once per epoch across the interruption.
    visits = read_jsonl(root / "sft" / "glow_samples.jsonl")
    assert sorted((v["epoch"], v["sample_id"]) for v in visits) == sorted(
        {(v["epoch"], v["sample_id"]) for v in visits}
    )
    assert {v["epoch"] for v in visits} == {0, 1, 2, 3}


def succeed(command):
    return 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"evaluation": {"x": 1}}, "unknown section 'evaluation'"),
        ({"rl": {"max_stepz": 3}}, "unknown recipe key 'max_stepz' in section rl:; did you mean 'max_steps'"),
        ({"glow_alpah": 2.0}, "unknown recipe key 'glow_alpah'"),
        ({"rl": {"algorithm": "ppo"}}, "rl.algorithm: unknown algorithm 'ppo'; choose one of dpo, grpo, kto, rloo"),
        (
            {"accelerate_config": "accelerate_configs/nope.yaml"},
            "accelerate_config: accelerate_configs/nope.yaml does",
        ),
        ({"output_dir": "out"}, "output_dir: a shared output_dir would send every stage to one directory"),
    ],
)
def test_bad_recipes_are_refused_before_anything_runs(pipeline_recipe, tmp_path, capsys, changes, message):
    path = Path(pipeline_recipe())
    recipe = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key].update(value)
        else:
            recipe[key] = value
    path.write_text(yaml.safe_dump(recipe))
    assert glowrl_main(["pipeline", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_finished_run_of_another_recipe_is_never_overwritten(pipeline_recipe, tmp_path, capsys):
    assert run(pipeline_recipe(), [], launcher=succeed) == 0
    before = manifest(tmp_path / "run")
    assert glowrl_main(["pipeline", "--config", pipeline_recipe(), "--seed", "7"]) == 2
    assert "holds a finished sft stage of a different recipe" in capsys.readouterr().err
    assert manifest(tmp_path / "run") == before
    assert run(pipeline_recipe(), ["--seed", "7"], overwrite=True, launcher=succeed) == 0
    assert manifest(tmp_path / "run")["stages"]["sft"]["config"]["seed"] == 7


def test_a_failed_rl_stage_reruns_with_a_fixed_config_and_sft_is_kept(pipeline_recipe, tmp_path):
    launched = []

    def fail_rl(command):
        launched.append(launched_stage(command))
        return 1 if launched_stage(command) == "rl" else 0

    assert run(pipeline_recipe(), [], launcher=fail_rl) == 1
    assert [manifest(tmp_path / "run")["stages"][s]["status"] for s in ("sft", "rl")] == ["done", "failed"]
    launched.clear()
    assert run(pipeline_recipe(), ["--rl.learning_rate", "1e-5"], launcher=succeed_recording(launched)) == 0
    assert launched == ["rl"]  # SFT, finished with the same config, is skipped
    assert manifest(tmp_path / "run")["stages"]["rl"]["resumed_from"] is None  # new config: starts afresh


def succeed_recording(launched):
    def launcher(command):
        launched.append(launched_stage(command))
        return 0

    return launcher


def test_overrides_reach_the_right_stage(pipeline_recipe, tmp_path):
    launched = []
    assert (
        run(
            pipeline_recipe(),
            ["--rl.learning_rate", "2e-4", "--sft.glow_beta", "3", "--seed", "5"],
            launcher=lambda command: launched.append(command) or 0,
        )
        == 0
    )
    sft = yaml.safe_load((tmp_path / "run" / "recipes" / "sft.yaml").read_text())
    rl = yaml.safe_load((tmp_path / "run" / "recipes" / "rl.yaml").read_text())
    assert (sft["glow_beta"], sft["seed"], float(rl["learning_rate"]), rl["seed"]) == (3, 5, 2e-4, 5)
    assert [launched_stage(c) for c in launched] == ["sft", "rl"]


@pytest.mark.slow
def test_pipeline_under_two_process_cpu_ddp(pipeline_recipe, tmp_path):
    recipe = pipeline_recipe(
        accelerate_config=str(REPO / "accelerate_configs/cpu_ddp.yaml"),
        sft={"per_device_train_batch_size": 8, "ddp_find_unused_parameters": False},
        rl={"per_device_train_batch_size": 4},
    )
    assert run(recipe, []) == 0
    info = manifest(tmp_path / "run")
    assert all(info["stages"][s]["status"] == "done" for s in ("sft", "rl"))
    assert "cpu_ddp.yaml" in " ".join(info["stages"]["sft"]["command"])
    visits = read_jsonl(tmp_path / "run" / "sft" / "glow_samples.jsonl")
    assert {(v["epoch"], v["sample_id"]) for v in visits} == {(e, i) for e in range(2) for i in range(81)}
    # 81 samples in global batches of 2 × 8: accelerate's even_batches repeats 15 samples in each epoch's last batch.
    last_steps = {max(v["step"] for v in visits if v["epoch"] == e) for e in range(2)}
    repeated = len(visits) - 2 * 81
    assert repeated == 2 * 15 and all(v["step"] in last_steps for v in visits[-16:])
