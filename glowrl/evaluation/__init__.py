"""Evaluation: pass@k, maj@k and inference entropy of models on math and out-of-domain benchmarks.

`eval_sets` reads benchmark rows (shipped files and custom JSONL); `metrics` scores answers and computes pass@k, maj@k
and entropy (pure functions); `generation` samples with transformers or vLLM; `report` averages and tabulates;
`run` is the API ([`evaluate`]) that `glowrl eval`, the pipeline and the demo call. The names below are imported on
first use, so importing the package (e.g. for `glowrl eval --help`) does not load torch.
"""

from importlib import import_module


_EXPORTS = {
    "BENCHMARKS": "glowrl.evaluation.eval_sets",
    "BenchmarkSpec": "glowrl.evaluation.eval_sets",
    "custom_spec": "glowrl.evaluation.eval_sets",
    "load_problems": "glowrl.evaluation.eval_sets",
    "select_benchmarks": "glowrl.evaluation.eval_sets",
    "shuffle_choices": "glowrl.evaluation.eval_sets",
    "majority_at_k": "glowrl.evaluation.metrics",
    "normalize_bbh_answer": "glowrl.evaluation.metrics",
    "pass_at_k": "glowrl.evaluation.metrics",
    "token_entropy": "glowrl.evaluation.metrics",
    "SamplingConfig": "glowrl.evaluation.generation",
    "default_ks": "glowrl.evaluation.run",
    "evaluate": "glowrl.evaluation.run",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
