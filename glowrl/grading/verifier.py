r"""Math verification shared by data labelling, RL rewards and evaluation, bounded in time from any thread.

One grader everywhere: a trajectory labelled "correct" for SFT, a rollout rewarded 1 in RL and a benchmark answer
scored correct in evaluation all go through [`verify_batch`] (or its one-pair forms [`verify_answer`] and
[`answers_match`]), so the three can never disagree.

Every call is bounded in time, from any thread, and never raises on any text. math-verify (sympy underneath) can run
for minutes on some answers, e.g. `\boxed{9^{9^{9^{9}}}}` asks for an integer with billions of digits, and its own
`signal.alarm` timeouts work only in the main thread and cannot interrupt C code such as big-integer arithmetic. So
parsing and verification run in persistent worker processes (`_worker.py` run by `python -c`, importing only
math-verify), one per grading thread, with math-verify's own timeouts off. Each (answer, gold) pair gets `timeout`
seconds (default [`GRADING_TIMEOUT`]); a worker that runs past it is killed and replaced, and the pair scores `0.0`, or
`None` when it was the gold answer that did not parse in time. A call therefore returns within about `timeout` per
distinct pair it sends to a worker, plus the start of a worker (under a second) when none is idle. Plain numbers, exact
matches, missing boxes, over-long answers and pairs seen before are settled without a worker, and large batches are
split over up to [`grading_workers`] workers (default: the cores this process may use; [`set_grading_workers`] changes
it). POSIX only (the deadline waits on a pipe with `select`).
"""

import atexit
import contextlib
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

from .boxed import as_answer, extract_boxed


logger = logging.getLogger(__name__)

GRADING_TIMEOUT = 5.0  # seconds one (answer, gold) comparison may take; the default of every `timeout` argument
WORKER_START_TIMEOUT = 60.0  # seconds a fresh worker may take to import math-verify (usually under one)
MAX_ANSWER_CHARS = 1000  # longer predicted answers score 0.0 unparsed (MATH-500 gold answers are at most 53 chars)
_grading_workers = None  # worker processes a large batch is split over; None: one per usable core
_MIN_PAIRS_PER_WORKER = 32
_CACHE_SIZE = 1 << 16

_WORKER_RUN_NAME = "__glowrl_grading_worker__"
_WORKER_FILE = str(Path(__file__).with_name("_worker.py"))


def verify_answer(completion: str, gold: str, *, timeout: float | None = None) -> float | None:
    r"""Score the final `\boxed{}` answer of `completion` against the gold answer with math-verify.

    Args:
        completion (`str`):
            Model output; its last complete `\boxed{}` is the answer.
        gold (`str`):
            Gold answer as LaTeX without `$` (`"7"`, `"\\frac{14}{3}"`), or a solution whose last box is the gold.
        timeout (`float`, *optional*):
            Seconds the comparison may take. Defaults to [`GRADING_TIMEOUT`].

    Returns:
        `float | None`: `1.0` when equivalent, `0.0` when not, when there is no box or on timeout, `None` when the gold
        answer does not parse.

    Example:
    ```python
    >>> verify_answer(r"so the answer is \boxed{\dfrac{28}{6}}", r"\frac{14}{3}")
    1.0
    >>> print(verify_answer(r"\boxed{1}", "\\frac{"))
    None
    ```
    """
    return verify_batch([completion], [gold], timeout=timeout)[0]


def answers_match(pred: str, gold: str, *, timeout: float | None = None) -> bool | None:
    r"""Whether an already-extracted answer `pred` is math-equivalent to `gold`, as the evaluator compares answers.

    Args:
        pred (`str`):
            Predicted answer, e.g. what [`extract_boxed`] returned.
        gold (`str`):
            Gold answer, as for [`verify_answer`].
        timeout (`float`, *optional*):
            Seconds the comparison may take. Defaults to [`GRADING_TIMEOUT`].

    Returns:
        `bool | None`: `True` when equivalent, `False` when not or on timeout, `None` when `gold` does not parse.

    Example:
    ```python
    >>> answers_match("(3, \\frac{\\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)")
    True
    ```
    """
    score = _grade([as_answer(pred)], [gold], timeout)[0]
    return None if score is None else score == 1.0


