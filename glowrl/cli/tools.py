"""The `glowrl` commands that are not pipeline stages: their argument parsers, and handlers that call the library.

Each entry of [`TOOLS`] is `name: (help, handler)`. A handler takes the command's arguments, parses them with its
parser (which imports nothing heavy, so `--help` is fast), imports what it runs, and returns an exit status (or `None`
for 0). It raises [`~glowrl.errors.GlowrlError`] on bad input and never prints errors itself.
"""

import argparse
from pathlib import Path

from ..chat import DEFAULT_INSTRUCTION
from ..errors import EvaluationError, GlowrlError
from ..outputs import check_output, check_suffix, clear_dir, output_lock
from .parser import Parser


def pipeline_parser() -> Parser:
    parser = Parser(
        prog="glowrl pipeline",
        description="Every stage of one recipe, in order, each under accelerate launch. Overrides: --key value "
        "(shared) and --<stage>.key value.",
    )
    parser.add_argument("--config", required=True, help="pipeline recipe with shared keys and a section per stage")
    parser.add_argument("--overwrite", action="store_true", help="re-run every stage, replacing finished outputs")
    parser.add_argument(
        "--overwrite_once",
        metavar="TOKEN",
        help="--overwrite unless the manifest records TOKEN already (glowrl slurm's job scripts pass it)",
    )
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="slurm: run each stage as srun steps of this Slurm allocation (what a `glowrl slurm` job runs)",
    )
    return parser


def pipeline(argv):
    from ..pipeline import run

    args, overrides = pipeline_parser().parse_known_args(argv)
    slurm = args.launcher == "slurm"
    return run(args.config, overrides, overwrite=args.overwrite, slurm=slurm, overwrite_once=args.overwrite_once)


