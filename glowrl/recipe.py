"""Recipe files: one YAML for one stage, or one YAML for a whole pipeline of stages.

A stage recipe is flat: every key is a field of that stage's dataclasses. A pipeline recipe has shared keys at the
top level and a section per stage, in the order the stages run:

    model_name_or_path: Qwen/Qwen2.5-7B        # shared: used by every stage that has the field
    output_root: outputs/qwen7b-glow            # stage outputs go to <output_root>/<stage>
    sft:
      glow_alpha: 1.0
    rl:
      algorithm: grpo

Precedence: dataclass default < shared key < stage section < command line. Unknown keys, anywhere, are errors that
name the key and suggest the closest field. An `env:` mapping sets environment variables before anything is built;
a `slurm:` mapping holds the settings of `glowrl slurm` (`glowrl.launch.SlurmSettings`).

This module knows the format, not the stages: which section names exist and which fields each stage has are given
by the caller (`glowrl.stages`). Imports transformers only to parse values into dataclasses.
"""

import difflib
import math
import os
from dataclasses import fields
from pathlib import Path

import yaml

from .errors import RecipeError


# transformers' TrainingArguments error for bf16 without a GPU (TRL configs default to bf16: true).
BF16_ON_CPU_ERROR = "doesn't support bf16/gpu"
# Keys only the pipeline reads; accepted at the top level of any recipe and ignored by the stages.
PIPELINE_KEYS = ("output_root", "accelerate_config", "env", "slurm")
# Range rules for fields by name, whichever dataclass holds them (every float field must also be finite).
POSITIVE = {
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "max_completion_length",
    "max_new_tokens",
    "logging_steps",
    "save_steps",
    "eval_steps",
    "temperature",
    "num_samples",
    "save_total_limit",
    "max_problems",
}
# Text fields where true/false mean something (`resume_from_checkpoint: true`: the newest complete checkpoint).
BOOLEAN_TEXT = {"resume_from_checkpoint"}
NON_NEGATIVE = {"num_train_epochs", "learning_rate", "weight_decay", "warmup_steps", "warmup_ratio", "max_grad_norm"}


class _StrictLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (YAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key]} and {key_node.start_mark.line + 1}); YAML would "
                    "keep only the last one: keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_mapping(path: str | Path, field: str, missing: str = "") -> dict:
    """Read a YAML file holding a mapping, with one error line naming `field` for a missing, invalid or non-mapping
    file (`missing`: what to do about a missing one)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{field}: {path} does not exist{missing}")
    try:
        data = yaml.load(path.read_text(), Loader=_StrictLoader) or {}  # a SafeLoader
    except yaml.constructor.ConstructorError as e:
        raise RecipeError(f"{field}: {path} line {e.problem_mark.line + 1}: {e.problem}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"{field}: {path} is not valid YAML: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise RecipeError(f"{field}: {path} must hold a mapping of keys to values")
    return data


def load_recipe(path: str | Path) -> dict:
    """Read a YAML recipe into a dict, with a clear error for a missing file or a non-mapping document."""
    return load_mapping(path, "--config")


def apply_env(recipe: dict) -> None:
    """Set the recipe's `env:` variables in this process (and so in every process it launches)."""
    env = recipe.get("env") or {}
    if not isinstance(env, dict):
        raise RecipeError("env: must be a mapping of environment variable names to values")
    os.environ.update({str(k): str(v) for k, v in env.items()})


def apply_overrides(recipe: dict, overrides: list[str], sections) -> dict:
    """Apply `--key value` and `--section.key value` pairs (values parsed as YAML) to a copy of `recipe`."""
    recipe = yaml.safe_load(yaml.safe_dump(recipe, sort_keys=False))
    if len(overrides) % 2:
        raise RecipeError(f"overrides come in --key value pairs; got {' '.join(overrides)}")
    for flag, raw in zip(overrides[::2], overrides[1::2], strict=True):
        if not flag.startswith("--"):
            raise RecipeError(f"expected --key, got {flag!r}")
        section, _, key = flag[2:].rpartition(".")
        value = yaml.safe_load(raw)
        if section:
            if section not in sections:
                raise RecipeError(f"{flag}: unknown section {section!r}; sections are {', '.join(sections)}")
            if not isinstance(recipe.get(section), dict):
                recipe[section] = {}
            recipe[section][key] = value
        else:
            recipe[key] = value
    return recipe


def field_names(dataclass_types) -> set[str]:
    """Every field name of the given dataclasses."""
    return {f.name for dt in dataclass_types for f in fields(dt)}


