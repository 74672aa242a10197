"""Helpers shared by the tests (fixtures are in conftest.py)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glowrl.io import read_jsonl


REPO = Path(__file__).resolve().parents[1]

__all__ = [
    "REPO",
    "assert_entropy_split_recombines",
    "assert_same_weights",
    "cpu_training_args",
    "flags",
    "free_port",
    "read_jsonl",
    "run_sft",
    "weights_by_visit",
]


def cpu_training_args(output_dir, **overrides) -> dict:
    """Keyword arguments for a fast, deterministic CPU run of any TRL config (see trl-1.16 notes, traps T1/T2)."""
    return {
        "output_dir": str(output_dir),
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "learning_rate": 5e-3,
        "logging_steps": 1,
        "seed": 0,
        "dataloader_num_workers": 0,
        **overrides,
    }


def flags(**values) -> list[str]:
    """`--key value` command-line pairs, in order: `flags(max_steps=2)` -> `["--max_steps", "2"]`."""
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def assert_entropy_split_recombines(rows: list[dict]) -> None:
    """With every rollout scored and one micro-batch per step, the token-weighted combination of entropy/correct and
    entropy/incorrect is TRL's own `entropy` for that step."""
    for row in rows:
        tokens_c, tokens_i = row["entropy/tokens_correct"], row["entropy/tokens_incorrect"]
        combined = (tokens_c * row.get("entropy/correct", 0.0) + tokens_i * row.get("entropy/incorrect", 0.0)) / (
            tokens_c + tokens_i
        )
        assert abs(combined - row["entropy"]) <= 1e-5, row


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


def assert_same_weights(reference: dict, other: dict):
    assert reference.keys() == other.keys()  # every sample visited exactly once per epoch, on some rank
    assert any(v["weight"] != 1.0 for v in reference.values())
    for key, visit in reference.items():
        assert other[key]["loss"] == pytest.approx(visit["loss"], rel=1e-4, abs=1e-5), key
        assert other[key]["weight"] == pytest.approx(visit["weight"], abs=1e-4), key
