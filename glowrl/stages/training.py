"""What every training stage does around its TRL trainer: guard the output, train (resuming), save, hand off.

Every training stage (GLOW SFT, and each RL algorithm) hands its trainer the model as a path or Hub name, so that
reference models and vLLM reload the same weights, and ends with a plain `save_pretrained` directory plus
`trainer_state.json` that the next stage, the evaluation and the pipeline summary read. With LoRA (`use_peft`), the
trainer saves an adapter; this stage then also writes the merged model into the output directory and moves the
adapter to `<output_dir>/adapter/`, so the next stage, vLLM and `glowrl eval` load the output like any model.
"""

from dataclasses import dataclass, field
from pathlib import Path

from .._trl_compat import trainer_name
from ..checkpoints import checkpoint_problem, last_complete_checkpoint, mark_complete
from ..errors import RecipeError
from ..outputs import check_output, clear_dir


ADAPTER_DIR = "adapter"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


@dataclass
class RunArguments:
    """Options of a stage run that are not training settings."""

    overwrite: bool = field(
        default=False,
        metadata={"help": "Replace what output_dir holds (refused otherwise, unless resuming from a checkpoint)."},
    )


def set_model_init_kwargs(training_args, model_args) -> None:
    """Pass `trl.ModelConfig`'s loading options to the trainer, which loads the model from its path."""
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }


def resolve_resume(training_args) -> str | None:
    """The checkpoint to resume from: `resume_from_checkpoint: true` is the newest complete one in `output_dir`."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", False) or str(value).lower() in ("false", "none"):
        return None
    if value is True or str(value).lower() == "true":
        checkpoint = last_complete_checkpoint(training_args.output_dir, warn=print)
        if checkpoint is None:
            raise RecipeError(
                f"resume_from_checkpoint: no complete checkpoint in {training_args.output_dir}; train from scratch "
                "(unset resume_from_checkpoint, and pass --overwrite if the directory holds files)"
            )
        return checkpoint
    problem = checkpoint_problem(value)
    if problem:
        raise RecipeError(f"resume_from_checkpoint: {value} cannot be resumed from: {problem}; give a complete one")
    return str(value)


def check_stage_output(run_args: RunArguments, training_args, model_args, data_paths=()) -> str | None:
    """Refuse an output directory that holds another run or is an input; returns the checkpoint to resume from."""
    resume = resolve_resume(training_args)
    check_output(
        training_args.output_dir,
        "output_dir",
        overwrite=run_args.overwrite,
        resume=resume is not None,
        inputs={"model_name_or_path": model_args.model_name_or_path, "dataset_paths": list(data_paths or [])},
        fix="pass --overwrite to replace them, or resume_from_checkpoint: true to continue the run they are from",
    )
    return resume


def _mark_complete_callback(trainer):
    from transformers import TrainerCallback

    class MarkCompleteCheckpoints(TrainerCallback):
        """Marks each checkpoint complete once every rank has written it (`on_save` follows the save)."""

        def on_save(self, args, state, control, **kwargs):
            trainer.accelerator.wait_for_everyone()
            checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and checkpoint.is_dir():
                mark_complete(checkpoint)

    return MarkCompleteCheckpoints()


def export_merged_model(output_dir: str, base_model: str, model_args) -> None:
    """Merge the LoRA adapter the trainer saved in `output_dir` into its base model, and save the merged model there.

    The adapter moves to `<output_dir>/adapter/` (a directory holding both a model and an `adapter_config.json` would
    be loaded as an adapter by transformers).
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    output_dir = Path(output_dir)
    adapter = output_dir / ADAPTER_DIR
    adapter.mkdir(exist_ok=True)
    for name in _ADAPTER_FILES:
        if (output_dir / name).is_file():
            (output_dir / name).replace(adapter / name)
    dtype = model_args.dtype if model_args.dtype not in (None, "auto") else "auto"
    base = AutoModelForCausalLM.from_pretrained(base_model, revision=model_args.model_revision, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(output_dir)


def train_and_save(
    trainer_class,
    run_args: RunArguments,
    model_args,
    training_args,
    dataset,
    tokenizer,
    describe: str,
    resume: str | None,
    before_train=None,
    **trainer_kwargs,
):
    """Build `trainer_class` on the model path, train (resuming when asked), save the model, tokenizer and state.

    Args:
        resume (`str`, *optional*): The checkpoint to resume from ([`check_stage_output`] returns it).
        before_train (`Callable`, *optional*): Called with the built trainer before training (checks, warnings).
        describe (`str`): What the run trains on, printed once at the start ("2000 trajectories (...)").
        **trainer_kwargs: Extra trainer arguments (e.g. GRPO's `reward_funcs`).

    Returns:
        The trainer, after training.
    """
    from trl import get_peft_config

    set_model_init_kwargs(training_args, model_args)
    if training_args.ddp_find_unused_parameters is None:
        # transformers' default, True unless gradient checkpointing, costs an extra autograd pass per step and makes
        # DDP warn at every run; every parameter that trains is used here (frozen ones under LoRA are not tracked). A
        # model that does leave some unused makes DDP fail saying so; `ddp_find_unused_parameters: true` then.
        training_args.ddp_find_unused_parameters = False
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        **trainer_kwargs,
    )
    trainer.add_callback(_mark_complete_callback(trainer))
    if run_args.overwrite and resume is None and trainer.accelerator.is_main_process:
        clear_dir(training_args.output_dir)  # everything was checked: the data loaded, the trainer was built
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.print(f"{trainer_name(trainer)} on {describe}, from {model_args.model_name_or_path}")
    if before_train is not None:
        before_train(trainer)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # the log history the pipeline summarises
    # Every rank reaches this point before the merge and before the process group is torn down, so that no rank exits
    # (and no group is left to the interpreter's shutdown) while another is still saving.
    trainer.accelerator.wait_for_everyone()
    if model_args.use_peft and trainer.accelerator.is_main_process:
        export_merged_model(training_args.output_dir, model_args.model_name_or_path, model_args)
        trainer.accelerator.print(f"LoRA adapter merged into {training_args.output_dir} (adapter in {ADAPTER_DIR}/)")
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:  # every rank has saved: the pipeline counts the stage done from here on,
        mark_complete(training_args.output_dir)  # even if tearing the processes down fails or the job is stopped
    trainer.accelerator.end_training()
    return trainer
