#!/usr/bin/env python
"""The GPU checks in one command: the `pytest -m gpu` suite and the CUDA speed benchmarks, into one JSON of figures.

    python benchmarks/gpu_check.py                          # one CUDA GPU (written for one H200): <= 9 min 35 s
    python benchmarks/gpu_check.py --parts tests            # only some parts (comma-separated names, below)
    python benchmarks/gpu_check.py --smoke                  # on a CPU: the plumbing, in about a minute

The parts run one after the other, each in a process group of its own with its own timeout (SIGINT first, so that
pytest still writes its report, then SIGKILL), all inside `--budget-s` (default 560 s; a part that overruns gets up
to 15 s more to stop, so the whole run ends within 575 s):

- `environment` (60 s): GPU name and memory, driver, torch / CUDA / vLLM / TRL versions, from a child process;
- `tests` (390 s): `python -m pytest -m gpu tests/test_gpu.py --junitxml ...`: bf16 GLOW SFT, GRPO with vLLM
  colocated, generate and eval with vLLM, LoRA SFT -> GRPO with vLLM (see that file);
- `bench_sft_0.5b` (75 s): `speed_glow_sft.py --device cuda --bf16 --shape qwen2.5-0.5b --in-process`, 1 + 3 steps;
- `bench_grpo_0.5b` (70 s): `speed_grpo_entropy.py --device cuda --bf16 --shape qwen2.5-0.5b`, 1 + 3 steps;
- `bench_sft_7b_4layers` (120 s): the SFT benchmark at Qwen2.5-7B's width with 4 of its 28 layers, 1 + 2 steps;
  optional: it runs only if 60 s of the budget are left, and is skipped (not failed) otherwise.

`--in-process` keeps the SFT benchmark's variants in one process (no import and load per variant): on CUDA its memory
figure is the allocator's peak over the memory allocated before each run, which that leaves valid.

`--timeout-factor` scales every timeout (a slower GPU); a part never gets more than what is left of the budget, and
a part that cannot start within it is recorded as not run (a failure, except the optional one). A failed or
timed-out part is recorded and the next one runs; Ctrl-C or SIGTERM stops the running part and keeps the rest.
Where one command may not run that long, split it: `--parts tests --output a.json`, then
`--parts bench_sft_0.5b,bench_grpo_0.5b,bench_sft_7b_4layers --output b.json` (each within its own budget).

The JSON (`--output`, default `$OUT/gpu_check.json` when `$OUT` is set, else `outputs/gpu_check.json`) is rewritten
after every part. It holds the environment, and per part: its status (`passed`, `failed`, `timeout`, `not_run`,
`skipped`, `interrupted`), command, wall time, timeout and exit status; for `tests` the pass/fail/skip counts and every
test's outcome, time and (failures, errors) message, or skip reason; for each benchmark the result JSON it wrote; for
a part that did not pass, the last lines of its log. Every part's full output is kept in `<output stem>_logs/` (the
tests' stage logs under `tests/`). A short summary is printed at the end. Exit status: 0 when every part passed (or
was skipped by design), 1 when one did not, 2 without CUDA (unless `--smoke`), 130 when interrupted.

`--smoke` checks this script on a CPU: the GPU tests run and skip (no CUDA), and each benchmark runs with its own
`--smoke` and `--device cpu` instead of `--device cuda --bf16` and the step counts, keeping its shape flags.

What this is not: a benchmark of its own (the figures are the benchmarks' own JSON; README.md says how they measure),
a multi-GPU check (one GPU: `CUDA_VISIBLE_DEVICES` defaults to 0), or something that installs anything: run it where
glowrl, its test dependencies and (for the vLLM tests) vLLM are installed; the vLLM tests skip, with that reason, when
vLLM is not.
"""

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from glowrl.io import write_json  # noqa: E402 (the repository root is put on sys.path first; stdlib only)
from glowrl.processes import UNATTENDED_ENV  # noqa: E402


DEFAULT_BUDGET_S = 560.0
STOP_GRACE_S = 15.0  # between SIGINT and SIGKILL: pytest writes its JUnit report, the stages kill their children
LOG_TAIL_LINES = 40
MESSAGE_CHARS = 4000


@dataclass(frozen=True)
class Part:
    """One step of the check: a command (`cuda` on a GPU, `smoke` with `--smoke`), its timeout, whether it may be
    left out when the budget runs short, and the least time worth starting it with."""

    name: str
    cuda: list[str]
    smoke: list[str]
    timeout_s: float
    optional: bool = False
    min_s: float = 30.0
    kind: str = "benchmark"  # "tests" or "benchmark"


