"""`glowrl pipeline`: every stage of one recipe, in order, each as its own `accelerate launch` process.

    glowrl pipeline --config recipes/tiny/pipeline.yaml
    glowrl pipeline --config recipes/qwen2.5-7b/pipeline_glow.yaml --rl.learning_rate 5e-7 --seed 1

The recipe holds shared keys and one section per stage (see `glowrl.recipe`); the stages are linked by what they
produce (`glowrl.stages`). Overrides: `--key value` for a shared key, `--<stage>.key value` for a stage's.

What it does:
1. resolves and checks every stage's keys before running anything, so a typo in `rl:` fails before hours of SFT;
2. runs each stage as `accelerate launch -m glowrl <stage>` with the recipe's `accelerate_config` (distributed state
   and GPU memory are per process), writing to `<output_root>/<stage>`; with `--launcher slurm`, as `srun` steps of
   the Slurm allocation it runs in (`glowrl.launch`; `glowrl slurm` submits such a job);
3. records every stage's status (pending/running/done/failed), start and end time, resolved config and command
   lines, with the package versions and git commit, in `<output_root>/pipeline.json`.

Re-running the same recipe skips finished stages and resumes an interrupted one from its last complete checkpoint. A
failed stage stops the pipeline with a non-zero exit. SIGINT/SIGTERM reach the running stage, which is recorded as
`interrupted`. Nothing is replaced without `--overwrite` (see [`plan_stages`]), and nothing is deleted or launched
before every stage's values, paths and data are checked. One pipeline at a time holds an output root.
"""

import datetime
import json
import os
import shlex
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

from ._trl_compat import validating_for_world_size
from .checkpoints import COMPLETE_MARKER, last_complete_checkpoint, weights_problem
from .errors import RecipeError
from .io import read_log_history, read_trainer_state, reward_trend, write_json, write_text_atomic
from .launch import LocalLauncher, SlurmLauncher, StageLaunch, slurm_settings, wait_for_server
from .outputs import RunLock, check_output, clear_dir
from .processes import RunInterrupted, run_child
from .recipe import apply_env, apply_overrides, field_names, load_recipe, parse_dataclasses
from .stages import available_stages, get_stage, resolve_recipe, selected_dataclass_types


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


def run_launch(launch: StageLaunch, runner) -> int:
    """Run a stage's steps in order (its vLLM server first, stopped after them); the first non-zero exit stops it."""
    server = None
    try:
        if launch.server:
            print("$ " + shlex.join(launch.server) + " &", flush=True)
            server = subprocess.Popen(launch.server, start_new_session=True)
            print(f"waiting for the vLLM server at {launch.server_url}", flush=True)
            wait_for_server(launch.server_url, server, launch.server_wait)
        for step in launch.steps:
            print("$ " + shlex.join(step), flush=True)
            returncode = runner(step)
            if returncode != 0:
                return returncode
        return 0
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait()


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
    trend = reward_trend(steps)
    if trend:
        metrics["reward_first_third"], metrics["reward_last_third"] = trend
    for key in ("glow/weight_mean", "entropy", "entropy/initial"):
        values = [e[key] for e in history if e.get(key) is not None]
        if values:
            metrics[key] = values[-1] if key != "entropy/initial" else values[0]
    return metrics


def banner(text: str):
    line = "━" * max(0, 78 - len(text) - 4)
    print(f"\n━━ {text} {line}", flush=True)


def validate(resolved: dict, launcher, here: bool = True) -> None:
    """Check every stage's values, paths and data before anything is deleted, written or launched.

    Each stage's values are parsed into its dataclasses (types, ranges, TRL's own config checks) and its `check`
    runs (model and data paths, columns), skipping what earlier stages will produce. Hardware values are checked
    when the stage starts where it runs: here `use_cpu`/`bf16`/`use_vllm` are set for this machine, and GRPO's batch
    rule is checked against the launch's number of processes (`launcher.world_size`), not this one process. With
    `here=False` (a job submitted to run elsewhere), what must be installed where the stages run is not asked of this
    machine either: generation's `backend: vllm` is checked as `transformers` (the stage checks it when it starts).
    """
    launcher.check(resolved)
    produced = set()
    for name, values in resolved.items():
        world_size = launcher.world_size(values)
        stage = get_stage(name)
        types = selected_dataclass_types(stage, values)
        known = field_names(types)
        here_values = [("use_cpu", True), ("bf16", False), ("use_vllm", False)]
        if not here and values.get("backend") == "vllm":
            here_values.append(("backend", "transformers"))
        here_values = {k: v for k, v in here_values if k in known}
        with validating_for_world_size(world_size):
            parsed = parse_dataclasses(types, {**values, **here_values}, where=f"section {name}:")
        linked = {key for key, kind in stage.inputs.items() if kind.rstrip("*") in produced} | {"output_dir"}
        if stage.check is not None:
            stage.check(*parsed, linked=linked)
        inputs = {key: values.get(key) for key in ("model_name_or_path", "dataset_paths", "teacher", "models")}
        check_output(values["output_dir"], f"{name}.output_dir", resume=True, inputs=inputs)  # its own input?
        produced |= set(stage.outputs(values))


