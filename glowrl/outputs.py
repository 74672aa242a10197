"""Where runs write: refusing outputs that would destroy a user's work, and one run at a time per output root.

Every command that writes goes through [`check_output`] before it writes or deletes anything: an existing output
that this run did not write is refused unless the user passed `--overwrite` (or asked to resume), an output that is
one of the run's own inputs (its model, its data) is always refused, and a path of the wrong kind (a file where a
directory goes) is refused with the fix. [`RunLock`] keeps a second run off an output root while one is running; the
operating system releases it when its process dies, so a crashed run never leaves it stuck; [`output_lock`] is the
same lock for one command's output (every stage and every command that writes takes it). Standard library only.
"""

import contextlib
import datetime
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

from .errors import GlowrlError


LOCK_NAME = ".glowrl.lock"


def _resolved(path) -> Path:
    return Path(path).expanduser().resolve()


def _contains(parent: Path, child: Path) -> bool:
    return parent == child or parent in child.parents


def _virtual(path: Path) -> bool:
    """A file system with no blocks (/proc, /sys): nothing can be created there, even by root."""
    try:
        stats = os.statvfs(path)
        return stats.f_blocks == 0 and stats.f_files == 0
    except OSError:
        return False


def check_output(
    path,
    field: str,
    *,
    kind: str = "dir",
    overwrite: bool = False,
    resume: bool = False,
    inputs: dict | None = None,
    fix: str = "pass --overwrite to replace it, or choose another path",
) -> None:
    """Refuse an output that would destroy something this run did not write. Writes nothing.

    Args:
        path: The output (a directory when `kind="dir"`, a file when `kind="file"`).
        field: The key or flag it came from, for the message.
        overwrite: The user asked to replace an existing output.
        resume: The run continues one already in `path` (a non-empty directory is expected).
        inputs: `{field: path}` of what the run reads (model directory, data files): none may be, contain or lie
            inside the output, and the output (file or directory) may not lie inside any of them.
        fix: What the message suggests for an existing output.
    """
    target = _resolved(path)
    for name, value in (inputs or {}).items():
        for source in [value] if isinstance(value, (str, os.PathLike)) else list(value or []):
            if source is None or not Path(source).expanduser().exists():
                continue
            source = _resolved(source)
            if _contains(target, source) or _contains(source, target):  # a file inside a model directory too
                raise GlowrlError(
                    f"{field}: {path} is {name} ({source}), holds it or lies inside it; writing there would "
                    f"destroy this run's own input, even with --overwrite: choose another {field}"
                )
    if not target.exists():
        ancestor = next(p for p in target.parents if p.exists())  # where the output would be created
        if not ancestor.is_dir():
            raise GlowrlError(f"{field}: {ancestor} is a file, so {path} cannot be created; choose another path")
        if not os.access(ancestor, os.W_OK | os.X_OK) or _virtual(ancestor):
            raise GlowrlError(f"{field}: {path} cannot be created in {ancestor} (not writable); choose another path")
        return
    if kind == "dir":
        if not target.is_dir():
            raise GlowrlError(f"{field}: {path} is a file, not a directory; choose a directory")
        if any(target.iterdir()) and not (overwrite or resume):
            raise GlowrlError(f"{field}: {path} already holds files; {fix}")
    else:
        if target.is_dir():
            raise GlowrlError(f"{field}: {path} is a directory; give a file path")
        if not overwrite:
            raise GlowrlError(f"{field}: {path} exists; {fix}")
    if not os.access(target if target.is_dir() else target.parent, os.W_OK):
        raise GlowrlError(f"{field}: {path} is not writable; choose a path you can write to")


def check_suffix(path, field: str, suffixes: tuple[str, ...]) -> None:
    """Refuse a file name whose suffix says another format than the one written."""
    if Path(path).suffix.lower() not in suffixes:
        raise GlowrlError(f"{field}: {path} must end in {' or '.join(suffixes)} (the format written there)")


def clear_dir(path) -> None:
    """Remove everything in a directory (which the caller has checked it may replace), keeping the directory."""
    path = Path(path)
    if not path.is_dir():
        return
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class RunLock:
    """An exclusive lock on an output root, held for the life of a run (`with RunLock(root): ...`).

    A second run on the same root is refused with a message naming the holder (pid, host, start time). The lock is
    `flock` on `<root>/.glowrl.lock`: the kernel drops it when the holding process exits, however it exits.
    """

    def __init__(self, root, what: str = "glowrl pipeline", field: str = "output_root", lock_path=None):
        self.root = Path(root)
        self.what = what
        self.field = field
        self.lock_path = Path(lock_path) if lock_path is not None else None
        self.handle = None

    def __enter__(self):
        if self.lock_path is None:
            self.root.mkdir(parents=True, exist_ok=True)
            path = self.root / LOCK_NAME
        else:
            path = self.lock_path
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError:  # the parent is a file, or not writable: the output's own check says so in one line
                return self
        while True:
            handle = open(path, "a+")  # held open for the life of the run
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                try:
                    holder = json.loads(handle.read() or "{}")
                except ValueError:
                    holder = {}
                handle.close()
                raise GlowrlError(
                    f"{self.field}: {self.root} is in use by another run ({holder.get('what', 'glowrl')}, pid "
                    f"{holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}); "
                    f"wait for it to finish or stop it, or choose another {self.field}"
                ) from None
            if _same_file(handle, path):
                break
            handle.close()  # its holder removed it as we opened it: lock the file now at `path`
        handle.seek(0)
        handle.truncate()
        started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        holder = {"what": self.what, "pid": os.getpid(), "host": socket.gethostname(), "started": started}
        handle.write(json.dumps(holder))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            if self.lock_path is not None:  # leave nothing beside the output (a run that opened it meanwhile
                self.lock_path.unlink(missing_ok=True)  # sees another file at the path and retries, see __enter__)
            self.handle.seek(0)
            self.handle.truncate()
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
        return False


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def output_lock(path, what: str, field: str, key: str = ""):
    """The lock of one stage's or command's output (a directory or a file), for `with`: a [`RunLock`] on
    `<parent>/.<name>[key].glowrl.lock`, beside the output and removed when the run ends, so that taking it creates
    nothing inside the output (and nothing at all where the output's parent is a file). `key` tells apart runs that
    share an output by design (the shards of a generation). Only the main process of a multi-process launch (`RANK`
    unset or 0) takes it."""
    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    path = _resolved(path)
    return RunLock(path, what, field, lock_path=path.parent / f".{path.name}{key}.glowrl.lock")
