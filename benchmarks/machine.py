"""What a benchmark result was measured on: CPU, cores, memory, load, package versions, GPU.

Shared by the scripts in this folder (run as `python benchmarks/<script>.py`, which puts this folder on sys.path).
"""

import os
import platform
from pathlib import Path


def machine_info(device: str) -> dict:
    """Describe the machine and software a benchmark ran on, for its results file."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        info["ram_gib"] = round(mem_kb / 1024**2, 1)
    except (OSError, StopIteration):
        pass
    try:
        info["load_avg_at_start"] = os.getloadavg()
    except OSError:
        pass
    import accelerate
    import torch
    import transformers
    import trl

    import glowrl

    info["versions"] = {
        "torch": torch.__version__,
        "trl": trl.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "glowrl": glowrl.__version__,
    }
    info["torch_threads"] = torch.get_num_threads()
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
