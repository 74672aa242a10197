"""Where a pipeline stage's processes run: on this machine, or as steps of a Slurm allocation.

A launcher turns one stage (its name, its recipe file, its resolved values) into a [`StageLaunch`]: the command lines
to run in order, and for RL with `vllm_mode: server`, the vLLM server to start first. The pipeline runs them
(`glowrl.pipeline`); this module decides only what they are.

- [`LocalLauncher`]: `accelerate launch -m glowrl <stage>` with the recipe's accelerate config (or `python -m glowrl
  <stage>` for a stage that manages its own devices: vLLM generation, evaluation).
- [`SlurmLauncher`]: inside an allocation (`glowrl slurm` submits one), every stage is its own `srun` step: one task
  per node, each running `accelerate launch` with `--num_machines`, `--num_processes`, the first node's address and a
  port as the c10d rendezvous, and `--machine_rank "$SLURM_PROCID"`, which the shell of each task expands (never the
  batch shell: with one task per node, each task's own rank is its machine rank). With `--vllm_nodes 1`, RL in
  `vllm_mode: server` trains on the other nodes while the last one serves the policy (TRL's `vllm serve` command
  line), the trainer starting only once the server's `/health` answers, and the server's address passed as
  `vllm_server_host`, the key TRL reads.

Both pass accelerate the stage's own `gradient_accumulation_steps` and mixed precision (from its `bf16`/`fp16`; `no`
for a stage that does not train, such as generation), so the launcher and the trainer never disagree: an accelerate
config that says `bf16` would otherwise turn on bf16 autocast under a recipe that says `bf16: false` (transformers
reads `ACCELERATE_MIXED_PRECISION` when neither is set).
Standard library, YAML and Slurm's own commands only (and the stage registry, for whether a stage trains).
"""

import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .errors import GlowrlError, RecipeError
from .recipe import load_mapping


# accelerate `distributed_type`s that can span machines; `NO` (and `use_cpu: true`, which falls back to one process)
# cannot.
MULTI_MACHINE_TYPES = {"MULTI_GPU", "MULTI_CPU", "DEEPSPEED", "FSDP", "MULTI_NPU", "MULTI_XPU", "MULTI_MLU"}
VLLM_SERVER_ENV = {"VLLM_SERVER_DEV_MODE": "1"}  # TRL's weight-transfer endpoints live behind vLLM's dev mode


@dataclass
class StageLaunch:
    """What starting one stage takes.

    Args:
        steps (`list[list[str]]`): command lines run in order; the stage succeeds when every one exits 0.
        world_size (`int`): training processes (what GRPO's batch rule is checked against).
        server (`list[str]`, *optional*): a vLLM server started before the steps and stopped after them.
        server_url (`str`, *optional*): its base URL, polled at `/health` until it answers.
        server_wait (`float`, *optional*): how long to wait for it, in seconds.
    """

    steps: list[list[str]]
    world_size: int = 1
    server: list[str] | None = None
    server_url: str | None = None
    server_wait: float = 0.0


def read_accelerate_config(path: str | None) -> dict:
    """The accelerate config file as a dict (`{}` without one), with a one-line error for a missing or bad file."""
    return load_mapping(path, "accelerate_config", "; give a file from accelerate_configs/") if path else {}


def mixed_precision(values: dict) -> str:
    """accelerate's `--mixed_precision` for a training stage's values: `fp16`, `bf16` or `no`.

    An unset `bf16` is TRL's default, which is bf16 unless `fp16` is set (TRL's configs default `bf16` to None and
    resolve it so); glowrl's pipeline sets `bf16: false` explicitly for CPU recipes."""
    if values.get("fp16"):
        return "fp16"
    return "no" if values.get("bf16") is False else "bf16"


def accelerate_command(
    stage: str,
    recipe_path: Path,
    values: dict,
    accelerate_config: str | None,
    stage_args: list[str] = (),
    machines: int = 1,
    processes: int | None = None,
    main_address: str | None = None,
    main_port: int | None = None,
) -> list[str]:
    """`python -m accelerate.commands.launch ... -m glowrl <stage> --config R [stage_args]`.

    With `machines > 1` it adds the multi-machine flags (c10d rendezvous at `main_address:main_port`) and a
    `--machine_rank` placeholder, [`MACHINE_RANK`], that [`per_task_shell`] turns into the task's own rank."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]  # the stage's own error, no traceback
    if accelerate_config:
        command += ["--config_file", str(accelerate_config)]
    else:  # said explicitly, or accelerate lists the defaults it assumed
        command += ["--num_machines", "1", "--dynamo_backend", "no"] if machines == 1 else ["--dynamo_backend", "no"]
    if processes is not None or not accelerate_config:
        command += ["--num_processes", str(processes or 1)]
    if machines > 1:
        command += ["--num_machines", str(machines), "--machine_rank", MACHINE_RANK]
        command += ["--main_process_ip", main_address, "--main_process_port", str(main_port)]
        command += ["--rdzv_backend", "c10d", "--same_network"]
    from .stages import get_stage

    command += ["--mixed_precision", mixed_precision(values) if get_stage(stage).trains else "no"]
    command += ["--gradient_accumulation_steps", str(values.get("gradient_accumulation_steps") or 1)]
    return [*command, "-m", "glowrl", stage, "--config", str(recipe_path), *stage_args]


MACHINE_RANK = "__GLOWRL_MACHINE_RANK__"


def per_task_shell(command: list[str], **expansions: str) -> list[str]:
    """`bash -c '<command>'` with each placeholder replaced by a shell expression the task itself expands.

    `per_task_shell(cmd, __GLOWRL_MACHINE_RANK__='"$SLURM_PROCID"')`: every other word is quoted, so only the
    placeholders are expanded, and only inside the task (the batch shell never sees them unquoted)."""
    words = [expansions.get(word, shlex.quote(word)) for word in command]
    return ["bash", "-c", "exec " + " ".join(words)]


def stage_args(resume: str | None) -> list[str]:
    return ["--resume_from_checkpoint", resume] if resume else []


@dataclass(frozen=True)
class LocalLauncher:
    """Every stage on this machine: `accelerate launch` with the recipe's accelerate config."""

    accelerate_config: str | None = None

    def world_size(self, values: dict) -> int:
        return int(read_accelerate_config(self.accelerate_config).get("num_processes") or 1)

    def check(self, resolved: dict) -> None:
        read_accelerate_config(self.accelerate_config)

    def launch(
        self, stage: str, recipe_path: Path, values: dict, resume: str | None, single: bool, index: int = 0
    ) -> StageLaunch:
        if single:
            return StageLaunch([[sys.executable, "-m", "glowrl", stage, "--config", str(recipe_path)]])
        command = accelerate_command(stage, recipe_path, values, self.accelerate_config, stage_args(resume))
        return StageLaunch([command], world_size=self.world_size(values))