def slurm_parser() -> Parser:
    from dataclasses import fields

    from ..launch import SlurmSettings

    settings = "\n".join(f"  --{f.name} (default: {f.default!r}): {f.metadata['help']}" for f in fields(SlurmSettings))
    parser = Parser(
        prog="glowrl slurm",
        description="Submit a pipeline recipe as one Slurm job: one task per node, each stage an srun step, "
        "requeue-safe. Settings come from the recipe's slurm: section and these flags; other --key value pairs "
        "override the recipe as in glowrl pipeline.",
        epilog="job settings (also slurm: keys in the recipe):\n" + settings,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="pipeline recipe")
    parser.add_argument(
        "--dry_run", action="store_true", help="print the script and each stage's launch; submit nothing"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace earlier outputs (first attempt only)")
    return parser


def slurm(argv):
    from ..slurm import submit

    args, rest = slurm_parser().parse_known_args(argv)
    submit(args.config, rest, overwrite=args.overwrite, dry_run=args.dry_run)


def study_parser() -> Parser:
    parser = Parser(
        prog="glowrl study",
        description="Every arm x seed pipeline of a study recipe (locally in turn, or as Slurm jobs), then means and "
        "95% intervals over seeds, paired differences from the reference arm, plots, study.json and study.md. "
        "A re-run skips finished runs. The study recipe's format: python -c 'import glowrl.study.design as d; "
        "print(d.__doc__)', or recipes/tiny/study.yaml.",
    )
    parser.add_argument("--config", required=True, help="study recipe (base, output_root, seeds, arms, ...)")
    parser.add_argument("--wait", action="store_true", help="with launcher: slurm, wait for the jobs, then aggregate")
    return parser


def study(argv):
    from ..study.run import run_study

    args = study_parser().parse_args(argv)
    result = run_study(args.config, wait=args.wait)
    return 0 if all(r["status"] in ("done", "queued") for r in result["runs"]) else 1


# Sampling keys `glowrl eval --config` may set (flags override them).
EVAL_CONFIG_KEYS = ("temperature", "top_p", "max_new_tokens", "seed", "num_samples")


def eval_parser() -> Parser:
    from ..evaluation.eval_sets import BENCHMARKS, KINDS, SCHEMAS, SUITES

    parser = Parser(
        prog="glowrl eval",
        description="Sample from models on benchmarks, score them, and write JSON + markdown. Without --model and "
        "--output, `glowrl eval --config recipe.yaml` runs the eval stage on a recipe's eval: section (or a flat "
        "recipe of its fields; `glowrl eval --help-all` lists them).",
    )
    add = parser.add_argument
    add("--model", action="append", required=True, help="Model directory or Hub id; repeat to compare models.")
    add("--benchmarks", help=f"Comma-separated benchmarks or suites: {','.join([*BENCHMARKS, *SUITES])}.")
    add("--benchmark_file", action="append", default=[], help="Local JSON Lines benchmark, in-domain (repeatable).")
    add(
        "--ood_benchmark_file",
        action="append",
        default=[],
        help="Local JSON Lines benchmark averaged out-of-domain (repeatable); with --benchmark_file, both domains in "
        "one run (the recipe's ood_benchmark_files).",
    )
    add("--problem_field", default="problem", help="Question field of --benchmark_file rows.")
    add("--answer_field", default="answer", help="Gold answer field of --benchmark_file rows.")
    add("--benchmark_kind", choices=KINDS, default="math", help="How --benchmark_file answers are graded.")
    add(
        "--domain",
        choices=("in", "out"),
        help="Average the --benchmark_file files in-domain (default) or out-of-domain.",
    )
    add("--benchmark_schema", choices=SCHEMAS, default="plain", help="Read --benchmark_file as a Hub set's rows.")
    add("--num_samples", type=int, default=1, help="Samples per problem (n).")
    add("--k", help="Comma-separated k shown for pass@k and maj@k in the table (default: powers of 2 up to n, and n).")
    add("--output", type=Path, required=True, help="Results JSON; the markdown table goes next to it as .md.")
    add("--backend", choices=("transformers", "vllm"), default="transformers", help="Generation backend.")
    add("--config", help=f"YAML file with any of: {', '.join(EVAL_CONFIG_KEYS)}; flags override it.")
    add("--temperature", type=float, default=0.6, help="Sampling temperature; 0 is greedy decoding.")
    add("--top_p", type=float, default=0.95, help="Nucleus sampling mass.")
    add("--max_new_tokens", type=int, default=32768, help="Generation budget per sample.")
    add("--seed", type=int, default=0, help="Sampling seed.")
    add("--system_prompt", help="System turn (default: none, the training default).")
    add("--instruction", default=DEFAULT_INSTRUCTION, help="Appended to every question (default: the paper's).")
    add("--max_problems", type=int, help="Evaluate only the first N rows of each benchmark.")
    add("--batch_size", type=int, default=8, help="Sequences per generate call (transformers backend).")
    add("--tensor_parallel_size", type=int, default=1, help="GPUs per model (vllm backend).")
    add("--choice_seed", type=int, default=0, help="Seed of the multiple-choice option shuffle.")
    add("--overwrite", action="store_true", help="Replace an existing --output (and its .md table).")
    return parser


def _eval_config(path: str) -> dict:
    from ..recipe import load_recipe

    recipe = load_recipe(path)
    for key in recipe:
        if key not in EVAL_CONFIG_KEYS:
            raise EvaluationError(f"--config {path}: unknown key '{key}'; allowed keys: {', '.join(EVAL_CONFIG_KEYS)}")
    return recipe


def evaluate(argv):
    """`glowrl eval --model M ... --output F` (flags), or the eval stage (`glowrl eval --config recipe.yaml`)."""
    if not any(a.split("=")[0] in ("--model", "--output", "-h", "--help") for a in argv):
        from ..stages import run_stage

        return run_stage("eval", argv)
    parser = eval_parser()
    args = parser.parse_args(argv)
    if args.config:  # default < YAML < flag: parse again with the YAML's values as defaults
        parser.set_defaults(**_eval_config(args.config))
        args = parser.parse_args(argv)
    check_suffix(args.output, "--output", (".json",))
    _check_eval_output(args)  # before the lock (written beside the output), so never inside a model
    with output_lock(args.output, "glowrl eval", "--output"):  # one run per output file, the holder named
        _check_eval_output(args)  # again: another run may have written it meanwhile
        return _evaluate(args)


def _check_eval_output(args) -> None:
    inputs = {"a --model": args.model, "a --benchmark_file": [*args.benchmark_file, *args.ood_benchmark_file]}
    for path, field in ((args.output, "--output"), (args.output.with_suffix(".md"), "--output (its .md table)")):
        check_output(
            path, field, kind="file", overwrite=args.overwrite, inputs=inputs, fix="pass --overwrite to replace it"
        )


def _evaluate(args):
    from ..evaluation import SamplingConfig, evaluate, select_benchmarks
    from ..models import check_model_path

    for model in args.model:
        check_model_path(model, "--model")  # a missing or truncated local model: one line before anything runs

    ks = None
    if args.k is not None:
        try:
            ks = sorted({int(k) for k in args.k.split(",") if k.strip()})
        except ValueError as error:
            raise EvaluationError(f"--k: expected comma-separated integers, got '{args.k}'") from error
    specs = select_benchmarks(
        args.benchmarks.split(",") if args.benchmarks else None,
        args.benchmark_file,
        args.problem_field,
        args.answer_field,
        args.benchmark_kind,
        args.domain,
        args.benchmark_schema,
        args.ood_benchmark_file,
    )
    from ..evaluation.eval_sets import check_local_files

    check_local_files(specs)  # an empty or gold-less file would give no metrics: refused before anything is written
    if args.max_problems is not None and args.max_problems < 1:
        raise EvaluationError(f"--max_problems must be at least 1, got {args.max_problems}")
    sampling = SamplingConfig(
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        num_samples=args.num_samples,
        seed=args.seed,
    )
    results = evaluate(
        args.model,
        specs,
        sampling,
        output=args.output,
        backend=args.backend,
        instruction=args.instruction,
        system_prompt=args.system_prompt,
        max_problems=args.max_problems,
        batch_size=args.batch_size,
        tensor_parallel_size=args.tensor_parallel_size,
        choice_seed=args.choice_seed,
        ks=ks,
    )
    print(args.output.with_suffix(".md").read_text(), end="")
    return 0 if results["complete"] else 1


def label_parser() -> Parser:
    parser = Parser(
        prog="glowrl label", description="Write a copy of a trajectory file with a `correct` column from the grader."
    )
    parser.add_argument("--input", required=True, help="trajectory file (JSONL/Parquet) or Hub dataset name")
    parser.add_argument("--output", required=True, help="labelled JSONL file to write")
    parser.add_argument("--answer_column", default="answer")
    parser.add_argument("--completion_column", default="completion")
    parser.add_argument("--prompt_column", default="prompt")
    parser.add_argument("--problem_column", default="problem")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def label(argv):
    args = label_parser().parse_args(argv)
    output = Path(args.output)
    check_suffix(output, "--output", (".jsonl",))
    check_output(output, "--output", kind="file", overwrite=args.overwrite, inputs={"--input": args.input})
    with output_lock(output, "glowrl label", "--output"):  # one run per output file, the holder named
        return _label(args, output)


def _label(args, output):
    from ..data import TrajectoryArguments, label_counts, label_trajectories, load_table, normalize_trajectories
    from ..io import write_jsonl

    check_output(output, "--output", kind="file", overwrite=args.overwrite, inputs={"--input": args.input})
    table = load_table(args.input, field="--input")
    if args.answer_column not in table.column_names:
        raise GlowrlError(
            f"--answer_column: {args.input} has no {args.answer_column!r} column to label from "
            f"(columns: {sorted(table.column_names)}); name the gold-answer column with --answer_column"
        )
    traj_args = TrajectoryArguments(
        dataset_paths=[args.input],
        answer_column=args.answer_column,
        completion_column=args.completion_column,
        prompt_column=args.prompt_column,
        problem_column=args.problem_column,
        correct_column="\0relabel",
    )
    labels = label_trajectories(normalize_trajectories(table, traj_args, args.input))["correct"]
    write_jsonl(({**row, "correct": correct} for row, correct in zip(table, labels, strict=True)), output)
    counts = label_counts(labels)
    print(
        f"Labelled {len(labels)} trajectories: {counts[True]} correct, {counts[False]} incorrect, "
        f"{counts[None]} with an unparseable gold answer -> {output}"
    )


def readiness_parser() -> Parser:
    parser = Parser(
        prog="glowrl readiness",
        description="The SFT -> RL hand-off report of a model on a recipe's RL prompts, with its sampling settings.",
    )
    parser.add_argument("--model", required=True, help="model directory or Hub name (e.g. the SFT output)")
    parser.add_argument("--config", required=True, help="a recipe with an rl: section, or a flat GRPO/RLOO recipe")
    parser.add_argument("--prompts", type=int, help="prompts to sample (default: the recipe's readiness_prompts)")
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return parser


def readiness(argv):
    args = readiness_parser().parse_args(argv)
    if args.output is None:
        return _readiness(args)
    check_suffix(args.output, "--output", (".json",))
    _readiness_output(args)  # before the lock (written beside the output), so never inside the model
    with output_lock(args.output, "glowrl readiness", "--output"):  # one run per output file, the holder named
        return _readiness(args)


def _readiness_output(args) -> None:
    if args.output is not None:
        inputs = {"--model": args.model, "--config": args.config}  # its model directory is an input too
        check_output(args.output, "--output", kind="file", overwrite=args.overwrite, inputs=inputs)


def _readiness(args):
    _readiness_output(args)
    if args.prompts is not None and args.prompts < 1:
        raise GlowrlError(f"--prompts must be at least 1, got {args.prompts}")
    from ..io import write_json
    from ..models import load_tokenizer
    from ..rl import get_algorithm
    from ..stages import get_stage, parse_stage_args
    from ..stages.rl import handoff_figures_for, handoff_text

    try:
        rl_args, *script_args, training_args, _ = parse_stage_args(
            get_stage("rl"), ["--config", args.config, "--model_name_or_path", args.model]
        )
    except GlowrlError as error:  # a flat SFT recipe: its keys are no RL fields, the closest match misleads
        if not str(error).startswith("unknown recipe key"):
            raise
        key = str(error).split("'")[1]
        raise GlowrlError(
            f"--config: {args.config} is not an RL recipe ({key!r} is no field of the rl stage); give a recipe "
            "with an rl: section, or a flat GRPO/RLOO recipe"
        ) from None
    if not hasattr(training_args, "num_generations"):
        raise GlowrlError(f"--config: rl.algorithm {rl_args.algorithm} draws no groups; the report is for grpo/rloo")
    load_tokenizer(args.model, field="--model", require_chat_template=True)  # chat prompts need a chat template
    dataset = get_algorithm(rl_args.algorithm).build_dataset(*script_args, training_args)
    rl_args.readiness_prompts = args.prompts or rl_args.readiness_prompts
    reward_funcs = get_algorithm(rl_args.algorithm).trainer_kwargs(*script_args).get("reward_funcs")
    figures = handoff_figures_for(rl_args, training_args, dataset, args.model, reward_funcs)
    print(handoff_text(f"model {args.model}", figures))
    if args.output is not None:
        write_json(figures, args.output)


def demo_parser() -> Parser:
    parser = Parser(
        prog="glowrl demo", description="The whole method on a CPU with the built-in task and a tiny model."
    )
    parser.add_argument(
        "--output_dir",
        help="where data, models and the report go (outputs/demo; with --synthetic outputs/demo-synthetic, with "
        "--study outputs/demo-study)",
    )
    parser.add_argument("--size", choices=("full", "ci"), default="full", help="ci: a few steps, same code path")
    parser.add_argument(
        "--study",
        action="store_true",
        help="the toy replication instead: a pretrained multi-task base, 4 SFT data arms x 5 seeds (~32 min, 2 cores)",
    )
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="skip stage 0: GLOW SFT on the built-in synthetic trajectories instead of a tiny teacher's samples",
    )
    parser.add_argument("--overwrite", action="store_true", help="start again in a non-empty output directory")
    return parser


