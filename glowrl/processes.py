"""Running a stage as a child process so that signals reach it and it never outlives the pipeline.

[`run_child`] starts the stage's launcher in a process group of its own and forwards SIGINT and SIGTERM to that whole
group (the launcher and every training process it started), waits for the whole group to end (not only the launcher,
which may exit before the processes it started), then raises [`RunInterrupted`] so the pipeline records the stage as
interrupted. A process of the group still running after the launcher has ended is given SIGTERM (after a normal end)
or time to finish its SIGTERM, then SIGKILL after [`GROUP_GRACE_S`]. If the pipeline itself is killed outright
(SIGKILL), the launcher gets SIGTERM from the kernel (`PR_SET_PDEATHSIG`), and each stage process started under it
asks for the same ([`die_with_parent`], which `glowrl <stage>` calls when the pipeline started it), so nothing keeps
training unrecorded.
Linux only for the parent-death signal; elsewhere only the forwarding applies. [`run_parallel`] does the same for
several commands at a time (the runs of a study). [`run_apart`] calls a function in a fresh interpreter (for work that
must not inherit this process's state). Standard library only.
"""

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from pathlib import Path


DIE_WITH_PARENT_ENV = "GLOWRL_DIE_WITH_PARENT"
UNATTENDED_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}
"""What an unattended child process (the GPU checks' commands) sees: no Hub, no usage reporting, unbuffered output."""
_PR_SET_PDEATHSIG = 1
GROUP_GRACE_S = 60.0
"""How long a stage's processes get to end after its launcher has, before SIGKILL."""


class RunInterrupted(Exception):
    """A stage (and so the run) was stopped by SIGINT or SIGTERM; the CLI exits with 128 + the signal number."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send this process `signum` when its parent exits (Linux; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)


def _child_setup():
    os.setsid()
    die_with_parent()


def run_child(command: list[str], env: dict | None = None, log: str | os.PathLike | None = None) -> int:
    """Run `command` in its own process group, forwarding SIGINT/SIGTERM to the group; returns its exit status.
    With `log`, its output (stdout and stderr) is appended to that file instead of this process's.

    Raises:
        RunInterrupted: after the child has ended, when this process received SIGINT or SIGTERM while it ran.
    """
    env = {**(env or os.environ), DIE_WITH_PARENT_ENV: "1"}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "a")) if log is not None else None
        stderr = subprocess.STDOUT if out else None
        child = subprocess.Popen(command, env=env, preexec_fn=_child_setup, stdout=out, stderr=stderr)  # noqa: PLW1509 - setsid + pdeathsig only
        return _wait(child)


def _wait(child: subprocess.Popen) -> int:
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = child.wait()
        wait_for_group(child.pid, terminate=not received)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise RunInterrupted(received[0])
    return returncode


def group_running(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running; zombies (ended, waiting to be reaped) do not count."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc/self/stat").is_file():
        return True  # not Linux: no way to tell a zombie from a running process
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def wait_for_group(pgid: int, terminate: bool, grace: float | None = None, poll: float = 0.05) -> None:
    """Wait until no process of group `pgid` runs: with `terminate`, send the group SIGTERM first (its leader has
    ended normally, so what is left is stray); after `grace` seconds (default [`GROUP_GRACE_S`]), SIGKILL."""
    grace = GROUP_GRACE_S if grace is None else grace
    if not group_running(pgid):
        return
    if terminate:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    killed = False
    while group_running(pgid):
        if time.monotonic() > deadline:
            if killed:
                return  # SIGKILL sent a grace period ago: a process in uninterruptible sleep; nothing more to do
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + grace
        time.sleep(poll)


def run_parallel(
    jobs: list[tuple[list[str], str | os.PathLike, dict]],
    parallel: int,
    on_start=None,
    on_exit=None,
    poll: float = 0.5,
) -> list:
    """Run `(command, log, env)` jobs, at most `parallel` at a time, each in its own process group with its output
    appended to its log; returns their exit statuses in order (None for a job never started). SIGINT/SIGTERM go to
    every running group, and the jobs not started yet are not started. `on_start(index)` and `on_exit(index,
    status)` are called as jobs start and end.

    Raises:
        RunInterrupted: after the running jobs have ended, when this process received SIGINT or SIGTERM.
    """
    statuses: list = [None] * len(jobs)
    running: dict[int, subprocess.Popen] = {}
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        for child in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        waiting = list(range(len(jobs)))
        while waiting or running:
            while waiting and len(running) < parallel and not received:
                index = waiting.pop(0)
                command, log, env = jobs[index]
                env = {**env, DIE_WITH_PARENT_ENV: "1"}
                with open(log, "a") as out:
                    child = subprocess.Popen(command, env=env, preexec_fn=_child_setup, stdout=out, stderr=out)  # noqa: PLW1509 - setsid + pdeathsig only
                running[index] = child
                if on_start:
                    on_start(index)
            if received and not running:
                break
            for index, child in list(running.items()):
                if child.poll() is not None:
                    wait_for_group(child.pid, terminate=not received)
                    statuses[index] = child.returncode
                    del running[index]
                    if on_exit:
                        on_exit(index, child.returncode)
            time.sleep(poll)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise RunInterrupted(received[0])
    return statuses


def run_apart(fn, *args):
    """`fn(*args)` in a fresh Python process (spawned, not forked), returning its result.

    For work that must not inherit this process's state: a vLLM engine started after a colocated one ran here
    (vLLM's distributed state is not torn down with its engine: a second engine in the same process fails with
    "Process group ... is not initialized in the world group map"). `fn`, `args` and the result must pickle.

    Raises:
        RuntimeError: with the first line of the error `fn` raised, or the exit status of a process that died.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_call_and_send, args=(send, fn, args))
    process.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the process ended with status {process.exitcode} before it returned") from None
    process.join()
    if not ok:
        raise RuntimeError(value)
    return value


def _call_and_send(send, fn, args) -> None:
    try:
        result = (True, fn(*args))
    except BaseException as error:  # noqa: BLE001 - reported to the parent, which raises it
        result = (False, f"{type(error).__name__}: {error}".splitlines()[0])
    send.send(result)
