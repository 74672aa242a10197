"""Pipeline stages, one module each, found by name: `sft` (GLOW SFT) and `rl` (an RL algorithm from its model).

A stage module exports `STAGE = Stage(...)`; its recipe section, its `glowrl <name>` command and its place in the
pipeline follow from that record (see [`~glowrl.stages.base`]). Adding a stage is one file.
"""

from .base import (
    Stage,
    available_stages,
    get_stage,
    parse_stage_args,
    register_stage,
    resolve_recipe,
    run_stage,
    selected_dataclass_types,
    unregister_stage,
)


__all__ = [
    "Stage",
    "available_stages",
    "get_stage",
    "parse_stage_args",
    "register_stage",
    "resolve_recipe",
    "run_stage",
    "selected_dataclass_types",
    "unregister_stage",
]
