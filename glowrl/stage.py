"""What every training stage does around its TRL trainer: check and load the model, train (resuming), save.

Every stage (GLOW SFT, GRPO, RLOO, DPO, KTO) hands its trainer the model as a path or Hub name, so that reference
models and vLLM re-load the same weights, and ends with a plain `save_pretrained` directory plus `trainer_state.json`
that the next stage, `glowrl eval` and the pipeline summary read.
"""

from pathlib import Path

from transformers import AutoTokenizer


def check_model_path(model_name_or_path: str | None, field_name: str = "model_name_or_path") -> None:
    """Fail early and clearly on a local model path that does not exist or holds no tokenizer."""
    if not model_name_or_path:
        raise ValueError(f"{field_name} is required: a local model directory or a Hub model name")
    path = Path(model_name_or_path).expanduser()
    looks_local = path.exists() or model_name_or_path.startswith((".", "/", "~")) or model_name_or_path.count("/") > 1
    if not looks_local:
        return  # a Hub name: loading it will say whether it exists
    if not path.is_dir():
        raise ValueError(f"{field_name}: {model_name_or_path} does not exist; give a model directory or a Hub name")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise ValueError(
            f"{field_name}: {model_name_or_path} holds no tokenizer (no tokenizer.json or tokenizer_config.json); "
            "save the tokenizer with the model (tokenizer.save_pretrained)"
        )


def load_tokenizer(model_args, chat_template_path: str | None = None):
    """The model's own tokenizer, with the recipe's chat template on it when one is given."""
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if chat_template_path:
        tokenizer.chat_template = Path(chat_template_path).read_text()
    return tokenizer


def set_model_init_kwargs(training_args, model_args) -> None:
    """Pass `ModelConfig`'s loading options to the trainer, which loads the model from its path."""
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }


def train_and_save(trainer, training_args):
    """Train (resuming when asked), then save the model, tokenizer and `trainer_state.json` to `output_dir`."""
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # the log history the pipeline summarises
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    return trainer
