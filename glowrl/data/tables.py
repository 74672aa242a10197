"""Loading one table of rows: a local JSONL/JSON/Parquet/CSV file by its suffix, or a Hub dataset by its name.

The one rule for "local path or Hub name" lives in [`~glowrl.io.looks_local`]: a path that looks local but is missing
is an error naming it, never a Hub lookup. A local file that cannot be read (empty, a malformed JSON line, a
directory named like a file) is one error naming the file, and the line for JSON Lines, never a loader's traceback.
"""

import json
import os
from pathlib import Path

from ..errors import DataError
from ..io import looks_local, row_text


LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _local_file(path: str, field: str) -> Path | None:
    """The local file `path` names (checked), or `None` for a Hub dataset name."""
    local = Path(path).expanduser()
    if local.exists():
        if local.is_dir():
            raise DataError(f"{field}: {path} is a directory; give a .jsonl, .json, .parquet or .csv file")
        if local.suffix not in LOCAL_SUFFIXES:
            raise DataError(f"{field}: {path} is not a .jsonl, .json, .parquet or .csv file")
        if local.stat().st_size == 0:
            raise DataError(f"{field}: {path} is empty; give a file with one row per line")
        return local
    if local.suffix in LOCAL_SUFFIXES or looks_local(path):
        raise DataError(f"{field}: {path} does not exist; fix the path (relative to {os.getcwd()})")
    return None


def _check_jsonl(local: Path, field: str) -> None:
    """Every line of a JSON Lines file is a JSON object of at most `MAX_ROW_BYTES` in UTF-8 (the loader's own errors
    name neither file nor line, and a huge row would reach the tokenizer)."""
    with local.open("rb") as f:
        for number, raw in enumerate(f, 1):
            line = row_text(raw, local, number, field)  # over MAX_ROW_BYTES or not UTF-8: refused, naming the line
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                message = f"{field}: {local} line {number} is not valid JSON ({error}); fix or remove it"
                raise DataError(message) from None
            if not isinstance(row, dict):
                raise DataError(f"{field}: {local} line {number} is not a JSON object; each line must be one row")


def peek_columns(path: str, field: str = "dataset_paths") -> set[str] | None:
    """The column names of a local table, read cheaply (first row or schema); `None` for a Hub dataset."""
    local = _local_file(path, field)
    if local is None:
        return None
    if local.suffix == ".jsonl":
        with local.open(encoding="utf-8", errors="replace") as f:  # a bad byte is named by _check_jsonl
            first = next((line for line in f if line.strip()), "")
        try:
            row = json.loads(first)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            _check_jsonl(local, field)  # names the line
        return set(row)
    if local.suffix == ".csv":
        with local.open(encoding="utf-8") as f:
            return {name.strip() for name in f.readline().rstrip("\n").split(",")}
    if local.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return set(pq.read_schema(local).names)
        except Exception as error:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise DataError(f"{field}: {local} is not a readable Parquet file ({error})") from None
    return None  # .json: a whole document; the loader checks it


def load_table(path: str, split: str = "train", field: str = "dataset_paths", config: str | None = None):
    """Load one local file (by suffix) or Hub dataset (by name, `config`, `split`) as a `datasets.Dataset`."""
    from datasets import load_dataset

    local = _local_file(path, field)
    if local is None:
        try:
            return load_dataset(path, config, split=split)
        except Exception as error:  # noqa: BLE001 - offline, missing, gated: the loader's errors are long
            raise DataError(
                f"{field}: the Hub dataset {path} cannot be loaded ({type(error).__name__}: {str(error)[:160]}); "
                "check the name and the network, or give a local copy"
            ) from None
    if local.suffix == ".jsonl":
        _check_jsonl(local, field)
    try:
        return load_dataset(LOCAL_SUFFIXES[local.suffix], data_files=str(local), split="train")
    except Exception as error:  # noqa: BLE001 - the loader's errors name neither the file nor the fix
        cause = error.__cause__ or error
        raise DataError(f"{field}: {path} cannot be read as a table ({type(cause).__name__}: {cause})") from None
