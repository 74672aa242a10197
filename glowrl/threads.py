"""How many CPU threads torch uses in a glowrl process: one policy, applied by every `glowrl` entry point.

Every command goes through `glowrl.cli.main` (the `glowrl` script, `python -m glowrl`, and what `accelerate launch
-m glowrl <stage>` runs), which calls [`apply_thread_policy`] before torch is imported. The rule, first match wins:

1. The decision of the glowrl command that started this one, on this machine ([`BUDGET_ENV`], which this module
   writes: `<threads>@<hostname>`, with `OMP_NUM_THREADS` set to the same count), divided by this machine's processes
   of the stage (`LOCAL_WORLD_SIZE`, which `accelerate launch` and `torchrun` set). So a pipeline decides once, when
   it starts, and a stage with two processes gets half of it each; a stage on another machine (a Slurm step, which
   inherits the environment) decides for itself (rule 3), and an `OMP_NUM_THREADS` other than the one glowrl set with
   the decision is the user's (rule 2).
2. `OMP_NUM_THREADS` set by the user (or by a bare `accelerate launch`, which sets it for each process): kept as is.
3. Otherwise the physical cores this process may use (its CPU affinity, a cgroup CPU quota), less the cores that other
   work keeps busy (the 1-minute load average, capped by the tasks runnable now, rounded; [`busy_cores`]), at least
   1, divided by the local processes.

Why the load: torch's default is one thread per physical core, and OpenMP threads wait for each other at every
operation, spinning. When other work holds the cores, a thread that has lost its core stalls the rest: on 2 busy
cores the tiny SFT recipe ran 2.3x slower with 2 threads than with 1 (benchmarks/threads.py, README "Performance").
The count is decided once per command, at its start, so that a pipeline's later stages do not see its earlier ones'
load as other work. What is not here: inter-op threads, tokenizer threads, and the GPU (unaffected).
Standard library only (psutil, which accelerate requires, for the physical core count where present).
"""

import math
import os
import socket
import sys


BUDGET_ENV = "GLOWRL_CPU_THREADS"
LOCAL_PROCESSES_ENV = "LOCAL_WORLD_SIZE"


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def choose_threads(cores: int, load: float, local_processes: int = 1) -> int:
    """The threads for one of `local_processes` processes on a machine with `cores` usable physical cores while
    other work keeps `load` cores busy: the idle cores (rounded), shared out evenly, at least 1."""
    idle = min(cores, math.floor(cores - max(load, 0.0) + 0.5))
    return max(1, idle // max(1, local_processes))


def _usable_cores() -> int:
    """Physical cores this process may run on: its affinity and a cgroup v2 CPU quota, one thread per core."""
    logical = os.cpu_count() or 1
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    cores = max(1, allowed * physical // logical)
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def busy_cores(load_average: float, running_now: float | None) -> float:
    """The cores other work keeps busy: the 1-minute load average, but no more than the tasks runnable now besides
    this one (`running_now`, which counts it; None where unknown). The load average lags by a minute: right after a
    command ends (the conversion before a pipeline, a finished test) it still counts that work, and on 2 idle cores
    a pipeline then ran every stage on 1 thread."""
    if running_now is None:
        return max(load_average, 0.0)
    return max(0.0, min(load_average, running_now - 1.0))


def _running_now(samples: int = 3, interval_s: float = 0.01) -> float | None:
    """Runnable tasks on the machine now (`procs_running` of /proc/stat, this process included), averaged over a
    few samples; None where /proc/stat is not there."""
    import time

    counts = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                counts += [int(line.split()[1]) for line in f if line.startswith("procs_running")]
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(interval_s)
    return sum(counts) / len(counts) if counts else None


def _load() -> float:
    try:
        load_average = os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0
    return busy_cores(load_average, _running_now())


def decide(env: dict, hostname: str, cores=_usable_cores, load=_load) -> tuple[int | None, str | None]:
    """`(threads for this process, the budget to pass to child processes)`; `(None, None)` to keep the user's
    `OMP_NUM_THREADS`. `cores` and `load` are called only when the rule needs them."""
    local = _positive_int(env.get(LOCAL_PROCESSES_ENV)) or 1
    inherited = env.get(BUDGET_ENV, "")
    budget, _, host = inherited.partition("@")
    # OMP_NUM_THREADS unset, or the count glowrl set with the budget; any other is the user's
    ours = _positive_int(budget) and env.get("OMP_NUM_THREADS") in (None, budget)
    if ours and host == hostname:
        return max(1, int(budget) // local), inherited
    if not ours and _positive_int(env.get("OMP_NUM_THREADS")):
        return None, None
    machine = choose_threads(cores(), load(), 1)
    return max(1, machine // local), f"{machine}@{hostname}"


def apply_thread_policy(env=None) -> int | None:
    """Decide this process's torch threads ([`decide`]) and use them: `OMP_NUM_THREADS` for torch to read when it
    loads, `torch.set_num_threads` if it is loaded already, and the budget for child processes. Returns the count,
    or None when the user's `OMP_NUM_THREADS` stands."""
    env = os.environ if env is None else env
    threads, budget = decide(env, socket.gethostname())
    if threads is None:
        return None
    env[BUDGET_ENV] = budget
    env["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def pin_threads(threads: int, env=None) -> int | None:
    """Use `threads` in this process and its children instead of the decided count, unless the user's
    `OMP_NUM_THREADS` stands (then None). For work whose best count is known: the demo's tiny models."""
    env = os.environ if env is None else env
    if not env.get(BUDGET_ENV):
        return None
    env[BUDGET_ENV] = f"{threads}@{socket.gethostname()}"
    env["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def budget_for(parallel: int, env=None) -> dict:
    """The environment for `parallel` glowrl commands started at once on this machine (a study's local runs): each
    gets an even share of this command's budget. Empty when the user's `OMP_NUM_THREADS` stands."""
    env = os.environ if env is None else env
    budget, _, host = env.get(BUDGET_ENV, "").partition("@")
    if not _positive_int(budget):
        return {}
    share = max(1, int(budget) // max(1, parallel))
    return {BUDGET_ENV: f"{share}@{host}", "OMP_NUM_THREADS": str(share)}
