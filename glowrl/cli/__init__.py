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
from dataclasses import MISSING, fields

from ..errors import LearningCheckFailed
from ..stages import available_stages, get_stage, run_stage
from .tools import TOOLS


def print_error(message: str) -> None:
    """The one way glowrl reports bad input: a single line on stderr."""
    print(f"glowrl: error: {message}", file=sys.stderr)


def run_guarded(fn, argv: list[str]) -> int:
    """Run `fn(argv)`; turn bad input into one error line and exit status 2, a failed learning check into 1."""
    try:
        result = fn(argv)
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("GLOWRL_TRACEBACK"):
            raise
        print_error(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        return 2
    except LearningCheckFailed as error:
        print_error(str(error))
        return 1
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
    stages = {name: get_stage(name).help for name in available_stages()}
    commands = {**{name: help_ for name, (help_, _) in TOOLS.items()}, **stages}
    width = max(map(len, commands)) + 2
    lines = [f"  {name:<{width}} {help_}" for name, help_ in commands.items()]
    return "usage: glowrl <command> [options]\n\ncommands:\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run one `glowrl` command; returns its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command in TOOLS:
        return run_guarded(TOOLS[command][1], rest)
    if command in available_stages():
        if any(a in ("-h", "--help", "--help-all") for a in rest):
            return run_guarded(lambda a: print(stage_help(command, a), end=""), rest)
        return run_guarded(lambda a: run_stage(command, a), rest)
    sys.stderr.write(usage())
    print_error(f"unknown command {command!r}")
    return 2
