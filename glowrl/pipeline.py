"""`glowrl pipeline`: GLOW SFT, then RL from its checkpoint, from one recipe file, with one command.

    glowrl pipeline --config recipes/tiny/pipeline.yaml
    glowrl pipeline --config recipes/qwen2.5-7b/pipeline_glow.yaml --rl.learning_rate 5e-7 --seed 1

The recipe holds shared keys, an `sft:` section and an `rl:` section (see `glowrl.recipe`). Overrides: `--key value`
for a shared key, `--sft.key value` / `--rl.key value` for a stage's.

What it does:
1. resolves and validates both stages before running anything, so a typo in `rl:` fails before hours of SFT;
2. runs each stage as its own `accelerate launch -m glowrl.<stage>` process with the recipe's `accelerate_config`
   (distributed state and GPU memory are per process), writing to `<output_root>/sft` and `<output_root>/rl`;
3. records every stage's status (pending/running/done/failed), start and end time, resolved config and command,
   with the package versions and git commit, in `<output_root>/pipeline.json`.

Re-running the same recipe skips finished stages and resumes an interrupted one from its last checkpoint. A failed
stage stops the pipeline with a non-zero exit. A finished stage is never overwritten without `--overwrite`, and an
output root holding a run of a different recipe is refused.
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from importlib import import_module, metadata
from pathlib import Path

import yaml
from transformers.trainer_utils import get_last_checkpoint

from .recipe import STAGES, RecipeError, load_recipe, rl_algorithm, stage_values


MANIFEST_NAME = "pipeline.json"
STAGE_MODULES = {"sft": "glowrl.sft", "rl": "glowrl.rl"}
PACKAGES = (
    "glowrl",
    "trl",
    "transformers",
    "torch",
    "accelerate",
    "peft",
    "datasets",
    "math-verify",
    "deepspeed",
    "vllm",
)


def stage_dataclass_types(stage: str, algorithm: str):
    """The dataclasses a stage's values are parsed into (the RL ones depend on the algorithm)."""
    if stage == "sft":
        return import_module("glowrl.sft").DATACLASS_TYPES
    return import_module("glowrl.rl").dataclass_types(algorithm)


def apply_overrides(recipe: dict, overrides: list[str]) -> dict:
    """Apply `--key value`, `--sft.key value` and `--rl.key value` pairs (values parsed as YAML) to a recipe copy."""
    recipe = json.loads(json.dumps(recipe))
    if len(overrides) % 2:
        raise RecipeError(f"overrides come in --key value pairs; got {' '.join(overrides)}")
    for flag, raw in zip(overrides[::2], overrides[1::2], strict=True):
        if not flag.startswith("--"):
            raise RecipeError(f"expected --key, got {flag!r}")
        section, _, key = flag[2:].rpartition(".")
        value = yaml.safe_load(raw)
        if section:
            if section not in STAGES:
                raise RecipeError(f"{flag}: unknown section {section!r}; sections are {', '.join(STAGES)}")
            recipe.setdefault(section, {})[key] = value
        else:
            recipe[key] = value
    return recipe


def resolve(recipe: dict) -> dict:
    """Validate a pipeline recipe's structure and keys; return each stage's resolved, flat values.

    Keys, sections, the RL algorithm and file paths are checked here, before any stage runs, so a typo in `rl:` fails
    before hours of SFT. Values are checked by each stage's config when it starts: instantiating the configs here
    would take a GPU context in this orchestrating process and check GRPO's batch rules against one process instead
    of the launched ones.
    """
    unknown_sections = [k for k, v in recipe.items() if isinstance(v, dict) and k not in (*STAGES, "env")]
    if unknown_sections:
        raise RecipeError(f"unknown section {unknown_sections[0]!r}; a pipeline recipe has sections sft: and rl:")
    if not recipe.get("output_root"):
        raise RecipeError("output_root is required: stage outputs go to <output_root>/sft and <output_root>/rl")
    if not any(stage in recipe for stage in STAGES):
        raise RecipeError("a pipeline recipe needs an sft: and/or an rl: section")
    config = recipe.get("accelerate_config")
    if config and not Path(config).is_file():
        raise RecipeError(f"accelerate_config: {config} does not exist; give a file from accelerate_configs/")
    algorithm = rl_algorithm(recipe)
    types = {stage: stage_dataclass_types(stage, algorithm) for stage in STAGES}
    fields_of = {stage: {f for t in types[stage] for f in t.__dataclass_fields__} for stage in STAGES}
    resolved = {}
    for stage in STAGES:
        if stage in recipe:
            values = stage_values(recipe, stage, types[stage], fields_of["rl" if stage == "sft" else "sft"])
            resolved[stage] = {"algorithm": algorithm, **values} if stage == "rl" else values
    return resolved


def environment() -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"versions": versions, "git_commit": commit, "python": sys.version.split()[0]}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_manifest(root: Path, manifest: dict):
    """Write the manifest atomically, so an interrupted write never leaves a half file."""
    tmp = root / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, root / MANIFEST_NAME)