def _warn(message: str) -> None:
    print(f"glowrl: warning: {message}", flush=True)


def stage_saved(output_dir: Path) -> bool:
    """Whether a training stage saved its final model there: every rank has, once its marker is in the folder."""
    return (Path(output_dir) / COMPLETE_MARKER).is_file()


def product_problem(stage: str, values: dict) -> str | None:
    """Why a stage recorded as done has no complete product now (a folder deleted, weights truncated), or `None`."""
    for paths in get_stage(stage).outputs(values).values():
        for path in map(Path, [paths] if isinstance(paths, (str, os.PathLike)) else paths):
            if not path.exists() or (path.is_dir() and not any(path.iterdir())):
                return f"its product {path} is missing"
            problem = weights_problem(path) if path.is_dir() else None
            if problem:
                return f"its product {path} is incomplete: {problem}"
    return None


def plan_stages(resolved: dict, manifest: dict | None, overwrite: bool) -> dict:
    """Decide, stage by stage, what a (re-)run does, refusing to replace what the user did not ask to replace.

    Each stage gets an `action`:
    - `skip`: finished with the same config (and nothing before it runs again);
    - `skip` too: unfinished with the same config, but its output holds the marker its training stage writes once every
      rank has saved the final model (the run was killed, or aborted, after that: nothing of it is missing);
    - `resume`: unfinished (running, failed, interrupted) with the same config, from its last complete checkpoint; or
      a stage that resumes itself (generation) whose output this pipeline has no record of (the stage run alone);
    - `run`: its output directory is empty or missing;
    - `replace`: its output is cleared first: with `--overwrite` (remembered, as `overwrite_pending`, until the stage
      starts, so a run stopped before it still replaces it), or when it holds only this pipeline's own unfinished
      attempt with no complete checkpoint to lose.
    Anything else (a finished stage of another config, files this pipeline never recorded, an unfinished run of another
    config with checkpoints) is refused, naming the stage, the directory and the fix. Nothing is deleted here.

    Returns:
        `dict`: the stages' manifest entries, each with its `action` (and `resume_from` for `resume`).
    """
    previous = (manifest or {}).get("stages", {})
    stages, upstream_runs = {}, False
    for stage, config in resolved.items():
        old = previous.get(stage)
        output_dir = Path(config["output_dir"])
        holds_files = output_dir.is_dir() and any(output_dir.iterdir())
        same = old is not None and old["config"] == config
        unfinished = old is not None and old["status"] in ("running", "failed", "interrupted", "pending")
        checkpoint = last_complete_checkpoint(output_dir, warn=_warn) if holds_files else None
        if old is not None and old["config"].get("output_dir") != config["output_dir"] and not overwrite:
            raise RecipeError(
                f"{stage}: this output_root records a {stage} stage in {old['config'].get('output_dir')} (from "
                f"{old.get('recipe', manifest.get('recipe'))}); a root holds one {stage} stage: choose another "
                "output_root, or pass --overwrite to replace its record"
            )
        entry = {"status": "pending", "config": config}
        missing = product_problem(stage, config) if same and old["status"] == "done" else None
        if missing and not overwrite:
            if holds_files:
                raise RecipeError(
                    f"{stage}: recorded as done in {MANIFEST_NAME}, but {missing}; pass --overwrite to run it again"
                )
            _warn(f"{stage}: recorded as done, but {missing}; running it again")
        if overwrite or (same and old.get("overwrite_pending")):
            action = "replace" if holds_files else "run"
            if holds_files:
                entry["overwrite_pending"] = True
        elif same and old["status"] == "done" and not upstream_runs and not missing:
            entry, action = {**old, "config": config}, "skip"
        elif same and unfinished and stage_saved(output_dir) and not upstream_runs:
            _warn(f"{stage}: its last run ended {old['status']} after saving its model in {output_dir}; done")
            ended = old.get("ended") or _now()
            entry, action = {**old, "config": config, "status": "done", "ended": ended}, "skip"
        elif same and unfinished and checkpoint:
            action, entry["resume_from"] = "resume", checkpoint
        elif holds_files and get_stage(stage).resumes_itself and (old is None or (same and unfinished)):
            # the stage continues from what its output holds, e.g. `glowrl generate` run alone on this recipe; it
            # refuses, saying why, an output it did not write or written with other settings
            action = "resume"
        elif not holds_files:
            action = "run"
        elif old is not None and unfinished and not checkpoint:
            action = "replace"  # this pipeline's own attempt, with nothing resumable in it
        else:
            if old is None:
                why = f"{output_dir} holds files this pipeline never wrote (no record in {MANIFEST_NAME})"
            elif same and old["status"] == "done":
                why = f"{output_dir} holds a finished {stage} stage built on an earlier stage that runs again"
            elif old["status"] == "done":
                recipe = old.get("recipe", manifest.get("recipe"))
                why = f"{output_dir} holds a finished {stage} stage of another config ({recipe})"
            else:
                why = f"{output_dir} holds an unfinished {stage} run of another config, with checkpoint {checkpoint}"
            raise RecipeError(f"{stage}: {why}; choose another output_root, or pass --overwrite to replace it")
        entry["action"] = action
        stages[stage] = entry
        upstream_runs = upstream_runs or action != "skip"
    return stages


