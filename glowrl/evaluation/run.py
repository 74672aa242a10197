r"""The evaluation API: models, benchmarks and sampling settings in; results out. No argument parsing.

```python
from glowrl.evaluation import SamplingConfig, evaluate

results = evaluate(["outputs/glow/sft", "outputs/glow/rl"], ["math500", "gpqa_diamond"],
                   SamplingConfig(num_samples=8), output="outputs/eval/results.json")
```

`glowrl eval`, the evaluation stage and the demo all call [`evaluate`]. With `output`, the JSON is rewritten
atomically after every benchmark with `"complete": false`, and gets `"complete": true` only once every model and
benchmark is done; the markdown table goes next to it (same path, `.md`). The JSON holds:

```
complete, glowrl_version, created, config (the settings, and `k`: the k values in the table)
models[]: model, name,
    averages: {in_domain, out_of_domain}: benchmarks (names averaged), then each metric's unweighted mean
    deltas (every model after the first): benchmarks: {name: [delta, low, high]}, averages: {domain: [...]},
        its accuracy minus the first model's with the paired 95% interval (`report.compare`)
    benchmarks: {name}: kind (math | mc | bbh), domain (in_domain | out_of_domain),
        metrics: num_problems, num_samples, num_unscorable, accuracy, pass@1..pass@n, maj@1..maj@n,
                 no_answer_rate, truncated_rate, mean_tokens, entropy
        problems[]: id, prompt, gold, num_correct, maj_correct (maj@k for k = 1..n),
            samples[]: completion, answer, correct, num_tokens, entropy, truncated
```

`entropy` is the mean per-token entropy of the model's own samples at the sampling temperature (see
[`~glowrl.evaluation.generation`] for exactly what is measured per backend).
"""

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from .._version import __version__
from ..chat import DEFAULT_INSTRUCTION
from ..errors import EvaluationError
from ..io import write_text_atomic
from ..vllm_support import check_vllm_model
from .eval_sets import BENCHMARKS, BenchmarkSpec, load_problems
from .generation import (
    SamplingConfig,
    TransformersGenerator,
    VLLMGenerator,
    load_tokenizer,
    render_prompt,
    require_vllm,
)
from .metrics import score_benchmark
from .report import add_deltas, domain_averages, format_markdown


BACKENDS = ("transformers", "vllm")


def default_ks(num_samples: int) -> list[int]:
    """The k shown for pass@k and maj@k: powers of 2 up to n, and n."""
    return sorted({*(2**i for i in range(num_samples.bit_length()) if 2**i <= num_samples), num_samples})


def display_names(models: Sequence[str]) -> list[str]:
    """Short column names: the directory name, or the full path when two models share it."""
    short = [Path(model).name or model for model in models]
    return [name if short.count(name) == 1 else model for name, model in zip(short, models, strict=True)]


def check_sampling(sampling: SamplingConfig) -> None:
    """Raise an [`~glowrl.errors.EvaluationError`] naming the flag for a sampling value out of range."""
    checks = [
        ("--num_samples", sampling.num_samples >= 1, "must be at least 1"),
        ("--temperature", sampling.temperature >= 0, "must be >= 0 (0: greedy decoding)"),
        (
            "--num_samples",
            sampling.temperature > 0 or sampling.num_samples == 1,
            "must be 1 with --temperature 0 (greedy decoding gives one completion per problem)",
        ),
        ("--top_p", 0 < sampling.top_p <= 1, "must be in (0, 1]"),
        ("--max_new_tokens", sampling.max_new_tokens >= 1, "must be at least 1"),
    ]
    for flag, ok, message in checks:
        if not ok:
            raise EvaluationError(f"{flag} {message}")


def _write(output: Path, results: dict) -> None:
    write_text_atomic(output, json.dumps(results, indent=1, ensure_ascii=False) + "\n")


