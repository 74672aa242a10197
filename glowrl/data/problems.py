r"""RL prompts: problems with gold answers, turned into chat prompts with the prompt every stage shares.

A trajectory file works as a problem file: its rows are deduplicated by problem.
"""

from dataclasses import dataclass, field

from ..chat import DEFAULT_INSTRUCTION, prompt_messages
from ..errors import DataError
from .tables import load_table, peek_columns


@dataclass
class ProblemArguments:
    # docstyle-ignore
    r"""
    The RL prompts: problems with gold answers, and how to turn them into chat prompts.

    Parameters:
        dataset_paths (`list[str]`):
            Local JSONL/Parquet files or Hub dataset names with a problem and a gold answer per row. A trajectory file
            works too: its rows are deduplicated by problem.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split to load from Hub datasets.
        problem_column (`str`, *optional*, defaults to `"problem"`):
            Column holding the problem text.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Column holding the gold final answer; when missing, `solution` (a worked solution whose last `\boxed{}`
            is the answer) is used.
        system_prompt (`str` or `None`, *optional*, defaults to `None`):
            System turn added to every prompt.
        instruction (`str`, *optional*, defaults to the paper's "Please reason step by step, ..."):
            Appended to each problem to build the user turn.
        chat_template_path (`str` or `None`, *optional*, defaults to `None`):
            Jinja chat template to put on the tokenizer (use the SFT stage's, if it set one).
    """

    dataset_paths: list[str] = field(
        default=None, metadata={"help": "Files or Hub datasets of problems with answers."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to load from Hub datasets."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold final answer."})
    system_prompt: str = field(default=None, metadata={"help": "System turn added to every prompt."})
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "Appended to each problem."})
    chat_template_path: str = field(default=None, metadata={"help": "Jinja chat template for the tokenizer."})

    def __post_init__(self):
        if isinstance(self.dataset_paths, str):
            self.dataset_paths = [self.dataset_paths]

    def check_files(self) -> None:
        """Every local file exists, is readable and has a problem and an answer column (first row only)."""
        if not self.dataset_paths:
            raise DataError("dataset_paths is required: give one or more files of problems with gold answers")
        for path in self.dataset_paths:
            columns = peek_columns(path)
            if columns is not None:
                answer_column(columns, self, path)


def answer_column(columns: set[str], args: ProblemArguments, source: str) -> str:
    """The gold-answer column of a problem table (`answer_column`, else `solution`); checks the problem column."""
    if args.problem_column not in columns:
        raise DataError(
            f"dataset {source}: no problem column {args.problem_column!r} (columns: {sorted(columns)}); set "
            "problem_column"
        )
    if args.answer_column in columns:
        return args.answer_column
    if "solution" in columns:
        return "solution"
    raise DataError(
        f"dataset {source}: no answer column {args.answer_column!r} and no 'solution' column (columns: "
        f"{sorted(columns)}); set answer_column"
    )


def _gold(value) -> str | None:
    """A gold answer as text; a missing one stays `None` (unscorable), never the string "None"."""
    return None if value is None or str(value).strip() == "" else str(value)


def build_problem_dataset(args: ProblemArguments):
    """Load the problems, check the columns, deduplicate by problem, and build chat prompts with `answer` kept."""
    from datasets import concatenate_datasets

    if not args.dataset_paths:
        raise DataError("dataset_paths is required: give one or more files of problems with gold answers")
    tables = []
    for path in args.dataset_paths:
        table = load_table(path, args.dataset_split)
        answer = answer_column(set(table.column_names), args, path)
        texts = table[args.problem_column]
        for index, text in enumerate(texts):
            if text is None or not str(text).strip():
                raise DataError(
                    f"dataset {path} row {index}: {args.problem_column} is empty or null; give the problem's text or "
                    "remove the row"
                )
        table = table.map(
            lambda row, answer=answer: {"problem": str(row[args.problem_column]), "answer": _gold(row[answer])},
            remove_columns=table.column_names,
            desc=f"Reading {path}",
        )
        tables.append((path, table))
    dataset = concatenate_datasets([t for _, t in tables]) if len(tables) > 1 else tables[0][1]
    sources = [(path, i) for path, table in tables for i in range(len(table))]
    gold: dict[str, str | None] = {}
    keep = []
    for i, (problem, answer) in enumerate(zip(dataset["problem"], dataset["answer"], strict=True)):
        if problem in gold:
            if gold[problem] != answer:  # a trajectory file repeats a problem with its one gold answer
                raise DataError(
                    f"dataset {sources[i][0]} row {sources[i][1]}: the problem {problem[:60]!r} has two gold "
                    f"answers ({gold[problem]!r} and {answer!r}); keep the right one"
                )
            continue
        gold[problem] = answer
        keep.append(i)
    dataset = dataset.select(keep)
    return dataset.map(
        lambda row: {"prompt": prompt_messages(row["problem"], args.instruction, args.system_prompt)},
        desc="Building prompts",
    )
