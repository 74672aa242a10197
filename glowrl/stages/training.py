"""What every training stage does around its TRL trainer: pass the model options, train (resuming), save.

Every training stage (GLOW SFT, and each RL algorithm) hands its trainer the model as a path or Hub name, so that
reference models and vLLM reload the same weights, and ends with a plain `save_pretrained` directory plus
`trainer_state.json` that the next stage, the evaluation and the pipeline summary read.
"""

from .._trl_compat import trainer_name


def set_model_init_kwargs(training_args, model_args) -> None:
    """Pass `trl.ModelConfig`'s loading options to the trainer, which loads the model from its path."""
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }


def train_and_save(trainer_class, model_args, training_args, dataset, tokenizer, describe: str, **trainer_kwargs):
    """Build `trainer_class` on the model path, train (resuming when asked), save the model, tokenizer and state.

    Args:
        describe (`str`): What the run trains on, printed once at the start ("2000 trajectories (...)").
        **trainer_kwargs: Extra trainer arguments (e.g. GRPO's `reward_funcs`).

    Returns:
        The trainer, after training.
    """
    from trl import get_peft_config

    set_model_init_kwargs(training_args, model_args)
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
        **trainer_kwargs,
    )
    trainer.accelerator.print(f"{trainer_name(trainer)} on {describe}, from {model_args.model_name_or_path}")
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # the log history the pipeline summarises
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    # Every rank reaches the end before the process group is torn down, so that no rank exits (and no group is left
    # to the interpreter's shutdown) while another is still saving.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return trainer