def parts(python: str) -> list[Part]:
    bench = REPO / "benchmarks"
    sft, grpo = [python, str(bench / "speed_glow_sft.py")], [python, str(bench / "speed_grpo_entropy.py")]
    cuda, smoke = ["--device", "cuda", "--bf16"], ["--smoke", "--device", "cpu"]
    short = ["--warmup-steps", "1", "--steps", "3", "--repeats", "1"]
    shape_05b, shape_7b = ["--shape", "qwen2.5-0.5b"], ["--shape", "qwen2.5-7b", "--num-hidden-layers", "4"]
    tests = [python, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider", "-q", "-rfEs"]
    return [
        Part("tests", tests, tests, 390.0, min_s=120.0, kind="tests"),
        Part("bench_sft_0.5b", [*sft, *cuda, *shape_05b, *short, "--in-process"], [*sft, *smoke, *shape_05b], 75.0),
        Part("bench_grpo_0.5b", [*grpo, *cuda, *shape_05b, *short, "--micro-iters", "50"], [*grpo, *smoke], 70.0),
        Part(
            "bench_sft_7b_4layers",
            [*sft, *cuda, *shape_7b, "--warmup-steps", "1", "--steps", "2", "--repeats", "1", "--in-process"],
            [*sft, *smoke, *shape_7b],
            120.0,
            optional=True,
            min_s=60.0,
        ),
    ]


def parse_args(argv=None) -> argparse.Namespace:
    names = [p.name for p in parts(sys.executable)]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    out = os.environ.get("OUT")
    default = Path(out) / "gpu_check.json" if out else REPO / "outputs" / "gpu_check.json"
    p.add_argument("--output", type=Path, default=default, help=f"the JSON of figures (default: {default})")
    p.add_argument(
        "--smoke", action="store_true", help="check the plumbing on a CPU (GPU tests skip, benchmarks --smoke)"
    )
    p.add_argument("--parts", default=",".join(names), help="comma-separated subset of " + ",".join(names))
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-clock budget of all parts together")
    p.add_argument("--timeout-factor", type=float, default=1.0, help="scale every part's timeout (a slower GPU)")
    args = p.parse_args(argv)
    args.parts = [name.strip() for name in args.parts.split(",") if name.strip()]
    unknown = sorted(set(args.parts) - set(names))
    if unknown or not args.parts:
        p.error(f"--parts: unknown {unknown}; choose among {names}" if unknown else "--parts: name at least one")
    if args.budget_s <= 0 or args.timeout_factor <= 0:
        p.error("--budget-s and --timeout-factor must be positive")
    return args


# ------------------------------------------------------------------------------------------------ running a part


def child_env(logs: Path) -> dict:
    env = {**os.environ, **UNATTENDED_ENV, "GLOWRL_GPU_LOG_DIR": str(logs / "tests")}
    env.setdefault("CUDA_VISIBLE_DEVICES", "0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def stop_group(proc: subprocess.Popen) -> int:
    """SIGINT to the part's process group, then SIGKILL after `STOP_GRACE_S`; returns the exit status."""
    for sig, wait_s in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def run_command(command: list[str], log: Path, timeout_s: float, env: dict) -> dict:
    """Run `command` from the repository root, output to `log`; kill its whole group on timeout and afterwards."""
    start = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        timed_out = False
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out, status = True, stop_group(proc)
        except BaseException:  # Ctrl-C of this script: stop the part, then stop
            stop_group(proc)
            raise
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # leftovers (a vLLM engine process) would hold the GPU
    return {"returncode": status, "timed_out": timed_out, "wall_s": round(time.monotonic() - start, 2)}


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    return log.read_text(errors="replace").splitlines()[-lines:] if log.is_file() else []


def junit_results(path: Path) -> dict | None:
    """Counts and per-test outcomes from pytest's JUnit XML; `None` when pytest wrote none."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        return {"error": f"unreadable JUnit XML: {error}"}
    tests = []
    for case in root.iter("testcase"):
        found = {tag: case.find(tag) for tag in ("failure", "error", "skipped")}
        outcome = next((tag for tag in found if found[tag] is not None), "passed")
        row = {"name": f"{case.get('classname', '')}::{case.get('name')}", "time_s": float(case.get("time") or 0.0)}
        row["outcome"] = {"failure": "failed"}.get(outcome, outcome)
        for tag in ("failure", "error"):  # a failed test whose teardown failed too has both
            if found[tag] is not None:
                message, details = (found[tag].get("message") or "").strip(), (found[tag].text or "").strip()
                text = f"{message}\n{details[-MESSAGE_CHARS:]}" if details else message
                row.setdefault("messages", []).append(f"{tag}: {text[: 2 * MESSAGE_CHARS]}")
        if outcome == "skipped":
            row["reason"] = (found["skipped"].get("message") or "").strip()[:MESSAGE_CHARS]
        tests.append(row)
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"counts": {**counts, "total": len(tests)}, "tests": tests}


def run_part(part: Part, args, logs: Path, timeout_s: float, env: dict) -> dict:
    log = logs / f"{part.name}.log"
    command = list(part.smoke if args.smoke else part.cuda)
    if part.kind == "tests":
        junit = logs / "tests_junit.xml"
        junit.unlink(missing_ok=True)
        command += ["--junitxml", str(junit), "-o", "junit_family=xunit2"]
    else:
        result_path = logs / f"{part.name}.json"
        result_path.unlink(missing_ok=True)
        command += ["--output", str(result_path)]
    record = {"command": shlex.join(command), "timeout_s": round(timeout_s, 1), "log": str(log)}
    print(f"[gpu_check] {part.name}: started (timeout {timeout_s:.0f} s)", flush=True)
    record |= run_command(command, log, timeout_s, env)
    ok = record["returncode"] == 0 and not record["timed_out"]
    if part.kind == "tests":
        results = junit_results(junit)
        if results is None:
            ok, record["error"] = False, "pytest wrote no JUnit report"
        else:
            record |= results
            ok = ok and "error" not in results and results["counts"]["failed"] + results["counts"]["error"] == 0
    else:
        try:
            record["result"] = json.loads(result_path.read_text())
        except (OSError, ValueError) as error:
            ok, record["error"] = False, f"no result JSON: {error}"
    record["status"] = "passed" if ok else "timeout" if record["timed_out"] else "failed"
    if not ok:
        record["log_tail"] = log_tail(log)
    skipped = [t for t in record.get("tests", []) if t["outcome"] == "skipped"]
    if skipped and not args.smoke:  # on a GPU every test should run: say which did not, and why
        reasons = sorted({t.get("reason", "") for t in skipped})
        record["warning"] = f"{len(skipped)} GPU test(s) skipped: {'; '.join(reasons)}"
    print(f"[gpu_check] {part.name}: {record['status']} in {record['wall_s']:.0f} s", flush=True)
    return record


# ------------------------------------------------------------------------------------------------ environment

ENVIRONMENT_SCRIPT = r"""
import json, platform, sys
from importlib import metadata
info = {"python": platform.python_version(), "platform": platform.platform(), "versions": {}}
for name in ("torch", "trl", "transformers", "accelerate", "peft", "datasets", "vllm", "glowrl", "triton"):
    try:
        info["versions"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        info["versions"][name] = None
import torch
info["torch"], info["cuda"] = torch.__version__, torch.version.cuda
info["cuda_available"] = torch.cuda.is_available()
if info["cuda_available"]:
    props = torch.cuda.get_device_properties(0)
    info["gpu"], info["gpu_memory_gib"] = props.name, round(props.total_memory / 2**30, 1)
    info["gpu_capability"], info["gpu_count"] = f"{props.major}.{props.minor}", torch.cuda.device_count()
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
print("GPU_CHECK_ENV " + json.dumps(info))
"""


def environment(logs: Path, env: dict, timeout_s: float) -> dict:
    """What the figures were measured with, from a child process (this one never initialises CUDA)."""
    log = logs / "environment.log"
    record = run_command([sys.executable, "-c", ENVIRONMENT_SCRIPT], log, timeout_s, env)
    lines = [line for line in log_tail(log, 200) if line.startswith("GPU_CHECK_ENV ")]
    info = json.loads(lines[-1].split(" ", 1)[1]) if lines else {}
    record["status"] = "passed" if info and record["returncode"] == 0 else "failed"
    if record["status"] != "passed":
        record["log_tail"] = log_tail(log)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        query = "--query-gpu=name,memory.total,driver_version"
        smi = subprocess.run(
            ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, timeout=30, check=False
        )
        info["nvidia_smi"] = smi.stdout.strip().splitlines() if smi.returncode == 0 else None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
        )
        info["git_commit"] = git.stdout.strip() if git.returncode == 0 else None
    return {**record, **info}


# ------------------------------------------------------------------------------------------------ summary


def headline(record: dict) -> str:
    """One line of a part's figures: test counts, or each benchmark variant's ratios to TRL."""
    if "counts" in record:
        c = record["counts"]
        return f"{c['passed']} passed, {c['failed']} failed, {c['error']} errors, {c['skipped']} skipped"
    summary = (record.get("result") or {}).get("summary") or {}
    texts = []
    for pair, ratios in summary.get("ratios", {}).items():
        figures = []
        for key, label in (("step_s", "step"), ("peak_mib", "peak memory")):
            value = (ratios.get(key) or {}).get("paired_step_median")
            if isinstance(value, (int, float)) and math.isfinite(value):
                figures.append(f"{label} x{value:.3f}")
        texts.append(f"{pair}: {', '.join(figures) or '-'}")
    return "; ".join(texts)


def print_summary(report: dict) -> None:
    env = report["environment"]
    gpu, vllm = env.get("gpu") or "no CUDA device", (env.get("versions") or {}).get("vllm")
    print(f"\n[gpu_check] {gpu}; torch {env.get('torch')}, CUDA {env.get('cuda')}, vLLM {vllm}")
    for name, record in report["parts"].items():
        wall = f"{record['wall_s']:.0f} s" if "wall_s" in record else "-"
        print(f"  {name:<22} {record['status']:<11} {wall:>6}  {headline(record) or record.get('reason', '')}")
        if record.get("warning"):
            print(f"      warning: {record['warning']}")
        for test in record.get("tests", []):
            if test["outcome"] in ("failed", "error"):
                first = test["messages"][0].splitlines()[0] if test.get("messages") else ""
                print(f"      {test['outcome']}: {test['name']}: {first[:200]}")
    total = f"{report['wall_s']:.0f} s of a {report['budget_s']:.0f} s budget"
    verdict = "every part passed" if report["ok"] else f"not passed: {', '.join(report['failed_parts'])}"
    print(f"[gpu_check] {verdict} ({total}); figures in {report['output']}")


def interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt)  # a runner's time limit: stop the part, write what was measured
    start, started_at = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    output = args.output.resolve()
    logs = output.with_name(output.stem + "_logs")
    logs.mkdir(parents=True, exist_ok=True)
    env = child_env(logs)
    report = {
        "command": shlex.join(["python", "benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]),
        "smoke": args.smoke,
        "started": started_at,
        "budget_s": args.budget_s,
        "timeout_factor": args.timeout_factor,
        "output": str(output),
        "logs": str(logs),
        "host": platform.node(),
        "parts": {},
    }

    def save(ok: bool | None = None) -> None:
        report["wall_s"] = round(time.monotonic() - start, 1)
        failed = [n for n, r in report["parts"].items() if r["status"] not in ("passed", "skipped")]
        report["failed_parts"], report["ok"] = failed, (not failed if ok is None else ok)
        write_json(report, output)

    report["environment"] = environment(logs, env, timeout_s=60.0 * args.timeout_factor)
    if not args.smoke and not report["environment"].get("cuda_available"):
        reason = "CUDA is not available here; run on a GPU machine, or pass --smoke on a CPU"
        if report["environment"]["status"] != "passed":
            reason = f"the environment probe failed (see {logs / 'environment.log'}), so CUDA was not found"
        report["parts"] = {name: {"status": "not_run", "reason": reason} for name in args.parts}
        save(ok=False)
        print(f"[gpu_check] {reason}", file=sys.stderr)
        print_summary(report)
        return 2
    for part in (p for p in parts(sys.executable) if p.name in args.parts):
        left = args.budget_s - (time.monotonic() - start)
        timeout_s = min(part.timeout_s * args.timeout_factor, left)
        if timeout_s < min(part.min_s, part.timeout_s) * args.timeout_factor:
            reason = f"{max(left, 0):.0f} s of the budget left, {part.min_s * args.timeout_factor:.0f} s needed"
            report["parts"][part.name] = {"status": "skipped" if part.optional else "not_run", "reason": reason}
            print(f"[gpu_check] {part.name}: {report['parts'][part.name]['status']} ({reason})", flush=True)
            continue
        try:
            report["parts"][part.name] = run_part(part, args, logs, timeout_s, env)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the part was stopped; keep what was measured
            report["parts"][part.name] = {"status": "interrupted", "log_tail": log_tail(logs / f"{part.name}.log")}
            report["interrupted"] = True
            break
        finally:
            save()
    save()
    print_summary(report)
    return 130 if report.get("interrupted") else 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
