"""Files: JSON Lines, atomic writes, a run's trainer state, and the rule for "local path or Hub name".

Every file glowrl writes for a user goes through [`write_text_atomic`] (a temporary file in the same directory, then a
rename), so an interrupted write never leaves half a file where a whole one was. Imports only the standard library.
"""

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import GlowrlError


TRAINER_STATE_NAME = "trainer_state.json"
# The largest row of a JSON Lines file glowrl reads (4 MiB: ~25x a 32k-token reasoning trace). Longer rows are
# refused before any tokenizer sees them: a 50 MB line grew a tokenizing stage past 10 GB of memory.
MAX_ROW_BYTES = 4 * 1024 * 1024


def row_text(raw: bytes, path, number: int, field: str = "") -> str:
    """One raw line of a JSON Lines file as text, refused in one line naming the file and line when it is longer
    than [`MAX_ROW_BYTES`] or not UTF-8."""
    where = f"{field}: {path}" if field else str(path)
    if len(raw) > MAX_ROW_BYTES:
        raise GlowrlError(
            f"{where} line {number} is {len(raw) / 2**20:.1f} MiB, over the {MAX_ROW_BYTES // 2**20} MiB limit of one "
            "row (glowrl.io.MAX_ROW_BYTES); shorten or remove it"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise GlowrlError(
            f"{where} line {number} is not valid UTF-8 (byte {error.start} of the line); save the file as UTF-8"
        ) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON Lines file (blank lines skipped); a row over [`MAX_ROW_BYTES`] or not UTF-8 is refused.

    Lines are split on `\\n` only: `str.splitlines` also breaks on U+2028, which some benchmark rows hold inside a
    JSON string.
    """
    with Path(path).open("rb") as f:
        lines = f.read().split(b"\n")
    return [json.loads(line) for n, raw in enumerate(lines, 1) if (line := row_text(raw, path, n)).strip()]


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to a temporary file next to `path`, then rename it over `path`: no reader sees a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8"
    ) as handle:
        try:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            os.unlink(handle.name)
            raise
    os.replace(handle.name, path)
    return path


def pyplot():
    """`matplotlib.pyplot` on the Agg backend (files only, no display), imported when a plot is first drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Lay out `fig`, write it as a PNG atomically (as [`write_text_atomic`] writes text), and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as handle:
        try:
            fig.tight_layout()
            fig.savefig(handle, format="png", dpi=110)
        except BaseException:
            os.unlink(handle.name)
            raise
        finally:
            pyplot().close(fig)
    os.replace(handle.name, path)
    return path


def write_jsonl(rows: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write `rows` as JSON Lines (UTF-8, keys in row order), atomically; parent directories are created."""
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_json(data, path: str | os.PathLike) -> Path:
    """Write `data` as indented JSON, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_trainer_state(run_dir: str | os.PathLike) -> dict | None:
    """The `trainer_state.json` a finished Trainer run saved in `run_dir` (or a checkpoint), or `None` if absent."""
    path = Path(run_dir) / TRAINER_STATE_NAME
    return json.loads(path.read_text()) if path.is_file() else None


def read_log_history(run_dir: str | os.PathLike) -> list[dict]:
    """The log history (one dict per logging step) of the run saved in `run_dir`; empty when there is none."""
    state = read_trainer_state(run_dir)
    return state["log_history"] if state else []


def reward_trend(log_history: list[dict]) -> tuple[float, float] | None:
    """The mean logged `reward` over the first third and over the last third of an RL run's logging steps (at least
    one step each), or None without rewards. The one definition of "first" and "last" that every summary uses."""
    rewards = [e["reward"] for e in log_history if e.get("reward") is not None]
    if not rewards:
        return None
    third = max(1, len(rewards) // 3)
    return sum(rewards[:third]) / third, sum(rewards[-third:]) / third


def looks_local(name: str) -> bool:
    """Whether `name` means a local path rather than a Hub repository id (`org/name`).

    It does when it exists, starts with `.`, `/` or `~`, or has more than one `/` (Hub ids have exactly one). A name
    that looks local but does not exist is then an error to report, never a Hub lookup.
    """
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1
