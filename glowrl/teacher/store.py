"""The trajectory file of a generation run: append-only, keyed by (problem_id, sample_index), resumable and shardable.

Rows are appended a problem (or a chunk of problems) at a time, each append one write followed by `fsync`, so a run
killed at any point leaves whole rows plus at most one partial last line. Opening the file for a re-run drops that
line (rewriting the file atomically) and returns the keys already written, so the re-run skips them and never writes
a row twice. A run with `--shard i/n` keeps the problems whose index is `i` modulo `n` and writes its own file;
[`merge_shards`] checks that every problem x sample is present exactly once and writes the one file, in problem order,
so that it is byte for byte what an unsharded run writes.
"""

import json
import os
from pathlib import Path

from ..errors import GlowrlError
from ..io import write_text_atomic


TRAJECTORIES = "trajectories.jsonl"


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """`"i/n"` -> `(i, n)`, with 0 <= i < n."""
    if shard in (None, ""):
        return None
    try:
        index, count = (int(part) for part in str(shard).split("/"))
    except ValueError:
        raise GlowrlError(f"shard: {shard!r} is not i/n (e.g. 0/4: the first of four shards)") from None
    if count < 1 or not 0 <= index < count:
        raise GlowrlError(f"shard: {shard} needs 0 <= i < n (shards of 4 are 0/4 .. 3/4)")
    return index, count


def shard_file(output_dir, shard: tuple[int, int] | None) -> Path:
    """The file a run (or one shard of it) writes."""
    if shard is None:
        return Path(output_dir) / TRAJECTORIES
    return Path(output_dir) / f"trajectories.shard-{shard[0]}-of-{shard[1]}.jsonl"


class TrajectoryFile:
    """The rows a run has written, and appending more, one durable write at a time."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            lines = text.split("\n")
            complete = []
            for number, line in enumerate(lines[:-1], 1):  # every line but the last ends with "\n"
                try:
                    complete.append(json.loads(line))
                except ValueError:
                    if any(later.strip() for later in lines[number:-1]):  # whole lines after it: not a torn write
                        raise GlowrlError(
                            f"output_dir: {self.path} line {number} is not valid JSON, but whole lines follow it (the "
                            f"file was damaged or edited, not cut short); fix or remove line {number}, or pass "
                            "--overwrite to generate it again"
                        ) from None
                    break  # a torn write: this line and whatever follows it are redone
            self.rows = complete
            if len(complete) != len(lines) - 1 or lines[-1]:
                write_text_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in complete))
        self.done = {(row["problem_id"], row["sample_index"]) for row in self.rows}

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            handle.flush()
            os.fsync(handle.fileno())
        self.rows += rows
        self.done |= {(row["problem_id"], row["sample_index"]) for row in rows}


def merge_shards(output_dir, problem_ids: list[str], num_samples: int, count: int) -> Path:
    """Check that the `count` shard files hold every problem x sample exactly once; write them as one file."""
    output_dir = Path(output_dir)
    rows = {}
    for index in range(count):
        path = shard_file(output_dir, (index, count))
        if not path.is_file():
            raise GlowrlError(f"merge: shard {index}/{count} is missing ({path}); run it with --shard {index}/{count}")
        for row in TrajectoryFile(path).rows:
            key = (row["problem_id"], row["sample_index"])
            if key in rows:
                raise GlowrlError(f"merge: {key} is in two shards (the second in {path}); shards must not overlap")
            rows[key] = row
    expected = [(pid, s) for pid in problem_ids for s in range(num_samples)]
    missing = [key for key in expected if key not in rows]
    if missing:
        raise GlowrlError(
            f"merge: {len(missing)} of {len(expected)} samples are missing (first: problem {missing[0][0]!r}, sample "
            f"{missing[0][1]}); finish the shards (re-run each, which resumes) before merging"
        )
    extra = set(rows) - set(expected)
    if extra:
        raise GlowrlError(f"merge: {len(extra)} rows are not in this run's problems (e.g. {min(extra)})")
    text = "".join(json.dumps(rows[key], ensure_ascii=False) + "\n" for key in expected)
    return write_text_atomic(output_dir / TRAJECTORIES, text)
