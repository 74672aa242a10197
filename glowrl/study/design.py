"""A study recipe: a base pipeline recipe, arms of overrides, seeds; and the pipeline recipe of every arm x seed run.

    name: paper-arms                           # optional; default: the file's name
    base: recipes/qwen2.5-7b/pipeline_glow.yaml # a pipeline recipe with an sft: and an eval: section
    output_root: outputs/study-7b              # run <arm> x seed <k> writes to <output_root>/runs/<arm>/seed<k>
    seeds: [0, 1, 2]                           # or a count: 3 means 0, 1, 2
    reference: positive                        # differences are against this arm (default: the first)
    sft_steps: auto                            # the SFT optimizer-step budget of every arm (default auto, below)
    launcher: local                            # or slurm: every run a `glowrl slurm` job (the base's slurm: section)
    parallel: 1                                # local runs at a time (each with cores / parallel threads)
    arms:                                      # each: overrides of the base, as in a pipeline recipe
      positive: {sft: {trajectories: positive, glow: false}}
      all: {sft: {trajectories: all, glow: false}}
      glow: {sft: {trajectories: all, glow: true}}

Every run is the base recipe with its arm's overrides, `seed: <k>` (every stage's seed: data order, initialisation of
new heads, sampling), `output_root` its run folder, the eval stage evaluating what the run produced (not the base
model, which is the same for every arm), and `sft.max_steps` the budget. **The same budget for every arm**: with
the same number of epochs, positive-only SFT (half the data) would take half the optimizer steps of the other arms,
and a difference between arms could be a difference of training length. `sft_steps: auto` is the steps of the arm
with the most SFT data at the base's `num_train_epochs` (so that arm trains as the base recipe says and the smaller
arms see their data more often, as in the paper's many-epoch regime); a number sets it; the base's own `max_steps`
wins over both. Every run's recipe is checked (every key of every arm, every stage's values and data) before any run
starts.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..errors import RecipeError
from ..recipe import apply_overrides, load_recipe, unknown_key_error
from ..stages import available_stages, resolve_recipe


STUDY_KEYS = ("name", "base", "output_root", "seeds", "reference", "sft_steps", "launcher", "parallel", "arms")


@dataclass
class Study:
    name: str
    base: str
    output_root: Path
    seeds: list[int]
    reference: str
    sft_steps: int | str
    launcher: str
    arms: dict
    parallel: int = 1


def load_study(path: str) -> Study:
    """Read and check a study recipe (keys, seeds, arms, the base recipe's stages)."""
    raw = load_recipe(path)
    for key in raw:
        if key not in STUDY_KEYS:
            raise unknown_key_error(key, STUDY_KEYS, f"study recipe {path}")
    for key in ("base", "output_root", "arms"):
        if not raw.get(key):
            raise RecipeError(f"{key}: the study recipe {path} needs it (see glowrl study --help)")
    seeds = raw.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise RecipeError(f"seeds: give a count or a list of integers, got {seeds!r}")
    if not seeds:
        raise RecipeError("seeds: give at least one seed (two or more for an interval over seeds)")
    if len(set(seeds)) != len(seeds):
        raise RecipeError(f"seeds: {seeds} repeats a seed; every run of an arm needs its own")
    arms = raw["arms"]
    if not isinstance(arms, dict) or not all(isinstance(v, dict) or v is None for v in arms.values()):
        raise RecipeError("arms: give a mapping of arm names to overrides ({sft: {trajectories: positive}}, ...)")
    for arm in arms:
        if not str(arm).replace("-", "_").isidentifier():
            raise RecipeError(f"arms: {arm!r} is not a usable folder name; use letters, digits, - and _")
    reference = raw.get("reference") or next(iter(arms))
    if reference not in arms:
        raise RecipeError(f"reference: {reference!r} is not an arm; the arms are {', '.join(arms)}")
    sft_steps = raw.get("sft_steps", "auto")
    if sft_steps != "auto" and (not isinstance(sft_steps, int) or isinstance(sft_steps, bool) or sft_steps < 1):
        raise RecipeError(f"sft_steps: give auto or a positive number of optimizer steps, got {sft_steps!r}")
    launcher = raw.get("launcher", "local")
    if launcher not in ("local", "slurm"):
        raise RecipeError(f"launcher: {launcher!r}; give local or slurm")
    parallel = raw.get("parallel", 1)
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise RecipeError(f"parallel: give the number of local runs at a time (1 or more), got {parallel!r}")
    name = raw.get("name") or Path(path).stem
    root = Path(raw["output_root"])
    return Study(name, str(raw["base"]), root, seeds, reference, sft_steps, launcher, arms, parallel)


def base_recipe(study: Study) -> dict:
    """The base pipeline recipe, checked to be one a study can run."""
    base = load_recipe(study.base)
    stages = [name for name in base if name in available_stages()]
    if "eval" not in stages:
        raise RecipeError(
            f"base: {study.base} has no eval: section; a study compares arms by their evaluation, so add one "
            "(benchmarks, or benchmark_files and ood_benchmark_files)"
        )
    if "sft" not in stages:
        raise RecipeError(f"base: {study.base} has no sft: section; the arms are SFT data arms")
    if "generate" in stages:
        raise RecipeError(
            f"base: {study.base} has a generate: section; sample the teacher once (glowrl generate) and give its "
            "trajectories as sft.dataset_paths, or every run would sample its own data"
        )
    return base


def arm_overrides(arm: str, overrides: dict | None) -> list[str]:
    """An arm's mapping as `--key value` / `--section.key value` pairs."""
    pairs = []
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and key in available_stages():
            pairs += [item for k, v in value.items() for item in (f"--{key}.{k}", json.dumps(v))]
        elif key in ("output_root", "seed"):
            raise RecipeError(f"arms.{arm}: {key} is set by the study for every run; leave it out of the arm")
        else:
            pairs += [f"--{key}", json.dumps(value)]  # JSON is YAML: apply_overrides reads it back unchanged
    return pairs


def run_dir(study: Study, arm: str, seed: int) -> Path:
    return study.output_root / "runs" / arm / f"seed{seed}"


def run_recipe(study: Study, base: dict, arm: str, seed: int, sft_steps: int | None) -> dict:
    """The pipeline recipe of one run (checked: an unknown key names the arm)."""
    try:
        recipe = apply_overrides(base, arm_overrides(arm, study.arms[arm]), available_stages())
        recipe["seed"] = seed
        recipe["output_root"] = str(run_dir(study, arm, seed))
        recipe["eval"] = {**(recipe.get("eval") or {}), "include_base": False}
        recipe["eval"].pop("models", None)
        if sft_steps is not None:
            recipe["sft"] = {**(recipe.get("sft") or {}), "max_steps": sft_steps}
        resolve_recipe(recipe)  # every key known, in every section
    except RecipeError as error:
        raise RecipeError(f"arms.{arm}: {error}") from None
    return recipe


def sft_steps_budget(study: Study, base: dict, world_size: int) -> int | None:
    """The SFT optimizer steps every arm trains (None: the base's own `max_steps` already fixes them)."""
    if int((base.get("sft") or {}).get("max_steps", base.get("max_steps", -1)) or -1) > 0:
        return None
    if study.sft_steps != "auto":
        return int(study.sft_steps)
    import datasets

    from ..data import TrajectoryArguments, build_trajectory_dataset
    from ..recipe import field_names

    datasets.disable_progress_bars()  # counting rows, not preparing data: no bars
    steps = {}
    for arm in study.arms:
        values = resolve_recipe(run_recipe(study, base, arm, study.seeds[0], None))["sft"]
        known = field_names((TrajectoryArguments,))
        count = len(build_trajectory_dataset(TrajectoryArguments(**{k: v for k, v in values.items() if k in known})))
        batch = int(values.get("per_device_train_batch_size", 8)) * world_size
        per_epoch = math.ceil(math.ceil(count / batch) / int(values.get("gradient_accumulation_steps") or 1))
        steps[arm] = math.ceil(float(values.get("num_train_epochs", 3.0)) * per_epoch)
    datasets.enable_progress_bars()
    return max(steps.values())
