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
            Custom file (JSONL, JSON, Parquet or CSV); `None` for a shipped file or a Hub dataset.
        hub (`tuple[str, str | None, str]` or `None`):
            `(dataset, config, split)` of a benchmark loaded from the Hub when no `path` is given.
        schema (`str`):
            How a row becomes a question and gold: `"plain"` (the two fields as they are), `"mmlu"` (`question`,
            `choices` list, `answer` index) or `"mmlu_pro"` (`question`, `options` list, `answer` letter): the options
            are written into the question as lettered lines, then shuffled like GPQA's.
    """

    name: str
    kind: str
    problem_field: str
    answer_field: str
    id_field: str | None
    in_domain: bool
    path: Path | None = None
    hub: tuple | None = None
    schema: str = "plain"


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
    # The paper's other out-of-domain sets, too large to ship: loaded from the Hub (or a local copy in their schema).
    "mmlu": BenchmarkSpec(
        "mmlu", "mc", "question", "answer", None, in_domain=False, hub=("cais/mmlu", "all", "test"), schema="mmlu"
    ),
    "mmlu_pro": BenchmarkSpec(
        "mmlu_pro",
        "mc",
        "question",
        "answer",
        "question_id",
        False,
        hub=("TIGER-Lab/MMLU-Pro", None, "test"),
        schema="mmlu_pro",
    ),
}
KINDS = ("math", "mc", "bbh")
SCHEMAS = ("plain", "mmlu", "mmlu_pro")
# Named sets of benchmarks: the paper's evaluation (in-domain math, out-of-domain general reasoning).
SUITES = {
    "paper_in_domain": ["math500", "minerva_math", "olympiadbench", "amc23", "aime24"],
    "paper_out_of_domain": ["mmlu", "mmlu_pro", "gpqa_diamond", "bbh"],
}
SUITES["paper"] = SUITES["paper_in_domain"] + SUITES["paper_out_of_domain"]
SUITES["shipped"] = [name for name, spec in BENCHMARKS.items() if spec.hub is None]


def custom_spec(
    path: str | Path,
    problem_field: str = "problem",
    answer_field: str = "answer",
    kind: str = "math",
    domain: str | None = None,
    schema: str = "plain",
) -> BenchmarkSpec:
    """Spec for a local file, named after its stem. `domain` is `"in"` or `"out"`; by default a math file is in-domain
    and any other kind out-of-domain. A `schema` other than `"plain"` reads the file as that Hub dataset's rows."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"--benchmark_file: {path} does not exist; pass the path of a JSON Lines file")
    if domain not in (None, "in", "out"):
        raise EvaluationError(f"--domain: {domain!r} is not in or out")
    if schema not in SCHEMAS:
        raise EvaluationError(f"--benchmark_schema: {schema!r} is not one of {', '.join(SCHEMAS)}")
    if path.stem in BENCHMARKS and schema == "plain":
        raise EvaluationError(
            f"--benchmark_file: {path.name} has the name of a shipped benchmark; rename the file "
            f"or use --benchmarks {path.stem}"
        )
    in_domain = kind == "math" if domain is None else domain == "in"
    if schema != "plain":  # a local copy of a Hub benchmark: its fields, id and kind
        known = next(spec for spec in BENCHMARKS.values() if spec.schema == schema)
        fields = (known.problem_field, known.answer_field, known.id_field)
        return BenchmarkSpec(path.stem, "mc", *fields, in_domain, path, schema=schema)
    return BenchmarkSpec(
        path.stem, kind, problem_field, answer_field, "id", in_domain=in_domain, path=path, schema=schema
    )


def select_benchmarks(
    names: list[str] | None,
    files: list[str] = (),
    problem_field: str = "problem",
    answer_field: str = "answer",
    kind: str = "math",
    domain: str | None = None,
    schema: str = "plain",
    ood_files: list[str] = (),
) -> list[BenchmarkSpec]:
    """The specs to run: shipped benchmarks by name (all when `names` is `None` and no file is given), then `files`
    (in `domain`, in-domain by default), then `ood_files` (out-of-domain)."""
    if names is None:
        names = [] if files or ood_files else SUITES["shipped"]
    names = [member for name in names if name.strip() for member in SUITES.get(name.strip(), [name.strip()])]
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in BENCHMARKS:
            raise EvaluationError(
                f"--benchmarks: unknown benchmark '{name}'; valid names: {', '.join(BENCHMARKS)}, or a suite: "
                f"{', '.join(SUITES)} (use --benchmark_file for a local file)"
            )
    specs = [BENCHMARKS[name] for name in names]
    specs += [custom_spec(path, problem_field, answer_field, kind, domain, schema) for path in files]
    specs += [custom_spec(path, problem_field, answer_field, kind, "out", schema) for path in ood_files]
    if not specs:
        raise EvaluationError("--benchmarks: no benchmark selected; name shipped ones or pass --benchmark_file")
    if len({spec.name for spec in specs}) < len(specs):
        raise EvaluationError("--benchmark_file: two benchmarks share a name; rename one of the files")
    return specs


def _rows_of_schema(spec: BenchmarkSpec, rows: list[dict]) -> list[dict]:
    """Rows of a Hub benchmark's schema, turned into the plain question/answer fields (options as lettered lines)."""
    if spec.schema == "plain":
        return rows
    plain = []
    for index, row in enumerate(rows):
        options, answer = row.get("choices" if spec.schema == "mmlu" else "options"), row.get("answer")
        if not isinstance(options, list) or answer is None or "question" not in row:
            fields = "question, choices, answer" if spec.schema == "mmlu" else "question, options, answer"
            raise EvaluationError(
                f"{spec.name} row {index}: not in the {spec.schema} schema ({fields}); it has {', '.join(sorted(row))}"
            )
        letters = string.ascii_uppercase[: len(options)]
        gold = letters[answer] if spec.schema == "mmlu" and isinstance(answer, int) else str(answer)
        body = "".join(f"\n{letter}. {option}" for letter, option in zip(letters, options, strict=True))
        plain.append({**row, "question": f"{row['question']}\n{body}", "answer": gold})
    return plain


def read_rows(spec: BenchmarkSpec) -> list[dict]:
    """Read the rows of `spec`'s file: the shipped copy through `importlib.resources`, or the custom path."""
    if spec.path is not None and spec.path.suffix == ".jsonl":
        rows = read_jsonl(spec.path)
    elif spec.path is not None or spec.hub is not None:
        from ..data.tables import load_table

        source = str(spec.path) if spec.path is not None else spec.hub[0]
        split, config = ("train", None) if spec.path is not None else (spec.hub[2], spec.hub[1])
        rows = list(load_table(source, split, field="--benchmarks", config=config))
    else:
        rows = read_jsonl(resources.files("glowrl").joinpath(f"assets/eval_sets/{spec.name}.jsonl"))
    return _rows_of_schema(spec, rows)


def check_local_files(specs, error=EvaluationError, file_field="--benchmark_file", answer_field="--answer_field"):
    """Refuse, before anything is written, a local benchmark file with no rows or whose golds are all null or empty
    (it would give no metrics), naming the flag or recipe key (`file_field`, `answer_field`) and the file."""
    for spec in specs:
        if spec.path is None or spec.hub is not None:
            continue
        problems = load_problems(spec)
        if not problems:
            raise error(f"{file_field}: {spec.path} holds no problems; give a file with at least one row")
        if all(p.gold is None for p in problems):
            raise error(
                f"{answer_field}: every {spec.answer_field!r} of {spec.path} is null or empty, so nothing can be "
                f"scored; name the gold-answer field with {answer_field}"
            )


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
