"""`glowrl study`: every arm x seed pipeline of a study recipe, then the comparison.

    glowrl study --config recipes/tiny/study.yaml
    glowrl study --config recipes/qwen2.5-7b/study_arms.yaml            # launcher: slurm: one job per run
    glowrl study --config recipes/qwen2.5-7b/study_arms.yaml --wait     # ... and wait for them, then aggregate

Every run's recipe is checked before the first run starts ([`~glowrl.study.design`]). Then, locally, the runs go one
after the other, each a `glowrl pipeline` whose stage output goes to `<run>/study.log` (one line per run here: its
status, time and headline figures); with `launcher: slurm`, each run is submitted as its own `glowrl slurm` job
(recorded in `study.json`), and a later `glowrl study` (or `--wait`) collects them. A re-run skips the runs that
finished (their pipeline manifest says every stage is done with the same config) and the jobs still queued; it resumes
an interrupted run where the pipeline would. A failed run is reported with its error and left out of the figures;
the rest still aggregate.

Writes into `output_root`: `runs/<arm>/seed<k>/` (each a pipeline output root), `recipes/<arm>-seed<k>.yaml`,
`study.json` (every run, its metrics, the aggregate and the differences), `study.md` and the plots
([`~glowrl.study.plots`]).
"""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ..errors import RecipeError
from ..io import write_json, write_text_atomic
from ..outputs import check_output
from ..processes import run_parallel
from ..stages import resolve_recipe
from ..threads import budget_for
from .aggregate import aggregate, differences, heldout_curve, run_metrics, study_markdown
from .design import Study, base_recipe, load_study, run_dir, run_recipe, sft_steps_budget


STUDY_NAME = "study.json"
QUEUED_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


def _finished(root: Path, resolved: dict) -> bool:
    manifest = root / "pipeline.json"
    if not manifest.is_file():
        return False
    stages = json.loads(manifest.read_text()).get("stages", {})
    return all(
        stages.get(name, {}).get("status") == "done" and stages[name].get("config") == values
        for name, values in resolved.items()
    )


def collect(root: Path, resolved: dict) -> dict:
    """A finished run's metrics, from its eval results and trainer states."""
    results = json.loads(Path(resolved["eval"]["output_dir"], "results.json").read_text())
    stage_dirs = {name: values["output_dir"] for name, values in resolved.items() if name in ("sft", "rl")}
    stage_of_model = {str(Path(path)): name for name, path in stage_dirs.items()}
    stage_of_model |= {str(path): name for name, path in stage_dirs.items()}
    return run_metrics(results, stage_of_model, stage_dirs)


def _check_run(arm: str, recipe: dict) -> None:
    """Every stage's values, paths and data of one run, as `glowrl pipeline` checks them (nothing written)."""
    from ..launch import LocalLauncher
    from ..pipeline import validate
    from ..stages import resolve_recipe

    try:
        validate(resolve_recipe(recipe), LocalLauncher(recipe.get("accelerate_config")))
    except ValueError as error:
        raise RecipeError(f"arms.{arm}: {str(error).strip().splitlines()[0]}") from None


