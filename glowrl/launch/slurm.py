"""The Slurm launcher: every stage of a pipeline as `srun` steps of the allocation it runs in, and its settings.

[`SlurmLauncher`] runs, inside an allocation (`glowrl slurm` submits one), every stage as its own `srun` step: one task
per node, each running `accelerate launch` with `--num_machines`, `--num_processes`, the first node's address and a
port as the rendezvous (`glowrl.launch.common.accelerate_command`), and `--machine_rank "$SLURM_PROCID"`, which the
shell of each task expands (never the batch shell: with one task per node, each task's own rank is its machine rank).
With `--vllm_nodes 1`, RL in `vllm_mode: server` trains on the other nodes while the last one serves the policy (TRL's
`vllm serve` command line), the trainer starting only once the server's `/health` answers, and the server's address
passed as `vllm_server_host`, the key TRL reads. Each step asks for the CPUs its node gives the job (`cpus_per_task`,
or every CPU of an `--exclusive` node): a step's task otherwise gets one CPU, whatever the allocation holds.

[`SlurmSettings`] is a recipe's `slurm:` section. Not here: the sbatch script (`glowrl.slurm`). Standard library, YAML
and Slurm's own commands only.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import GlowrlError, RecipeError
from .common import (
    MACHINE_RANK,
    MULTI_MACHINE_TYPES,
    VLLM_SERVER_ENV,
    StageLaunch,
    accelerate_command,
    per_task_shell,
    read_accelerate_config,
    stage_args,
    uses_vllm_server,
)
from .vllm_server import check_server_stage


def slurm_command(*args: str) -> str:
    """Run a Slurm client command (`scontrol ...`) and return its output, with one error line if it fails."""
    try:
        result = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=60)
    except FileNotFoundError as e:
        raise GlowrlError(f"{args[0]} is not installed here; --launcher slurm runs inside a Slurm allocation") from e
    if result.returncode != 0:
        raise GlowrlError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


@dataclass
class SlurmSettings:
    # docstyle-ignore
    r"""
    A recipe's `slurm:` section (every key also a `glowrl slurm --key` flag, which wins).

    Parameters:
        nodes (`int`): nodes of the job.
        gpus_per_node (`int`): GPUs per node, one training process each; 0: CPU nodes, one process each (recipes
            with `use_cpu: true`). Default: the accelerate config's processes per machine (0 for a CPU recipe).
        vllm_nodes (`int`): 1: the last node serves vLLM for RL with `vllm_mode: server`; 0: none.
        partition, account, qos, time, constraint (`str`): the `#SBATCH` options of those names.
        exclusive (`bool`): `#SBATCH --exclusive`, whole nodes. Default: on for GPU nodes (their processes and data
            loaders need the node's CPUs, and no other job should share its GPUs' memory bandwidth), off for CPU nodes.
        mem (`str`): `#SBATCH --mem`. Default: `0` (all of each node's memory) on exclusive nodes, else the cluster's.
        cpus_per_task (`int`): CPUs per node's task, given to every `srun` step too. Default: on exclusive nodes, all
            of them (each step asks for the CPUs the allocation has on a node); else the cluster's default (often 1).
        job_name (`str`): default `glowrl-<output_root's name>`.
        requeue (`bool`): let Slurm requeue the job (preemption, node failure); a requeued job resumes.
        extra_sbatch (`list[str]`): more `#SBATCH` options, e.g. `--gres=gpu:8` or `--reservation=NAME`.
        setup (`list[str]`): shell lines run before the pipeline (`module load ...`, `source venv/bin/activate`).
        port (`int`): rendezvous port of the first stage (stage i uses port + i).
        vllm_port, vllm_tensor_parallel_size, vllm_gpu_memory_utilization, vllm_wait: the vLLM server's port,
            tensor parallel size (default: every GPU of its node), memory share, and seconds to wait for it.
        nccl_async_error_handling (`bool`): `TORCH_NCCL_ASYNC_ERROR_HANDLING=1`: a failed collective ends the job
            instead of hanging it until the time limit.
        socket_ifname (`str`): `NCCL_SOCKET_IFNAME` and `GLOO_SOCKET_IFNAME`, the network interface between nodes.
        hf_home (`str`): `HF_HOME`, a Hugging Face cache on the shared filesystem.
        offline (`bool`): `HF_HUB_OFFLINE=1` and `HF_DATASETS_OFFLINE=1`, for compute nodes without internet.
        nccl_debug (`str`): `NCCL_DEBUG` (`WARN`, `INFO`).
    """

    nodes: int = field(default=1, metadata={"help": "Nodes of the job."})
    gpus_per_node: int = field(default=None, metadata={"help": "GPUs per node (0: CPU nodes, one process each)."})
    vllm_nodes: int = field(default=0, metadata={"help": "1: the last node serves vLLM for RL (vllm_mode: server)."})
    partition: str = field(default=None, metadata={"help": "#SBATCH --partition."})
    account: str = field(default=None, metadata={"help": "#SBATCH --account."})
    qos: str = field(default=None, metadata={"help": "#SBATCH --qos."})
    time: str = field(default=None, metadata={"help": "#SBATCH --time, e.g. 2-00:00:00."})
    constraint: str = field(default=None, metadata={"help": "#SBATCH --constraint."})
    exclusive: bool = field(default=None, metadata={"help": "#SBATCH --exclusive (default: on for GPU nodes)."})
    mem: str = field(default=None, metadata={"help": "#SBATCH --mem (default on exclusive nodes: 0, all of it)."})
    cpus_per_task: int = field(default=None, metadata={"help": "CPUs of each node's task (exclusive: all)."})
    job_name: str = field(default=None, metadata={"help": "Job name (default glowrl-<output_root name>)."})
    requeue: bool = field(default=True, metadata={"help": "Let Slurm requeue the job; a requeued job resumes."})
    extra_sbatch: list[str] = field(default=None, metadata={"help": "More #SBATCH options."})
    setup: list[str] = field(default=None, metadata={"help": "Shell lines run first (module load, activate)."})
    port: int = field(default=29500, metadata={"help": "Rendezvous port of the first stage (stage i: port + i)."})
    vllm_port: int = field(default=8000, metadata={"help": "Port of the vLLM server."})
    vllm_tensor_parallel_size: int = field(default=None, metadata={"help": "Server's TP size (default: its GPUs)."})
    vllm_gpu_memory_utilization: float = field(default=0.9, metadata={"help": "Server's GPU memory share."})
    vllm_wait: float = field(default=1800.0, metadata={"help": "Seconds to wait for the server's /health."})
    nccl_async_error_handling: bool = field(default=True, metadata={"help": "A failed collective ends the job."})
    socket_ifname: str = field(default=None, metadata={"help": "NCCL_SOCKET_IFNAME and GLOO_SOCKET_IFNAME."})
    hf_home: str = field(default=None, metadata={"help": "HF_HOME: a Hugging Face cache on the shared filesystem."})
    offline: bool = field(default=False, metadata={"help": "HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1."})
    nccl_debug: str = field(default=None, metadata={"help": "NCCL_DEBUG."})

    def __post_init__(self):
        if self.nodes < 1:
            raise RecipeError(f"--nodes {self.nodes}: a job needs at least one node")
        if self.gpus_per_node is not None and self.gpus_per_node < 0:
            raise RecipeError(f"--gpus_per_node {self.gpus_per_node}: give 0 (CPU nodes) or more")
        if self.vllm_nodes not in (0, 1):
            raise RecipeError(
                f"--vllm_nodes {self.vllm_nodes}: TRL's vLLM client talks to one server; give 1 (its tensor and data "
                "parallel sizes spread it over that node's GPUs) or 0"
            )
        if self.vllm_nodes >= self.nodes:
            raise RecipeError(
                f"--vllm_nodes {self.vllm_nodes} of --nodes {self.nodes}: no node would be left to train on; give "
                "more --nodes"
            )
        for name in ("port", "vllm_port"):
            if not 1024 <= getattr(self, name) <= 65535 - 64:
                raise RecipeError(f"--{name} {getattr(self, name)}: give a port between 1024 and 65471")

    def environment(self) -> dict:
        """The cluster environment these settings ask for, exported by the job script."""
        env = {}
        if self.nccl_async_error_handling:
            env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"
        if self.socket_ifname:
            env["NCCL_SOCKET_IFNAME"] = env["GLOO_SOCKET_IFNAME"] = self.socket_ifname
        if self.hf_home:
            env["HF_HOME"] = self.hf_home
        if self.offline:
            env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
        if self.nccl_debug:
            env["NCCL_DEBUG"] = self.nccl_debug
        return env


def slurm_settings(recipe: dict, resolved: dict, argv: list[str] = ()) -> SlurmSettings:
    """The recipe's `slurm:` section and `--key value` flags in `argv`, checked, with `gpus_per_node` resolved."""
    from ..recipe import parse_dataclasses

    section = recipe.get("slurm") or {}
    if not isinstance(section, dict):
        raise RecipeError("slurm: must be a mapping of the keys in `glowrl slurm --help`")
    (settings,) = parse_dataclasses((SlurmSettings,), section, list(argv), where="section slurm:")
    if settings.gpus_per_node is None:
        settings.gpus_per_node = default_gpus_per_node(recipe.get("accelerate_config"), resolved)
    if settings.exclusive is None:
        settings.exclusive = settings.gpus_per_node > 0
    if settings.mem is None and settings.exclusive:
        settings.mem = "0"
    if settings.cpus_per_task is not None and settings.cpus_per_task < 1:
        raise RecipeError(f"--cpus_per_task {settings.cpus_per_task}: give 1 or more (or leave it unset)")
    return settings


def default_gpus_per_node(accelerate_config: str | None, resolved: dict) -> int:
    """0 when every training stage runs on CPU; else the accelerate config's processes per machine (1 without one)."""
    training = [values for name, values in resolved.items() if not get_single(name, values)]
    if training and all(values.get("use_cpu") is True for values in training):
        return 0
    config = read_accelerate_config(accelerate_config)
    return max(1, int(config.get("num_processes") or 1) // max(1, int(config.get("num_machines") or 1)))


@dataclass(frozen=True)
class SlurmLauncher:
    """Every stage as `srun` steps of a Slurm allocation; see the module docstring.

    Args:
        accelerate_config (`str`): the recipe's accelerate config (a multi-machine one when training spans nodes).
        nodes (`list[str]`): the allocation's node names, in Slurm's order.
        addresses (`list[str]`): each node's address (`NodeAddr`), for the rendezvous and the vLLM server.
        settings (`SlurmSettings`): the recipe's `slurm:` section, with `gpus_per_node` resolved.
        cpus_per_node (`int`, *optional*): the CPUs the allocation has on each node (the fewest, if they differ);
            every step of an exclusive job asks for them. None before the job starts.
    """

    accelerate_config: str | None
    nodes: list[str]
    addresses: list[str]
    settings: SlurmSettings
    cpus_per_node: int | None = None

    @classmethod
    def from_allocation(cls, accelerate_config: str | None, settings: SlurmSettings) -> "SlurmLauncher":
        """The launcher for the allocation this process runs in (`SLURM_JOB_NODELIST`)."""
        nodelist = os.environ.get("SLURM_JOB_NODELIST")
        if not os.environ.get("SLURM_JOB_ID") or not nodelist:
            raise GlowrlError(
                "--launcher slurm runs inside a Slurm allocation (sbatch or salloc); submit with `glowrl slurm`"
            )
        nodes = slurm_command("scontrol", "show", "hostnames", nodelist).split()
        addresses = [node_address(node) for node in nodes]
        return cls(accelerate_config, nodes, addresses, settings, job_cpus_per_node())

    @property
    def gpus_per_node(self) -> int:
        return self.settings.gpus_per_node or 0

    @property
    def vllm_nodes(self) -> int:
        return self.settings.vllm_nodes

    @property
    def training_nodes(self) -> list[str]:
        return self.nodes[: len(self.nodes) - self.vllm_nodes]

    def processes_per_node(self) -> int:
        return max(1, self.gpus_per_node)

    def world_size(self, values: dict) -> int:
        nodes = len(self.training_nodes) if uses_vllm_server(values) else len(self.nodes)
        return nodes * self.processes_per_node()

    def check(self, resolved: dict) -> None:
        """Refuse a layout the stages cannot use, naming the fix (before anything runs)."""
        config = read_accelerate_config(self.accelerate_config)
        server_stages = [name for name, values in resolved.items() if uses_vllm_server(values)]
        if self.vllm_nodes >= len(self.nodes):
            raise RecipeError(
                f"--vllm_nodes {self.vllm_nodes}: the allocation has {len(self.nodes)} node(s), none left to train on"
            )
        if server_stages and not self.vllm_nodes:
            raise RecipeError(
                f"{server_stages[0]}: vllm_mode: server needs a node for the vLLM server: pass --vllm_nodes 1 "
                "(or set vllm_mode: colocate)"
            )
        if self.vllm_nodes and not server_stages:
            raise RecipeError(
                "--vllm_nodes: no stage of the recipe uses vllm_mode: server, so the vLLM node would sit idle; drop "
                "--vllm_nodes or set use_vllm: true and vllm_mode: server in the rl: section"
            )
        for name in server_stages:
            self.check_server(name, resolved[name], resolved)
        training = {name: values for name, values in resolved.items() if not get_single(name, values)}
        kind = config.get("distributed_type", "NO")
        spans = any(self.world_machines(values) > 1 for values in training.values())
        if spans and (not self.accelerate_config or kind not in MULTI_MACHINE_TYPES or config.get("use_cpu")):
            what = "no accelerate_config" if not self.accelerate_config else f"{self.accelerate_config} ({kind})"
            raise RecipeError(
                f"accelerate_config: {what} runs on one machine only; training on {len(self.nodes)} nodes needs a "
                "distributed one: accelerate_configs/ddp.yaml, zero2.yaml, zero3.yaml or fsdp2.yaml (cpu_ddp.yaml "
                "on CPU nodes)"
            )
        for name, values in training.items():
            if self.gpus_per_node == 0 and values.get("use_cpu") is not True:
                raise RecipeError(
                    f"{name}: --gpus_per_node 0 trains on CPU nodes; set use_cpu: true (and bf16: false)"
                )

    def check_server(self, name: str, values: dict, resolved: dict) -> None:
        given = self.settings.vllm_tensor_parallel_size is not None
        tensor_parallel = self.settings.vllm_tensor_parallel_size if given else max(1, self.gpus_per_node)
        check_server_stage(name, values, resolved, tensor_parallel, self.gpus_per_node, given)

    def world_machines(self, values: dict) -> int:
        return len(self.training_nodes) if uses_vllm_server(values) else len(self.nodes)

    def _srun(self, nodes: list[str], gpus: bool = True, export: dict | None = None) -> list[str]:
        command = ["srun", f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}", "--ntasks-per-node=1"]
        command += [f"--nodelist={','.join(nodes)}", "--kill-on-bad-exit=1"]  # commas: srun's list separator
        if gpus and self.gpus_per_node:
            command.append(f"--gpus-per-node={self.gpus_per_node}")
        cpus = self.settings.cpus_per_task or (self.settings.exclusive and (self.cpus_per_node or "ALL"))
        if cpus:  # "ALL": a dry run's placeholder for the count the job finds on its nodes
            command.append(f"--cpus-per-task={cpus}")
        if export:
            command.append("--export=" + ",".join(["ALL", *(f"{k}={v}" for k, v in export.items())]))
        return command

    def launch(
        self, stage: str, recipe_path: Path, values: dict, resume: str | None, single: bool, index: int = 0
    ) -> StageLaunch:
        head = self.nodes[:1]
        if single:  # manages its own devices (vLLM generation, evaluation): one task on the first node
            return StageLaunch(
                [[*self._srun(head), sys.executable, "-m", "glowrl", stage, "--config", str(recipe_path)]]
            )
        server = uses_vllm_server(values)
        nodes = self.training_nodes if server else self.nodes
        extra = stage_args(resume)
        launch = StageLaunch([], world_size=len(nodes) * self.processes_per_node())
        if server:
            self.check_server(stage, values, {stage: values})  # its model exists now: its own config.json
            address = self.addresses[len(nodes)]
            launch.server = [
                *self._srun(self.nodes[len(nodes) :], export=VLLM_SERVER_ENV),
                *self.server_command(values),
            ]
            port = self.settings.vllm_port
            launch.server_url, launch.server_wait = f"http://{address}:{port}", self.settings.vllm_wait
            extra += ["--vllm_server_host", address, "--vllm_server_port", str(port)]
        command = accelerate_command(
            stage,
            recipe_path,
            values,
            self.accelerate_config,
            extra,
            machines=len(nodes),
            processes=launch.world_size,
            main_address=self.addresses[0],
            main_port=self.settings.port + index,
        )
        launch.steps.append([*self._srun(nodes), *per_task_shell(command, **{MACHINE_RANK: '"$SLURM_PROCID"'})])
        return launch

    def server_command(self, values: dict) -> list[str]:
        """TRL's `vllm serve` command line for the RL stage's starting model, on every GPU of the vLLM node (one
        process on a CPU node)."""
        from .._trl_compat import vllm_serve_command

        tensor_parallel = self.settings.vllm_tensor_parallel_size or max(1, self.gpus_per_node)
        return vllm_serve_command(
            on_gpus=self.gpus_per_node > 0,
            model=values["model_name_or_path"],
            port=self.settings.vllm_port,
            tensor_parallel_size=tensor_parallel,
            data_parallel_size=1,  # TRL: above 1 errors out for dense models
            gpu_memory_utilization=self.settings.vllm_gpu_memory_utilization,
            max_model_len=values.get("vllm_max_model_length"),
        )


def get_single(name: str, values: dict) -> bool:
    from ..stages import get_stage

    return get_stage(name).single_process(values)


def node_address(node: str) -> str:
    """A node's `NodeAddr` from `scontrol show node` (its name when Slurm gives none)."""
    for word in slurm_command("scontrol", "show", "node", "-o", node).split():
        if word.startswith("NodeAddr="):
            return word.split("=", 1)[1] or node
    return node


def job_cpus_per_node() -> int | None:
    """The fewest CPUs the allocation has on one of its nodes, from `SLURM_JOB_CPUS_PER_NODE` (`72(x2),64` -> 64)."""
    counts = [int(n) for n in re.findall(r"(\d+)(?:\(x\d+\))?", os.environ.get("SLURM_JOB_CPUS_PER_NODE", ""))]
    return min(counts) if counts else None
