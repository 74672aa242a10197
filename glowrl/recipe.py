"""Recipe files: one YAML for one stage, or one YAML for the whole SFT → RL pipeline.

A stage recipe is flat: every key is a field of that stage's dataclasses. A pipeline recipe has shared keys at the
top level and a section per stage:

    model_name_or_path: Qwen/Qwen2.5-7B        # shared: used by every stage that has the field
    output_root: outputs/qwen7b-glow            # stage outputs go to <output_root>/sft and <output_root>/rl
    sft:
      glow_alpha: 1.0
    rl:
      algorithm: grpo

`glowrl sft --config pipeline.yaml` reads the shared keys plus `sft:`. Precedence: dataclass default < shared key <
stage section < command line. Unknown keys, anywhere, are errors that name the key and suggest the closest field.
An `env:` mapping sets environment variables before anything is built.
"""

import difflib
import os
import sys
from dataclasses import fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser


STAGES = ("sft", "rl")
# Keys only the pipeline reads; accepted at the top level of any recipe and ignored by the stages.
PIPELINE_KEYS = ("output_root", "accelerate_config", "env")
# The RL trainers glowrl runs on the GLOW checkpoint (`rl: {algorithm: ...}`), each with its own stage module.
RL_ALGORITHMS = {"grpo": "glowrl.grpo", "rloo": "glowrl.rloo", "dpo": "glowrl.preference", "kto": "glowrl.preference"}


class RecipeError(ValueError):
    """A recipe or command line that cannot be parsed; the message names the key and the fix."""


def load_recipe(path: str | Path) -> dict:
    """Read a YAML recipe into a dict, with a clear error for a missing file or a non-mapping document."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"--config: recipe file {path} does not exist")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"--config: {path} is not valid YAML: {e}") from e
    if not isinstance(recipe, dict):
        raise RecipeError(f"--config: {path} must hold a mapping of keys to values")
    return recipe


def _field_names(dataclass_types) -> set[str]:
    return {f.name for dt in dataclass_types for f in fields(dt)}


def _unknown_key_error(key: str, known: set[str], where: str) -> RecipeError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return RecipeError(f"unknown recipe key {key!r} in {where}{hint}")


def stage_values(recipe: dict, stage: str, dataclass_types, other_stage_fields: set[str] = frozenset()) -> dict:
    """Flatten `recipe` into the keyword values of one stage's dataclasses.

    A flat recipe is used as is. In a sectioned recipe, the shared keys this stage has are merged with its section
    (the section wins). A shared key that only another stage has is allowed (it is that stage's) and skipped here.

    Raises:
        RecipeError: for a key that no stage knows.
    """
    known = _field_names(dataclass_types)
    sectioned = any(s in recipe for s in STAGES)
    if sectioned and "output_dir" in recipe:
        raise RecipeError(
            "output_dir: a shared output_dir would send both stages to one directory; set output_root (stages write "
            "to <output_root>/sft and <output_root>/rl) or an output_dir inside each section"
        )
    values = {}
    for key, value in recipe.items():
        if key in STAGES or key in PIPELINE_KEYS:
            continue
        if key in known:
            values[key] = value
        elif not (sectioned and key in other_stage_fields):
            raise _unknown_key_error(key, known | set(PIPELINE_KEYS) | other_stage_fields, "the recipe")
    section = recipe.get(stage) or {}
    if not isinstance(section, dict):
        raise RecipeError(f"section {stage}: must be a mapping of keys to values")
    for key, value in section.items():
        if stage == "rl" and key == "algorithm":
            continue  # read by `rl_algorithm`, which picked these dataclasses
        if key not in known:
            raise _unknown_key_error(key, known, f"section {stage}:")
        values[key] = value
    if sectioned and recipe.get("output_root"):
        root = Path(recipe["output_root"])
        values.setdefault("output_dir", str(root / stage))
        if stage == "rl" and "model_name_or_path" not in section:
            values["model_name_or_path"] = str(root / "sft")  # RL starts from the SFT stage's output
    return values


def rl_algorithm(recipe: dict) -> str:
    """The RL algorithm a recipe asks for (`rl: {algorithm: ...}`, default `grpo`), checked against `RL_ALGORITHMS`."""
    algorithm = (recipe.get("rl") or {}).get("algorithm", "grpo")
    if algorithm not in RL_ALGORITHMS:
        raise RecipeError(f"rl.algorithm: unknown algorithm {algorithm!r}; choose one of {', '.join(RL_ALGORITHMS)}")
    return algorithm


def parse_stage_args(dataclass_types, stage: str, argv: list[str] | None = None):
    """Parse `--config recipe.yaml` plus `--field value` overrides into instances of `dataclass_types`.

    With a pipeline recipe, shared keys that only the other stage has are allowed and skipped.

    Returns:
        `tuple`: one instance per dataclass type, in order.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(dataclass_types)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs a recipe path")
        recipe = load_recipe(argv[i + 1])
        del argv[i : i + 2]
        env = recipe.get("env") or {}
        if not isinstance(env, dict):
            raise RecipeError("env: must be a mapping of environment variable names to values")
        os.environ.update({k: str(v) for k, v in env.items()})
        other_stage_fields = set()
        if any(s in recipe for s in STAGES):
            from .pipeline import stage_dataclass_types  # the pipeline knows every stage's dataclasses

            other = "rl" if stage == "sft" else "sft"
            other_stage_fields = _field_names(stage_dataclass_types(other, rl_algorithm(recipe)))
        values = stage_values(recipe, stage, dataclass_types, other_stage_fields)
        parser.set_defaults(**values)
        for action in parser._actions:  # a value from the recipe satisfies a required field
            if action.dest in values:
                action.required = False
    *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        flag = remaining[0].lstrip("-").split("=")[0]
        raise _unknown_key_error(flag, _field_names(dataclass_types), "the command line")
    return tuple(parsed)
