"""The CPU thread policy (glowrl.threads): the rule by hand, and what a `glowrl` process really ends up using.

python -m pytest tests/test_threads.py
"""

import os
import socket
import subprocess
import sys

import pytest
from utils import REPO

from glowrl.threads import BUDGET_ENV, budget_for, busy_cores, choose_threads, decide


HOST = "host-a"


@pytest.mark.parametrize(
    ("load_average", "running_now", "expected"),
    [
        (0.9, 1.0, 0.0),  # a command that just ended still weighs on the 1-minute average; nothing runs now
        (0.9, None, 0.9),  # no /proc/stat: the average alone
        (3.0, 2.0, 1.0),  # one other task runnable now, this one the second
        (1.0, 6.0, 1.0),  # a burst of runnable tasks does not outweigh the minute's average
        (0.0, 0.0, 0.0),
    ],
)
def test_busy_cores_caps_the_lagging_load_average_by_what_runs_now(load_average, running_now, expected):
    assert busy_cores(load_average, running_now) == pytest.approx(expected)


def never():
    raise AssertionError("the machine was read although the rule did not need it")


@pytest.mark.parametrize(
    ("cores", "load", "local", "expected"),
    [
        (2, 0.0, 1, 2),  # idle: every core
        (2, 0.4, 1, 2),  # 1.6 idle rounds to 2
        (2, 0.6, 1, 1),  # 1.4 idle rounds to 1
        (2, 5.4, 1, 1),  # busier than its cores: still 1
        (16, 3.2, 1, 13),  # 12.8 idle
        (16, 0.0, 4, 4),  # four local processes share the cores
        (16, 9.0, 4, 1),  # 7 idle cores, four processes: 1 each
        (1, 0.0, 2, 1),  # never 0
    ],
)
def test_choose_threads_takes_the_idle_cores_shared_out(cores, load, local, expected):
    assert choose_threads(cores, load, local) == expected


def test_a_users_omp_num_threads_stands():
    assert decide({"OMP_NUM_THREADS": "3"}, HOST, cores=never, load=never) == (None, None)


def test_a_bare_accelerate_launch_keeps_its_per_process_count():
    # accelerate sets OMP_NUM_THREADS (1, or cores / processes with use_cpu) and LOCAL_WORLD_SIZE for each process.
    env = {"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}
    assert decide(env, HOST, cores=never, load=never) == (None, None)


def test_no_setting_decides_from_the_cores_and_the_load_and_passes_the_budget_on():
    assert decide({}, HOST, cores=lambda: 8, load=lambda: 2.2) == (6, "6@host-a")
    assert decide({"OMP_NUM_THREADS": "bad"}, HOST, cores=lambda: 2, load=lambda: 0.0) == (2, "2@host-a")


def test_a_child_on_the_same_machine_shares_its_parents_budget_whatever_accelerate_set():
    # the pipeline decided 4; accelerate then set OMP_NUM_THREADS=4 in both of a stage's processes
    env = {BUDGET_ENV: "4@host-a", "OMP_NUM_THREADS": "4", "LOCAL_WORLD_SIZE": "2"}
    assert decide(env, HOST, cores=never, load=never) == (2, "4@host-a")
    env = {BUDGET_ENV: "1@host-a", "LOCAL_WORLD_SIZE": "2"}
    assert decide(env, HOST, cores=never, load=never) == (1, "1@host-a")


def test_an_omp_num_threads_set_after_the_decision_is_the_users():
    env = {BUDGET_ENV: "4@host-a", "OMP_NUM_THREADS": "8"}
    assert decide(env, HOST, cores=never, load=never) == (None, None)


def test_a_budget_from_another_machine_is_decided_again():
    # a Slurm step on another node inherits the head node's environment: its decision, and the OMP_NUM_THREADS glowrl
    # set with it, say nothing about this node (accelerate would give each of 8 processes all 64 threads)
    env = {BUDGET_ENV: "64@head-node", "OMP_NUM_THREADS": "64", "LOCAL_WORLD_SIZE": "8"}
    assert decide(env, HOST, cores=lambda: 32, load=lambda: 0.0) == (4, "32@host-a")
    assert decide({BUDGET_ENV: "64@head-node"}, HOST, cores=lambda: 2, load=lambda: 0.0) == (2, "2@host-a")
    env = {BUDGET_ENV: "64@head-node", "OMP_NUM_THREADS": "6"}  # the user's, exported to every node
    assert decide(env, HOST, cores=never, load=never) == (None, None)


def test_parallel_commands_get_an_even_share():
    assert budget_for(3, {BUDGET_ENV: "8@h"}) == {BUDGET_ENV: "2@h", "OMP_NUM_THREADS": "2"}
    assert budget_for(4, {BUDGET_ENV: "2@h"}) == {BUDGET_ENV: "1@h", "OMP_NUM_THREADS": "1"}
    assert budget_for(2, {"OMP_NUM_THREADS": "6"}) == {}  # the user's setting stands


PROBE = """
import sys
from glowrl.cli import main
main(["arithmetic-data", "--output", sys.argv[1], "--num_problems", "2"])
import os, torch
print("threads", torch.get_num_threads(), "children get", os.environ.get("GLOWRL_CPU_THREADS"))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        # what a pipeline on a busy machine passes its stages
        ({BUDGET_ENV: f"1@{socket.gethostname()}"}, f"1 children get 1@{socket.gethostname()}"),
        # one of two processes of a stage
        (
            {BUDGET_ENV: f"2@{socket.gethostname()}", "LOCAL_WORLD_SIZE": "2"},
            f"1 children get 2@{socket.gethostname()}",
        ),
        ({"OMP_NUM_THREADS": "1"}, "1 children get None"),  # the user's, and nothing decided for the children
    ],
)
def test_a_glowrl_command_uses_the_decided_threads(tmp_path, env, expected):
    base = {k: v for k, v in os.environ.items() if k not in (BUDGET_ENV, "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "p.jsonl")],
        env={**base, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"threads {expected}" in result.stdout.splitlines()