def evaluate(
    models: Sequence[str],
    benchmarks: Sequence[str | BenchmarkSpec],
    sampling: SamplingConfig | None = None,
    *,
    output: str | Path | None = None,
    backend: str = "transformers",
    instruction: str | None = DEFAULT_INSTRUCTION,
    system_prompt: str | None = None,
    max_problems: int | None = None,
    batch_size: int = 8,
    tensor_parallel_size: int = 1,
    choice_seed: int = 0,
    ks: Sequence[int] | None = None,
    config: dict | None = None,
) -> dict:
    """Sample from every model on every benchmark, score, and return (and optionally write) the results.

    Every input is checked before the first model loads: benchmark names and files, rows, tokenizers, the backend.

    Args:
        models: Model directories or Hub ids, compared side by side (deltas against the first).
        benchmarks: Shipped benchmark names (`glowrl.evaluation.BENCHMARKS`) or [`BenchmarkSpec`]s of custom files.
        sampling: Temperature, top-p, token budget, samples per problem and seed (default: the paper's protocol).
        output: Results JSON to write (the markdown table goes to the same path with `.md`); nothing written if `None`.
        backend: `"transformers"` (CPU or GPU) or `"vllm"` (GPU).
        instruction, system_prompt: The prompt, as in training.
        max_problems: Evaluate only the first N rows of each benchmark.
        batch_size: Sequences per `generate` call (transformers backend).
        tensor_parallel_size: GPUs per model (vllm backend).
        choice_seed: Seed of the multiple-choice option shuffle.
        ks: The k shown for pass@k and maj@k in the table (default [`default_ks`]); every k <= n is in the JSON.
        config: Extra settings to record in the results' `config`.

    Returns:
        `dict`: the results (see the module docstring), with `"complete": true`.
    """
    sampling = sampling or SamplingConfig()
    check_sampling(sampling)
    if backend not in BACKENDS:
        raise EvaluationError(f"--backend: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    for flag, value in (("--batch_size", batch_size), ("--tensor_parallel_size", tensor_parallel_size)):
        if value < 1:
            raise EvaluationError(f"{flag} must be at least 1")
    if max_problems is not None and max_problems < 1:
        raise EvaluationError("--max_problems must be at least 1")
    if not models:
        raise EvaluationError("--model: give at least one model directory or Hub id")
    ks = list(ks) if ks is not None else default_ks(sampling.num_samples)
    for k in ks:
        if not 1 <= k <= sampling.num_samples:
            raise EvaluationError(f"--k: k={k} is not in [1, --num_samples={sampling.num_samples}]")
    output = Path(output) if output is not None else None
    if output is not None and output.suffix == ".md":
        raise EvaluationError("--output must not end in .md (the markdown table is written there)")
    specs = [BENCHMARKS[b] if isinstance(b, str) and b in BENCHMARKS else b for b in benchmarks]
    unknown = [b for b in specs if not isinstance(b, BenchmarkSpec)]
    if unknown:
        raise EvaluationError(f"--benchmarks: unknown benchmark {unknown[0]!r}; valid names: {', '.join(BENCHMARKS)}")
    loaded = [(spec, load_problems(spec, max_problems, choice_seed)) for spec in specs]
    if backend == "vllm":
        require_vllm()
        for model in models:
            check_vllm_model(model, "--model", EvaluationError)
    tokenizers = [load_tokenizer(model) for model in models]

    settings = {
        "models": list(models),
        "benchmarks": [spec.name for spec in specs],
        **{k: getattr(sampling, k) for k in ("temperature", "top_p", "max_new_tokens", "num_samples", "seed")},
        "backend": backend,
        "instruction": instruction,
        "system_prompt": system_prompt,
        "max_problems": max_problems,
        "choice_seed": choice_seed,
        **(config or {}),
        "k": ks,
    }
    results = {
        "complete": False,
        "glowrl_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": settings,
        "models": [],
    }
    if output is not None:
        _write(output, results)
        output.with_suffix(".md").unlink(missing_ok=True)  # a table from an earlier run would not match
    for model, name, tokenizer in zip(models, display_names(models), tokenizers, strict=True):
        if backend == "vllm":
            generator = VLLMGenerator(model, tokenizer, sampling.seed, tensor_parallel_size)
        else:
            generator = TransformersGenerator(model, tokenizer, batch_size=batch_size)
        entry = {"model": model, "name": name, "benchmarks": {}, "averages": {}}
        results["models"].append(entry)
        for spec, problems in loaded:
            prompts = [render_prompt(tokenizer, p.question, instruction, system_prompt) for p in problems]
            completions = generator.generate(prompts, sampling, desc=f"{name} {spec.name}")
            scored = score_benchmark(spec.kind, problems, prompts, completions, sampling.num_samples)
            domain = "in_domain" if spec.in_domain else "out_of_domain"
            entry["benchmarks"][spec.name] = {"kind": spec.kind, "domain": domain, **scored}
            entry["averages"] = domain_averages(entry["benchmarks"])
            if output is not None:
                _write(output, results)
        generator.close()
    add_deltas(results)
    results["complete"] = True
    if output is not None:
        write_text_atomic(output.with_suffix(".md"), format_markdown(results, ks))
        _write(output, results)
    return results
