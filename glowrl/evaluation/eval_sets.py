"""Evaluation sets: the seven shipped benchmark files, custom JSONL files, and the GPQA option shuffle.

The shipped files are the GLOW paper's public evaluation files, unchanged, in `glowrl/assets/eval_sets/`. Each is read
through a [`BenchmarkSpec`] that names its question, answer and id fields and how it is scored (`kind`). Any other
JSON Lines file becomes a benchmark through the same spec, built from command-line field names.

GPQA-Diamond ships with the correct option always first (gold `A`), so a model biased toward `A` would be
over-credited. [`shuffle_choices`] reorders the options of every multiple-choice row with a random permutation drawn
from `(seed, row id)`, which places the gold letter uniformly over the options and gives every model the same
questions.

Every question is prompted the same way ([`~glowrl.chat.prompt_messages`], the paper's instruction appended), as in
the paper's harness; GPQA questions therefore carry their own boxed-letter instruction followed by the default one.
"""

import random
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import EvaluationError
from ..io import read_jsonl


@dataclass(frozen=True)
class BenchmarkSpec:
    """How to read and score one benchmark file.

    Args:
        name (`str`):
            Name used in results (file stem for custom files).
        kind (`str`):
            `"math"` (math-verify against the gold answer), `"mc"` (letter of a shuffled option) or `"bbh"`
            (normalised exact match).
        problem_field (`str`):
            Row field holding the question.
        answer_field (`str`):
            Row field holding the gold answer.
        id_field (`str` or `None`):
            Row field holding a stable row id; the 0-based row index is used when `None` or absent.
        in_domain (`bool`):
            Whether the benchmark counts toward the in-domain (math) average or the out-of-domain one.
        path (`Path` or `None`):
            Custom file; `None` for the files shipped in `glowrl/assets/eval_sets/`.
    """

    name: str
    kind: str
    problem_field: str
    answer_field: str
    id_field: str | None
    in_domain: bool
    path: Path | None = None


@dataclass(frozen=True)
class Problem:
    """One benchmark row, ready to prompt and score (`question` already has its options shuffled for `mc`)."""

    id: str
    question: str
    gold: str | None  # None: the row has no gold answer, so its samples are unscorable


BENCHMARKS = {
    "math500": BenchmarkSpec("math500", "math", "problem", "answer", "unique_id", in_domain=True),
    "aime24": BenchmarkSpec("aime24", "math", "problem", "answer", "id", in_domain=True),
    "amc23": BenchmarkSpec("amc23", "math", "problem", "answer", "id", in_domain=True),
    "minerva_math": BenchmarkSpec("minerva_math", "math", "question", "answer", None, in_domain=True),
    "olympiadbench": BenchmarkSpec("olympiadbench", "math", "question", "answer", "id", in_domain=True),
    "gpqa_diamond": BenchmarkSpec("gpqa_diamond", "mc", "question", "answer", "id", in_domain=False),
    "bbh": BenchmarkSpec("bbh", "bbh", "input", "target", None, in_domain=False),
}
KINDS = ("math", "mc", "bbh")


def custom_spec(path: str | Path, problem_field: str, answer_field: str, kind: str = "math") -> BenchmarkSpec:
    """Spec for a local JSON Lines file: named after its stem, in-domain only when `kind` is `"math"`."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"--benchmark_file: {path} does not exist; pass the path of a JSON Lines file")
    if path.stem in BENCHMARKS:
        raise EvaluationError(
            f"--benchmark_file: {path.name} has the name of a shipped benchmark; rename the file "
            f"or use --benchmarks {path.stem}"
        )
    return BenchmarkSpec(path.stem, kind, problem_field, answer_field, "id", in_domain=kind == "math", path=path)


def select_benchmarks(
    names: list[str] | None,
    files: list[str] = (),
    problem_field: str = "problem",
    answer_field: str = "answer",
    kind: str = "math",
) -> list[BenchmarkSpec]:
    """The specs to run: shipped benchmarks by name (all when `names` is `None` and no file is given), then files."""
    if names is None:
        names = [] if files else list(BENCHMARKS)
    names = list(dict.fromkeys(name.strip() for name in names if name.strip()))
    for name in names:
        if name not in BENCHMARKS:
            raise EvaluationError(
                f"--benchmarks: unknown benchmark '{name}'; valid names: {', '.join(BENCHMARKS)} "
                "(use --benchmark_file for a local JSONL file)"
            )
    specs = [BENCHMARKS[name] for name in names]
    specs += [custom_spec(path, problem_field, answer_field, kind) for path in files]
    if not specs:
        raise EvaluationError("--benchmarks: no benchmark selected; name shipped ones or pass --benchmark_file")
    if len({spec.name for spec in specs}) < len(specs):
        raise EvaluationError("--benchmark_file: two benchmarks share a name; rename one of the files")
    return specs


def read_rows(spec: BenchmarkSpec) -> list[dict]:
    """Read the rows of `spec`'s file: the shipped copy through `importlib.resources`, or the custom path."""
    if spec.path is None:
        return read_jsonl(resources.files("glowrl").joinpath(f"assets/eval_sets/{spec.name}.jsonl"))
    return read_jsonl(spec.path)


