"""Helpers shared by the tests (fixtures are in conftest.py)."""

from pathlib import Path

from glowrl.io import read_jsonl


REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "assert_entropy_split_recombines", "cpu_training_args", "flags", "read_jsonl"]


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
