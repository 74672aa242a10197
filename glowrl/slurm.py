"""`glowrl slurm`: a pipeline recipe as one Slurm job over several nodes.

    glowrl slurm --config recipes/qwen2.5-7b/pipeline_glow.yaml --nodes 2 --partition gpu --time 2-00:00:00
    glowrl slurm --config recipes/qwen2.5-7b/pipeline_glow.yaml --nodes 3 --vllm_nodes 1 --dry_run

Checks the recipe as `glowrl pipeline` would (every stage's values, paths and data, GRPO's batch rule for the job's
number of processes, what the outputs hold), then renders an sbatch script and submits it. Nothing is written or
submitted when a check fails. Into `<output_root>/slurm/` go the script (`job-<time>.sbatch`), the recipe it runs
(`recipe-<time>.yaml`: the recipe with its command-line overrides and `slurm:` settings applied, so a requeue runs
exactly what was submitted), the job's output (`<job name>-<job id>.out`, appended to across requeues) and a line
per submission in `jobs.jsonl`.

The script asks for one task per node and runs `glowrl pipeline --launcher slurm` in the allocation, which runs every
stage as its own `srun` step (`glowrl.launch.SlurmLauncher`): so the pipeline's manifest, skip and resume rules hold
across a requeue (`--requeue`, on by default: a preempted or requeued job resumes each stage from its last complete
checkpoint) and a manual resubmission of the same script (after a TIMEOUT, which Slurm does not requeue). `--overwrite`
replaces earlier outputs once: the script passes `--overwrite_once <its render time>`, which the pipeline applies
only if its manifest does not record it yet, so neither a requeue nor a resubmission replaces what this job finished.
GPU nodes are asked for whole (`--exclusive`, `--mem=0`, and every step given the node's CPUs). The cluster
environment (NCCL error handling, the network interface, a shared Hugging Face cache, offline mode) comes from the
recipe's `slurm:` keys; `--dry_run` prints the script and each stage's launch without writing or submitting, and
needs neither Slurm nor what the stages need where they run (vLLM).
"""

import datetime
import difflib
import json
import shlex
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import yaml

from ._version import __version__
from .errors import GlowrlError, RecipeError
from .io import write_text_atomic
from .launch import SlurmLauncher, SlurmSettings, slurm_settings
from .outputs import check_output
from .pipeline import MANIFEST_NAME, load_pipeline, plan_stages, validate
from .recipe import unknown_key_error
from .stages import get_stage


SLURM_DIR = "slurm"


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate `--key value` pairs of [`SlurmSettings`] (a list takes every value up to the next flag) from the
    pipeline's own overrides; a flag that is neither but close to a setting is refused with the setting's name."""
    names = {f.name: f for f in fields(SlurmSettings)}
    settings, overrides = [], []
    i = 0
    while i < len(argv):
        key = argv[i][2:] if argv[i].startswith("--") else None
        end = i + 1
        while end < len(argv) and not (argv[end].startswith("--") and len(argv[end]) > 2):
            end += 1
        if key in names and "list" in str(names[key].type):
            settings += argv[i:end]
        elif key in names:
            settings += argv[i : i + 2]
            end = i + 2
        else:
            close = difflib.get_close_matches(key or "", names, n=1, cutoff=0.8) if key and "." not in key else []
            if close:
                raise unknown_key_error(key, names, "the command line")
            overrides += argv[i : i + 2]
            end = i + 2
        i = end
    return settings, overrides


def prepare(config: str, argv: list[str], overwrite: bool) -> tuple[dict, SlurmSettings, SlurmLauncher]:
    """The recipe (overrides and `slurm:` settings applied), checked for the job's layout as the pipeline checks it."""
    settings_flags, overrides = split_flags(argv)
    recipe, resolved = load_pipeline(config, overrides)
    settings = slurm_settings(recipe, resolved, settings_flags)
    # The job's nodes are not known before it starts: check the layout with placeholders of the same size.
    placeholders = [f"node{i}" for i in range(settings.nodes)]
    launcher = SlurmLauncher(recipe.get("accelerate_config"), placeholders, placeholders, settings)
    validate(resolved, launcher, here=False)
    root = Path(recipe["output_root"])
    check_output(root, "output_root", overwrite=True)
    manifest = root / MANIFEST_NAME
    plan_stages(resolved, json.loads(manifest.read_text()) if manifest.is_file() else None, overwrite)
    settings_dict = {k: v for k, v in vars(settings).items() if v is not None}
    recipe = {**recipe, "slurm": settings_dict}
    return recipe, settings, launcher


def job_name(settings: SlurmSettings, root: Path) -> str:
    return settings.job_name or f"glowrl-{root.name}"


def sbatch_value(value) -> str:
    """A value quoted for an `#SBATCH` line: sbatch splits those at spaces, reads quotes and ends them at a `#`."""
    return shlex.quote(str(value))