def unknown_key_error(key: str, known, where: str) -> RecipeError:
    """The error for a key no dataclass has, suggesting the closest known one."""
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return RecipeError(f"unknown recipe key {key!r} in {where}{hint}")


def split_recipe(recipe: dict, stage_names) -> tuple[dict, dict[str, dict]]:
    """Split a recipe into its shared keys and its stage sections (in recipe order).

    A mapping-valued key that is not a stage name (nor `env` or `slurm`) is an unknown section.
    """
    shared, sections = {}, {}
    for key, value in recipe.items():
        if key in stage_names:
            if value is not None and not isinstance(value, dict):
                raise RecipeError(f"section {key}: must be a mapping of keys to values")
            sections[key] = value or {}
        elif key in ("env", "slurm") or not isinstance(value, dict):
            shared[key] = value
        else:
            raise RecipeError(f"unknown section {key!r}; the sections are the stages: {', '.join(stage_names)}")
    return shared, sections


def check_values(instance) -> None:
    """Refuse NaN and infinite numbers in any field, and values out of the ranges above, naming the field."""
    for f in fields(instance):
        value = getattr(instance, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise RecipeError(f"{f.name}: {value} is not a finite number; give a real value")
        if f.name in POSITIVE and value <= 0 and not (value == 0 and f.name in getattr(instance, "ZERO_MEANS", {})):
            raise RecipeError(f"{f.name} must be positive, got {value}")
        if f.name in NON_NEGATIVE and value < 0:
            raise RecipeError(f"{f.name} must not be negative, got {value}")
    epochs, steps = getattr(instance, "num_train_epochs", None), getattr(instance, "max_steps", None)
    if epochs is not None and steps is not None and steps <= 0 and epochs <= 0:
        raise RecipeError(
            f"num_train_epochs: {epochs} trains nothing (and max_steps is {steps}); give a positive number of epochs "
            "or a positive max_steps"
        )


def _join_negative_values(argv: list[str]) -> list[str]:
    """`--key -1/2` as `--key=-1/2`: argparse reads a value starting with `-` as a flag ("expected one argument")."""
    joined, i = [], 0
    while i < len(argv):
        if argv[i].startswith("--") and "=" not in argv[i] and i + 1 < len(argv) and argv[i + 1][:2] in NEGATIVE:
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    return joined


NEGATIVE = {f"-{c}" for c in "0123456789."}


def _argument_parser(dataclass_types):
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        # argparse prints a usage dump and exits on a bad value; say which key, value and type instead.
        def error(self, message):
            key, _, detail = message.partition(": ")
            key = key.removeprefix("argument ").split("/")[0].lstrip("-")
            raise RecipeError(f"{key}: {detail or message} (from the recipe or the command line)")

    return Parser(dataclass_types)


def parse_dataclasses(dataclass_types, values: dict, argv: list[str] | None = None, where: str = "the recipe"):
    """Parse `values` (from a recipe) and `--field value` overrides in `argv` into instances of `dataclass_types`.

    Every value is checked: unknown keys, types (one line naming the key, the value and the type), finite numbers
    and ranges ([`check_values`]), and then each dataclass's own `__post_init__` checks.

    Returns:
        `tuple`: one instance per dataclass type, in order.
    """
    known = field_names(dataclass_types)
    types = {f.name: str(f.type) for dt in dataclass_types for f in fields(dt)}
    values = {k: str(v).lower() if k in BOOLEAN_TEXT and isinstance(v, bool) else v for k, v in values.items()}
    argv = _join_negative_values(list(argv or []))
    for key, value in values.items():
        if key not in known:
            raise unknown_key_error(key, known, where)
        if isinstance(value, bool) and "bool" not in types[key]:
            raise RecipeError(
                f"{key}: {str(value).lower()} is not a valid value (YAML reads an unquoted yes/no/on/off as "
                f'true/false; quote it, e.g. {key}: "no")'
            )
    parser = _argument_parser(dataclass_types)
    parser.set_defaults(**values)
    for action in parser._actions:  # a value from the recipe satisfies a required field
        if action.dest in values:
            action.required = False
    try:
        *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except ValueError as error:
        if BF16_ON_CPU_ERROR in str(error):  # transformers' own words for TRL's default bf16: true on a CPU
            raise RecipeError(
                "bf16: true (TRL's default) needs a GPU with bf16 support; on a CPU set use_cpu: true and bf16: false"
            ) from None
        raise
    if remaining:
        flag = remaining[0].lstrip("-").split("=")[0]
        raise unknown_key_error(flag, known, "the command line")
    for instance in parsed:
        check_values(instance)
    return tuple(parsed)
