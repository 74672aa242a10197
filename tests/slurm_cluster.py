"""A real two-node Slurm cluster on this machine, for tests (Debian's `slurm-wlm` and `munge`).

One `slurmctld` and two `slurmd` daemons (`n1`, `n2`, one CPU each, both at 127.0.0.1) run from a temporary folder,
on free ports, with their own state, spool, logs and pid files; `munged` is started if it is not running. Clients
find the cluster through `SLURM_CONF`. Everything started here is stopped by pid when the context ends; a `munged`
that was already running is left alone. See `../shared/notes/slurm-on-one-machine.md` for why each setting is there.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue")
MUNGE_PID = Path("/run/munge/munged.pid")


def missing() -> str | None:
    """Why the cluster cannot run here (None when it can)."""
    found = {name: shutil.which(name) or (Path("/usr/sbin") / name).is_file() for name in DAEMONS}
    absent = [name for name, there in found.items() if not there]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root (SlurmUser=root)"
    return None


def _free_ports(count: int) -> int:
    """A base port with `count` consecutive free ports after it."""
    for base in range(21000, 40000, 97):
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for the test cluster")


def _running(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def _start_munge() -> bool:
    """Start munged unless it runs; True when this call started it."""
    if MUNGE_PID.is_file() and _running(MUNGE_PID):
        return False
    MUNGE_PID.parent.mkdir(parents=True, exist_ok=True)
    shutil.chown(MUNGE_PID.parent, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True)
    return True


@contextlib.contextmanager
def two_node_cluster(folder: Path):
    """Start the cluster in `folder`; yields the environment for its clients (`SLURM_CONF` set)."""
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(exist_ok=True)
    host = socket.gethostname().split(".")[0]
    base = _free_ports(3)
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=glowrltest",
                f"SlurmctldHost={host}",
                f"SlurmctldPort={base}",
                "AuthType=auth/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=none",
                "SlurmUser=root",
                "ReturnToService=2",
                "JobRequeue=1",
                "KillWait=10",
                f"StateSaveLocation={folder}/state",
                f"SlurmdSpoolDir={folder}/spool/%n",
                f"SlurmctldLogFile={folder}/log/slurmctld.log",
                f"SlurmdLogFile={folder}/log/slurmd-%n.log",
                f"SlurmctldPidFile={folder}/slurmctld.pid",
                f"SlurmdPidFile={folder}/slurmd-%n.pid",
                f"NodeName=n[1-2] NodeHostname={host} NodeAddr=127.0.0.1 Port=[{base + 1}-{base + 2}] CPUs=1",
                "PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started_munge = _start_munge()
    pid_files = [folder / "slurmctld.pid", folder / "slurmd-n1.pid", folder / "slurmd-n2.pid"]
    try:
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(conf)], check=True, env=env)
        for node in ("n1", "n2"):
            subprocess.run(["/usr/sbin/slurmd", "-f", str(conf), "-N", node], check=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%N %t"], check=False, capture_output=True, text=True, env=env
            ).stdout.split()
            if states.count("idle") == 2:
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"the test cluster's nodes did not come up: {states}")
        yield env
    finally:
        for pid_file in pid_files:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
        if started_munge:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(MUNGE_PID.read_text().strip()), signal.SIGTERM)


def wait_for_job(job_id: str, env: dict, timeout: float = 900) -> str:
    """Wait until the job leaves the queue; returns its final state (`scontrol show job`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job_id, env)
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", None):
            return state
        time.sleep(2)
    raise TimeoutError(f"job {job_id} still {state} after {timeout} s")


def job_state(job_id: str, env: dict) -> str | None:
    command = ["scontrol", "show", "job", "-o", job_id]
    result = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    for word in result.stdout.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return None