def load_pipeline(recipe_path: str, overrides: list[str]) -> tuple[dict, dict]:
    """The recipe with its overrides applied and its `env:` set, and every stage's resolved values."""
    recipe = apply_overrides(load_recipe(recipe_path), overrides, available_stages())
    apply_env(recipe)
    return recipe, resolve_recipe(recipe)


def run(
    recipe_path: str,
    overrides: list[str],
    overwrite: bool = False,
    runner=run_child,
    slurm: bool = False,
    overwrite_once: str | None = None,
) -> int:
    """Run the pipeline; returns the exit status (0 when every stage is done).

    Args:
        overwrite_once: `--overwrite`, unless the manifest records that a run with this token already applied it (a
            Slurm job's requeue or resubmission then resumes what its first attempt did; `glowrl slurm` passes it).
        runner: runs one command line and returns its exit status ([`run_child`]; tests pass their own).
        slurm: run every stage as `srun` steps of the allocation this process is in, with the recipe's `slurm:`
            settings ([`SlurmLauncher`]); `glowrl slurm` submits a job that does this.

    Raises:
        RunInterrupted: when SIGINT or SIGTERM stopped a stage (it is recorded as `interrupted`; a re-run resumes).
    """
    recipe, resolved = load_pipeline(recipe_path, overrides)
    config = recipe.get("accelerate_config")
    if slurm:
        launcher = SlurmLauncher.from_allocation(config, slurm_settings(recipe, resolved))
    else:
        launcher = LocalLauncher(config)
    validate(resolved, launcher)
    root = Path(recipe["output_root"])
    check_output(root, "output_root", overwrite=True)  # a file, or not writable: refused here
    with RunLock(root):
        previous = read_manifest(root, overwrite)
        applied = (previous or {}).get("overwrite_once")
        if overwrite_once is not None:
            overwrite = overwrite or applied != overwrite_once
            if not overwrite:
                print(
                    f"glowrl: --overwrite_once {overwrite_once}: applied by an earlier attempt; resuming", flush=True
                )
        previous = read_manifest(root, overwrite)
        stages = plan_stages(resolved, previous, overwrite)
        check_stage_recipes(root, stages, previous, overwrite)
        for entry in stages.values():
            entry.setdefault("recipe", str(recipe_path))
        kept = {k: v for k, v in (previous or {}).get("stages", {}).items() if k not in stages}  # another recipe's
        manifest = {
            "recipe": str(recipe_path),
            "created": (previous or {}).get("created", _now()),
            **({"overwrite_once": overwrite_once or applied} if overwrite_once or applied else {}),
            **environment(),
            "stages": {**kept, **stages},
        }
        return _run_stages(root, resolved, manifest, launcher, runner)


