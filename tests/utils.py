"""Helpers shared by the tests (fixtures are in conftest.py)."""

from pathlib import Path

from glowrl.io import read_jsonl


REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "cpu_training_args", "read_jsonl"]


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
