"""The SFT stage: GLOW-weighted SFT on unfiltered reasoning trajectories.

    glowrl sft --config recipes/tiny/sft.yaml
    accelerate launch --config_file accelerate_configs/ddp.yaml -m glowrl sft --config recipes/qwen2.5-7b/sft_glow.yaml

Any field can be overridden on the command line (`--glow_beta 10 --output_dir outputs/try2`). The recipe may be a
pipeline recipe (shared keys plus an `sft:` section). The output is a plain `save_pretrained` model directory
(weights, config, tokenizer, chat template) that any TRL trainer, vLLM or the evaluation loads by path.
"""

from ..data import TrajectoryArguments
from ..errors import RecipeError
from ..glow.arguments import GLOWArguments
from .base import Stage
from .training import RunArguments


def dataclass_types(values: dict) -> tuple:
    from trl import ModelConfig

    from ..glow.config import GLOWConfig

    return (RunArguments, TrajectoryArguments, GLOWConfig, ModelConfig)


def check(run_args, script_args, training_args, model_args, linked=()):
    """Everything that can be checked without loading data or a model: paths, columns, the output directory."""
    from ..models import check_model_path
    from .training import check_stage_output

    if "model_name_or_path" not in linked:
        check_model_path(model_args.model_name_or_path)
    if "dataset_paths" not in linked:
        script_args.check_files()
    if script_args.eval_dataset_paths and training_args.eval_strategy == "no":
        raise RecipeError(
            "eval_dataset_paths: the held-out loss is computed at eval_strategy points, and eval_strategy is no; set "
            "eval_strategy: epoch (or steps, with eval_steps)"
        )
    if "output_dir" not in linked:  # the pipeline manages its stages' output directories itself
        return check_stage_output(run_args, training_args, model_args, script_args.dataset_paths)
    return None


def cut_completions(train_dataset, stop_ids) -> list[int]:
    """Rows of a tokenized SFT dataset whose trained tokens hold none of `stop_ids`: completions cut by `max_length`
    before their end-of-turn token (with a chat template that ends every turn in one), which teach a model not to stop.

    Example:
    ```python
    >>> cut_completions([{"labels": [-100, 5, 2, 9]}, {"labels": [-100, 5, 6]}], stop_ids={2})
    [1]
    ```
    """
    stop_ids = set(stop_ids)
    return [i for i, row in enumerate(train_dataset) if not stop_ids.intersection(row["labels"])]


def warn_cut_completions(trainer) -> None:
    """Print one line when some training completions lost their end-of-turn token to `max_length`."""
    tokenizer = trainer.processing_class
    generation = getattr(trainer.model, "generation_config", None)
    eos = getattr(generation, "eos_token_id", None)
    stop_ids = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
    dataset = trainer.train_dataset
    if not stop_ids or trainer.args.max_length is None or "labels" not in dataset.column_names:
        return
    cut = cut_completions(dataset.select_columns(["labels"]), stop_ids)
    if cut:
        names = ", ".join(sorted(str(tokenizer.convert_ids_to_tokens(i)) for i in stop_ids))
        trainer.accelerator.print(
            f"Warning: {len(cut)} of {len(dataset)} trajectories are longer than max_length={trainer.args.max_length} "
            f"tokens and are cut before their end-of-turn token ({names}): training on them teaches the model not to "
            "stop; raise max_length, or shorten those trajectories"
        )


def run(run_args, script_args, training_args, model_args):
    """Build the trajectory dataset and train [`~glowrl.glow.trainer.GLOWTrainer`] on it; save to `output_dir`."""
    from transformers import set_seed

    from ..data import build_trajectory_dataset, label_counts
    from ..data.trajectories import build_heldout_dataset
    from ..glow.trainer import GLOWTrainer
    from ..models import load_tokenizer
    from .training import train_and_save

    resume = check(run_args, script_args, training_args, model_args)
    set_seed(training_args.seed)
    dataset = build_trajectory_dataset(script_args)
    tokenizer = load_tokenizer(model_args.model_name_or_path, model_args.model_revision)
    counts = label_counts(dataset["correct"])
    describe = (
        f"{len(dataset)} trajectories ({counts[True]} positive, {counts[False]} negative, {counts[None]} "
        f"unlabelled), glow={'on' if training_args.glow else 'off'}"
    )
    heldout = build_heldout_dataset(script_args)
    if heldout is not None:
        describe += f"; held-out loss on {len(heldout)} trajectories"
    return train_and_save(
        GLOWTrainer,
        run_args,
        model_args,
        training_args,
        dataset,
        tokenizer,
        describe,
        resume,
        before_train=warn_cut_completions,
        eval_dataset=heldout,
    )


STAGE = Stage(
    name="sft",
    help="GLOW-weighted SFT on labelled reasoning trajectories, correct and incorrect",
    dataclass_types=dataclass_types,
    run=run,
    check=check,
    inputs={"model_name_or_path": "model", "dataset_paths": "trajectories"},
    help_types=(RunArguments, TrajectoryArguments, GLOWArguments),
    help_note="and every field of trl.SFTConfig (training) and trl.ModelConfig (model, dtype, LoRA)",
)
