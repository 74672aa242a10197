"""GLOW SFT under real multi-process training on CPU: 2-process DDP (gloo) and DeepSpeed ZeRO-2.

Each run goes through `accelerate launch -m glowrl sft`, the command users run, and must give the same per-sample
GLOW weights as one process with the same global batch.

    python -m pytest tests/test_distributed.py
"""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from utils import REPO, read_jsonl


pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sft(tmp_path, name, tiny_model_dir, trajectory_file, per_device_batch, accelerate_config=None) -> Path:
    out = tmp_path / name
    recipe = yaml.safe_load((REPO / "recipes/tiny/sft.yaml").read_text())
    recipe.update(
        model_name_or_path=tiny_model_dir,
        dataset_paths=[trajectory_file],
        output_dir=str(out),
        num_train_epochs=3,
        per_device_train_batch_size=per_device_batch,
        save_strategy="no",
        glow_alpha=2.0,
        glow_beta=10.0,
        logging_steps=1,
        learning_rate=5e-3,
        warmup_steps=0,
    )
    recipe_path = tmp_path / f"{name}.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    if accelerate_config is None:
        cmd = [sys.executable, "-m", "glowrl", "sft", "--config", str(recipe_path)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(REPO / accelerate_config),
            "--main_process_port",
            str(free_port()),
            "-m",
            "glowrl",
            "sft",
            "--config",
            str(recipe_path),
        ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "find_unused_parameters" not in result.stderr  # glowrl's default: no extra autograd pass, no warning
    return out


def weights_by_visit(out: Path) -> dict:
    return {(v["epoch"], v["sample_id"]): v for v in read_jsonl(out / "glow_samples.jsonl")}


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, tiny_model_dir, trajectory_file):
    return weights_by_visit(run_sft(tmp_path_factory.mktemp("single"), "single", tiny_model_dir, trajectory_file, 8))


def assert_same_weights(reference: dict, other: dict):
    assert reference.keys() == other.keys()  # every sample visited exactly once per epoch, on some rank
    assert any(v["weight"] != 1.0 for v in reference.values())
    for key, visit in reference.items():
        assert other[key]["loss"] == pytest.approx(visit["loss"], rel=1e-4, abs=1e-5), key
        assert other[key]["weight"] == pytest.approx(visit["weight"], abs=1e-4), key


def test_two_process_ddp_gives_the_same_weights_as_one_process(
    tmp_path, tiny_model_dir, trajectory_file, single_process
):
    out = run_sft(tmp_path, "ddp", tiny_model_dir, trajectory_file, 4, "accelerate_configs/cpu_ddp.yaml")
    assert_same_weights(single_process, weights_by_visit(out))
    assert (out / "model.safetensors").is_file()


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_zero2_gives_the_same_weights_as_one_process(
    tmp_path, tiny_model_dir, trajectory_file, single_process
):
    out = run_sft(tmp_path, "zero2", tiny_model_dir, trajectory_file, 4, "accelerate_configs/cpu_zero2.yaml")
    assert_same_weights(single_process, weights_by_visit(out))
