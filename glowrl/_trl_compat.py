"""Every private TRL (and transformers Trainer) hook glowrl relies on, named once.

glowrl subclasses TRL's trainers and overrides the smallest hooks it can. Some of those hooks, and a few things it
reads, are private: they can change in any TRL release. They are all named here, and `tests/test_trl_compat.py`
checks that each still exists in the installed TRL, so an upgrade that breaks one fails one test that names it, not
a training run.

What is private, and where it is used:
- [`OVERRIDDEN`]: the methods glowrl's trainers override (`glowrl.glow.trainer`, `glowrl.rollout_entropy`);
- `trainer._metrics`, TRL's per-mode metric lists ([`trl_metrics`]), and `trainer._name` ([`trainer_name`]);
- the fused LM head's call flag and outputs, `model(..., fused_lm_head=True)` returning `log_probs`, `label_mask`
  ([`FUSED_LM_HEAD_FLAG`]);
- GRPO/RLOO's completion mask (`completion_mask`, times `tool_mask` when tools ran) ([`completion_token_mask`]) and
  the slice of the globally gathered rewards that belongs to this process ([`local_rows`]);
- the checkpoint folder of the current step ([`checkpoint_dir`]);
- TRL's `vllm serve` command line for a server that trainers can push weights to ([`vllm_serve_command`]; what the
  deprecated `trl vllm-serve` runs, without its re-exec);
- TRL's colocated vLLM engine and its weight iterator (`trainer.vllm_generation`, `.llm`, `._iter_named_params`),
  whose weight sync glowrl replaces on a CPU ([`adapt_colocated_vllm`]);
- the name TRL's server mode builds its client with (`trl.generation.vllm_generation.VLLMClient`), replaced on a CPU
  by glowrl's gloo client while the trainer is built ([`cpu_server_client`]);
- the text of GRPO/RLOO's batch-size error, which glowrl rewrites into one that names the fix
  ([`post_init_rollout_config`]).

Imports TRL only inside functions: importing this module is free.
"""

import contextlib
import os


# Class -> the private (or semi-private) methods glowrl overrides or calls on it.
OVERRIDDEN = {
    "trl.SFTTrainer": (
        "_set_signature_columns_if_needed",
        "compute_loss",
        "get_batch_samples",
        "_save_checkpoint",
        "_get_output_dir",
    ),
    "trl.GRPOTrainer": (
        "_calculate_rewards",
        "_generate_and_score_completions",
        "_get_per_token_logps_and_entropies",
        "_compute_loss",
    ),
    "trl.RLOOTrainer": (
        "_calculate_rewards",
        "_generate_and_score_completions",
        "_get_per_token_logps_and_entropies",
        "_compute_loss",
    ),
}
FUSED_LM_HEAD_FLAG = "fused_lm_head"  # SFTTrainer.compute_loss calls model(**inputs, fused_lm_head=True)
ROLLOUT_BATCH_ERROR = "divisible by num_generations"  # GRPOConfig/RLOOConfig.__post_init__'s batch error
_validation_world_size: int | None = None


@contextlib.contextmanager
def validating_for_world_size(world_size: int):
    """Check rollout configs built inside this block against `world_size` processes (the launch's), not this one."""
    global _validation_world_size
    previous, _validation_world_size = _validation_world_size, world_size
    try:
        yield
    finally:
        _validation_world_size = previous


def trl_metrics(trainer, mode: str = "train") -> dict:
    """TRL's metric lists for `mode` (`trainer._metrics[mode]`), averaged and cleared by TRL at every log."""
    return trainer._metrics[mode]


def trainer_name(trainer) -> str:
    """TRL's display name of a trainer (`trainer._name`, e.g. "GRPO")."""
    return getattr(trainer, "_name", type(trainer).__name__)


def training_chat_template(trainer) -> str | None:
    """The chat template SFTTrainer tokenizes with when it swaps in its own (`assistant_only_loss`), else `None`."""
    return getattr(trainer, "chat_template", None)


def completion_token_mask(inputs: dict):
    """The tokens GRPO/RLOO's loss counts: `completion_mask`, times `tool_mask` when tool calls were made."""
    mask = inputs["completion_mask"]
    return mask if "tool_mask" not in inputs else mask * inputs["tool_mask"]


def local_rows(trainer, num_local: int) -> slice:
    """This process's rows of a tensor gathered over all processes, as TRL slices its rewards and advantages."""
    index = trainer.accelerator.process_index
    return slice(index * num_local, (index + 1) * num_local)


