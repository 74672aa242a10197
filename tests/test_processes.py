"""A stage's child processes (glowrl.processes): the whole process group is waited for, not only its launcher.

The launcher here is `sh`, as `accelerate launch` is for a stage: it starts a Python process and may end before it.

python -m pytest tests/test_processes.py
"""

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from glowrl.processes import RunInterrupted, run_child


SLOW_TO_STOP = """
import os, signal, sys, time
def stop(*_):
    time.sleep(1.5)  # a stage winding down after SIGTERM, longer than its launcher takes to die
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
open(sys.argv[1] + ".tmp", "w").write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(120)
"""
# sh starts the stage process and waits for it; SIGTERM kills sh at once, the stage 1.5 s later.
LAUNCHER = '"$0" -c "$1" "$2" & while [ ! -s "$2" ]; do sleep 0.05; done; '


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, ended and waiting to be reaped by its new parent, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def stage_pid(tmp_path):
    """The pid file of the stage process, which is killed at the end if it is still running."""
    path = tmp_path / "stage.pid"
    yield path
    if path.is_file():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(path.read_text()), signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
def test_sigterm_waits_for_the_stage_process_that_outlives_its_launcher(stage_pid):
    def send_sigterm_once_started():
        deadline = time.monotonic() + 60
        while not stage_pid.is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # to this process, as `kill PID` would the pipeline

    sender = threading.Thread(target=send_sigterm_once_started)
    sender.start()
    command = ["sh", "-c", LAUNCHER + "wait", sys.executable, SLOW_TO_STOP, str(stage_pid)]
    with pytest.raises(RunInterrupted):
        run_child(command)
    sender.join()
    assert not running(int(stage_pid.read_text())), "run_child returned while the stage process still ran"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
def test_a_stray_process_of_a_finished_stage_is_stopped(stage_pid):
    command = ["sh", "-c", LAUNCHER + "exit 0", sys.executable, SLOW_TO_STOP, str(stage_pid)]
    started = time.monotonic()
    assert run_child(command) == 0
    assert not running(int(stage_pid.read_text())), "a process of the stage outlived it"
    assert time.monotonic() - started < 30  # stopped by SIGTERM, not left to its 120 s