def _job_state(job_id: str) -> str | None:
    result = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False, timeout=60
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def run_study(config: str, wait: bool = False, poll_s: float = 30.0) -> dict:
    """Run (or submit) every run not finished, then aggregate what finished; returns `study.json`'s content."""
    study = load_study(config)
    base = base_recipe(study)
    root = study.output_root
    check_output(root, "output_root", overwrite=True)  # a file, or not writable: refused before anything runs
    from ..launch import LocalLauncher

    world = LocalLauncher(base.get("accelerate_config")).world_size({})
    if study.launcher == "slurm":
        from ..launch import slurm_settings

        settings = slurm_settings(base, resolve_recipe(base))
        world = settings.nodes * max(1, settings.gpus_per_node)
    for arm in study.arms:  # every key of every arm, before any data is read
        run_recipe(study, base, arm, study.seeds[0], None)
    sft_steps = sft_steps_budget(study, base, world)
    plan = []
    for arm in study.arms:
        for seed in study.seeds:
            recipe = run_recipe(study, base, arm, seed, sft_steps)
            if study.launcher == "local":  # Slurm runs are checked by `glowrl slurm`, for their job's layout
                _check_run(arm, recipe)
            plan.append((arm, seed, recipe))
    previous = json.loads((root / STUDY_NAME).read_text()) if (root / STUDY_NAME).is_file() else {}
    if not previous:
        _check_not_the_users(study, plan)
    jobs = {(r["arm"], r["seed"]): r.get("job_id") for r in previous.get("runs", [])}
    runs, local = [], []
    print(
        f"== study {study.name}: {len(study.arms)} arms x {len(study.seeds)} seeds -> {root} (SFT budget: "
        f"{f'{sft_steps} steps' if sft_steps else 'the base recipe max_steps'} per arm)",
        flush=True,
    )
    for index, (arm, seed, recipe) in enumerate(plan, 1):
        resolved = resolve_recipe(recipe)
        folder = run_dir(study, arm, seed)
        text = yaml.safe_dump(recipe, sort_keys=False)
        recipe_path = write_text_atomic(root / "recipes" / f"{arm}-seed{seed}.yaml", text)
        entry = {"arm": arm, "seed": seed, "output_root": str(folder), "recipe": str(recipe_path)}
        if jobs.get((arm, seed)):
            entry["job_id"] = jobs[(arm, seed)]
        label = f"[{index}/{len(plan)}] {arm} seed {seed}"
        runs.append(entry)
        if _finished(folder, resolved):
            entry["status"] = "done"
            _collect(entry, resolved)
            print(f"{label}: finished earlier, skipped" + _headline(entry), flush=True)
        elif study.launcher == "slurm":
            job = jobs.get((arm, seed))
            state = _job_state(job) if job else None
            if state in QUEUED_STATES:
                entry.update(status="queued", job_id=job)
                print(f"{label}: job {job} {state.lower()}", flush=True)
            else:
                from ..slurm import submit

                with contextlib.redirect_stdout(sys.stderr):
                    job = submit(str(recipe_path), [])
                entry.update(status="queued", job_id=job)
                print(f"{label}: submitted job {job}", flush=True)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            local.append((entry, resolved, label))
    if local:
        _run_local(local, study.parallel)
    result = write_study(study, runs, sft_steps, base)  # the job ids are in study.json from here on
    if wait and any(r["status"] == "queued" for r in runs):
        return _wait_and_collect(config, poll_s)
    return result


def _check_not_the_users(study: Study, plan: list) -> None:
    """With no `study.json` (no record of this study), refuse a root holding a file the study would replace: its
    tables and plots, or a run recipe with other content (one with the same content is an interrupted first try)."""
    root = study.output_root
    theirs = [p for p in [root / "study.md", *root.glob("study_*.png")] if p.exists()]
    for arm, seed, recipe in plan:
        path = root / "recipes" / f"{arm}-seed{seed}.yaml"
        if path.exists() and (not path.is_file() or path.read_text() != yaml.safe_dump(recipe, sort_keys=False)):
            theirs.append(path)
    if theirs:
        raise RecipeError(
            f"output_root: {theirs[0]} is a file this study never wrote (no {STUDY_NAME} in {root}), and the study "
            "would replace it; choose another output_root, or move the file"
        )


def _collect(entry: dict, resolved: dict) -> None:
    try:
        entry["metrics"] = collect(Path(entry["output_root"]), resolved)
    except (OSError, ValueError, KeyError) as error:
        entry.update(status="failed", error=f"its results could not be read: {error}")