def verify_batch(
    completions: Sequence[str], golds: Sequence[str], *, timeout: float | None = None
) -> list[float | None]:
    r"""[`verify_answer`] over two aligned lists, each pair with its own `timeout`; much faster than a loop.

    Identical pairs (a GRPO group's repeated gold, common answers) are graded once. Raises `ValueError` only when the
    lists differ in length or `timeout` is not positive.

    Args:
        completions (`Sequence[str]`):
            Model outputs; the last complete `\boxed{}` of each is its answer.
        golds (`Sequence[str]`):
            Gold answers aligned with `completions`, as for [`verify_answer`].
        timeout (`float`, *optional*):
            Seconds each comparison may take. Defaults to [`GRADING_TIMEOUT`].

    Returns:
        `list[float | None]`: one [`verify_answer`] score per completion.

    Example:
    ```python
    >>> verify_batch([r"\boxed{7}", r"\boxed{8}", "no box"], ["7", "7", "7"])
    [1.0, 0.0, 0.0]
    ```
    """
    return _grade([as_answer(extract_boxed(c)) for c in completions], golds, timeout)


_gold_cache: dict = {}  # gold answer -> (parses, timeout it ran out of or None)
_score_cache: dict = {}  # (answer, gold answer) -> (score, timeout it ran out of or None)


def _cached(cache: dict, key, timeout: float):
    """The cached value for `key`, unless it was a timeout shorter than the one we may spend now."""
    value, timed_out_at = cache.get(key, (None, None))
    return None if key not in cache or (timed_out_at is not None and timed_out_at < timeout) else value


def _remember(cache: dict, key, value, timed_out_at: float | None = None) -> None:
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[key] = (value, timed_out_at)


_NUMBER = re.compile(r"-?\d{1,15}(?:\.\d{1,15})?")  # plain numbers: compared without sympy
_PENDING = object()


def _quick_score(answer: str | None, gold: str | None, timeout: float):
    """The score when cheap checks settle it (plain numbers, exact match, cache), else `_PENDING`."""
    if gold is None:
        return None
    if _NUMBER.fullmatch(gold) and (answer is None or _NUMBER.fullmatch(answer)):
        # Plain numbers need no sympy, except unequal decimals: math-verify rounds them before comparing.
        if answer is None or Decimal(answer) == Decimal(gold):
            return float(answer is not None)
        if "." not in answer + gold:
            return 0.0
    gold_ok = _cached(_gold_cache, gold, timeout)
    score = None if gold_ok is False else _cached(_score_cache, (answer, gold), timeout)
    if gold_ok is False or score is not None:
        return score
    if gold_ok and (answer is None or answer == gold):
        return float(answer is not None)
    return _PENDING


def grading_workers() -> int:
    """How many worker processes a large batch is graded in: [`set_grading_workers`]'s value, else the usable cores."""
    if _grading_workers is not None:
        return _grading_workers
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_grading_workers(workers: int | None) -> None:
    """Grade large batches in `workers` processes (`None`: one per usable core). Each holds math-verify (~60 MB)."""
    global _grading_workers
    if workers is not None and workers < 1:
        raise ValueError(f"grading_workers must be at least 1, got {workers}")
    _grading_workers = workers


