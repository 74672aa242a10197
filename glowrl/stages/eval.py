"""The eval stage: the models the earlier stages produced (and the base model, when asked) on the recipe's benchmarks.

    glowrl pipeline --config recipes/tiny/pipeline.yaml      # with an `eval:` section after `rl:`
    glowrl eval --config my_eval.yaml                         # a flat recipe of the fields below; `glowrl eval --model
                                                              # M --benchmarks ...` (flags) is the same evaluation

Writes `<output_dir>/results.json` and `results.md` (models side by side, deltas against the first with paired 95%
intervals, in-domain and out-of-domain averages) through the evaluation API. Each (model, benchmark) evaluation is
cached under `<output_dir>/cache/`, keyed by the model's files (names, sizes, modification times) and every setting,
so a re-run evaluates only what changed. In a pipeline, an unset `models` is every model the earlier stages produced.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..chat import DEFAULT_INSTRUCTION
from ..errors import RecipeError
from .base import Stage


@dataclass
class EvalArguments:
    # docstyle-ignore
    r"""
    The evaluation stage: which models, which benchmarks, how they are sampled, where results go.

    Parameters:
        models (`list[str]`): Model directories or Hub names; in a pipeline, every model earlier stages produced.
        include_base (`bool`): Also evaluate `model_name_or_path` (in a pipeline, the shared key: the base model),
            first, so the others' deltas are against it.
        benchmarks (`list[str]`): Benchmark or suite names (`paper`, `paper_in_domain`, `paper_out_of_domain`,
            `shipped`); see `glowrl eval --help`.
        benchmark_files, ood_benchmark_files (`list[str]`): Local files averaged in-domain and out-of-domain.
    """

    ZERO_MEANS = {"temperature": "greedy decoding"}  # positive values, where 0 has a meaning (glowrl.recipe)

    models: list[str] = field(default=None, metadata={"help": "Models to evaluate (in a pipeline: every one made)."})
    model_name_or_path: str = field(default=None, metadata={"help": "The base model (evaluated with include_base)."})
    include_base: bool = field(default=False, metadata={"help": "Also evaluate model_name_or_path, first."})
    benchmarks: list[str] = field(default=None, metadata={"help": "Benchmark or suite names."})
    benchmark_files: list[str] = field(default=None, metadata={"help": "Local benchmark files, in-domain."})
    ood_benchmark_files: list[str] = field(default=None, metadata={"help": "Local benchmark files, out-of-domain."})
    problem_field: str = field(default="problem", metadata={"help": "Question field of the local files."})
    answer_field: str = field(default="answer", metadata={"help": "Gold answer field of the local files."})
    benchmark_kind: str = field(default="math", metadata={"help": "How local files are graded: math, mc or bbh."})
    num_samples: int = field(default=1, metadata={"help": "Samples per problem (n)."})
    k: list[int] = field(default=None, metadata={"help": "k shown for pass@k and maj@k (default: powers of 2 to n)."})
    temperature: float = field(default=0.6, metadata={"help": "Sampling temperature (0: greedy decoding)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling mass."})
    max_new_tokens: int = field(default=32768, metadata={"help": "Generation budget per sample."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    system_prompt: str = field(default=None, metadata={"help": "System turn (default: none, as in training)."})
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "Appended to every question."})
    max_problems: int = field(default=None, metadata={"help": "Only the first N problems of each benchmark."})
    backend: str = field(default="transformers", metadata={"help": "transformers or vllm."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per generate call (transformers)."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "GPUs per model (vllm)."})
    choice_seed: int = field(default=0, metadata={"help": "Seed of the multiple-choice option shuffle."})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where results.json and results.md go."})
    overwrite: bool = field(default=False, metadata={"help": "Replace results this stage did not write."})

    def __post_init__(self):
        for name in ("models", "benchmarks", "benchmark_files", "ood_benchmark_files", "k"):
            if isinstance(getattr(self, name), (str, int)):
                setattr(self, name, [getattr(self, name)])

    def model_list(self) -> list[str]:
        base = [self.model_name_or_path] if self.include_base and self.model_name_or_path else []
        return list(dict.fromkeys([*base, *(self.models or [])]))


def specs(args: EvalArguments) -> list:
    """The benchmarks to run: named ones and suites, then the local files with their domain."""
    from ..evaluation.eval_sets import select_benchmarks

    if not (args.benchmarks or args.benchmark_files or args.ood_benchmark_files):
        raise RecipeError("benchmarks: name at least one benchmark or suite, or give benchmark_files")
    names = [Path(path).stem for path in [*(args.benchmark_files or []), *(args.ood_benchmark_files or [])]]
    if len(set(names)) < len(names):
        raise RecipeError("benchmark_files, ood_benchmark_files: two files share a name; rename one of them")
    chosen = select_benchmarks(
        args.benchmarks or [],
        args.benchmark_files or [],
        args.problem_field,
        args.answer_field,
        args.benchmark_kind,
        "in",
        ood_files=args.ood_benchmark_files or [],
    )
    return chosen


def check(args: EvalArguments, linked=()):
    """Models named, benchmarks known and readable, sampling values in range, the output not someone else's."""
    from ..evaluation.eval_sets import check_local_files
    from ..evaluation.generation import SamplingConfig
    from ..evaluation.run import check_sampling
    from ..models import check_model_path
    from ..outputs import check_output

    if not args.model_list() and "models" not in linked:
        raise RecipeError("models: the eval stage has no model to evaluate; give models (or include_base: true)")
    for model in args.model_list() if "models" not in linked else []:
        check_model_path(model, "models")
    check_local_files(specs(args), RecipeError, "benchmark_files", "answer_field")
    check_sampling(SamplingConfig(args.temperature, args.top_p, args.max_new_tokens, args.num_samples))
    if "output_dir" not in linked:
        cached = (Path(args.output_dir) / "cache").is_dir()
        inputs = {"models": args.model_list()}  # never inside a model it evaluates, even with --overwrite
        check_output(args.output_dir, "output_dir", overwrite=args.overwrite, resume=cached, inputs=inputs)