def uses_vllm_server(values: dict) -> bool:
    return bool(values.get("use_vllm")) and values.get("vllm_mode") == "server"


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
        partition, account, qos, time, constraint, mem (`str`): the `#SBATCH` options of those names.
        cpus_per_task (`int`): CPUs per node's task (given to every `srun` step too).
        job_name (`str`): default `glowrl-<output_root's name>`.
        requeue (`bool`): let Slurm requeue the job (preemption, node failure); a requeued job resumes.
        extra_sbatch (`list[str]`): more `#SBATCH` options, e.g. `--exclusive`.
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
    mem: str = field(default=None, metadata={"help": "#SBATCH --mem, e.g. 0 (all of each node's memory)."})
    cpus_per_task: int = field(default=None, metadata={"help": "CPUs of each node's task."})
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
    from .recipe import parse_dataclasses

    section = recipe.get("slurm") or {}
    if not isinstance(section, dict):
        raise RecipeError("slurm: must be a mapping of the keys in `glowrl slurm --help`")
    (settings,) = parse_dataclasses((SlurmSettings,), section, list(argv), where="section slurm:")
    if settings.gpus_per_node is None:
        settings.gpus_per_node = default_gpus_per_node(recipe.get("accelerate_config"), resolved)
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
    """

    accelerate_config: str | None
    nodes: list[str]
    addresses: list[str]
    settings: SlurmSettings

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
        return cls(accelerate_config, nodes, addresses, settings)

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
        if self.vllm_nodes and self.gpus_per_node == 0:
            raise RecipeError("--vllm_nodes: the vLLM server needs GPUs; give --gpus_per_node")
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

    def world_machines(self, values: dict) -> int:
        return len(self.training_nodes) if uses_vllm_server(values) else len(self.nodes)

    def _srun(self, nodes: list[str], gpus: bool = True, export: dict | None = None) -> list[str]:
        command = ["srun", f"--nodes={len(nodes)}", f"--ntasks={len(nodes)}", "--ntasks-per-node=1"]
        command += [f"--nodelist={','.join(nodes)}", "--kill-on-bad-exit=1"]  # commas: srun's list separator
        if gpus and self.gpus_per_node:
            command.append(f"--gpus-per-node={self.gpus_per_node}")
        if self.settings.cpus_per_task:
            command.append(f"--cpus-per-task={self.settings.cpus_per_task}")
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
        """TRL's `vllm serve` command line for the RL stage's starting model, on every GPU of the vLLM node."""
        from ._trl_compat import vllm_serve_command

        tensor_parallel = self.settings.vllm_tensor_parallel_size or self.gpus_per_node
        return vllm_serve_command(
            model=values["model_name_or_path"],
            port=self.settings.vllm_port,
            tensor_parallel_size=tensor_parallel,
            data_parallel_size=1,  # TRL: above 1 errors out for dense models
            gpu_memory_utilization=self.settings.vllm_gpu_memory_utilization,
            max_model_len=values.get("vllm_max_model_length"),
        )


def get_single(name: str, values: dict) -> bool:
    from .stages import get_stage

    return get_stage(name).single_process(values)


def node_address(node: str) -> str:
    """A node's `NodeAddr` from `scontrol show node` (its name when Slurm gives none)."""
    for word in slurm_command("scontrol", "show", "node", "-o", node).split():
        if word.startswith("NodeAddr="):
            return word.split("=", 1)[1] or node
    return node


def wait_for_server(url: str, process: subprocess.Popen, timeout: float, poll: float = 2.0) -> None:
    """Block until `url/health` answers 200; fail with one line if the server exits first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise GlowrlError(f"the vLLM server exited with {process.returncode} before it answered at {url}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            raise GlowrlError(
                f"the vLLM server at {url} did not answer /health within {timeout:.0f} s; see the job's output, or "
                "raise slurm.vllm_wait"
            )
        time.sleep(poll)
