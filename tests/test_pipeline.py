"""`glowrl pipeline`: SFT then RL from one recipe, each stage a real `accelerate launch` process.

The tests that launch real processes are marked slow; the rules (skip, refuse, re-run, overrides) are tested with a
stand-in launcher in seconds.

python -m pytest tests/test_pipeline.py
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from utils import REPO, read_jsonl

from glowrl.checkpoints import COMPLETE_MARKER
from glowrl.cli import main as glowrl_main
from glowrl.pipeline import MANIFEST_NAME, run


@pytest.fixture
def pipeline_recipe(tmp_path, tiny_model_dir, addition_file):
    """The tiny pipeline recipe, shrunk to seconds, with local paths; returns a writer taking section changes."""

    def write(name="recipe.yaml", sft=None, rl=None, **shared):
        recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
        del recipe["eval"]  # SFT and RL only: the eval stage has its own tests
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
    return next(command[i + 2] for i in range(len(command) - 2) if command[i : i + 2] == ["-m", "glowrl"])


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
        [command] = info["stages"][stage]["commands"]
        assert "accelerate.commands.launch" in " ".join(command)
        assert launched_stage(command) == stage
        # accelerate is told the stage's own precision and accumulation, so it cannot disagree with the trainer
        assert command[command.index("--mixed_precision") + 1] == "no"
        assert command[command.index("--gradient_accumulation_steps") + 1] == "1"
    assert "reward_first_third" in info["stages"]["rl"]["metrics"] and "final_loss" in info["stages"]["sft"]["metrics"]
    out = capsys.readouterr().out
    assert "stage 1/2: sft" in out and "stage 2/2: rl (grpo)" in out and "summary" in out

    # Same recipe again: both stages are skipped, nothing is launched or rewritten.
    assert run(recipe, [], runner=refuse_to_launch) == 0
    assert manifest(root)["stages"] == info["stages"]
    assert "skipped" in capsys.readouterr().out


@pytest.mark.slow
def test_a_failed_sft_stage_stops_the_pipeline_with_its_own_error_line(pipeline_recipe, tmp_path, addition_file):
    # Line 82 is broken: the pre-launch check reads only the first row, so the stage itself fails, in its process.
    data = tmp_path / "broken.jsonl"
    data.write_text(Path(addition_file).read_text() + "{broken\n")
    result = subprocess.run(
        [sys.executable, "-m", "glowrl", "pipeline", "--config", pipeline_recipe(dataset_paths=[str(data)])],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "CalledProcessError" not in result.stderr, result.stderr[-2000:]
    assert "broken.jsonl line 82 is not valid JSON" in result.stderr
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
        while not list((root / "sft").glob(f"checkpoint-*/{COMPLETE_MARKER}")) and time.time() < deadline:
            assert process.poll() is None, "the pipeline ended before its first checkpoint"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # a crash: nothing is recorded; the stage dies with its parent
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


def models_equal(a: Path, b: Path) -> bool:
    from safetensors.torch import load_file

    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return left.keys() == right.keys() and all(torch.allclose(left[k], right[k], atol=1e-6) for k in left)


@pytest.mark.slow
def test_sigterm_reaches_the_stage_and_a_rerun_resumes_past_a_truncated_checkpoint(pipeline_recipe, tmp_path, capsys):
    sft = {"num_train_epochs": 4, "save_strategy": "epoch", "save_total_limit": None}
    reference = pipeline_recipe("reference.yaml", sft=sft, output_root=str(tmp_path / "reference"))
    assert run(reference, []) == 0
    recipe = pipeline_recipe(sft=sft)
    root = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "glowrl", "pipeline", "--config", recipe], cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while len(list((root / "sft").glob(f"checkpoint-*/{COMPLETE_MARKER}"))) < 2 and time.time() < deadline:
        assert process.poll() is None, "the pipeline ended before its second checkpoint"
        time.sleep(0.2)
    stage = descendants(process.pid)  # the launcher and the training process, while they run
    assert len(stage) >= 2, stage
    process.send_signal(signal.SIGTERM)  # to the pipeline only, as `kill PID` or a scheduler would
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1].startswith("glowrl: error: interrupted by SIGTERM; re-run")
    assert manifest(root)["stages"]["sft"]["status"] == "interrupted"
    assert not still_running(stage), f"the stage outlived the pipeline: {still_running(stage)}"

    newest = max((root / "sft").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a half-written save
    capsys.readouterr()
    assert run(recipe, []) == 0
    out = capsys.readouterr().out
    assert f"skipping incomplete checkpoint {newest}: model.safetensors is truncated" in out
    resumed = manifest(root)["stages"]["sft"]["resumed_from"]
    assert resumed is not None and resumed != str(newest)
    assert models_equal(root / "sft", tmp_path / "reference" / "sft")  # the same model as an uninterrupted run


def descendants(pid: int) -> list:
    """Every process below `pid` (its children, theirs, ...), found by parenthood (psutil, which accelerate requires),
    so that only this process tree counts, whatever else runs on the machine."""
    import psutil

    return psutil.Process(pid).children(recursive=True)


def still_running(processes: list) -> list:
    """Those of `processes` that still run: the same process (psutil checks its start time, so a later process given
    the same pid does not count), not a zombie waiting to be reaped by its new parent."""
    import psutil

    alive = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


@pytest.mark.slow
def test_two_pipelines_on_one_root_run_once(pipeline_recipe, tmp_path):
    recipe = pipeline_recipe(sft={"num_train_epochs": 3})
    command = [sys.executable, "-m", "glowrl", "pipeline", "--config", recipe]
    processes = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)]
    processes.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "is in use by another run (glowrl pipeline, pid" in refused.strip().splitlines()[-1]
    visits = read_jsonl(tmp_path / "run" / "sft" / "glow_samples.jsonl")
    assert len(visits) == 3 * 81  # one run's visits, not two


def succeed(command):
    """A stand-in stage that succeeds and leaves an output, as a real one would."""
    config = yaml.safe_load(Path(command[command.index("--config") + 1]).read_text())
    Path(config["output_dir"]).mkdir(parents=True, exist_ok=True)
    (Path(config["output_dir"]) / "model.safetensors").write_bytes((2).to_bytes(8, "little") + b"{}")  # no tensors
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
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))  # sections in the order they run
    assert glowrl_main(["pipeline", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_finished_run_of_another_recipe_is_never_overwritten(pipeline_recipe, tmp_path, capsys):
    assert run(pipeline_recipe(), [], runner=succeed) == 0
    before = manifest(tmp_path / "run")
    assert glowrl_main(["pipeline", "--config", pipeline_recipe(), "--seed", "7"]) == 2
    assert "holds a finished sft stage of another config" in capsys.readouterr().err
    assert manifest(tmp_path / "run") == before
    assert run(pipeline_recipe(), ["--seed", "7"], overwrite=True, runner=succeed) == 0
    assert manifest(tmp_path / "run")["stages"]["sft"]["config"]["seed"] == 7


def test_a_failed_rl_stage_reruns_with_a_fixed_config_and_sft_is_kept(pipeline_recipe, tmp_path):
    launched = []

    def fail_rl(command):
        launched.append(launched_stage(command))
        return 1 if launched_stage(command) == "rl" else succeed(command)

    assert run(pipeline_recipe(), [], runner=fail_rl) == 1
    assert [manifest(tmp_path / "run")["stages"][s]["status"] for s in ("sft", "rl")] == ["done", "failed"]
    launched.clear()
    assert run(pipeline_recipe(), ["--rl.learning_rate", "1e-5"], runner=succeed_recording(launched)) == 0
    assert launched == ["rl"]  # SFT, finished with the same config, is skipped
    assert manifest(tmp_path / "run")["stages"]["rl"]["resumed_from"] is None  # new config: starts afresh


def succeed_recording(launched):
    def launcher(command):
        launched.append(launched_stage(command))
        return succeed(command)

    return launcher


def test_overrides_reach_the_right_stage(pipeline_recipe, tmp_path):
    launched = []
    assert (
        run(
            pipeline_recipe(),
            ["--rl.learning_rate", "2e-4", "--sft.glow_beta", "3", "--seed", "5"],
            runner=lambda command: launched.append(command) or 0,
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
    assert "cpu_ddp.yaml" in " ".join(info["stages"]["sft"]["commands"][0])
    visits = read_jsonl(tmp_path / "run" / "sft" / "glow_samples.jsonl")
    assert {(v["epoch"], v["sample_id"]) for v in visits} == {(e, i) for e in range(2) for i in range(81)}
    # 81 samples in global batches of 2 × 8: accelerate's even_batches repeats 15 samples in each epoch's last batch.
    last_steps = {max(v["step"] for v in visits if v["epoch"] == e) for e in range(2)}
    repeated = len(visits) - 2 * 81
    assert repeated == 2 * 15 and all(v["step"] in last_steps for v in visits[-16:])


def test_accelerate_is_told_the_precision_of_a_stage_that_trains_and_none_for_generation(tmp_path):
    from glowrl.launch import LocalLauncher

    def precision(stage, values):
        [command] = LocalLauncher().launch(stage, tmp_path / "r.yaml", values, None, False).steps
        return command[command.index("--mixed_precision") + 1]

    assert precision("sft", {}) == "bf16"  # TRL's default when neither bf16 nor fp16 is set
    assert precision("sft", {"bf16": False}) == "no" and precision("rl", {"fp16": True}) == "fp16"
    assert precision("generate", {}) == "no"  # it loads the teacher in its own dtype; bf16 autocast is not its to ask


def test_the_summary_repeats_no_report_printed_by_a_stage_run_now(tmp_path, capsys):
    from glowrl.pipeline import summary

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.md").write_text("| the evaluation table |\n")
    manifest = {"stages": {"eval": {"status": "done", "config": {"output_dir": str(tmp_path / "eval")}}}}
    summary(tmp_path, manifest, shown={"eval"})  # the stage ran in this invocation and printed its table
    out = capsys.readouterr().out
    assert "eval     done" in out and "the evaluation table" not in out
    summary(tmp_path, manifest)  # skipped: finished in an earlier run, so its table was not printed now
    assert capsys.readouterr().out.count("| the evaluation table |") == 1


def test_generation_run_alone_on_a_recipe_is_resumed_by_its_pipeline(tmp_path):
    from glowrl.pipeline import plan_stages

    generated = tmp_path / "generate"
    generated.mkdir()
    (generated / "trajectories.jsonl").write_text("{}\n")  # `glowrl generate --config recipe` ran first
    resolved = {"generate": {"output_dir": str(generated)}, "sft": {"output_dir": str(tmp_path / "sft")}}
    stages = plan_stages(resolved, None, overwrite=False)
    assert (stages["generate"]["action"], stages["sft"]["action"]) == ("resume", "run")
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "model.safetensors").write_text("not this pipeline's")
    with pytest.raises(ValueError, match="sft: .* holds files this pipeline never wrote"):
        plan_stages(resolved, None, overwrite=False)  # a training stage's unknown output is still refused
