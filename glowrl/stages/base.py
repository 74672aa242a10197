"""The record a pipeline stage exports, the registry that finds it, and how a recipe becomes each stage's values.

A stage is one module that exports `STAGE = Stage(...)`: its name (also its recipe section and its `glowrl <name>`
command), the dataclasses its values parse into, how it runs, and what it produces for later stages. Stages are
found by name: one registered in this process with [`register_stage`], or a module `glowrl/stages/NAME.py`.

Stages are linked by what they produce, never by name. Each stage's `outputs(values)` says what it leaves for later
stages (`{"model": output_dir}`), and its `inputs` say which of its fields take an earlier product when its own
section leaves them unset (`{"model_name_or_path": "model"}`: RL starts from the SFT model). Every stage writes to
`<output_root>/<name>` unless its section sets `output_dir`.
"""

import importlib.util
import itertools
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path

from ..errors import RecipeError
from ..outputs import output_lock
from ..recipe import (
    PIPELINE_KEYS,
    apply_env,
    field_names,
    load_recipe,
    parse_dataclasses,
    split_recipe,
    unknown_key_error,
)


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    Args:
        name (`str`):
            The stage's name: its recipe section, its `glowrl <name>` command and its output folder.
        help (`str`):
            One line for `glowrl --help`.
        dataclass_types (`callable`):
            `dataclass_types(values) -> tuple` of dataclass types that the stage's values parse into (`values` may
            choose them, as `algorithm` does for RL).
        run (`callable`):
            `run(*parsed)`: runs the stage in this process, on the parsed dataclass instances.
        outputs (`callable`, *optional*):
            `outputs(values) -> dict` of what the stage produces for later stages, by kind; default
            `{"model": values["output_dir"]}`.
        inputs (`dict[str, str]`, *optional*):
            Field -> product kind: the field takes the latest earlier product of that kind when the stage's section
            leaves it unset (`"model*"`: the list of every earlier product of that kind, in stage order).
        check (`callable`, *optional*):
            `check(*parsed, linked=fields)`: what can be checked before anything runs (paths, data files, the output
            directory), skipping the fields in `linked` that earlier stages will produce. The pipeline runs every
            stage's check before it deletes or launches anything.
        summary (`callable`, *optional*):
            `summary(values) -> str | None`: what the pipeline's final summary prints for this stage, read from its
            output directory (the hand-off report, the evaluation table).
        resumes_itself (`bool`, *optional*):
            A re-run with the same values continues from what its output directory holds (generation), instead of
            from a `checkpoint-N` (training).
        single_process (`callable`, *optional*):
            `single_process(values) -> bool`: run it as one plain process, not under `accelerate launch` (vLLM
            generation manages its own GPUs).
        selector (`str`, *optional*):
            A field whose command-line value must be known before parsing because it chooses the dataclasses.
        help_types (`tuple`, *optional*):
            Dataclasses cheap to import (no torch, no TRL) whose fields `glowrl <name> --help` lists.
        help_note (`str`, *optional*):
            What else the stage accepts, for `--help` (e.g. "every field of trl.SFTConfig").
        trains (`bool`, *optional*, defaults to `True`):
            Whether it trains: `accelerate launch` is then told its mixed precision (from its `bf16`/`fp16`); a stage
            that only samples or evaluates loads its model in its own dtype and is launched with `--mixed_precision
            no`.
    """

    name: str
    help: str
    dataclass_types: Callable
    run: Callable
    outputs: Callable = field(default=lambda values: {"model": values["output_dir"]})
    inputs: dict = field(default_factory=dict)
    selector: str | None = None
    check: Callable | None = None
    resumes_itself: bool = False
    summary: Callable = field(default=lambda values: None)
    single_process: Callable = field(default=lambda values: False)
    help_types: tuple = ()
    help_note: str = ""
    trains: bool = True


_registered: dict[str, Stage] = {}
_NOT_STAGES = {"base", "training"}
SHIPPED_ORDER = ("generate", "sft", "rl", "eval")  # the order the shipped stages feed each other


def register_stage(stage: Stage) -> Stage:
    """Make `stage` available by its name in this process (it replaces one of the same name)."""
    _registered[stage.name] = stage
    return stage


def unregister_stage(name: str) -> None:
    """Forget a stage registered with [`register_stage`]."""
    _registered.pop(name, None)


def available_stages() -> list[str]:
    """The stage names: the shipped modules, then the registered ones."""
    shipped = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name not in _NOT_STAGES]
    return [*sorted(shipped), *(name for name in _registered if name not in shipped)]


def get_stage(name: str) -> Stage:
    """The stage called `name`; a [`~glowrl.errors.RecipeError`] listing the valid names when there is none."""
    if name in _registered:
        return _registered[name]
    if name not in available_stages():
        raise RecipeError(f"unknown stage {name!r}; the stages are {', '.join(available_stages())}")
    stage = getattr(import_module(f"{__package__}.{name}"), "STAGE", None)
    if not isinstance(stage, Stage):
        raise RecipeError(f"module {__package__}.{name} exports no STAGE = glowrl.stages.Stage(...)")
    return stage


def selected_dataclass_types(stage: Stage, values: dict, argv: list[str] = ()) -> tuple:
    """The stage's dataclasses for these values, with the selector field's command-line value (`--algorithm X`)."""
    if stage.selector:
        flag = f"--{stage.selector}"
        for i, arg in enumerate(argv):
            if arg == flag and i + 1 < len(argv):
                values = {**values, stage.selector: argv[i + 1]}
            elif arg.startswith(flag + "="):
                values = {**values, stage.selector: arg.split("=", 1)[1]}
    return stage.dataclass_types(values)


def resolve_recipe(recipe: dict) -> dict[str, dict]:
    """Each stage section's flat, linked values, in recipe order; nothing is run and nothing is written.

    Shared keys go to every stage that has the field (a shared key no stage of the recipe has is an error), the
    section's keys override them, `output_dir` defaults to `<output_root>/<stage>`, and unset inputs take earlier
    stages' products.
    """
    names = available_stages()
    shared, sections = split_recipe(recipe, names)
    if not sections:
        raise RecipeError(f"a pipeline recipe needs at least one stage section: {', '.join(names)}")
    if not recipe.get("output_root"):
        raise RecipeError("output_root is required: each stage writes to <output_root>/<stage>")
    if "output_dir" in shared:
        raise RecipeError(
            "output_dir: a shared output_dir would send every stage to one directory; set output_root (stages write "
            "to <output_root>/<stage>) or an output_dir inside each section"
        )
    stages = {name: get_stage(name) for name in sections}
    known = {
        name: field_names(selected_dataclass_types(stages[name], {**shared, **sections[name]})) for name in sections
    }
    for key in shared:
        if key not in PIPELINE_KEYS and not any(key in fields for fields in known.values()):
            raise unknown_key_error(key, set().union(*known.values()) | set(PIPELINE_KEYS), "the recipe")
    resolved, products = {}, {}  # kind -> every earlier stage's product of that kind, in stage order
    for name, section in sections.items():
        stage = stages[name]
        for key in section:
            if key not in known[name]:
                raise unknown_key_error(key, known[name], f"section {name}:")
        values = {k: v for k, v in shared.items() if k in known[name]}
        values.update(section)
        if "output_dir" in known[name]:
            values.setdefault("output_dir", str(Path(recipe["output_root"]) / name))
        for key, kind in stage.inputs.items():
            if key not in section and kind.rstrip("*") in products:
                found = products[kind.rstrip("*")]
                values[key] = found if kind.endswith("*") else found[-1]
        for kind, value in stage.outputs(values).items():
            products.setdefault(kind, []).append(value)
        resolved[name] = values
    _check_order(resolved)
    return resolved


def _check_order(resolved: dict) -> None:
    """Refuse shipped stages written out of the paper's order (`rl:` above `sft:` would train RL from the base model
    and SFT after it): stages run in the order written, and an unset input takes only earlier products."""
    shipped = [name for name in resolved if name in SHIPPED_ORDER]
    for before, after in itertools.pairwise(shipped):
        if SHIPPED_ORDER.index(before) > SHIPPED_ORDER.index(after):
            raise RecipeError(
                f"section {before}: comes before {after}: (stages run in the order written, each from the products "
                f"of those above it); put them in the order {', '.join(SHIPPED_ORDER)}"
            )


def stage_values(stage: Stage, recipe: dict) -> dict:
    """The values one stage reads from a recipe: its resolved section in a pipeline recipe, or a flat recipe as is."""
    _, sections = split_recipe(recipe, available_stages())
    if not sections:
        return {k: v for k, v in recipe.items() if k not in PIPELINE_KEYS}
    if stage.name not in sections:
        raise RecipeError(
            f"--config: the recipe has no {stage.name}: section (it has {', '.join(sections)}); run "
            f"`glowrl {' or glowrl '.join(sections)}`, or add the section"
        )
    return resolve_recipe(recipe)[stage.name]


def parse_stage_args(stage: Stage, argv: list[str]) -> tuple:
    """Parse `--config recipe.yaml` (flat, or a pipeline recipe's section) plus `--field value` overrides."""
    argv = list(argv)
    values = {}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs a recipe path")
        recipe = load_recipe(argv[i + 1])
        if not recipe:
            raise RecipeError(
                f"--config: {argv[i + 1]} is empty; give the stage's fields (see glowrl {stage.name} --help)"
            )
        del argv[i : i + 2]
        apply_env(recipe)
        values = stage_values(stage, recipe)
    elif not argv:
        raise RecipeError(
            f"glowrl {stage.name}: give --config RECIPE.yaml and/or --field value pairs (glowrl {stage.name} --help)"
        )
    return parse_dataclasses(selected_dataclass_types(stage, values, argv), values, argv)


def say_deepspeed_runs_on_cpu() -> None:
    """Where DeepSpeed is installed and torch sees no accelerator, set `DS_ACCELERATOR=cpu`: DeepSpeed would pick
    the CPU anyway, but warns about it on import in every process that loads it (through transformers or accelerate).
    A `DS_ACCELERATOR` already set is kept. `glowrl.cli.main` calls it for every command."""
    if "DS_ACCELERATOR" in os.environ or importlib.util.find_spec("deepspeed") is None:
        return
    import torch

    if not torch.accelerator.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def run_stage(name: str, argv: list[str]):
    """`glowrl <stage> ...`: parse the stage's arguments and run it in this process."""
    say_deepspeed_runs_on_cpu()
    stage = get_stage(name)
    parsed = parse_stage_args(stage, argv)
    output_dir = next((p.output_dir for p in parsed if getattr(p, "output_dir", None)), None)
    if output_dir is None:
        return stage.run(*parsed)
    shard = next((p.shard for p in parsed if getattr(p, "shard", None)), None)  # shards share an output by design
    key = f".shard{shard.replace('/', 'of')}" if isinstance(shard, str) else ""
    with output_lock(output_dir, f"glowrl {name}", "output_dir", key):  # one run per output, the holder named
        return stage.run(*parsed)