def checkpoint_dir(trainer, trial=None) -> str:
    """The folder `Trainer._save_checkpoint` writes the current step's checkpoint to."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    return os.path.join(trainer._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}")


def post_init_rollout_config(args, parent_post_init) -> None:
    """Run a GRPO/RLOO config's `__post_init__`, turning its batch and vLLM errors into ones that name the fix."""
    if args.num_generations is not None and args.num_generations < 2:
        raise ValueError(
            f"num_generations must be at least 2 (the advantage compares completions of the same prompt), got "
            f"{args.num_generations}"
        )
    if args.use_vllm:
        from .vllm_support import require_vllm

        require_vllm("use_vllm: true")
    try:
        parent_post_init()
    except ValueError as e:
        if ROLLOUT_BATCH_ERROR not in str(e):
            raise
        per_device, steps = args.per_device_train_batch_size, args.steps_per_generation or 1
        world_size = _validation_world_size or args.world_size
        derived = args.generation_batch_size == per_device * args.world_size * steps  # not set by the user
        if derived and (per_device * world_size * steps) % args.num_generations == 0:
            return  # a pre-launch check, in one process, of a run that will have `world_size` processes
        raise ValueError(
            f"per_device_train_batch_size: {e}: the generation batch is per_device_train_batch_size "
            f"({per_device}) × processes ({world_size}) × steps_per_generation ({steps}) completions; make "
            f"it a multiple of num_generations, e.g. per_device_train_batch_size: {args.num_generations}, or a "
            f"num_generations that divides {per_device * world_size * steps}"
        ) from None


def vllm_serve_command(on_gpus: bool | None = None, **script_args) -> list[str]:
    """The `vllm serve` command line TRL's trainers expect a server to run (`trl.scripts.vllm_serve.build_command`:
    NCCL weight transfer, processed log-probs), for a server on GPUs, or (`on_gpus=False`) on CPUs, where it uses
    glowrl's gloo weight transfer; by default, as this machine is. Run it with `VLLM_SERVER_DEV_MODE=1`. Needs no vLLM
    to build."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    from .vllm_support import on_cpu, runnable_serve_command

    command = runnable_serve_command(build_command(ScriptArguments(**script_args)))
    if not (on_gpus if on_gpus is not None else not on_cpu()):  # NCCL needs CUDA: gloo (`glowrl.vllm_gloo`)
        from .vllm_gloo import cpu_serve_command

        command = cpu_serve_command(command)
    return command


def adapt_colocated_vllm(trainer) -> None:
    """On a CPU, make a GRPO/RLOO trainer's colocated vLLM engine take the policy's weights after each step.

    TRL's `VLLMGeneration.sync_weights` (colocate) loads one parameter at a time through the vLLM model's
    `load_weights`. vLLM's CPU backend packs every linear layer's weight for its GEMM kernels once loading ends and
    drops the checkpoint-format parameter, so that call fails (`'Parameter' object has no attribute
    'weight_loader'`). [`glowrl.vllm_support.reload_weights`] takes the same `(name, tensor)` pairs TRL produces
    (PEFT merged, names fixed) all at once, through vLLM's in-place reload. On a GPU nothing changes.
    """
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None or generation.mode != "colocate":
        return
    from .vllm_support import on_cpu, reload_weights

    if not on_cpu():
        return

    def sync_weights():
        reload_weights(generation.llm, generation._iter_named_params())
        generation.llm.reset_prefix_cache()

    generation.sync_weights = sync_weights


def release_colocated_vllm(trainer) -> None:
    """Drop a GRPO/RLOO trainer's colocated vLLM engine (`trainer.vllm_generation.llm`), so that a later engine in the
    same process (the hand-off report after RL) does not find its memory taken."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is not None and getattr(generation, "llm", None) is not None:
        generation.llm = None


@contextlib.contextmanager
def cpu_server_client(args):
    """While a GRPO/RLOO trainer with `vllm_mode: server` is built on a CPU, TRL builds its server client as
    [`glowrl.vllm_gloo.client_class`]: TRL's weight sync is NCCL-only, and refuses a CPU device."""
    from .vllm_support import on_cpu

    if not (getattr(args, "use_vllm", False) and args.vllm_mode == "server" and on_cpu()):
        yield
        return
    import trl.generation.vllm_generation as generation

    from .vllm_gloo import client_class

    original, generation.VLLMClient = generation.VLLMClient, client_class()
    try:
        yield
    finally:
        generation.VLLMClient = original