def demo(argv):
    args = demo_parser().parse_args(argv)
    from ..demo.run import run

    if args.study:
        from ..demo.study import run as run_study_demo

        if args.synthetic:
            raise GlowrlError("--synthetic: the toy study always trains on synthetic trajectories; drop --synthetic")
        run_study_demo(args.output_dir or "outputs/demo-study", args.size, args.overwrite)
        return
    default = "outputs/demo-synthetic" if args.synthetic else "outputs/demo"  # both runs kept side by side
    run(args.output_dir or default, args.size, not args.synthetic, args.overwrite)


def tiny_model_parser() -> Parser:
    parser = Parser(
        prog="glowrl tiny-model", description="Build the tiny Qwen2 model and tokenizer used by the tiny recipes."
    )
    parser.add_argument("--output_dir", default="outputs/tiny/base")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_hidden_layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace what --output_dir holds")
    return parser


def tiny_model(argv):
    args = tiny_model_parser().parse_args(argv)
    from ..toy.arithmetic import tokenizer_corpus
    from ..toy.tiny_model import build_tiny_model

    for flag in ("hidden_size", "num_hidden_layers"):
        if getattr(args, flag) < 1:
            raise GlowrlError(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    if args.hidden_size % 8:  # 4 attention heads, each of an even size (rotary embeddings)
        raise GlowrlError(f"--hidden_size must be a multiple of 8 (4 heads of an even size), got {args.hidden_size}")
    check_output(args.output_dir, "--output_dir", overwrite=args.overwrite)
    clear_dir(args.output_dir)

    path = build_tiny_model(
        args.output_dir,
        tokenizer_corpus(seed=0),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        intermediate_size=2 * args.hidden_size,
        seed=args.seed,
    )
    print(f"Tiny Qwen2 model and tokenizer saved to {path}")


def arithmetic_parser() -> Parser:
    parser = Parser(
        prog="glowrl arithmetic-data", description="Write arithmetic reasoning trajectories (positives and negatives)."
    )
    parser.add_argument("--num_problems", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples_per_problem", type=int, default=4)
    parser.add_argument("--negative_fraction", type=float, default=0.5)
    parser.add_argument("--output", required=True)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


def arithmetic_data(argv):
    args = arithmetic_parser().parse_args(argv)
    from ..io import write_jsonl
    from ..toy.arithmetic import generate_trajectories

    check_suffix(args.output, "--output", (".jsonl",))
    check_output(args.output, "--output", kind="file", overwrite=args.overwrite)
    rows = generate_trajectories(
        args.num_problems,
        args.seed,
        samples_per_problem=args.samples_per_problem,
        negative_fraction=args.negative_fraction,
    )
    write_jsonl(rows, args.output)
    correct = sum(row["correct"] for row in rows)
    print(f"Wrote {len(rows)} trajectories ({correct} correct) for {args.num_problems} problems to {args.output}")


def convert_gguf(argv):
    from .convert import convert_gguf as run

    return run(argv)


TOOLS = {
    "demo": ("the whole path on a CPU: tiny teacher -> GLOW SFT -> hand-off -> GRPO -> evaluation", demo),
    "pipeline": ("every stage of a recipe in order, each under accelerate launch", pipeline),
    "study": ("the paper's comparison: every arm x seed pipeline, means and intervals over seeds, plots", study),
    "slurm": ("submit a pipeline recipe as one multi-node Slurm job (requeue-safe; --dry_run prints it)", slurm),
    "eval": ("pass@k, maj@k and inference entropy on math and out-of-domain benchmarks", evaluate),
    "label": ("label trajectories as correct/incorrect with the shared grader", label),
    "readiness": ("the SFT -> RL hand-off report of a model on a recipe's RL prompts", readiness),
    "tiny-model": ("build the tiny local Qwen2 model used by the tiny recipes", tiny_model),
    "arithmetic-data": ("write the built-in arithmetic trajectories to a file", arithmetic_data),
    "convert-gguf": ("a GGUF file (or a pip package shipping one) as a Hugging Face model directory", convert_gguf),
}
