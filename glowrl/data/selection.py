"""Choosing trajectories per problem, for data sampled from a teacher: truncated samples, caps, balance, easy/hard.

The paper's arms train on a teacher's unfiltered samples, several per problem. These options shape such data the way
its arms need, each deterministic by `selection_seed` and off by default:
- `keep_truncated`: samples cut off by the token budget (no final answer) are dropped, or kept as negatives;
- `max_per_problem: k`: at most k positives and k negatives per problem;
- `balance`: as many negatives as positives per problem (the smaller of the two counts of each);
- `drop_always_correct` / `drop_never_correct`: drop the problems the teacher always / never solves.
Unlabelled trajectories are kept by the first option and dropped by the others (they have no label to count).
"""

import random
from collections import defaultdict


def drop_truncated(dataset, keep: bool):
    """Drop truncated samples, or (with `keep`) label them incorrect."""
    if not any(dataset["truncated"]):
        return dataset
    if keep:
        return dataset.map(
            lambda row: {"correct": False if row["truncated"] else row["correct"]}, desc="Truncated: negatives"
        )
    kept = dataset.filter(lambda truncated: not truncated, input_columns="truncated", desc="Dropping truncated")
    print(f"Dropped {len(dataset) - len(kept)} truncated trajectories (keep_truncated: true keeps them, as negatives)")
    return kept


def select_per_problem(dataset, args):
    """Apply `max_per_problem`, `balance`, `drop_always_correct`, `drop_never_correct` (see the module docstring)."""
    if not (args.max_per_problem or args.balance or args.drop_always_correct or args.drop_never_correct):
        return dataset
    rng = random.Random(args.selection_seed)
    by_problem = defaultdict(lambda: {True: [], False: []})
    for index, (group, correct) in enumerate(zip(dataset["group"], dataset["correct"], strict=True)):
        if correct is not None:
            by_problem[group][correct].append(index)
    keep = []
    for labels in by_problem.values():
        positives, negatives = labels[True], labels[False]
        if (args.drop_always_correct and not negatives) or (args.drop_never_correct and not positives):
            continue
        cap_positive = cap_negative = args.max_per_problem or max(len(positives), len(negatives))
        if args.balance:
            cap_positive = cap_negative = min(len(positives), len(negatives), cap_positive)
        keep += rng.sample(positives, min(cap_positive, len(positives)))
        keep += rng.sample(negatives, min(cap_negative, len(negatives)))
    return dataset.select(sorted(keep))