def _read(path: Path) -> str | None:
    return path.read_text() if path.is_file() else None


def fingerprint(model: str) -> str:
    """What a cached evaluation depends on in a model: its files' names, sizes and contents (or its name).

    The content is the hash of each file's first and last MiB (the whole of a small file: configs, tokenizer), not
    its modification time, which a copy or a `touch` changes and `cp -p` keeps: retrained weights differ there.
    """
    path = Path(model)
    if not path.is_dir():
        return model
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin"))
    return json.dumps([(p.name, p.stat().st_size, _content_hash(p)) for p in files])


def _content_hash(path: Path, span: int = 2**20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(span))
        if path.stat().st_size > 2 * span:
            f.seek(-span, 2)
        digest.update(f.read(span))
    return digest.hexdigest()[:16]


def _check_same_models(path: Path, models: list[str], overwrite: bool) -> None:
    """Refuse to replace results.json holding another evaluation (a model this run does not evaluate, or no eval
    stage config) without `--overwrite`. Re-runs that add models or change benchmarks update it from the cache."""
    if overwrite or not path.is_file():
        return
    try:
        previous = json.loads(path.read_text())["config"]["models"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        previous = None
    dropped = None if previous is None else [m for m in previous if m not in models]
    if previous is None or dropped:
        what = f"the results of {', '.join(dropped)}" if dropped else "results this stage did not write"
        raise RecipeError(
            f"output_dir: {path} holds {what}, which this evaluation would replace; pass --overwrite to replace "
            "them, or choose another output_dir"
        )


def run(args: EvalArguments):
    """Evaluate every (model, benchmark) not cached, then assemble, compare and write the results."""
    from ..evaluation import SamplingConfig, default_ks, evaluate
    from ..evaluation.report import add_deltas, domain_averages, format_markdown
    from ..evaluation.run import display_names
    from ..io import write_json, write_text_atomic

    check(args)
    chosen = specs(args)
    sampling = SamplingConfig(args.temperature, args.top_p, args.max_new_tokens, args.num_samples, args.seed)
    chosen_by = ("models", "model_name_or_path", "include_base", "benchmarks", "benchmark_files")
    chosen_by += ("ood_benchmark_files",)
    settings = {k: v for k, v in asdict(args).items() if k not in (*chosen_by, "output_dir", "overwrite", "k")}
    cache = Path(args.output_dir) / "cache"
    models = args.model_list()
    _check_same_models(Path(args.output_dir) / "results.json", models, args.overwrite)
    entries = {}
    for model in models:
        keys = {
            spec.name: hashlib.sha256(json.dumps([fingerprint(model), repr(spec), settings]).encode()).hexdigest()[:20]
            for spec in chosen
        }
        todo = [spec for spec in chosen if not (cache / f"{keys[spec.name]}.json").is_file()]
        print(f"eval: {model}: {len(chosen) - len(todo)} of {len(chosen)} benchmarks cached")
        if todo:
            result = evaluate(
                [model],
                todo,
                sampling,
                backend=args.backend,
                instruction=args.instruction,
                system_prompt=args.system_prompt,
                max_problems=args.max_problems,
                batch_size=args.batch_size,
                tensor_parallel_size=args.tensor_parallel_size,
                choice_seed=args.choice_seed,
            )
            for name, benchmark in result["models"][0]["benchmarks"].items():
                write_json(benchmark, cache / f"{keys[name]}.json")
        entries[model] = {n: json.loads((cache / f"{k}.json").read_text()) for n, k in keys.items()}
    ks = args.k or default_ks(args.num_samples)
    config = {**settings, "models": models, "benchmarks": [spec.name for spec in chosen], "k": ks}
    results = {"complete": True, "config": config, "models": []}
    for model, name in zip(models, display_names(models), strict=True):
        benchmarks = entries[model]
        results["models"].append(
            {"model": model, "name": name, "benchmarks": benchmarks, "averages": domain_averages(benchmarks)}
        )
    add_deltas(results)
    output = Path(args.output_dir)
    write_json(results, output / "results.json")
    markdown = format_markdown(results, ks)
    write_text_atomic(output / "results.md", markdown)
    print(markdown)
    return results


STAGE = Stage(
    name="eval",
    help="evaluate the models earlier stages produced (and the base) on benchmarks: pass@k, entropy, 95% intervals",
    dataclass_types=lambda values: (EvalArguments,),
    run=run,
    check=check,
    inputs={"models": "model*"},
    outputs=lambda values: {"results": str(Path(values["output_dir"]) / "results.json")},
    single_process=lambda values: True,
    summary=lambda values: _read(Path(values["output_dir"]) / "results.md"),
    help_types=(EvalArguments,),
)