def read_manifest(root: Path, overwrite: bool) -> dict | None:
    """The root's `pipeline.json`; a file of that name that is not a glowrl manifest is the user's, refused."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        manifest = None
    if isinstance(manifest, dict) and isinstance(manifest.get("stages"), dict):
        return manifest
    if overwrite:
        return None
    raise RecipeError(
        f"output_root: {path} is not a glowrl pipeline manifest (this pipeline did not write it); choose another "
        "output_root, or pass --overwrite to replace it"
    )


def check_stage_recipes(root: Path, stages: dict, previous: dict | None, overwrite: bool) -> None:
    """Refuse to replace a `<root>/recipes/<stage>.yaml` that no recorded run of that stage wrote (the user's)."""
    recorded = (previous or {}).get("stages", {})
    for stage, entry in stages.items():
        path = root / "recipes" / f"{stage}.yaml"
        if entry["action"] != "skip" and path.exists() and stage not in recorded and not overwrite:
            raise RecipeError(
                f"output_root: {path} is a file this pipeline never wrote (no {stage} record in {MANIFEST_NAME}); "
                "choose another output_root, or pass --overwrite to replace it"
            )


def _run_stages(root: Path, resolved: dict, manifest: dict, launcher, runner) -> int:
    manifest_path = root / MANIFEST_NAME
    stages = list(resolved)
    shown = set()  # stages run now: their reports (hand-off, evaluation table) were printed as they ran
    for index, stage in enumerate(stages, 1):
        info = manifest["stages"][stage]
        action = info.pop("action")
        algorithm = resolved[stage].get("algorithm")
        title = f"stage {index}/{len(stages)}: {stage}" + (f" ({algorithm})" if algorithm else "")
        if action == "skip":
            banner(f"{title} — done at {info['ended']}, skipped")
            continue
        stage_dir = Path(resolved[stage]["output_dir"])
        if action == "replace":
            clear_dir(stage_dir)
        info.pop("overwrite_pending", None)
        (stage_dir / COMPLETE_MARKER).unlink(missing_ok=True)  # only this run may say it saved the model
        resume = info.pop("resume_from", None)
        shown.add(stage)
        values = resolved[stage]
        stage_recipe = write_text_atomic(root / "recipes" / f"{stage}.yaml", yaml.safe_dump(values, sort_keys=False))
        single = get_stage(stage).single_process(values)
        launch = launcher.launch(stage, stage_recipe, values, resume, single, index=index)
        banner(title + (f" — resuming from {resume}" if resume else " — resuming" if action == "resume" else ""))
        info.update(status="running", started=_now(), commands=launch.steps, resumed_from=resume)
        if launch.server:
            info["server"] = launch.server
        info.pop("ended", None)
        write_json(manifest, manifest_path)
        try:
            returncode = run_launch(launch, runner)
        except RunInterrupted:
            info.update(status="interrupted", ended=_now())
            write_json(manifest, manifest_path)
            banner(f"{title} interrupted; re-run the same command to resume from its last complete checkpoint")
            raise
        info.update(ended=_now(), returncode=returncode)
        if returncode != 0 and not single and stage_saved(stage_dir):
            _warn(f"{title} exited with {returncode} after every process saved the model in {stage_dir}; done")
            returncode = 0
        if returncode != 0:
            info["status"] = "failed"
            write_json(manifest, manifest_path)
            banner(f"{title} failed (exit {returncode}); later stages not run")
            return returncode
        info.update(status="done", metrics=headline_metrics(stage_dir))
        write_json(manifest, manifest_path)
    summary(root, manifest, stages, shown)
    return 0


def summary(root: Path, manifest: dict, stages=None, shown: set = frozenset()):
    """One line per stage of `stages` (this recipe's, not another's kept records), then the reports of the finished
    stages not run now (those of `shown` were printed above as they ran: each report is printed once)."""
    banner("summary")
    details = []
    for stage, info in manifest["stages"].items():
        if stages is not None and stage not in stages:
            continue
        metrics = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.get("metrics", {}).items()
        )
        print(f"  {stage:<8} {info['status']:<8} {info['config']['output_dir']}  {metrics}")
        text = get_stage(stage).summary(info["config"]) if info["status"] == "done" and stage not in shown else None
        details += [f"\n{stage}:\n{text}"] if text else []
    print(f"  manifest: {root / MANIFEST_NAME}")
    for text in details:
        print(text)
