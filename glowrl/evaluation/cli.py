r"""`glowrl eval`: sample from one or more models on the GLOW benchmarks, score, and write JSON plus markdown results.

Quick CPU check on a few rows of every shipped benchmark:

```bash
python -m glowrl.evaluation --model outputs/Qwen2.5-0.5B-Instruct/gsm8k/sft --max_problems 5 \
    --max_new_tokens 512 --output outputs/eval/quick.json
```

The paper's protocol (T = 0.6, top-p 0.95, 32768 tokens, seed 0) on a GPU with vLLM, 8 samples per problem, SFT against
GRPO side by side:

```bash
python -m glowrl.evaluation --backend vllm --num_samples 8 \
    --model outputs/Qwen2.5-0.5B-Instruct/gsm8k/sft --model outputs/Qwen2.5-0.5B-Instruct/gsm8k/grpo \
    --benchmarks math500,aime24,amc23,gpqa_diamond,bbh --output outputs/eval/sft_vs_grpo.json
```

A local JSON Lines file is a benchmark too: `--benchmark_file my_test.jsonl --problem_field question
--answer_field solution` (math unless `--benchmark_kind mc|bbh`). Sampling keys may come from a YAML recipe
(`--config eval.yaml` holding `temperature`, `top_p`, `max_new_tokens`, `seed`, `num_samples`); flags override it.

Results go to `--output` (JSON) and the same path with `.md` (one table: a row per benchmark and model, deltas against
the first model). The JSON is rewritten atomically (temporary file, then rename) after every benchmark with
`"complete": false`, and gets `"complete": true` only once every model and benchmark is done:

```
complete, glowrl_version, created, config (every flag, and `k`: the k values in the table)
models[]: model, name,
    averages: {in_domain, out_of_domain}: benchmarks (names averaged), then each metric's unweighted mean
    benchmarks: {name}: kind (math | mc | bbh), domain (in_domain | out_of_domain),
        metrics: num_problems, num_samples, num_unscorable, accuracy, pass@1..pass@n, maj@1..maj@n,
                 no_answer_rate, truncated_rate, mean_tokens, entropy
        problems[]: id, prompt, gold, num_correct, maj_correct (maj@k for k = 1..n),
            samples[]: completion, answer, correct, num_tokens, entropy, truncated
```

`entropy` is the mean per-token entropy of the model's own samples at the sampling temperature (see
[`~glowrl.evaluation.generation`] for exactly what is measured per backend).
"""

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from glowrl import __version__
from glowrl.evaluation.benchmarks import BENCHMARKS, KINDS, EvaluationError, custom_spec, load_problems
from glowrl.evaluation.generation import (
    SamplingConfig,
    TransformersGenerator,
    VLLMGenerator,
    load_tokenizer,
    render_prompt,
    require_vllm,
)
from glowrl.evaluation.metrics import score_benchmark
from glowrl.evaluation.report import domain_averages, format_markdown, write_atomic, write_results
from glowrl.prompts import DEFAULT_INSTRUCTION


CONFIG_KEYS = ("temperature", "top_p", "max_new_tokens", "seed", "num_samples")


