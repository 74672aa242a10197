"""What every launcher shares: a stage's [`StageLaunch`], the `accelerate launch` command line, and the local launcher.

A launcher turns one stage (its name, its recipe file, its resolved values) into a [`StageLaunch`]: the command lines
to run in order, and for RL with `vllm_mode: server`, the vLLM server to start first. The pipeline runs them
(`glowrl.pipeline`); this module decides only what they are. [`LocalLauncher`] runs every stage on this machine:
`accelerate launch -m glowrl <stage>` with the recipe's accelerate config (or `python -m glowrl <stage>` for a stage
that manages its own devices: vLLM generation, evaluation). The Slurm launcher is `glowrl.launch.slurm`.

Both pass accelerate the stage's own `gradient_accumulation_steps` and mixed precision (from its `bf16`/`fp16`; `no`
for a stage that does not train, such as generation), so the launcher and the trainer never disagree: an accelerate
config that says `bf16` would otherwise turn on bf16 autocast under a recipe that says `bf16: false` (transformers
reads `ACCELERATE_MIXED_PRECISION` when neither is set).

Across machines the rendezvous is torchrun's static one at the first node's address: see [`accelerate_command`].
Standard library and YAML only (and the stage registry, for whether a stage trains).
"""

import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..errors import GlowrlError
from ..recipe import load_mapping


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

    With `machines > 1` it adds the multi-machine flags and a `--machine_rank` placeholder, [`MACHINE_RANK`], that
    [`per_task_shell`] turns into the task's own rank. The rendezvous: `--main_process_ip main_address
    --main_process_port main_port --rdzv_backend static` and no `--same_network`, so accelerate (1.16,
    `prepare_multi_gpu_env`/`prepare_deepspeed_cmd_env`) hands torchrun `rdzv_endpoint=main_address:main_port` and
    `node_rank=<machine rank>`; torchrun's static rendezvous then hosts its store on machine rank 0 and gives every
    worker `MASTER_ADDR=main_address`. Not `--same_network`: accelerate then passes only `master_addr`, which torchrun
    ignores for a c10d rendezvous, so every node waits on `localhost:29400`, its own. Not c10d: its store host is
    guessed from the node's hostname and the workers' `MASTER_ADDR` is the hostname of whichever node joins first,
    both wrong where a hostname does not resolve to the address the nodes reach each other at (accelerate cannot pass
    torchrun's `--local_addr`)."""
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
        command += ["--rdzv_backend", "static"]
    from ..stages import get_stage

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
