"""DPO from the GLOW SFT checkpoint, on the trajectories SFT trained on: correct vs incorrect of the same problem.

    glowrl rl --config recipes/tiny/dpo.yaml --model_name_or_path outputs/tiny/sft

The data is a trajectory file read exactly as the SFT stage reads it (`glowrl.data.trajectories`, labelled with the
shared grader where `correct` is missing). Per problem (same prompt messages), every incorrect trajectory is a
`rejected` completion paired with a correct one of the same problem as `chosen`, the correct ones taken in turn;
problems without both are skipped ([DPO](https://huggingface.co/papers/2305.18290)). The trainer and config are TRL's
own; the reference model is reloaded from `model_name_or_path`, so give a saved model directory.
"""

import json

from trl import DPOConfig, DPOTrainer

from ..data import TrajectoryArguments, build_trajectory_dataset, label_counts
from ..errors import DataError
from .base import Algorithm


def missing_labels_fix(args: TrajectoryArguments, counts: dict) -> str:
    """What to change when the trajectories lack the correct or the incorrect ones a preference method needs."""
    if not counts[True] and not counts[False]:
        return (
            f"label them: a {args.correct_column!r} column, or a gold {args.answer_column!r} column to check the "
            "answers against (set correct_column / answer_column)"
        )
    if args.trajectories != "all":
        return f"set trajectories: all (trajectories: {args.trajectories} keeps only one kind)"
    return (
        "give the unfiltered trajectories (correct and incorrect answers to the same problems, as GLOW SFT trains "
        "on), or use rl.algorithm: grpo, which needs only problems with gold answers"
    )


def build_dpo_dataset(args: TrajectoryArguments, training_args=None):
    """Pair every incorrect trajectory of a problem with a correct one of the same problem (cycling the correct ones).

    Returns:
        `Dataset`: conversational rows `prompt` (messages), `chosen` and `rejected` (one assistant message each).

    Raises:
        DataError: when no problem has both a correct and an incorrect trajectory.
    """
    from datasets import Dataset

    dataset = build_trajectory_dataset(args)
    groups: dict[str, tuple[list, list, list]] = {}  # prompt key -> (prompt, correct completions, incorrect ones)
    for row in dataset.select_columns(["prompt", "completion", "correct"]):
        if row["correct"] is None:
            continue
        _, positives, negatives = groups.setdefault(json.dumps(row["prompt"], sort_keys=True), (row["prompt"], [], []))
        (positives if row["correct"] else negatives).append(row["completion"])
    rows = [
        {"prompt": prompt, "chosen": positives[i % len(positives)], "rejected": rejected}
        for prompt, positives, negatives in groups.values()
        if positives
        for i, rejected in enumerate(negatives)
    ]
    if not rows:
        counts = label_counts(dataset["correct"])
        raise DataError(
            f"rl.algorithm: dpo needs problems with both a correct and an incorrect trajectory, but none of the "
            f"{len(groups)} problems with labelled trajectories has both ({counts[True]} correct, {counts[False]} "
            f"incorrect, {counts[None]} unlabelled trajectories in {', '.join(args.dataset_paths)}); "
            f"{missing_labels_fix(args, counts)}"
        )
    return Dataset.from_list(rows)


def preference_algorithm(name: str, config_class, trainer_class, build_dataset, describe, check=None) -> Algorithm:
    """The record of an offline algorithm on the SFT trajectories (DPO, KTO): TRL's config and trainer as they are."""
    return Algorithm(
        name, (TrajectoryArguments,), config_class, trainer_class, build_dataset, check=check, describe=describe
    )


ALGORITHM = preference_algorithm(
    "dpo", DPOConfig, DPOTrainer, build_dpo_dataset, lambda dataset: f"{len(dataset)} (chosen, rejected) pairs"
)