def make_parser() -> argparse.ArgumentParser:
    """The `glowrl eval` argument parser."""
    parser = argparse.ArgumentParser(
        prog="glowrl eval", description="Sample from models on benchmarks, score them, and write JSON + markdown."
    )
    add = parser.add_argument
    add("--model", action="append", required=True, help="Model directory or Hub id; repeat to compare models.")
    shipped = ",".join(BENCHMARKS)
    add("--benchmarks", help=f"Comma-separated shipped benchmarks, from {shipped} (default: all, or none with files).")
    add("--benchmark_file", action="append", default=[], help="Local JSON Lines benchmark (repeatable).")
    add("--problem_field", default="problem", help="Question field of --benchmark_file rows.")
    add("--answer_field", default="answer", help="Gold answer field of --benchmark_file rows.")
    add("--benchmark_kind", choices=KINDS, default="math", help="How --benchmark_file answers are graded.")
    add("--num_samples", type=int, default=SamplingConfig.num_samples, help="Samples per problem (n).")
    add("--k", help="Comma-separated k shown for pass@k and maj@k in the table (default: powers of 2 up to n, and n).")
    add("--output", type=Path, required=True, help="Results JSON; the markdown table goes next to it as .md.")
    add("--backend", choices=("transformers", "vllm"), default="transformers", help="Generation backend.")
    add("--config", help=f"YAML recipe with any of: {', '.join(CONFIG_KEYS)}; flags override it.")
    add("--temperature", type=float, default=SamplingConfig.temperature, help="Sampling temperature (> 0).")
    add("--top_p", type=float, default=SamplingConfig.top_p, help="Nucleus sampling mass.")
    add("--max_new_tokens", type=int, default=SamplingConfig.max_new_tokens, help="Generation budget per sample.")
    add("--seed", type=int, default=SamplingConfig.seed, help="Sampling seed.")
    add("--system_prompt", help="System turn (default: none, the training default).")
    add("--instruction", default=DEFAULT_INSTRUCTION, help="Appended to every question (default: the paper's).")
    add("--max_problems", type=int, help="Evaluate only the first N rows of each benchmark.")
    add("--batch_size", type=int, default=8, help="Sequences per generate call (transformers backend).")
    add("--tensor_parallel_size", type=int, default=1, help="GPUs per model (vllm backend).")
    add("--choice_seed", type=int, default=0, help="Seed of the multiple-choice option shuffle.")
    return parser


def read_recipe(path: str) -> dict:
    """Read a YAML recipe of sampling keys, rejecting any other key by name."""
    if not Path(path).is_file():
        raise EvaluationError(f"--config: {path} does not exist; pass a YAML file")
    recipe = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(recipe, dict):
        raise EvaluationError(f"--config {path}: expected a mapping of keys to values")
    for key in recipe:
        if key not in CONFIG_KEYS:
            raise EvaluationError(f"--config {path}: unknown key '{key}'; allowed keys: {', '.join(CONFIG_KEYS)}")
    return recipe


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse flags; with `--config`, its keys replace the defaults and flags still win (default < YAML < flag)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.config:
        parser.set_defaults(**read_recipe(args.config))
        args = parser.parse_args(argv)
    return args


def check_args(args: argparse.Namespace) -> list[int]:
    """Validate ranges; return the k values for the table."""
    checks = [
        ("--num_samples", args.num_samples >= 1, "must be at least 1"),
        ("--temperature", args.temperature > 0, "must be > 0 (evaluation samples; entropy needs a temperature)"),
        ("--top_p", 0 < args.top_p <= 1, "must be in (0, 1]"),
        ("--max_new_tokens", args.max_new_tokens >= 1, "must be at least 1"),
        ("--max_problems", args.max_problems is None or args.max_problems >= 1, "must be at least 1"),
        ("--batch_size", args.batch_size >= 1, "must be at least 1"),
        ("--tensor_parallel_size", args.tensor_parallel_size >= 1, "must be at least 1"),
        ("--output", args.output.suffix != ".md", "must not end in .md (the markdown table is written there)"),
    ]
    for flag, ok, message in checks:
        if not ok:
            raise EvaluationError(f"{flag} {message}")
    n = args.num_samples
    if args.k is None:
        return sorted({*(2**i for i in range(n.bit_length()) if 2**i <= n), n})
    try:
        ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
    except ValueError as error:
        raise EvaluationError(f"--k: expected comma-separated integers, got '{args.k}'") from error
    for k in ks:
        if not 1 <= k <= n:
            raise EvaluationError(f"--k: k={k} is not in [1, --num_samples={n}]; lower k or raise --num_samples")
    return ks


