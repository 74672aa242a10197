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

from transformers import set_seed
from trl import ModelConfig, get_peft_config

from .data import TrajectoryArguments, build_trajectory_dataset
from .glow_config import GLOWConfig
from .glow_trainer import GLOWTrainer
from .recipe import parse_stage_args
from .stage import check_model_path, load_tokenizer, set_model_init_kwargs, train_and_save


DATACLASS_TYPES = (TrajectoryArguments, GLOWConfig, ModelConfig)


def main(script_args: TrajectoryArguments, training_args: GLOWConfig, model_args: ModelConfig):
    """Build the trajectory dataset, train with [`GLOWTrainer`], save the model and tokenizer to `output_dir`."""
    check_model_path(model_args.model_name_or_path)
    set_seed(training_args.seed)
    dataset = build_trajectory_dataset(script_args)
    tokenizer = load_tokenizer(model_args)
    set_model_init_kwargs(training_args, model_args)
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
    return train_and_save(trainer, training_args)


def cli(argv: list[str] | None = None) -> int:
    args = parse_stage_args(DATACLASS_TYPES, "sft", argv)
    main(*args)
    return 0


if __name__ == "__main__":
    from .cli import run_guarded

    sys.exit(run_guarded(cli))