def _grade(answers: list, golds: Sequence, timeout: float | None) -> list:
    """Score predicted answers (`None` = no box) against golds: cheap checks first, the rest in workers."""
    timeout = GRADING_TIMEOUT if timeout is None else float(timeout)
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    answers = [None if a is not None and len(a) > MAX_ANSWER_CHARS else a for a in answers]
    golds = [as_answer(g) for g in golds]
    scores = [_quick_score(a, g, timeout) for a, g in zip(answers, golds, strict=True)]
    pending = {}  # (answer, gold) -> positions waiting for a worker; duplicates (as in GRPO groups) are graded once
    for i, (answer, gold, score) in enumerate(zip(answers, golds, scores, strict=True)):
        if score is _PENDING:
            pending.setdefault((answer, gold), []).append(i)
    pairs = list(pending)
    num_chunks = min(grading_workers(), -(-len(pairs) // _MIN_PAIRS_PER_WORKER))
    if num_chunks > 1:  # big batches (data labelling, evaluation) are split over several workers
        size = -(-len(pairs) // num_chunks)
        with ThreadPoolExecutor(num_chunks) as pool:
            chunks = pool.map(
                _run_in_worker, [pairs[k : k + size] for k in range(0, len(pairs), size)], [timeout] * num_chunks
            )
            results = [score for chunk in chunks for score in chunk]
    else:
        results = _run_in_worker(pairs, timeout) if pairs else []
    for pair, score in zip(pairs, results, strict=True):
        for i in pending[pair]:
            scores[i] = score
    return scores


class _Worker:
    """A `python` child running [`_serve`]: JSON lines of (answer, gold) pairs in, per-pair result lines out."""

    def __init__(self):
        # `sys.path[0]` is the working directory under `-c`: drop it so no local file shadows sympy or math-verify
        boot = f"import runpy, sys; del sys.path[0]; runpy.run_path(sys.argv[1], run_name={_WORKER_RUN_NAME!r})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot, _WORKER_FILE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a Ctrl-C meant for the trainer does not print worker tracebacks
        )
        self.buffer = b""
        self.ready = False

    def read_line(self, deadline: float) -> list | None:
        """The next message, or `None` when the deadline passes or the worker died."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)

    def start(self) -> bool:
        if not self.ready:
            self.ready = self.read_line(time.monotonic() + WORKER_START_TIMEOUT) == ["ready"]
        return self.ready

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


_idle_workers: list[_Worker] = []
_workers_lock = threading.Lock()


def _run_in_worker(pairs: list, timeout: float) -> list:
    """Scores for `(answer, gold)` pairs from a worker, killing and replacing it when a pair runs past `timeout`."""
    scores, failures = [], 0
    with _workers_lock:
        worker = _idle_workers.pop() if _idle_workers else None
    while len(scores) < len(pairs):
        try:
            worker = worker or _Worker()
            if not worker.start():
                raise RuntimeError(f"no grading worker started within {WORKER_START_TIMEOUT} s")
            todo = pairs[len(scores) :]
            worker.proc.stdin.write(json.dumps({"timeout": timeout, "pairs": todo}).encode() + b"\n")
            worker.proc.stdin.flush()
            for answer, gold in todo:
                deadline = time.monotonic() + timeout
                gold_ok = worker.read_line(deadline)  # [true] or [false] as soon as the gold is parsed
                result = worker.read_line(deadline) if gold_ok == [True] else gold_ok  # then [score]
                if result is None:  # ran past the deadline, or the worker died
                    if gold_ok is None:
                        _remember(_gold_cache, gold, False, timed_out_at=timeout)
                    scores.append(None if gold_ok is None else 0.0)
                    _remember(_score_cache, (answer, gold), scores[-1], timed_out_at=timeout)
                    worker.kill()
                    worker = _Worker()  # start the replacement now: it imports math-verify while we go on
                    break
                _remember(_gold_cache, gold, gold_ok[0])
                scores.append(float(result[0]) if gold_ok[0] else None)
                _remember(_score_cache, (answer, gold), scores[-1])
        except Exception as error:  # noqa: BLE001 - a worker that cannot start or talk: retry once, then score 0.0
            if worker is not None:
                worker.kill()
                worker = None
            failures += 1
            if failures > 1:
                left = len(pairs) - len(scores)
                logger.warning("Math grading failed (%r); scoring the %d remaining answers 0.0.", error, left)
                scores += [0.0] * left
    if worker is not None:
        with _workers_lock:
            _idle_workers.append(worker)
    return scores


@atexit.register
def _stop_workers() -> None:
    with _workers_lock:
        while _idle_workers:
            _idle_workers.pop().kill()


def _forget_workers() -> None:
    """In a forked child (e.g. `datasets.map(num_proc=...)`): the parent's workers are not ours to talk to or kill."""
    global _workers_lock
    _workers_lock = threading.Lock()
    _idle_workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)
