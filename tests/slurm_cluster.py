"""A real two-node Slurm cluster on this machine, each node a host of its own on a private network (for tests).

One `slurmctld` and two `slurmd` daemons (`n1`, `n2`, one CPU each; Debian's `slurm-wlm` and `munge`) run from a
temporary folder, on free ports, with their own state, spool, logs and pid files; `munged` is started if it is not
running. Each `slurmd`, and so every job step on its node, runs in a network namespace of its own, created here: a
veth pair joins it to a bridge, itself at 10.231.X.1 (where `slurmctld` listens), the nodes at 10.231.X.2 and .3 (a
/24 no interface of this machine uses yet). So `localhost` on one node is not the other node, and a rendezvous that
only works when both share one loopback fails, as it would between two machines. Inside each namespace the node's
interface is named [`IFNAME`] (what `GLOO_SOCKET_IFNAME` must name: gloo otherwise binds the address the shared
hostname resolves to, the loopback). Clients find the cluster through `SLURM_CONF`.

Everything started here is stopped by pid when the context ends, and every namespace, veth pair and bridge made here
is deleted, also when starting fails; a `munged` that was already running is left alone. Names carry this process's
pid (`glowrl-<pid>-n1`), so tests running at once do not collide. See `../shared/notes/slurm-on-one-machine.md` for why
each Slurm setting is there.
"""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


DAEMONS = ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "squeue", "ip", "nsenter")
MUNGE_PID = Path("/run/munge/munged.pid")
IFNAME = "glowrl0"  # each node's interface, inside its namespace
NODES = ("n1", "n2")


def missing() -> str | None:
    """Why the cluster cannot run here (None when it can)."""
    found = {name: shutil.which(name) or (Path("/usr/sbin") / name).is_file() for name in DAEMONS}
    absent = [name for name, there in found.items() if not there]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the test cluster's daemons run as root (SlurmUser=root) and its nodes in network namespaces"
    return None


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")


def _free_subnet() -> str:
    """`10.231.X` for an X no interface of this machine has an address in."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], check=True, capture_output=True, text=True).stdout
    for x in [(os.getpid() + i) % 250 + 1 for i in range(250)]:
        if f" 10.231.{x}." not in used:
            return f"10.231.{x}"
    raise RuntimeError("no free 10.231.X.0/24 subnet for the test cluster")


@contextlib.contextmanager
def private_network(nodes=NODES):
    """A bridge and, per node, a network namespace joined to it by a veth pair; yields (namespaces, the bridge's
    address, the nodes' addresses). Deleted when the context ends, whatever happened."""
    tag = f"glr{os.getpid()}"
    bridge, namespaces = f"{tag}b", [f"glowrl-{os.getpid()}-{node}" for node in nodes]
    made_bridge, made = False, []
    try:
        subnet = _free_subnet()
        _ip("link", "add", bridge, "type", "bridge")
        made_bridge = True
        _ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        addresses = []
        for i, namespace in enumerate(namespaces, 2):
            _ip("netns", "add", namespace)
            made.append(namespace)
            outside, inside = f"{tag}h{i}", f"{tag}n{i}"
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", namespace)
            _ip("-n", namespace, "link", "set", inside, "name", IFNAME)
            _ip("-n", namespace, "addr", "add", f"{subnet}.{i}/24", "dev", IFNAME)
            _ip("-n", namespace, "link", "set", IFNAME, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("link", "set", outside, "master", bridge, "up")
            addresses.append(f"{subnet}.{i}")
        yield namespaces, f"{subnet}.1", addresses
    finally:
        for namespace in made:  # its end of the veth pair goes with it, and the pair with that
            with contextlib.suppress(RuntimeError):
                _ip("netns", "del", namespace)
        if made_bridge:
            with contextlib.suppress(RuntimeError):
                _ip("link", "del", bridge)


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


def _stop(pid_file: Path, timeout: float = 30) -> None:
    """SIGTERM the daemon of `pid_file` and wait (up to `timeout`) for it to exit."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.2)


def _namespace_pids(namespace: str) -> list[int]:
    result = subprocess.run(["ip", "netns", "pids", namespace], check=False, capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


@contextlib.contextmanager
def two_node_cluster(folder: Path):
    """Start the cluster in `folder`; yields the environment for its clients (`SLURM_CONF` set, and the nodes'
    addresses, space-separated, in `GLOWRL_TEST_NODE_ADDRESSES`)."""
    with private_network() as (namespaces, controller, addresses):
        yield from _cluster(folder, namespaces, controller, addresses)


def _cluster(folder: Path, namespaces: list[str], controller: str, addresses: list[str]):
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
                f"SlurmctldHost={host}({controller})",
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
                *(
                    f"NodeName={node} NodeHostname={host} NodeAddr={address} Port={base + i} CPUs=1"
                    for i, (node, address) in enumerate(zip(NODES, addresses, strict=True), 1)
                ),
                "PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf), "GLOWRL_TEST_NODE_ADDRESSES": " ".join(addresses)}
    started_munge = _start_munge()
    pid_files = [folder / "slurmctld.pid", folder / "slurmd-n1.pid", folder / "slurmd-n2.pid"]
    try:
        subprocess.run(["/usr/sbin/slurmctld", "-f", str(conf)], check=True, env=env)
        for node, namespace in zip(NODES, namespaces, strict=True):
            slurmd = ["/usr/sbin/slurmd", "-f", str(conf), "-N", node]
            # nsenter, not `ip netns exec`: that also remounts /sys, hiding the cgroup filesystem slurmd needs
            subprocess.run(["nsenter", f"--net=/run/netns/{namespace}", *slurmd], check=True, env=env)
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
            _stop(pid_file)
        for namespace in namespaces:  # what the daemons left running there (job steps): started by this cluster
            for pid in _namespace_pids(namespace):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
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


def requeue_and_start_again(job_id: str, env: dict, timeout: float = 120) -> None:
    """`scontrol requeue` the job, as a preemption would, and let it start again at once: Slurm holds a requeued job
    back for a while (`Reason=BeginTime`) once its steps have ended, and moves its start only when it is pending."""
    subprocess.run(["scontrol", "requeue", job_id], check=True, env=env)
    deadline = time.monotonic() + timeout
    while "Reason=BeginTime" not in _show_job(job_id, env):
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not pending again {timeout} s after its requeue")
        time.sleep(0.5)
    subprocess.run(["scontrol", "update", f"jobid={job_id}", "starttime=now"], check=True, env=env)


def _show_job(job_id: str, env: dict) -> str:
    command = ["scontrol", "show", "job", "-o", job_id]
    return subprocess.run(command, check=False, capture_output=True, text=True, env=env).stdout


def job_state(job_id: str, env: dict) -> str | None:
    for word in _show_job(job_id, env).split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return None