def render(recipe: dict, settings: SlurmSettings, recipe_file: Path, overwrite: str | None, source: str) -> str:
    """The sbatch script that runs `recipe_file`'s pipeline with these settings (`overwrite`: its `--overwrite_once`
    token, or None)."""
    root = Path(recipe["output_root"]).resolve()
    output = str(root / SLURM_DIR).replace("%", "%%") + "/%x-%j.out"  # `%` starts sbatch's filename patterns
    options = {
        "job-name": job_name(settings, root),
        "nodes": settings.nodes,
        "ntasks-per-node": 1,
        "gpus-per-node": settings.gpus_per_node or None,
        "cpus-per-task": settings.cpus_per_task,
        "mem": settings.mem,
        "partition": settings.partition,
        "account": settings.account,
        "qos": settings.qos,
        "time": settings.time,
        "constraint": settings.constraint,
        "output": output,
        "open-mode": "append",
        "chdir": Path.cwd(),
    }
    layout = f"{settings.nodes} node(s)" + (
        f" x {settings.gpus_per_node} GPU(s)" if settings.gpus_per_node else " (CPU)"
    )
    rendered = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    lines = [
        "#!/bin/bash",
        f"# glowrl slurm {__version__}: the pipeline of {source} on {layout}"
        + (", the last one serving vLLM." if settings.vllm_nodes else "."),
        f"# Rendered {rendered}; resubmit with `sbatch` on this file. Each stage runs as srun steps",
        f"# (glowrl.launch.SlurmLauncher); {root / MANIFEST_NAME} records every step's command line.",
        *(f"#SBATCH --{key}={sbatch_value(value)}" for key, value in options.items() if value is not None),
        *(["#SBATCH --exclusive"] if settings.exclusive else []),
        *(["#SBATCH --requeue"] if settings.requeue else ["#SBATCH --no-requeue"]),
        *(f"#SBATCH {option}" for option in settings.extra_sbatch or []),
        "set -eo pipefail",
        *(settings.setup or []),
        *(f"export {key}={shlex.quote(value)}" for key, value in settings.environment().items()),
        'echo "glowrl: job $SLURM_JOB_ID, attempt $((${SLURM_RESTART_COUNT:-0} + 1)), nodes $SLURM_JOB_NODELIST"',
    ]
    command = [
        sys.executable,
        "-m",
        "glowrl",
        "pipeline",
        "--config",
        str(recipe_file.resolve()),
        "--launcher",
        "slurm",
    ]
    if overwrite:  # once: the manifest records it, so a requeue or a resubmission of this script resumes instead
        command += ["--overwrite_once", overwrite]
    lines += [f"exec {shlex.join(command)}"]
    return "\n".join(lines) + "\n"


def describe_stages(recipe: dict, launcher: SlurmLauncher) -> str:
    """Each stage's launch in the job, with placeholder node names (the real ones are known when it starts)."""
    from .stages import resolve_recipe

    lines = ["# Each stage's launch (node names and --cpus-per-task=ALL are placeholders until the job starts):"]
    for index, (name, values) in enumerate(resolve_recipe(recipe).items(), 1):
        single = get_stage(name).single_process(values)
        recipe_file = Path(recipe["output_root"]) / "recipes" / f"{name}.yaml"
        launch = launcher.launch(name, recipe_file, values, None, single, index=index)
        lines.append(f"# stage {index}: {name} on {launch.world_size} process(es)")
        if launch.server:
            lines.append(f"#   server: {shlex.join(launch.server)}")
        lines += [f"#   $ {shlex.join(step)}" for step in launch.steps]
    return "\n".join(lines)


def submit(config: str, argv: list[str], overwrite: bool = False, dry_run: bool = False) -> str | None:
    """Check, render and submit (or, with `dry_run`, print); returns the job id, or None for a dry run."""
    recipe, settings, launcher = prepare(config, argv, overwrite)
    root = Path(recipe["output_root"])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = root / SLURM_DIR
    recipe_file, script_file = folder / f"recipe-{stamp}.yaml", folder / f"job-{stamp}.sbatch"
    script = render(recipe, settings, recipe_file, stamp if overwrite else None, config)
    if dry_run:
        print(script + describe_stages(recipe, launcher))
        return None
    if shutil.which("sbatch") is None:
        raise GlowrlError(
            "sbatch is not installed here; `glowrl slurm --dry_run` prints the script without submitting"
        )
    if recipe_file.exists() or script_file.exists():
        raise RecipeError(f"{folder}: a job was rendered there this second ({stamp}); submit again")
    write_text_atomic(recipe_file, yaml.safe_dump(recipe, sort_keys=False))
    write_text_atomic(script_file, script)
    result = subprocess.run(["sbatch", "--parsable", str(script_file)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise GlowrlError(f"sbatch refused {script_file}: {result.stderr.strip() or result.stdout.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    record = {"job_id": job_id, "script": str(script_file), "recipe": str(recipe_file), "submitted": stamp}
    with (folder / "jobs.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    output = folder / f"{job_name(settings, root.resolve())}-{job_id}.out"
    print(f"submitted job {job_id}: {script_file}\noutput (appended to across requeues): {output}")
    return job_id