def load_problems(spec: BenchmarkSpec, max_problems: int | None = None, choice_seed: int = 0) -> list[Problem]:
    """Load the first `max_problems` rows of `spec` (all when `None`) as [`Problem`]s.

    Multiple-choice rows get their options shuffled with [`shuffle_choices`] keyed on `(choice_seed, row id)`.
    Raises [`EvaluationError`] naming the field and the fields present when a row lacks the question or answer.
    """
    rows = read_rows(spec)[:max_problems]
    problems = []
    for index, row in enumerate(rows):
        for flag, field in (("--problem_field", spec.problem_field), ("--answer_field", spec.answer_field)):
            if field not in row:
                raise EvaluationError(
                    f"{flag}: row {index} of {spec.name} has no field '{field}'; fields present: "
                    f"{', '.join(sorted(row))}"
                )
        row_id = str(row.get(spec.id_field, index)) if spec.id_field else str(index)
        gold = row[spec.answer_field]
        question, gold = str(row[spec.problem_field]), None if gold is None or str(gold).strip() == "" else str(gold)
        if spec.kind == "mc" and gold is not None:
            question, gold = shuffle_choices(question, gold, seed=choice_seed, key=row_id)
        problems.append(Problem(row_id, question, gold))
    return problems


def split_choices(question: str) -> tuple[str, list[str], str]:
    r"""Split a question with lettered options into `(stem, options, tail)`.

    Options are lines that start `A. `, `B. `, ... in order (the last `A. ` line starts the block). An option runs
    to the next option's line, and the last one to the final blank line (`\n\n`) after it, which starts the tail
    (GPQA's instruction paragraph); option text may span several lines. Joining the parts back with
    `stem + "".join(f"\n{letter}. {option}") + tail` gives the question unchanged.

    Example:
    ```python
    >>> split_choices("Q?\n\nA. 1\nB. 2\n\nAnswer.")
    ('Q?\n', ['1', '2'], '\n\nAnswer.')
    ```
    """
    starts = [question.rfind("\nA. ")]
    for letter in string.ascii_uppercase[1:]:
        start = question.find(f"\n{letter}. ", starts[-1] + 1) if starts[-1] >= 0 else -1
        if start < 0:
            break
        starts.append(start)
    if starts[0] < 0 or len(starts) < 2:
        raise EvaluationError(
            "--benchmark_kind mc: question has no lettered options ('\\nA. ...\\nB. ...'); "
            f"use --benchmark_kind bbh or math for this file (question starts {question[:60]!r})"
        )
    tail_start = question.rfind("\n\n", starts[-1] + 1)
    tail_start = len(question) if tail_start < 0 else tail_start
    ends = [*starts[1:], tail_start]
    options = [question[start + 4 : end] for start, end in zip(starts, ends, strict=True)]
    return question[: starts[0]], options, question[tail_start:]


def shuffle_choices(question: str, gold: str, seed: int, key: str) -> tuple[str, str]:
    """Reorder the lettered options of `question` with a permutation drawn from `(seed, key)`.

    Args:
        question (`str`):
            Question text with its options inside (see [`split_choices`]).
        gold (`str`):
            Gold letter in the original order.
        seed (`int`):
            Shuffle seed; the same seed always gives the same permutation for the same `key`.
        key (`str`):
            Stable row id, so a row's permutation does not depend on which other rows are loaded.

    Returns:
        `tuple[str, str]`: the rewritten question and the gold letter after the shuffle.
    """
    stem, options, tail = split_choices(question)
    letters = string.ascii_uppercase[: len(options)]
    if gold not in letters:
        raise EvaluationError(f"--answer_field: gold '{gold}' is not an option letter ({', '.join(letters)})")
    # A string seed is hashed with SHA-512 by `random.Random`, so the permutation is stable across processes.
    order = list(range(len(options)))
    random.Random(f"{seed}:{key}").shuffle(order)
    body = "".join(f"\n{letter}. {options[i]}" for letter, i in zip(letters, order, strict=True))
    return stem + body + tail, letters[order.index(letters.index(gold))]
