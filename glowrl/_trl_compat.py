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
    from trl.import_utils import is_vllm_available

    if args.num_generations is not None and args.num_generations < 2:
        raise ValueError(
            f"num_generations must be at least 2 (the advantage compares completions of the same prompt), got "
            f"{args.num_generations}"
        )
    if args.use_vllm and not is_vllm_available():
        raise ValueError(
            "use_vllm: true needs vLLM, which is not installed; pip install 'glowrl[vllm]' on a GPU machine, or "
            "set use_vllm: false to generate with transformers"
        )
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


def vllm_serve_command(**script_args) -> list[str]:
    """The `vllm serve` command line TRL's trainers expect a server to run (`trl.scripts.vllm_serve.build_command`:
    NCCL weight transfer, processed log-probs); run it with `VLLM_SERVER_DEV_MODE=1`. Needs no vLLM to build."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    return build_command(ScriptArguments(**script_args))
