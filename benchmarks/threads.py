"""The CPU thread policy (glowrl.threads): a direct `glowrl sft` against the same run under `accelerate launch`.

    python benchmarks/threads.py --output threads.json            # the tiny SFT recipe, 52 steps, 3 repeats
    python benchmarks/threads.py --max-steps 13 --repeats 5

Every variant runs the same work, `glowrl sft --config recipes/tiny/sft.yaml` for `--max-steps` steps on one saved
tiny model, as a whole process timed from outside (start-up included): wall seconds, and CPU seconds (user + system)
from the kernel's accounting of the finished process tree. Variants:
- `default`: direct, with the policy switched off: torch's default, one thread per physical core (before the policy);
- `policy`: direct, as `glowrl sft` runs now (glowrl.threads decides);
- `omp1`: direct with `OMP_NUM_THREADS=1`, the yardstick the issue measured;
- `accelerate`: `accelerate launch -m glowrl sft` as the pipeline starts a one-process stage (accelerate sets
  `OMP_NUM_THREADS=1`; before the policy that was the pipeline's only difference from a direct command).
Each repeat runs every variant, the order rotated by one each time, with the 1-minute load average recorded at each
run's start: the machine's other work is part of the measurement, so quote the load with the figures. The table
gives medians and ranges per variant and each variant's median wall time over `accelerate`'s.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness
from meters import log

from glowrl.io import write_json, write_text_atomic


REPO = Path(__file__).resolve().parent.parent
VARIANTS = ["default", "policy", "omp1", "accelerate"]
NO_POLICY = (
    "import sys, glowrl.threads as t; t.apply_thread_policy = lambda *a, **k: None; "
    "from glowrl.cli import main; sys.exit(main(sys.argv[1:]))"
)


def command(variant: str, model: Path, output: Path, steps: int) -> tuple[list[str], dict]:
    sft = ["--config", "recipes/tiny/sft.yaml", "--model_name_or_path", str(model), "--output_dir", str(output)]
    sft += ["--max_steps", str(steps), "--save_strategy", "no", "--logging_steps", str(steps)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GLOWRL_CPU_THREADS")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if variant == "default":
        return [sys.executable, "-c", NO_POLICY, "sft", *sft], env
    if variant == "omp1":
        env["OMP_NUM_THREADS"] = "1"
    if variant == "accelerate":
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_machines", "1"]
        launch += ["--dynamo_backend", "no", "--num_processes", "1", "--mixed_precision", "no"]
        return [*launch, "--gradient_accumulation_steps", "1", "-m", "glowrl", "sft", *sft], env
    return [sys.executable, "-m", "glowrl", "sft", *sft], env


def timed(cmd: list[str], env: dict, log_path: Path) -> dict:
    """Wall and CPU seconds of one whole process tree, and the load average at its start."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log_path, "w") as out:
        child = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(cmd)} failed (exit {code}); see {log_path}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "load_1min": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path(tempfile.gettempdir()) / "threads.json")
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=52, help="SFT steps per run (52: the whole tiny recipe)")
    args = parser.parse_args(argv)
    meta = {"machine": harness.machine_info("cpu"), "args": {k: str(v) for k, v in vars(args).items()}}
    log(f"machine: {meta['machine']['cpus_usable']} cores, load average {meta['machine']['load_avg_at_start']}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "base"
        subprocess.run([sys.executable, "-m", "glowrl", "tiny-model", "--output_dir", str(model)], check=True,
                       cwd=REPO, capture_output=True)  # fmt: skip
        for repeat, order in harness.rotations(args.variants, 0, args.repeats):
            for variant in order:
                cmd, env = command(variant, model, Path(tmp) / f"{variant}-{repeat}", args.max_steps)
                run = {"variant": variant, "repeat": repeat, **timed(cmd, env, Path(tmp) / "run.log")}
                log(f"repeat {repeat} {variant}: {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, "
                    f"load {run['load_1min']:.2f}")  # fmt: skip
                runs.append(run)
    meta["load_avg_at_end"] = os.getloadavg()
    summary = {}
    for variant in args.variants:
        mine = [r for r in runs if r["variant"] == variant]
        summary[variant] = {
            key: {"median": statistics.median(r[key] for r in mine), "min": min(r[key] for r in mine),
                  "max": max(r[key] for r in mine)}
            for key in ("wall_s", "cpu_s", "load_1min")
        }  # fmt: skip
    base = summary.get("accelerate", {}).get("wall_s", {}).get("median")
    load = f"{meta['machine']['load_avg_at_start'][0]:.2f} at start, {meta['load_avg_at_end'][0]:.2f} at end"
    cores = meta["machine"]["cpus_usable"]
    lines = [
        f"tiny SFT recipe, {args.max_steps} steps, {args.repeats} repeats; {cores} cores; load average {load}",
        "",
        "| variant | wall s, median [min, max] | CPU s, median | load at start, median | wall / accelerate |",
        "|---|---|---|---|---|",
    ]
    for variant, s in summary.items():
        ratio = f"{s['wall_s']['median'] / base:.2f}" if base else "-"
        lines.append(
            f"| {variant} | {s['wall_s']['median']:.1f} [{s['wall_s']['min']:.1f}, {s['wall_s']['max']:.1f}] | "
            f"{s['cpu_s']['median']:.1f} | {s['load_1min']['median']:.2f} | {ratio} |"
        )
    write_json({"meta": meta, "runs": runs, "summary": summary}, args.output)
    write_text_atomic(args.output.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