def _error_line(log: Path, returncode: int) -> str:
    """The run's own one-line error (the pipeline's `glowrl: error:`), or where to look."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("glowrl: error: ")]
    return lines[-1].removeprefix("glowrl: error: ") if lines else f"exit {returncode}; see {log}"


def _run_local(local: list, parallel: int) -> None:
    """Run the pipelines of `local` (entry, resolved, label), `parallel` at a time, each a `glowrl pipeline` process
    with its output in its run's `study.log`; fills each entry's status, error and metrics."""
    env = {**os.environ, **budget_for(parallel)}  # an even share of this command's CPU threads each
    commands = []
    for entry, _, _ in local:
        log = Path(entry["output_root"]) / "study.log"
        commands.append(([sys.executable, "-m", "glowrl", "pipeline", "--config", entry["recipe"]], log, env))
    started = {}

    def on_start(index):
        started[index] = time.time()
        print(f"{local[index][2]}: running (log: {commands[index][1]})", flush=True)

    def on_exit(index, returncode):
        entry, resolved, label = local[index]
        if returncode == 0:
            entry["status"] = "done"
            _collect(entry, resolved)
        else:
            entry.update(status="failed", error=_error_line(commands[index][1], returncode))
        how = f"{entry['status']} in {time.time() - started[index]:.0f} s"
        print(f"{label}: {how}" + (f": {entry['error']}" if entry.get("error") else _headline(entry)), flush=True)

    statuses = run_parallel(commands, parallel, on_start, on_exit)
    for (entry, _, _), status in zip(local, statuses, strict=True):
        if status is None:
            entry.update(status="not run", error="the study was interrupted first")


def _headline(entry: dict) -> str:
    metrics = entry.get("metrics") or {}
    keys = [
        k
        for k in (
            "sft/in_domain/accuracy",
            "sft/out_of_domain/accuracy",
            "rl/in_domain/accuracy",
            "rl/out_of_domain/accuracy",
        )
        if k in metrics
    ]
    return "" if not keys else " (" + ", ".join(f"{k} {100 * metrics[k]:.1f}%" for k in keys) + ")"


def _wait_and_collect(config: str, poll_s: float) -> dict:
    print(f"waiting for the study's jobs (every {poll_s:.0f} s) ...", flush=True)
    while True:
        time.sleep(poll_s)
        previous = json.loads((load_study(config).output_root / STUDY_NAME).read_text())
        if not any(_job_state(r["job_id"]) in QUEUED_STATES for r in previous["runs"] if r.get("job_id")):
            return run_study(config, wait=False)


def write_study(study: Study, runs: list[dict], sft_steps: int | None, base: dict) -> dict:
    """Aggregate, plot, and write `study.json` and `study.md`."""
    from .plots import plot_study

    aggregated = aggregate(runs)
    result = {
        "name": study.name,
        "base": study.base,
        "arms": list(study.arms),
        "seeds": study.seeds,
        "reference": study.reference,
        "sft_steps": sft_steps or (base.get("sft") or {}).get("max_steps"),
        "launcher": study.launcher,
        "runs": runs,
        "aggregate": aggregated,
        "differences": differences(runs, study.reference),
    }
    curves = {
        (r["arm"], r["seed"]): heldout_curve(Path(r["output_root"]) / "sft") for r in runs if r["status"] == "done"
    }
    result["plots"] = [str(p) for p in plot_study(result, curves, study.output_root)] if aggregated else []
    write_json(result, study.output_root / STUDY_NAME)
    write_text_atomic(study.output_root / "study.md", study_markdown(result))
    done = sum(r["status"] == "done" for r in runs)
    print(f"== study {study.name}: {done} of {len(runs)} runs with results; {study.output_root / 'study.md'}")
    if done < len(runs):
        waiting = sum(r["status"] == "queued" for r in runs)
        if waiting:
            print(f"   {waiting} runs queued on Slurm: run the same command again (or with --wait) to collect them")
        failed = [r for r in runs if r["status"] == "failed"]
        for r in failed:
            print(f"   failed: {r['arm']} seed {r['seed']}: {r['error']}")
    return result
