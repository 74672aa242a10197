"""Sample identity for GLOW: a dense index per training sample, a fingerprint of the data, and the collator that
carries the index through TRL's collation.

Users may give any unique `sample_id` values (strings, large integers) or none; the loss history is indexed by the
dense index 0..N-1, so it costs 4 bytes a sample whatever the ids are.
"""

import hashlib
import json

import torch

from ..errors import DataError


INDEX_COLUMN = "_glow_index"  # the dense index 0..N-1 of each sample, carried through the collator


def with_sample_index(dataset):
    """The dataset with a dense sample index column, and the sample ids in index order (the row index by default)."""
    ids = list(dataset["sample_id"]) if "sample_id" in dataset.column_names else list(range(len(dataset)))
    seen = set()
    for row, sample_id in enumerate(ids):
        if sample_id is None or sample_id in seen:
            what = "no sample_id" if sample_id is None else f"sample_id {sample_id!r} again"
            raise DataError(f"train_dataset row {row} has {what}; sample ids must be unique, one per sample")
        seen.add(sample_id)
    if INDEX_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(INDEX_COLUMN)
    return dataset.add_column(INDEX_COLUMN, list(range(len(ids)))), ids


def data_fingerprint(dataset) -> str:
    """A hash of every training row, every column (ids, text, pre-tokenized `input_ids`, masks, labels), in order: a
    resume must see the very same data."""
    columns = sorted(c for c in dataset.column_names if c != INDEX_COLUMN)
    digest = hashlib.sha256(json.dumps(columns).encode())
    for row in dataset.select_columns(columns):
        digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()


class SampleIndexCollator:
    """Wraps TRL's collator: holds the sample index out of the examples, collates the rest, re-attaches the indices."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        ids = [example[INDEX_COLUMN] for example in examples if INDEX_COLUMN in example]
        batch = self.collator([{k: v for k, v in example.items() if k != INDEX_COLUMN} for example in examples])
        if ids:
            batch[INDEX_COLUMN] = torch.tensor(ids, dtype=torch.long)
        return batch
