"""The `glowrl` command: one entry point for every stage and tool.

    glowrl demo [--output_dir DIR]                         the main job on a CPU, nothing downloaded
    glowrl sft --config recipe.yaml [--field value ...]      GLOW SFT (stage 1)
    glowrl pipeline --config recipe.yaml [--rl.field value ...] SFT then RL, one command
    glowrl grpo --config recipe.yaml [--field value ...]     GRPO from the SFT checkpoint (stage 2)
    glowrl rl --config recipe.yaml                           stage 2 with rl.algorithm: grpo | rloo | dpo | kto
    glowrl eval --model PATH --benchmarks math500,gpqa_diamond    pass@k, maj@k, inference entropy
    glowrl label --input trajectories.jsonl --output labelled.jsonl

Every subcommand is also a module runnable under `accelerate launch -m glowrl.<stage>`. Errors in recipes, data or
arguments print one line naming the field and the fix, and exit with status 2.
"""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path


def run_guarded(fn, argv: list[str] | None = None) -> int:
    """Run `fn(argv)`; turn a configuration or data error into one `glowrl: error:` line and exit status 2."""
    try:
        return fn(argv)
    except (ValueError, FileNotFoundError) as e:
        if os.environ.get("GLOWRL_TRACEBACK"):
            raise
        print(f"glowrl: error: {e}", file=sys.stderr)
        return 2


def label_cli(argv: list[str] | None = None) -> int:
    """`glowrl label`: write a copy of a trajectory file with a `correct` column checked by math-verify."""
    from .data import TrajectoryArguments, label_trajectories, load_table, normalize_trajectories

    parser = argparse.ArgumentParser(prog="glowrl label", description=label_cli.__doc__)
    parser.add_argument("--input", required=True, help="trajectory file (JSONL/Parquet) or Hub dataset name")
    parser.add_argument("--output", required=True, help="labelled JSONL file to write")
    parser.add_argument("--answer_column", default="answer")
    parser.add_argument("--completion_column", default="completion")
    parser.add_argument("--prompt_column", default="prompt")
    parser.add_argument("--problem_column", default="problem")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise ValueError(f"--output: {output} exists; pass --overwrite to replace it")
    table = load_table(args.input)
    if args.answer_column not in table.column_names:
        raise ValueError(
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
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=output.parent, suffix=".tmp", delete=False) as f:
        for row, correct in zip(table, labels, strict=True):
            f.write(json.dumps({**row, "correct": correct}, default=str) + "\n")
    os.replace(f.name, output)
    counts = {c: labels.count(c) for c in (True, False, None)}
    print(
        f"Labelled {len(labels)} trajectories: {counts[True]} correct, {counts[False]} incorrect, "
        f"{counts[None]} with an unparseable gold answer -> {output}"
    )
    return 0


def _sft(argv):
    from .sft import cli

    return cli(argv)


def _grpo(argv):
    from .rl import cli

    return cli(argv, algorithms=("grpo",), default="grpo")


def _rl(argv):
    from .rl import cli

    return cli(argv)


def _pipeline(argv):
    from .pipeline import main

    return main(argv)


def _eval(argv):
    from .evaluation import main

    return main(argv)


def _tiny_model(argv):
    """`glowrl tiny-model --output_dir DIR`: build the tiny Qwen2 model and tokenizer used by the tiny recipes."""
    from .arithmetic import tokenizer_corpus
    from .tiny_model import build_tiny_model

    parser = argparse.ArgumentParser(prog="glowrl tiny-model", description=_tiny_model.__doc__)
    parser.add_argument("--output_dir", default="outputs/tiny/base")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_hidden_layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = build_tiny_model(
        args.output_dir,
        tokenizer_corpus(seed=0),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        intermediate_size=2 * args.hidden_size,
        seed=args.seed,
    )
    print(f"Tiny Qwen2 model and tokenizer saved to {path}")
    return 0


def _demo(argv):
    from .demo import main

    return main(argv)


COMMANDS = {
    "demo": (_demo, "the whole method on a CPU: built-in task, tiny model, GLOW SFT"),
    "sft": (_sft, "GLOW-weighted SFT on trajectories (stage 1)"),
    "pipeline": (_pipeline, "SFT then RL from one recipe, each stage under accelerate launch"),
    "rl": (_rl, "the RL stage with the recipe's algorithm: grpo, rloo, dpo or kto"),
    "grpo": (_grpo, "GRPO with math rewards and rollout entropy, from the SFT checkpoint (stage 2)"),
    "eval": (_eval, "pass@k, maj@k and inference entropy on math and out-of-domain benchmarks"),
    "label": (label_cli, "label trajectories as correct/incorrect with math-verify"),
    "tiny-model": (_tiny_model, "build the tiny local Qwen2 model used by the tiny recipes"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        lines = "\n".join(f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items())
        asked = not argv or argv[0] in ("-h", "--help")
        print(f"usage: glowrl <command> [options]\n\ncommands:\n{lines}", file=sys.stdout if asked else sys.stderr)
        if not asked:
            print(f"glowrl: error: unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if asked else 2
    fn, _ = COMMANDS[argv[0]]
    return run_guarded(fn, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
