"""The `glowrl` command: one table of commands, one error printer. The only module that prints errors or exits.

    glowrl demo                                     the main job on a CPU, nothing downloaded
    glowrl pipeline --config recipe.yaml            every stage of a recipe, each under accelerate launch
    glowrl <stage> --config recipe.yaml [--k v]     one stage (sft, rl, ...) in this process
    glowrl eval --model PATH --benchmarks math500   pass@k, maj@k, inference entropy
    glowrl label --input t.jsonl --output l.jsonl   label trajectories with the shared grader

Every stage is also `accelerate launch -m glowrl <stage>`. Bad input prints one `glowrl: error: ...` line naming the
field and the fix and exits with status 2 (`GLOWRL_TRACEBACK=1` shows the traceback instead); a demo that did not
learn exits with status 1. `glowrl --help` and `glowrl <command> --help` import neither torch nor TRL.
"""

import os
import sys
import warnings
from dataclasses import MISSING, fields

from ..errors import LearningCheckFailed
from ..processes import DIE_WITH_PARENT_ENV, RunInterrupted, die_with_parent
from ..stages import available_stages, get_stage, run_stage
from ..stages.base import say_deepspeed_runs_on_cpu
from ..threads import apply_thread_policy
from .tools import TOOLS


def print_error(message: str) -> None:
    """The one way glowrl reports bad input: a single line on stderr."""
    print(f"glowrl: error: {message}", file=sys.stderr)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def run_guarded(fn, argv: list[str]) -> int:
    """Run `fn(argv)`; turn bad input and file-system errors into one error line and exit status 2, a failed learning
    check into 1, and an interruption into 128 + the signal number."""
    try:
        result = fn(argv)
    except (ValueError, OSError, LearningCheckFailed, RunInterrupted, KeyboardInterrupt) as error:
        if os.environ.get("GLOWRL_TRACEBACK"):
            raise
        if isinstance(error, RunInterrupted):
            print(file=sys.stderr)  # the stopped stage may have left a progress bar mid-line
            print_error(f"{error}; re-run the same command to resume from the last complete checkpoint")
            return 128 + error.signum
        if isinstance(error, KeyboardInterrupt):
            print_error("interrupted")
            return 130
        if isinstance(error, OSError) and error.filename:  # a path the system refused (/proc, a full disk)
            print_error(f"{error.filename}: {error.strerror}; check the path and its permissions")
            return 2
        print_error(_first_line(error))
        return 1 if isinstance(error, LearningCheckFailed) else 2
    return result if isinstance(result, int) else 0


def _field_help(dataclass_types) -> list[str]:
    lines = []
    for dataclass_type in dataclass_types:
        for f in fields(dataclass_type):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            default = None if default is MISSING else default
            lines.append(f"  --{f.name} (default: {default!r})\n      {f.metadata.get('help', '')}")
    return lines


def stage_help(name: str, argv: list[str]) -> str:
    """`glowrl <stage> --help` without importing TRL; `--help-all` lists every field (imports TRL)."""
    stage = get_stage(name)
    if "--help-all" in argv:
        from transformers import HfArgumentParser

        from ..stages import selected_dataclass_types

        return HfArgumentParser(selected_dataclass_types(stage, {}, argv)).format_help()
    lines = [
        f"usage: glowrl {name} [--config RECIPE.yaml] [--field value ...]",
        f"       accelerate launch [--config_file CONFIG.yaml] -m glowrl {name} [--config RECIPE.yaml] ...",
        "",
        stage.help,
        "",
        "fields (in the recipe, or as --field value):",
        *_field_help(stage.help_types),
    ]
    if stage.help_note:
        lines += ["", f"{stage.help_note}; `glowrl {name} --help-all` lists every field."]
    return "\n".join(lines) + "\n"


def usage() -> str:
    stages = {name: get_stage(name).help for name in available_stages() if name not in TOOLS}
    commands = {**{name: help_ for name, (help_, _) in TOOLS.items()}, **stages}
    width = max(map(len, commands)) + 2
    lines = [f"  {name:<{width}} {help_}" for name, help_ in commands.items()]
    return "usage: glowrl <command> [options]\n\ncommands:\n" + "\n".join(lines) + "\n"


# Deprecation notices that TRL's own defaults trigger on every run, which a user can do nothing about.
QUIET_WARNINGS = (r".*gradient_checkpointing.* is deprecated", r".*is_gradient_checkpointing.* is deprecated")


def main(argv: list[str] | None = None) -> int:
    """Run one `glowrl` command; returns its exit status."""
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if not any(a in ("-h", "--help", "--help-all") for a in rest):
        apply_thread_policy()  # before anything imports torch: glowrl.threads says why and how many
        say_deepspeed_runs_on_cpu()
    if command in TOOLS and not (command in available_stages() and "--help-all" in rest):
        return run_guarded(TOOLS[command][1], rest)
    if command in available_stages():
        if any(a in ("-h", "--help", "--help-all") for a in rest):
            return run_guarded(lambda a: print(stage_help(command, a), end=""), rest)
        if os.environ.get(DIE_WITH_PARENT_ENV):
            die_with_parent()  # started by `glowrl pipeline`: never outlive it
        return run_guarded(lambda a: run_stage(command, a), rest)
    sys.stderr.write(usage())
    print_error(f"unknown command {command!r}")
    return 2
