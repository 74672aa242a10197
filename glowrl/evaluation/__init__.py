"""Benchmark evaluation: `glowrl eval` / `python -m glowrl.evaluation` (see [`~glowrl.evaluation.cli`])."""

from glowrl.evaluation.benchmarks import BENCHMARKS, EvaluationError, load_problems, shuffle_choices
from glowrl.evaluation.cli import main
from glowrl.evaluation.metrics import majority_at_k, normalize_bbh_answer, pass_at_k, token_entropy


__all__ = [
    "BENCHMARKS",
    "EvaluationError",
    "load_problems",
    "main",
    "majority_at_k",
    "normalize_bbh_answer",
    "pass_at_k",
    "shuffle_choices",
    "token_entropy",
]
