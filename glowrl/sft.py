"""Stage 1: GLOW-weighted SFT on unfiltered reasoning trajectories.

Launch:

    glowrl sft --config recipes/tiny/sft.yaml
    accelerate launch --config_file accelerate_configs/ddp.yaml -m glowrl.sft --config recipes/qwen2.5-7b/glow.yaml

Any recipe field can be overridden on the command line, e.g. `--glow_beta 10 --output_dir outputs/try2`. The recipe
may be a pipeline recipe (shared keys plus an `sft:` section); this stage reads the shared keys and `sft:`.

The output directory is a plain `save_pretrained` model directory (weights, config, tokenizer, chat template) that
any TRL trainer, vLLM or `glowrl eval` loads by path.
"""

import sys
from pathlib import Path

from transformers import AutoTokenizer, set_seed
from trl import ModelConfig, get_peft_config

from .data import TrajectoryArguments, build_trajectory_dataset
from .glow_config import GLOWConfig
from .glow_trainer import GLOWTrainer
from .recipe import parse_stage_args


DATACLASS_TYPES = (TrajectoryArguments, GLOWConfig, ModelConfig)


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


def main(script_args: TrajectoryArguments, training_args: GLOWConfig, model_args: ModelConfig):
    """Build the trajectory dataset, train with [`GLOWTrainer`], save the model and tokenizer to `output_dir`."""
    check_model_path(model_args.model_name_or_path)
    set_seed(training_args.seed)
    dataset = build_trajectory_dataset(script_args)
    tokenizer = AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "trust_remote_code": training_args.trust_remote_code,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
        **(training_args.model_init_kwargs or {}),
    }
    trainer = GLOWTrainer(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    counts = {label: dataset["correct"].count(label) for label in (True, False, None)}
    trainer.accelerator.print(
        f"GLOW SFT on {len(dataset)} trajectories ({counts[True]} positive, {counts[False]} negative, "
        f"{counts[None]} unlabelled), glow={'on' if training_args.glow else 'off'}"
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json next to the model: the log history the pipeline summarises
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}")
    return trainer


def cli(argv: list[str] | None = None) -> int:
    args = parse_stage_args(DATACLASS_TYPES, "sft", argv)
    main(*args)
    return 0


if __name__ == "__main__":
    from .cli import run_guarded

    sys.exit(run_guarded(cli))