def select_benchmarks(args: argparse.Namespace) -> list:
    """The specs to run: shipped names from `--benchmarks`, then each `--benchmark_file`."""
    names = args.benchmarks.split(",") if args.benchmarks else ([] if args.benchmark_file else list(BENCHMARKS))
    names = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    for name in names:
        if name not in BENCHMARKS:
            raise EvaluationError(
                f"--benchmarks: unknown benchmark '{name}'; valid names: {', '.join(BENCHMARKS)} "
                "(use --benchmark_file for a local JSONL file)"
            )
    specs = [BENCHMARKS[name] for name in names]
    specs += [custom_spec(p, args.problem_field, args.answer_field, args.benchmark_kind) for p in args.benchmark_file]
    if not specs:
        raise EvaluationError("--benchmarks: no benchmark selected; name shipped ones or pass --benchmark_file")
    if len({spec.name for spec in specs}) < len(specs):
        raise EvaluationError("--benchmark_file: two benchmarks share a name; rename one of the files")
    return specs


def display_names(models: list[str]) -> list[str]:
    """Short column names: the directory name, or the full path when two models share it."""
    short = [Path(model).name or model for model in models]
    return [name if short.count(name) == 1 else model for name, model in zip(short, models, strict=True)]


def evaluate(args: argparse.Namespace, ks: list[int]) -> dict:
    """Validate every input, then generate and score model by model, checkpointing the JSON after each benchmark."""
    sampling = SamplingConfig(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        num_samples=args.num_samples,
        seed=args.seed,
    )
    specs = select_benchmarks(args)
    benchmarks = [(spec, load_problems(spec, args.max_problems, args.choice_seed)) for spec in specs]
    if args.backend == "vllm":
        require_vllm()
    tokenizers = [load_tokenizer(model) for model in args.model]
    # Inputs are valid: from here on the output file exists and says "complete": false until the very end.
    args.output.parent.mkdir(parents=True, exist_ok=True)
    config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    results = {
        "complete": False,
        "glowrl_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {**config, "k": ks},
        "models": [],
    }
    write_results(args.output, results)
    args.output.with_suffix(".md").unlink(missing_ok=True)  # a table from an earlier run would not match
    for model, name, tokenizer in zip(args.model, display_names(args.model), tokenizers, strict=True):
        if args.backend == "vllm":
            generator = VLLMGenerator(model, tokenizer, args.seed, args.tensor_parallel_size)
        else:
            generator = TransformersGenerator(model, tokenizer, batch_size=args.batch_size)
        entry = {"model": model, "name": name, "benchmarks": {}, "averages": {}}
        results["models"].append(entry)
        for spec, problems in benchmarks:
            prompts = [render_prompt(tokenizer, p.question, args.instruction, args.system_prompt) for p in problems]
            completions = generator.generate(prompts, sampling, desc=f"{name} {spec.name}")
            scored = score_benchmark(spec.kind, problems, prompts, completions, sampling.num_samples)
            domain = "in_domain" if spec.in_domain else "out_of_domain"
            entry["benchmarks"][spec.name] = {"kind": spec.kind, "domain": domain, **scored}
            entry["averages"] = domain_averages(entry["benchmarks"])
            write_results(args.output, results)
        generator.close()
    return results


def main(argv: list[str] | None = None) -> int:
    """Run `glowrl eval`; return the exit status (2 on bad input, with a one-line message on stderr)."""
    try:
        args = parse_args(argv)  # argparse itself exits 2 on unknown flags
        ks = check_args(args)
        results = evaluate(args, ks)
    except EvaluationError as error:
        sys.stderr.write(f"glowrl eval: error: {error}\n")
        return 2
    markdown = format_markdown(results, ks)
    write_atomic(args.output.with_suffix(".md"), markdown)
    results["complete"] = True
    write_results(args.output, results)
    sys.stdout.write(markdown)
    return 0
