"""Where a pipeline stage's processes run: on this machine (`common.LocalLauncher`), or as steps of a Slurm allocation
(`slurm.SlurmLauncher`), with the vLLM server node's submit-time checks (`vllm_server`).

Decides what each stage's command lines are; the pipeline (`glowrl.pipeline`) runs them. Not the sbatch script
(`glowrl.slurm`). Standard library, YAML and Slurm's own commands only.
"""

from .common import (
    MACHINE_RANK,
    LocalLauncher,
    StageLaunch,
    accelerate_command,
    mixed_precision,
    per_task_shell,
    read_accelerate_config,
    uses_vllm_server,
    wait_for_server,
)
from .slurm import SlurmLauncher, SlurmSettings, job_cpus_per_node, node_address, slurm_settings


__all__ = [
    "MACHINE_RANK",
    "LocalLauncher",
    "SlurmLauncher",
    "SlurmSettings",
    "StageLaunch",
    "accelerate_command",
    "job_cpus_per_node",
    "mixed_precision",
    "node_address",
    "per_task_shell",
    "read_accelerate_config",
    "slurm_settings",
    "uses_vllm_server",
    "wait_for_server",
]
