"""Which checkpoints of a run are complete, so that a resume never starts from a half-written one.

transformers writes a checkpoint folder in place, file by file. A run killed in the middle (SIGKILL, a full disk, a
lost node) leaves a folder that looks like a checkpoint but holds truncated weights or no trainer state, and a resume
from it fails, every time, deep inside a loader. So a checkpoint counts as complete only when:

- the marker [`COMPLETE_MARKER`] is in it (glowrl's training stages write it once every rank has finished saving), or,
  for checkpoints written without glowrl, it has a parseable `trainer_state.json`; and
- every `*.safetensors` file is whole (its header parses and the file is as long as the header says), and every
  torch-pickled `*.pt`/`*.pth`/`*.bin` file is a readable zip archive (a truncated one has no central directory).

These checks read headers only, never the weights. Imports only the standard library.
"""

import json
import logging
import os
import re
import struct
import zipfile
from pathlib import Path


logger = logging.getLogger(__name__)

COMPLETE_MARKER = ".glowrl_complete"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return "truncated header"
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            return "truncated header"
        try:
            header = json.loads(f.read(header_len))
        except ValueError:
            return "unreadable header"
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return None if size >= 8 + header_len + end else f"truncated ({size} of {8 + header_len + end} bytes)"


def weights_problem(directory: str | os.PathLike) -> str | None:
    """Why the `*.safetensors` weights at the top of a model directory are not whole (headers only), or `None`."""
    for path in sorted(Path(directory).glob("*.safetensors")):
        try:
            problem = _safetensors_problem(path)
        except (OSError, KeyError, TypeError, IndexError, AttributeError) as error:
            problem = f"unreadable ({type(error).__name__})"
        if problem:
            return f"{path.name} is {problem}"
    return None


def checkpoint_problem(checkpoint: str | os.PathLike) -> str | None:
    """Why `checkpoint` cannot be resumed from, or `None` when it is complete."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_dir():
        return "not a directory"
    if not (checkpoint / COMPLETE_MARKER).is_file():
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return "no readable trainer_state.json (the save did not finish)"
    for path in sorted(checkpoint.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path)
        elif path.suffix in (".pt", ".pth", ".bin") and path.stat().st_size > 0:
            problem = None if zipfile.is_zipfile(path) else "truncated or not a torch archive"
        else:
            continue
        if problem:
            return f"{path.relative_to(checkpoint)} is {problem}"
    return None


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of a run, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def last_complete_checkpoint(output_dir: str | os.PathLike, warn=logger.warning) -> str | None:
    """The newest complete checkpoint of a run; each newer incomplete one is skipped with a warning naming it."""
    for checkpoint in reversed(checkpoints(output_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return str(checkpoint)
        warn(f"skipping incomplete checkpoint {checkpoint}: {problem}")
    return None


def mark_complete(checkpoint: str | os.PathLike) -> None:
    """Write the completion marker into a checkpoint folder (call once every rank has finished saving)."""
    (Path(checkpoint) / COMPLETE_MARKER).write_text("")
