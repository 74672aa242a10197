"""Loading one table of rows: a local JSONL/JSON/Parquet/CSV file by its suffix, or a Hub dataset by its name.

The one rule for "local path or Hub name" lives in [`~glowrl.io.looks_local`]: a path that looks local but is missing
is an error naming it, never a Hub lookup.
"""

import os
from pathlib import Path

from ..errors import DataError
from ..io import looks_local


LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_table(path: str, split: str = "train", field: str = "dataset_paths"):
    """Load one local file (by suffix) or Hub dataset (by name) as a `datasets.Dataset`."""
    from datasets import load_dataset

    local = Path(path).expanduser()
    if local.exists():
        if local.suffix not in LOCAL_SUFFIXES:
            raise DataError(f"{field}: {path} is not a .jsonl, .json, .parquet or .csv file")
        return load_dataset(LOCAL_SUFFIXES[local.suffix], data_files=str(local), split="train")
    if local.suffix in LOCAL_SUFFIXES or looks_local(path):
        raise DataError(f"{field}: {path} does not exist; fix the path (relative to {os.getcwd()})")
    return load_dataset(path, split=split)