def stage_command(stage: str, recipe_path: Path, accelerate_config: str | None, resume: str | None) -> list[str]:
    """The `accelerate launch` command line of one stage."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", accelerate_config]
    command += ["-m", STAGE_MODULES[stage], "--config", str(recipe_path)]
    if resume:
        command += ["--resume_from_checkpoint", resume]
    return command


def headline_metrics(stage_dir: Path) -> dict:
    """A few numbers that say whether a stage learned, from its saved trainer state."""
    state_path = stage_dir / "trainer_state.json"
    if not state_path.is_file():
        return {}
    state = json.loads(state_path.read_text())
    history = state["log_history"]
    steps = [e for e in history if "loss" in e]
    metrics = {"steps": state["global_step"]}
    if steps:
        metrics["final_loss"] = steps[-1]["loss"]
    rewards = [e["reward"] for e in steps if e.get("reward") is not None]
    if rewards:
        k = max(1, len(rewards) // 5)
        metrics["reward_first"] = sum(rewards[:k]) / k
        metrics["reward_last"] = sum(rewards[-k:]) / k
    for key in ("glow/weight_mean", "entropy", "entropy/initial"):
        values = [e[key] for e in history if e.get(key) is not None]
        if values:
            metrics[key] = values[-1] if key != "entropy/initial" else values[0]
    return metrics


def banner(text: str):
    line = "━" * max(0, 78 - len(text) - 4)
    print(f"\n━━ {text} {line}", flush=True)


def plan_stages(resolved: dict, manifest: dict | None, root: Path, overwrite: bool) -> dict:
    """Decide, stage by stage, what a (re-)run does, refusing to overwrite finished or foreign outputs.

    A stage that is done with the same config is skipped. A finished stage whose config changed, or an output
    directory this pipeline did not write, is refused unless `overwrite`. An unfinished stage runs, resuming from its
    last checkpoint only if its config is unchanged. Once a stage runs, every later stage runs again too, since it
    starts from that stage's output.

    Returns:
        `dict`: the stages' manifest entries (status `done` for the ones to skip, `pending` otherwise).
    """
    previous = (manifest or {}).get("stages", {})
    stages, upstream_reran = {}, False
    for stage, config in resolved.items():
        old = previous.get(stage)
        output_dir = Path(config["output_dir"])
        same = old is not None and old["config"] == config
        if overwrite:
            shutil.rmtree(output_dir, ignore_errors=True)
        elif old is not None and old["status"] == "done" and not same:
            raise RecipeError(
                f"output_root: {root} holds a finished {stage} stage of a different recipe "
                f"({(manifest or {}).get('recipe')}); choose another output_root, or pass --overwrite to replace it"
            )
        elif old is None and output_dir.is_dir() and any(output_dir.iterdir()):
            raise RecipeError(
                f"output_root: {output_dir} already holds files not written by this pipeline (no record in "
                f"{MANIFEST_NAME}); choose another output_root, or pass --overwrite to replace them"
            )
        if same and not overwrite and not (upstream_reran and old["status"] == "done"):
            stages[stage] = {**old, "config": config}
        else:
            stages[stage] = {"status": "pending", "config": config}
        upstream_reran = upstream_reran or stages[stage]["status"] != "done"
    return stages


def run(recipe_path: str, overrides: list[str], overwrite: bool = False, launcher=subprocess.call) -> int:
    """Run the pipeline; returns the exit status (0 when every stage is done)."""
    recipe = apply_overrides(load_recipe(recipe_path), overrides)
    resolved = resolve(recipe)
    root = Path(recipe["output_root"])
    manifest_path = root / MANIFEST_NAME
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    manifest = {
        "recipe": str(recipe_path),
        "created": (previous or {}).get("created", _now()),
        **environment(),
        "stages": plan_stages(resolved, previous, root, overwrite),
    }
    root.mkdir(parents=True, exist_ok=True)
    recipes_dir = root / "recipes"
    recipes_dir.mkdir(exist_ok=True)
    accelerate_config = recipe.get("accelerate_config")
    stages = list(resolved)
    for index, stage in enumerate(stages, 1):
        info = manifest["stages"][stage]
        title = f"stage {index}/{len(stages)}: {stage}" + (
            f" ({resolved[stage]['algorithm']})" if stage == "rl" else ""
        )
        if info["status"] == "done":
            banner(f"{title} — done at {info['ended']}, skipped")
            continue
        stage_recipe = recipes_dir / f"{stage}.yaml"
        stage_recipe.write_text(yaml.safe_dump(resolved[stage], sort_keys=False))
        stage_dir = Path(resolved[stage]["output_dir"])
        # `pending` with a kept checkpoint means an interrupted run of this very config (a changed config is new).
        interrupted = (previous or {}).get("stages", {}).get(stage, {})
        unchanged = interrupted.get("config") == resolved[stage] and interrupted.get("status") in ("running", "failed")
        resume = get_last_checkpoint(str(stage_dir)) if unchanged and stage_dir.is_dir() else None
        command = stage_command(stage, stage_recipe, accelerate_config, resume)
        banner(title + (f" — resuming from {resume}" if resume else ""))
        print("$ " + " ".join(command), flush=True)
        info.update(status="running", started=_now(), command=command, resumed_from=resume)
        info.pop("ended", None)
        write_manifest(root, manifest)
        returncode = launcher(command)
        info.update(ended=_now(), returncode=returncode)
        if returncode != 0:
            info["status"] = "failed"
            write_manifest(root, manifest)
            banner(f"{title} failed (exit {returncode}); later stages not run")
            return returncode
        info.update(status="done", metrics=headline_metrics(stage_dir))
        write_manifest(root, manifest)
    summary(root, manifest)
    return 0


def summary(root: Path, manifest: dict):
    banner("summary")
    for stage, info in manifest["stages"].items():
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.get("metrics", {}).items()
        )
        print(f"  {stage:<4} {info['status']:<8} {info['config']['output_dir']}  {metrics}")
    print(f"  manifest: {root / MANIFEST_NAME}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="glowrl pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="pipeline recipe with shared keys, sft: and rl: sections")
    parser.add_argument("--overwrite", action="store_true", help="re-run every stage, replacing finished outputs")
    args, overrides = parser.parse_known_args(argv)
    return run(args.config, overrides, overwrite=args.overwrite)


if __name__ == "__main__":
    from .cli import run_guarded

    sys.exit(run_guarded(main))
