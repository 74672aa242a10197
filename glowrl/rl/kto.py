"""KTO from the GLOW SFT checkpoint, on the trajectories SFT trained on: correct ones desirable, incorrect ones not.

    glowrl rl --config recipes/tiny/kto.yaml --model_name_or_path outputs/tiny/sft

Every labelled trajectory (read as the SFT stage reads it) is a KTO example ([KTO](https://huggingface.co/papers/
2402.01306)), rows `prompt`, `completion`, `label`, shuffled with `seed`: KTO reads them in order and estimates its KL
term from neighbouring rows of a micro-batch. Unlabelled trajectories are dropped. The trainer and config are TRL's.
"""

from trl import KTOConfig, KTOTrainer

from ..data import TrajectoryArguments, build_trajectory_dataset, label_counts
from ..errors import DataError, RecipeError
from .dpo import missing_labels_fix, preference_algorithm


def check_kto_batch(args: TrajectoryArguments, training_args: KTOConfig) -> None:
    """KTO's KL estimate needs at least two examples per micro-batch (unless its loss does not use one)."""
    batch_size = training_args.per_device_train_batch_size
    if training_args.loss_type != "apo_zero_unpaired" and batch_size < 2:
        raise RecipeError(
            f"per_device_train_batch_size: KTO estimates its KL term from the other examples of a micro-batch, so it "
            f"must be at least 2, got {batch_size}; raise it (and lower gradient_accumulation_steps to keep the "
            "batch), or set loss_type: apo_zero_unpaired"
        )


def build_kto_dataset(args: TrajectoryArguments, training_args=None, seed: int | None = None):
    """Every labelled trajectory as a KTO example, correct ones desirable, in an order shuffled with the run's seed.

    Returns:
        `Dataset`: conversational rows `prompt` (messages), `completion` (one assistant message) and `label` (`bool`).

    Raises:
        DataError: when the data lacks correct or incorrect trajectories.
    """
    seed = seed if seed is not None else (training_args.seed if training_args is not None else 0)
    dataset = build_trajectory_dataset(args)
    counts = label_counts(dataset["correct"])
    if not counts[True] or not counts[False]:
        raise DataError(
            f"rl.algorithm: kto needs both correct (desirable) and incorrect (undesirable) trajectories, but "
            f"{', '.join(args.dataset_paths)} has {counts[True]} correct, {counts[False]} incorrect and "
            f"{counts[None]} unlabelled ones; {missing_labels_fix(args, counts)}"
        )
    dataset = dataset.filter(lambda correct: correct is not None, input_columns="correct", desc="Dropping unlabelled")
    dataset = dataset.select_columns(["prompt", "completion", "correct"]).rename_column("correct", "label")
    return dataset.shuffle(seed=seed).flatten_indices()


def _describe(dataset) -> str:
    desirable = sum(dataset["label"])
    return f"{len(dataset)} trajectories ({desirable} desirable, {len(dataset) - desirable} undesirable)"


ALGORITHM = preference_algorithm("kto", KTOConfig, KTOTrainer, build_kto_dataset, _describe, check=check_kto_batch)
