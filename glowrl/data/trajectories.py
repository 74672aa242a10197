"""Trajectory data: load, label with math-verify, select the paper's data arm, and put it in TRL's format.

A trajectory file has one row per sampled reasoning trajectory. Accepted columns (names configurable):
- `prompt` (a string or a list of chat messages) and `completion` (a string or a one-message list), or
- `messages` (a chat whose last turn is the assistant's trajectory), or
- `problem` and `completion` (the prompt is then built with `glowrl.chat`, as in RL and evaluation);
- `answer`: the gold final answer (optional);
- `correct`: whether the trajectory's final answer is right (optional; labelled from `answer` when missing).

Files are mixed in the order given, filtered to the chosen arm, and only then given a `sample_id` 0..N-1, so ids are
unique across the whole mixture (the published code numbered each dataset from 0, so a positive and a negative could
share a loss-history slot).
"""

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..chat import DEFAULT_INSTRUCTION, completion_text, prompt_messages
from ..errors import DataError
from ..grading import verify_batch
from .selection import drop_truncated, select_per_problem
from .tables import load_table, peek_columns


if TYPE_CHECKING:
    from datasets import Dataset


TRAJECTORY_ARMS = ("all", "positive", "negative")


@dataclass
class TrajectoryArguments:
    # docstyle-ignore
    r"""
    Where the trajectories come from and which of them to train on.

    Parameters:
        dataset_paths (`list[str]`):
            Local JSONL/JSON/Parquet/CSV files or Hub dataset names, mixed in this order.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split to load from Hub datasets.
        trajectories (`str`, *optional*, defaults to `"all"`):
            Data arm: `"all"` (unfiltered, as GLOW trains), `"positive"` (correct only, standard SFT) or `"negative"`
            (incorrect only).
        prompt_column, completion_column, messages_column, problem_column, answer_column, correct_column (`str`):
            Column names in the files.
        system_prompt (`str` or `None`, *optional*, defaults to `None`):
            System turn added to every prompt.
        instruction (`str`, *optional*, defaults to the paper's "Please reason step by step, ..."):
            Appended to a `problem` to build the user turn (not applied to rows that already have a `prompt`).
        eval_dataset_paths (`list[str]`, *optional*):
            Held-out trajectories (same formats, every row whatever its label): their unweighted loss is logged as
            `eval_loss` at each `eval_strategy` point, the held-out loss curve a study compares arms by.
    """

    dataset_paths: list[str] = field(
        default=None, metadata={"help": "Local JSONL/Parquet files or Hub dataset names, mixed in this order."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to load from Hub datasets."})
    trajectories: str = field(
        default="all",
        metadata={
            "help": "Data arm: all, positive (correct only) or negative (incorrect only).",
            "choices": TRAJECTORY_ARMS,
        },
    )
    prompt_column: str = field(default="prompt", metadata={"help": "Column holding the prompt."})
    completion_column: str = field(default="completion", metadata={"help": "Column holding the trajectory."})
    messages_column: str = field(default="messages", metadata={"help": "Column holding a whole chat."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the bare problem."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold final answer."})
    correct_column: str = field(default="correct", metadata={"help": "Column holding the correctness label."})
    system_prompt: str = field(default=None, metadata={"help": "System turn added to every prompt."})
    instruction: str = field(
        default=DEFAULT_INSTRUCTION, metadata={"help": "Appended to a problem to build the user turn."}
    )
    keep_truncated: bool = field(
        default=False,
        metadata={"help": "Keep samples cut off by max_new_tokens (truncated: true) as negatives; dropped otherwise."},
    )
    max_per_problem: int = field(
        default=None, metadata={"help": "At most this many trajectories per problem and label (by selection_seed)."}
    )
    balance: bool = field(
        default=False, metadata={"help": "As many negatives as positives per problem (the smaller count of both)."}
    )
    drop_always_correct: bool = field(
        default=False, metadata={"help": "Drop the problems whose every labelled trajectory is correct."}
    )
    drop_never_correct: bool = field(
        default=False, metadata={"help": "Drop the problems whose every labelled trajectory is incorrect."}
    )
    selection_seed: int = field(default=0, metadata={"help": "Seed of which trajectories max_per_problem keeps."})
    eval_dataset_paths: list[str] = field(
        default=None, metadata={"help": "Held-out trajectories whose loss is logged as eval_loss (set eval_strategy)."}
    )

    def __post_init__(self):
        if isinstance(self.dataset_paths, str):
            self.dataset_paths = [self.dataset_paths]
        if isinstance(self.eval_dataset_paths, str):
            self.eval_dataset_paths = [self.eval_dataset_paths]
        if self.trajectories not in TRAJECTORY_ARMS:
            raise DataError(f"trajectories must be one of {', '.join(TRAJECTORY_ARMS)}, got {self.trajectories!r}")

    def check_files(self) -> None:
        """Every local file exists, is readable and has the columns this format needs (first row only)."""
        if not self.dataset_paths:
            raise DataError("dataset_paths is required: give one or more trajectory files or Hub dataset names")
        for field_name in ("dataset_paths", "eval_dataset_paths"):
            for path in getattr(self, field_name) or []:
                columns = peek_columns(path, field_name)
                if columns is not None:
                    trajectory_format(columns, self, path)


def trajectory_format(columns: set[str], args: TrajectoryArguments, source: str) -> str:
    """Which format a table's columns hold (`messages`, `prompt` or `problem`), or an error naming what is missing."""
    if args.messages_column in columns and args.completion_column not in columns:
        return "messages"
    if args.completion_column not in columns:
        raise DataError(
            f"dataset {source}: no completion column {args.completion_column!r} (columns: {sorted(columns)}); set "
            "completion_column, or provide a messages column"
        )
    if args.prompt_column in columns:
        return "prompt"
    if args.problem_column in columns:
        return "problem"
    raise DataError(
        f"dataset {source}: no prompt column {args.prompt_column!r} or problem column {args.problem_column!r} "
        f"(columns: {sorted(columns)}); set prompt_column or problem_column"
    )


_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}


def parse_correct(value, source: str, index: int, column: str = "correct") -> bool | None:
    """A correctness label, read strictly: a bool, 0/1, or "true"/"false"/"yes"/"no" in any case; `None` if missing.

    Anything else is an error naming the file and row: `bool("no")` is `True`, and a positive arm built on that
    would train on wrong trajectories.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, float) and math.isnan(value):  # a missing cell in a table written by pandas
        return None
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise DataError(
        f"dataset {source} row {index}: {column} is {value!r}; give true/false (or yes/no, 1/0), or leave it empty "
        "to label the row from its gold answer"
    )


def _messages(value, source: str, index: int, what: str) -> list[dict]:
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise DataError(
        f"dataset {source} row {index}: the {what} is {type(value).__name__} {str(value)[:40]!r}; give a string or "
        "a list of chat messages ({'role': ..., 'content': ...})"
    )


def normalize_trajectories(table: "Dataset", args: TrajectoryArguments, source: str) -> "Dataset":
    """Map one table to the columns `prompt`, `completion` (chat messages), `answer`, `correct`, `source`."""
    columns = set(table.column_names)
    kind = trajectory_format(columns, args, source)
    has_answer, has_correct = args.answer_column in columns, args.correct_column in columns
    has_id = "problem_id" in columns

    def convert(row, index):
        if kind == "messages":
            messages = row[args.messages_column]
            prompt, completion = messages[:-1], messages[-1:]
        else:
            completion = row[args.completion_column]
            if kind == "problem":
                prompt = prompt_messages(row[args.problem_column], args.instruction, args.system_prompt)
            elif isinstance(row[args.prompt_column], str):
                system = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
                prompt = [*system, {"role": "user", "content": row[args.prompt_column]}]
            else:
                prompt = row[args.prompt_column]
            if isinstance(completion, str):
                completion = [{"role": "assistant", "content": completion}]
        prompt = _messages(prompt, source, index, "prompt")
        completion = _messages(completion, source, index, "completion")
        correct = parse_correct(row[args.correct_column], source, index) if has_correct else None
        answer = row[args.answer_column] if has_answer else None
        truncated = bool(row.get("truncated")) or row.get("finish_reason") == "length"
        return {
            "prompt": prompt,
            "completion": completion,
            "answer": None if answer is None or str(answer).strip() == "" else str(answer),
            "correct": correct,
            "source": source,
            "group": str(row["problem_id"]) if has_id else json.dumps(prompt, sort_keys=True),
            "truncated": truncated,
            # the teacher stopped at once (stage 0 marks it), or nothing but whitespace: no tokens to train on
            "empty": bool(row.get("empty")) or not completion_text(completion).strip(),
            "row": index,
        }

    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    features = Features(  # given, not inferred: a column of mixed types in the file must not leak its type here
        {
            "prompt": List(message),
            "completion": List(message),
            "answer": Value("string"),
            "correct": Value("bool"),
            "source": Value("string"),
            "group": Value("string"),  # the problem: its problem_id, else its prompt
            "truncated": Value("bool"),
            "empty": Value("bool"),
            "row": Value("int64"),  # the row in its file, for messages about it
        }
    )
    return table.map(
        convert, with_indices=True, remove_columns=table.column_names, features=features, desc=f"Reading {source}"
    )


def drop_empty(dataset, field: str = "dataset_paths"):
    """Leave out the trajectories whose completion is empty (`empty`), saying how many and which rows; a file of
    nothing else is refused. Then drop the bookkeeping columns `empty` and `row`."""
    empty = [i for i, e in enumerate(dataset["empty"]) if e]
    if len(empty) == len(dataset):
        raise DataError(f"{field}: every completion is empty, so there is nothing to train on; check the data")
    if empty:
        rows = [f"{dataset[i]['source']} row {dataset[i]['row']}" for i in empty[:5]]
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        what = "trajectory whose completion is" if len(empty) == 1 else "trajectories whose completion is"
        print(f"Left out {len(empty)} {what} empty (no tokens to train on): {', '.join(rows)}{more}")
        dataset = dataset.filter(lambda e: not e, input_columns="empty", desc="Leaving out empty completions")
    return dataset.remove_columns(["empty", "row"])


def label_counts(labels) -> dict:
    """How many labels are `True` (correct), `False` (incorrect) and `None` (unlabelled)."""
    labels = list(labels)
    return {label: labels.count(label) for label in (True, False, None)}


def label_trajectories(dataset):
    """Fill the missing `correct` labels by checking each completion's final boxed answer against `answer`.

    Rows whose gold answer does not parse keep `correct=None`. The checks run in one batched call of the shared
    grader, spread over its worker processes.
    """
    todo = [i for i, (c, a) in enumerate(zip(dataset["correct"], dataset["answer"], strict=True)) if c is None and a]
    if not todo:
        return dataset
    completions = dataset.select(todo)["completion"]
    answers = dataset["answer"]
    golds = [answers[i] for i in todo]
    scores = verify_batch([completion_text(c) for c in completions], golds)
    labels = list(dataset["correct"])
    for i, score in zip(todo, scores, strict=True):
        labels[i] = None if score is None else score == 1.0
    return dataset.remove_columns("correct").add_column("correct", labels)


def select_arm(dataset: "Dataset", arm: str) -> "Dataset":
    """Keep the trajectories of the paper's data arm: all, positive (correct) or negative (incorrect)."""
    if arm == "all":
        return dataset
    want = arm == "positive"
    selected = dataset.filter(lambda correct: correct is want, input_columns="correct", desc=f"Selecting {arm}s")
    if len(selected) == 0:
        counts = label_counts(dataset["correct"])
        raise DataError(
            f"trajectories: {arm} selects no rows: the data has {counts[True]} correct, {counts[False]} incorrect and "
            f"{counts[None]} unlabelled trajectories; use trajectories: all, or data that has {arm}s"
        )
    return selected


def build_heldout_dataset(args: TrajectoryArguments) -> "Dataset | None":
    """The held-out trajectories of `eval_dataset_paths`, every row as given (no arm, no selection), or None."""
    if not args.eval_dataset_paths:
        return None
    from datasets import concatenate_datasets

    tables = [
        normalize_trajectories(load_table(p, args.dataset_split, "eval_dataset_paths"), args, p)
        for p in args.eval_dataset_paths
    ]
    return drop_empty(concatenate_datasets(tables) if len(tables) > 1 else tables[0], "eval_dataset_paths")


def build_trajectory_dataset(args: TrajectoryArguments) -> "Dataset":
    """Load, mix, label (where needed and possible), select the arm and assign unique `sample_id`s 0..N-1."""
    from datasets import concatenate_datasets

    if not args.dataset_paths:
        raise DataError("dataset_paths is required: give one or more trajectory files or Hub dataset names")
    tables = [normalize_trajectories(load_table(p, args.dataset_split), args, p) for p in args.dataset_paths]
    dataset = drop_empty(concatenate_datasets(tables) if len(tables) > 1 else tables[0])
    if None in dataset.unique("correct"):
        if args.trajectories != "all" and all(a is None for a in dataset.unique("answer")):
            raise DataError(
                f"trajectories: {args.trajectories} needs correctness labels, but the data has neither a "
                f"{args.correct_column!r} nor an {args.answer_column!r} column to label from; add one (or set "
                "correct_column/answer_column), or use trajectories: all"
            )
        dataset = label_trajectories(dataset)
    read = len(dataset)
    kept = drop_truncated(dataset, args.keep_truncated)
    dataset = select_arm(select_per_problem(kept, args), args.trajectories)
    if len(dataset) == 0:
        why = f"{read - len(kept)} of the {read} read were truncated and are dropped" if len(kept) < read else ""
        why = why or f"none of the {read} read is in trajectories: {args.trajectories} after the per-problem selection"
        raise DataError(
            f"dataset_paths: no trajectory is left to train on ({why}); set keep_truncated: true to train on "
            "truncated ones as negatives, generate with a larger max_new_tokens, or choose other trajectories"
        )
    return dataset.add_column("sample_id", list(range(len(dataset))))
