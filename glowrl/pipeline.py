"""`glowrl pipeline`: every stage of one recipe, in order, each as its own `accelerate launch` process.

    glowrl pipeline --config recipes/tiny/pipeline.yaml
    glowrl pipeline --config recipes/qwen2.5-7b/pipeline_glow.yaml --rl.learning_rate 5e-7 --seed 1

The recipe holds shared keys and one section per stage (see `glowrl.recipe`); the stages are linked by what they
produce (`glowrl.stages`). Overrides: `--key value` for a shared key, `--<stage>.key value` for a stage's.

What it does:
1. resolves and checks every stage's keys before running anything, so a typo in `rl:` fails before hours of SFT;
2. runs each stage as `accelerate launch -m glowrl <stage>` with the recipe's `accelerate_config` (distributed state
   and GPU memory are per process), writing to `<output_root>/<stage>`;
3. records every stage's status (pending/running/done/failed), start and end time, resolved config and command,
   with the package versions and git commit, in `<output_root>/pipeline.json`.

Re-running the same recipe skips finished stages and resumes an interrupted one from its last checkpoint. A failed
stage stops the pipeline with a non-zero exit. A finished stage is never overwritten without `--overwrite`, and an
output root holding a run of a different recipe is refused.
"""

import datetime
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

from .errors import RecipeError
from .io import read_log_history, read_trainer_state, write_json, write_text_atomic
from .recipe import apply_env, apply_overrides, load_recipe
from .stages import available_stages, resolve_recipe


MANIFEST_NAME = "pipeline.json"
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


def environment() -> dict:
    """Package versions, git commit and Python version, for the manifest."""
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


def stage_command(stage: str, recipe_path: Path, accelerate_config: str | None, resume: str | None) -> list[str]:
    """The `accelerate launch -m glowrl <stage>` command line of one stage."""
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        command += ["--config_file", accelerate_config]
    command += ["-m", "glowrl", stage, "--config", str(recipe_path)]
    if resume:
        command += ["--resume_from_checkpoint", resume]
    return command


def headline_metrics(stage_dir: Path) -> dict:
    """A few numbers that say whether a training stage learned, from its saved trainer state."""
    state = read_trainer_state(stage_dir)
    if state is None:
        return {}
    history = read_log_history(stage_dir)
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
    may start from that stage's output.

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
    from transformers.trainer_utils import get_last_checkpoint

    recipe = apply_overrides(load_recipe(recipe_path), overrides, available_stages())
    apply_env(recipe)
    resolved = resolve_recipe(recipe)
    config = recipe.get("accelerate_config")
    if config and not Path(config).is_file():
        raise RecipeError(f"accelerate_config: {config} does not exist; give a file from accelerate_configs/")
    root = Path(recipe["output_root"])
    manifest_path = root / MANIFEST_NAME
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    manifest = {
        "recipe": str(recipe_path),
        "created": (previous or {}).get("created", _now()),
        **environment(),
        "stages": plan_stages(resolved, previous, root, overwrite),
    }
    stages = list(resolved)
    for index, stage in enumerate(stages, 1):
        info = manifest["stages"][stage]
        algorithm = resolved[stage].get("algorithm")
        title = f"stage {index}/{len(stages)}: {stage}" + (f" ({algorithm})" if algorithm else "")
        if info["status"] == "done":
            banner(f"{title} — done at {info['ended']}, skipped")
            continue
        stage_recipe = write_text_atomic(
            root / "recipes" / f"{stage}.yaml", yaml.safe_dump(resolved[stage], sort_keys=False)
        )
        stage_dir = Path(resolved[stage]["output_dir"])
        # `pending` with a kept checkpoint means an interrupted run of this very config (a changed config is new).
        interrupted = (previous or {}).get("stages", {}).get(stage, {})
        unchanged = interrupted.get("config") == resolved[stage] and interrupted.get("status") in ("running", "failed")
        resume = get_last_checkpoint(str(stage_dir)) if unchanged and stage_dir.is_dir() else None
        command = stage_command(stage, stage_recipe, config, resume)
        banner(title + (f" — resuming from {resume}" if resume else ""))
        print("$ " + " ".join(command), flush=True)
        info.update(status="running", started=_now(), command=command, resumed_from=resume)
        info.pop("ended", None)
        write_json(manifest, manifest_path)
        returncode = launcher(command)
        info.update(ended=_now(), returncode=returncode)
        if returncode != 0:
            info["status"] = "failed"
            write_json(manifest, manifest_path)
            banner(f"{title} failed (exit {returncode}); later stages not run")
            return returncode
        info.update(status="done", metrics=headline_metrics(stage_dir))
        write_json(manifest, manifest_path)
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
