"""Stage 2, DPO or KTO: preference optimisation from the GLOW SFT checkpoint on the trajectories SFT trained on.

Launch:

    glowrl rl --config recipes/tiny/dpo.yaml --model_name_or_path outputs/tiny/sft
    glowrl rl --config recipes/tiny/kto.yaml
    python -m glowrl.preference --algorithm dpo --config my_recipe.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml -m glowrl.rl --config my_dpo.yaml

The data is a trajectory file, read exactly as the SFT stage reads it (`glowrl.data`, labelled with math-verify where
the `correct` column is missing), and turned into TRL's conversational preference formats:

- DPO ([paper](https://huggingface.co/papers/2305.18290)): per problem (same prompt messages), every incorrect
  trajectory is a `rejected` completion paired with a correct one of the same problem as `chosen`, the correct ones
  taken in turn; problems without both are skipped. Rows: `prompt`, `chosen`, `rejected`.
- KTO ([paper](https://huggingface.co/papers/2402.01306)): every labelled trajectory, correct ones desirable. Rows:
  `prompt`, `completion`, `label`, shuffled with `seed` (KTO reads them in order and pairs neighbours for its KL term).

Unlabelled trajectories (no `correct` label and no gold answer that parses) are dropped. The trainers and their
configs are TRL's own ([`~trl.DPOTrainer`] with [`~trl.DPOConfig`], [`~trl.KTOTrainer`] with [`~trl.KTOConfig`]); the
reference model is reloaded from `model_name_or_path`, so give a saved model directory (the SFT stage's output is one).
"""

import json
import sys

from datasets import Dataset
from transformers import set_seed
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, ModelConfig, get_peft_config

from .data import TrajectoryArguments, build_trajectory_dataset
from .recipe import parse_stage_args
from .stage import check_model_path, load_tokenizer, set_model_init_kwargs, train_and_save


DATACLASS_TYPES = {
    "dpo": (TrajectoryArguments, DPOConfig, ModelConfig),
    "kto": (TrajectoryArguments, KTOConfig, ModelConfig),
}


def _label_counts(dataset: Dataset) -> dict:
    labels = list(dataset["correct"])
    return {label: labels.count(label) for label in (True, False, None)}


def _data_fix(args: TrajectoryArguments, counts: dict) -> str:
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


def build_dpo_dataset(args: TrajectoryArguments) -> Dataset:
    """Pair every incorrect trajectory of a problem with a correct one of the same problem (cycling the correct ones).

    Returns:
        `Dataset`: conversational rows `prompt` (messages), `chosen` and `rejected` (one assistant message each).

    Raises:
        ValueError: when no problem has both a correct and an incorrect trajectory.
    """
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
        counts = _label_counts(dataset)
        raise ValueError(
            f"rl.algorithm: dpo needs problems with both a correct and an incorrect trajectory, but none of the "
            f"{len(groups)} problems with labelled trajectories has both ({counts[True]} correct, {counts[False]} "
            f"incorrect, {counts[None]} unlabelled trajectories in {', '.join(args.dataset_paths)}); "
            f"{_data_fix(args, counts)}"
        )
    return Dataset.from_list(rows)


def build_kto_dataset(args: TrajectoryArguments, seed: int = 0) -> Dataset:
    """Every labelled trajectory as a KTO example, correct ones desirable, in a seeded random order.

    Returns:
        `Dataset`: conversational rows `prompt` (messages), `completion` (one assistant message) and `label` (`bool`).

    Raises:
        ValueError: when the data lacks correct or incorrect trajectories.
    """
    dataset = build_trajectory_dataset(args)
    counts = _label_counts(dataset)
    if not counts[True] or not counts[False]:
        raise ValueError(
            f"rl.algorithm: kto needs both correct (desirable) and incorrect (undesirable) trajectories, but "
            f"{', '.join(args.dataset_paths)} has {counts[True]} correct, {counts[False]} incorrect and "
            f"{counts[None]} unlabelled ones; {_data_fix(args, counts)}"
        )
    dataset = dataset.filter(lambda correct: correct is not None, input_columns="correct", desc="Dropping unlabelled")
    dataset = dataset.select_columns(["prompt", "completion", "correct"]).rename_column("correct", "label")
    # KTOTrainer samples sequentially and estimates its KL term from neighbouring rows: mix problems and labels.
    return dataset.shuffle(seed=seed).flatten_indices()


def main(script_args: TrajectoryArguments, training_args: DPOConfig | KTOConfig, model_args: ModelConfig):
    """Build the preference data, train with TRL's DPO or KTO trainer, save the model, tokenizer and trainer state."""
    algorithm = "kto" if isinstance(training_args, KTOConfig) else "dpo"
    check_model_path(model_args.model_name_or_path)
    batch_size = training_args.per_device_train_batch_size
    if algorithm == "kto" and training_args.loss_type != "apo_zero_unpaired" and batch_size < 2:
        raise ValueError(
            f"per_device_train_batch_size: KTO estimates its KL term from the other examples of a micro-batch, so it "
            f"must be at least 2, got {batch_size}; raise it (and lower "
            "gradient_accumulation_steps to keep the batch), or set loss_type: apo_zero_unpaired"
        )
    set_seed(training_args.seed)
    if algorithm == "dpo":
        dataset = build_dpo_dataset(script_args)
    else:
        dataset = build_kto_dataset(script_args, training_args.seed)
    tokenizer = load_tokenizer(model_args)
    set_model_init_kwargs(training_args, model_args)
    trainer_class = KTOTrainer if algorithm == "kto" else DPOTrainer
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    if algorithm == "dpo":
        what = f"{len(dataset)} (chosen, rejected) pairs"
    else:
        desirable = sum(dataset["label"])
        what = f"{len(dataset)} trajectories ({desirable} desirable, {len(dataset) - desirable} undesirable)"
    trainer.accelerator.print(
        f"{algorithm.upper()} on {what} from {model_args.model_name_or_path}, beta {training_args.beta}"
    )
    return train_and_save(trainer, training_args)


def cli(argv: list[str] | None = None, algorithm: str | None = None) -> int:
    """Run DPO or KTO; without `algorithm`, it is read from `--algorithm` or the recipe (see `glowrl.rl`)."""
    if algorithm is None:
        from .rl import cli as rl_cli

        return rl_cli(argv, algorithms=tuple(DATACLASS_TYPES), default=None)
    if algorithm not in DATACLASS_TYPES:
        raise ValueError(f"algorithm: glowrl.preference runs {' or '.join(DATACLASS_TYPES)}, not {algorithm!r}")
    main(*parse_stage_args(DATACLASS_TYPES[algorithm], "rl", argv))
    return 0


if __name__ == "__main__":
    from .cli import run_guarded

    sys.exit(run_guarded(cli))
