"""`benchmarks/gpu_check.py` on a CPU: its plumbing, with `--smoke` (the GPU tests skip, the benchmarks run tiny).

What this checks: the JSON has every part with its status, command and wall time; the GPU tests are reported as
skipped with their reason (not failed); each benchmark's own result JSON is in it; a failing part, a part past its
timeout and a part the budget leaves no time for are recorded as such, the other parts still run, and the exit status
says so. What it does not check: anything on a GPU (that is `python benchmarks/gpu_check.py` itself, on one).

python -m pytest tests/test_gpu_check.py
"""

import json
import os
import subprocess
import sys

import pytest
from utils import REPO


pytestmark = pytest.mark.slow
ALL_PARTS = ["tests", "bench_sft_0.5b", "bench_grpo_0.5b", "bench_sft_7b_4layers"]
VARIANTS = {"bench_sft_0.5b": {"trl", "glow", "published"}, "bench_grpo_0.5b": {"trl", "glowrl"}}
VARIANTS["bench_sft_7b_4layers"] = VARIANTS["bench_sft_0.5b"]


def gpu_check(tmp_path, *flags, env=None) -> tuple[int, dict, str]:
    """Run the script with `--smoke` into `tmp_path`; its exit status, its JSON and its output."""
    output = tmp_path / "gpu_check.json"
    command = [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--smoke", "--output", str(output), *flags]
    proc = subprocess.run(
        command, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=900, check=False
    )
    assert output.is_file(), f"no JSON written (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.returncode, json.loads(output.read_text()), proc.stdout


def number_of_gpu_tests() -> int:
    text = (REPO / "tests/test_gpu.py").read_text()
    return sum(line.startswith("def test_") for line in text.splitlines())


def test_smoke_reports_every_part_with_the_gpu_tests_skipped(tmp_path):
    status, report, stdout = gpu_check(tmp_path)
    assert status == 0, stdout
    assert report["ok"] is True and report["failed_parts"] == [] and report["smoke"] is True
    assert list(report["parts"]) == ALL_PARTS
    environment = report["environment"]
    assert environment["status"] == "passed" and environment["cuda_available"] is False
    assert environment["torch"] and environment["versions"]["trl"]

    tests = report["parts"]["tests"]
    assert tests["status"] == "passed" and tests["returncode"] == 0
    n = number_of_gpu_tests()
    assert tests["counts"] == {"passed": 0, "failed": 0, "error": 0, "skipped": n, "total": n}
    for test in tests["tests"]:
        assert test["outcome"] == "skipped" and "needs a CUDA device" in test["reason"], test
        assert test["name"].startswith("tests.test_gpu::test_")

    for name in ALL_PARTS[1:]:
        part = report["parts"][name]
        assert part["status"] == "passed" and part["returncode"] == 0 and part["wall_s"] > 0, part
        assert "--smoke --device cpu" in part["command"] and "--bf16" not in part["command"]
        result = part["result"]
        assert result["meta"]["args"]["smoke"] is True and result["meta"]["args"]["device"] == "cpu"
        assert set(result["summary"]["variants"]) == VARIANTS[name]
        assert all(run["steps"] for run in result["runs"])
    assert report["parts"]["bench_sft_7b_4layers"]["result"]["meta"]["args"]["num_hidden_layers"] == 4
    logs = tmp_path / "gpu_check_logs"
    assert all((logs / f"{name}.log").is_file() for name in ["environment", *ALL_PARTS])
    assert (logs / "tests_junit.xml").is_file()
    assert "every part passed" in stdout and f"{n} skipped" in stdout


def test_a_failing_part_is_recorded_and_the_next_part_still_runs(tmp_path):
    # An option pytest does not know makes the test part fail before it writes a report.
    env = {"PYTEST_ADDOPTS": "--no-such-option"}
    status, report, stdout = gpu_check(tmp_path, "--parts", "tests,bench_grpo_0.5b", env=env)
    assert status == 1, stdout
    assert report["ok"] is False and report["failed_parts"] == ["tests"]
    tests = report["parts"]["tests"]
    assert tests["status"] == "failed" and tests["returncode"] != 0
    assert tests["error"] == "pytest wrote no JUnit report" and any(
        "no-such-option" in line for line in tests["log_tail"]
    )
    assert report["parts"]["bench_grpo_0.5b"]["status"] == "passed"
    assert "not passed: tests" in stdout


def test_a_part_past_its_timeout_is_stopped_and_recorded(tmp_path):
    status, report, stdout = gpu_check(tmp_path, "--parts", "bench_grpo_0.5b", "--timeout-factor", "0.02")
    assert status == 1, stdout
    part = report["parts"]["bench_grpo_0.5b"]
    # (SIGINT may land where a library swallows it: then the part is killed, or ends, within the 15 s grace)
    assert part["status"] == "timeout" and part["timed_out"] is True and report["failed_parts"] == ["bench_grpo_0.5b"]
    assert part["timeout_s"] == pytest.approx(70 * 0.02) and part["wall_s"] < part["timeout_s"] + 16


def test_the_optional_part_is_skipped_not_failed_when_the_budget_is_spent(tmp_path):
    status, report, stdout = gpu_check(tmp_path, "--parts", "bench_sft_7b_4layers", "--budget-s", "0.5")
    assert status == 0, stdout
    part = report["parts"]["bench_sft_7b_4layers"]
    assert part["status"] == "skipped" and "of the budget left" in part["reason"] and report["ok"] is True
