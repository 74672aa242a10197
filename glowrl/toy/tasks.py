r"""Synthetic tasks other than the arithmetic chains, and a tiny base model pretrained on them: the toy out-of-domain.

The paper fine-tunes a *pretrained* model with SFT on one domain and measures what happens to what the model could
already do elsewhere. A tiny Qwen2 built at random (see [`~glowrl.toy.tiny_model.build_tiny_model`]) can do nothing
elsewhere, so it cannot show that. This module holds the data that gives the toy study a base model with
capabilities outside the SFT domain: a pretraining corpus of several small tasks, their benchmarks, and the text to
train the tokenizer on. [`~glowrl.demo.pretrain.build_pretrained_base`] pretrains a tiny Qwen2 on the corpus, so that
SFT on the arithmetic chains of [`~glowrl.toy.arithmetic`] (the in-domain) can then be judged by what it does to
those other tasks (the out-of-domain). This module only generates rows; it trains nothing.

**Out-of-domain tasks** ([`TASKS`]), each needing a skill the chains do not, with single-integer answers boxed the
way the arithmetic trajectories box theirs (the grader is [`~glowrl.grading.verify_answer`]):

```
max_of_list   What is the largest number in the list 7, 31, 12?      The larger of 7 and 31 is 31.
              (3-5 numbers in 1-50)                                 The larger of 31 and 12 is 31.
                                                                    The answer is \boxed{31}.
next_term     What is the next number in the sequence 15, 11, 7?     The numbers go down by 15 - 11 = 4.
              (3-6 terms, step 1-5, up or down, all in 0-20)        The next number is 7 - 4 = 3.
                                                                    The answer is \boxed{3}.
digit_count   How many times does the digit 3 appear in 3173?        3 vs 3: yes, count 1.
              (4-6 digits, the count 0-3 drawn uniformly)           1 vs 3: no, count 1.
                                                                    7 vs 3: no, count 1.
                                                                    3 vs 3: yes, count 2.
                                                                    The answer is \boxed{2}.
digit_sum     What is the sum of the digits of 472?                  4 + 7 = 11.
              (3-4 digits, digit sum at most 20)                    11 + 2 = 13.
                                                                    The answer is \boxed{13}.
```

The skills: comparing numbers; spotting a pattern's direction and step and extending it; reading digits one by one
and counting matches; reading digits one by one and keeping a running sum (the task nearest the chains). The
arithmetic they need stays in 0-[`~glowrl.toy.arithmetic.MAX_VALUE`], the chains' range: a tiny model learns one
small table of facts fast, and with larger numbers the base model measured far below 50% on `next_term` and
`digit_sum` within the pretraining budget of [`~glowrl.demo.pretrain`].

**Primitives**: single-operation facts, `What is 12 + 7?` solved as `12 + 7 = 19.` then the boxed answer: every
`a + b` (`b` in 1-9), every `a - b` (`b` in 1-`a`) and every `a * 2` and `a * 3` within 0-`MAX_VALUE`. Every step a
correct chain can take is one of them, so the base model knows the operations the chains compose; the multi-step
chains themselves (`Start with 7. Add 5. ...`, written `Step 1: ...`) are never in the pretraining corpus: SFT has to
teach them, and the base model solves few of them.

**Splits**: every possible problem of an out-of-domain task is assigned once and for all to training or to test by
a stable hash of its text ([`TEST_FRACTION`] of them go to test), as arithmetic.py does for its in-domain split, so
[`pretraining_rows`] (training problems only) and [`benchmark_rows`] (test problems only) never share a problem,
for any seeds and sizes. `next_term` has few possible problems (264 for training, 68 for test), so at most 68 of its
benchmark problems can be drawn; the other tasks have thousands. Primitives have no test split (the study never
scores them); the arithmetic chains' splits are arithmetic.py's.

Everything is deterministic: each task and split draws from its own `random.Random` seeded from `seed` (never the
global one), so the same arguments give identical rows, and a smaller count gives a prefix of a larger one.

This is a test bed sized for a CPU, not a model of pretraining: the "pretraining" is the ordinary SFT stage
(`glow: false`) on correct solutions of these tasks, and the tasks are far narrower than a real base model's. The
sizes and measured accuracies are in [`~glowrl.demo.pretrain`].
"""

import hashlib
import random
from collections.abc import Callable

from ..chat import user_prompt
from . import arithmetic


TEST_FRACTION = 0.2
"""Share of each out-of-domain task's problem space reserved for its test split (the benchmark)."""
MAX_VALUE = arithmetic.MAX_VALUE
SEQUENCE_MAX = MAX_VALUE
"""Largest term of a `next_term` sequence (the next term included)."""
PRIMITIVE = "primitive"
"""Task name of the single-operation facts in the pretraining corpus."""


def _answer_line(answer: int) -> str:
    return f"The answer is \\boxed{{{answer}}}."


def _max_of_list(rng: random.Random) -> tuple[str, list[str], int]:
    numbers = [rng.randint(1, 50) for _ in range(rng.randint(3, 5))]
    lines, best = [], numbers[0]
    for number in numbers[1:]:
        larger = max(best, number)
        lines.append(f"The larger of {best} and {number} is {larger}.")
        best = larger
    return f"What is the largest number in the list {', '.join(map(str, numbers))}?", lines, best


def _next_term(rng: random.Random) -> tuple[str, list[str], int]:
    step, shown, up = rng.randint(1, 5), rng.randint(3, 6), rng.random() < 0.5
    while shown * step > SEQUENCE_MAX:  # no room for the sequence in 0-SEQUENCE_MAX
        step, shown = rng.randint(1, 5), rng.randint(3, 6)
    # Every term, the next one included, lies in 0-SEQUENCE_MAX.
    first = rng.randint(0, SEQUENCE_MAX - shown * step) if up else rng.randint(shown * step, SEQUENCE_MAX)
    terms = [first + (step if up else -step) * i for i in range(shown + 1)]
    *terms, following = terms
    if up:
        lines = [f"The numbers go up by {terms[1]} - {terms[0]} = {step}."]
        lines.append(f"The next number is {terms[-1]} + {step} = {following}.")
    else:
        lines = [f"The numbers go down by {terms[0]} - {terms[1]} = {step}."]
        lines.append(f"The next number is {terms[-1]} - {step} = {following}.")
    return f"What is the next number in the sequence {', '.join(map(str, terms))}?", lines, following


def _digit_count(rng: random.Random) -> tuple[str, list[str], int]:
    length, target = rng.randint(4, 6), rng.randint(0, 9)
    # The count is drawn first (0-3, uniformly), so that counting is needed: with digits drawn at random, almost
    # every count would be 0 or 1.
    while True:
        matches = set(rng.sample(range(length), rng.randint(0, 3)))
        digits = [target if i in matches else rng.choice([d for d in range(10) if d != target]) for i in range(length)]
        if digits[0] != 0:
            break
    lines, count = [], 0
    for digit in digits:
        count += digit == target
        lines.append(f"{digit} vs {target}: {'yes' if digit == target else 'no'}, count {count}.")
    number = "".join(map(str, digits))
    return f"How many times does the digit {target} appear in {number}?", lines, count


def _digit_sum(rng: random.Random) -> tuple[str, list[str], int]:
    while True:  # digit sums up to MAX_VALUE: every running sum is a value the arithmetic chains also reach
        digits = [rng.randint(1, 9)] + [rng.randint(0, 9) for _ in range(rng.randint(2, 3))]
        if sum(digits) <= MAX_VALUE:
            break
    lines, total = [], digits[0]
    for digit in digits[1:]:
        lines.append(f"{total} + {digit} = {total + digit}.")
        total += digit
    return f"What is the sum of the digits of {''.join(map(str, digits))}?", lines, total


TASKS: dict[str, Callable[[random.Random], tuple[str, list[str], int]]] = {
    "max_of_list": _max_of_list,
    "next_term": _next_term,
    "digit_count": _digit_count,
    "digit_sum": _digit_sum,
}
"""The out-of-domain tasks: name -> a draw of (problem, solution lines before the answer line, answer)."""


def _is_test(problem: str) -> bool:
    # A stable hash (not Python's salted `hash`), salted differently from arithmetic.py's split.
    digest = hashlib.sha256(f"glowrl.tasks:{problem}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < TEST_FRACTION * 2**64


def _draw(task: str, num_problems: int, seed: int, split: str) -> list[tuple[str, str, int]]:
    """`num_problems` distinct (problem, solution, answer) of `task` from `split` ("train" or "test")."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rng = random.Random(f"glowrl.tasks:{task}:{split}:{seed}")
    seen, drawn = set(), []
    attempts = 0
    while len(drawn) < num_problems:
        attempts += 1
        if attempts > 100 * num_problems + 1000:
            raise ValueError(
                f"could not draw {num_problems} distinct {split!r} problems of {task!r}: it may have fewer"
            )
        problem, lines, answer = TASKS[task](rng)
        if problem in seen or _is_test(problem) != (split == "test"):
            continue
        seen.add(problem)
        drawn.append((problem, "\n".join([*lines, _answer_line(answer)]), answer))
    return drawn


def _trajectory_row(problem_id: str, problem: str, completion: str, answer: int, task: str) -> dict:
    # generate_trajectories' row schema (plus `task`, which the SFT stage ignores); every row is a correct solution.
    return {
        "problem_id": problem_id,
        "problem": problem,
        "prompt": user_prompt(problem),
        "completion": completion,
        "answer": str(answer),
        "correct": True,
        "task": task,
    }


def task_trajectories(task: str, num_problems: int, seed: int = 0) -> list[dict]:
    """Correct step-by-step solutions of `num_problems` distinct *training* problems of one out-of-domain task.

    Args:
        task (`str`):
            A key of [`TASKS`].
        num_problems (`int`):
            Number of distinct problems; more than the task's training problems raises `ValueError`.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the task's training stream. A smaller `num_problems` gives a prefix of a larger one.

    Returns:
        `list[dict]`: Rows `{"problem_id", "problem", "prompt", "completion", "answer", "correct", "task"}`, as
        [`~glowrl.toy.arithmetic.generate_trajectories`] writes them, with `correct` always `True`.
    """
    return [
        _trajectory_row(f"{task}-train-s{seed}-{index:05d}", problem, completion, answer, task)
        for index, (problem, completion, answer) in enumerate(_draw(task, num_problems, seed, "train"))
    ]


def primitive_trajectories() -> list[dict]:
    """Single-operation facts within 0-`MAX_VALUE`, once each, in a fixed order (no seed).

    Every step a correct arithmetic chain can take is among them (`a + b`, `a - b` with `b` in 1-9, `a * 2`,
    `a * 3`), plus the subtractions of a two-digit number (`17 - 15`) that `next_term` uses.

    Returns:
        `list[dict]`: Trajectory rows (the schema of [`task_trajectories`], `task` `"primitive"`) for `What is
        a + b?`, `What is a - b?` and `What is a * b?`, solved as `a op b = c.` then `The answer is \\boxed{c}.`
    """
    rows = []
    for op in "+-*":
        for a in range(MAX_VALUE + 1):
            for b in {"+": range(1, 10), "-": range(1, MAX_VALUE + 1), "*": (2, 3)}[op]:
                result = arithmetic._apply(a, op, b)
                if 0 <= result <= MAX_VALUE:
                    problem = f"What is {a} {op} {b}?"
                    completion = f"{a} {op} {b} = {result}.\n{_answer_line(result)}"
                    rows.append(_trajectory_row(f"primitive-{a}{op}{b}", problem, completion, result, PRIMITIVE))
    return rows


def pretraining_rows(
    problems_per_task: int | dict[str, int], seed: int = 0, *, primitive_copies: int = 1
) -> list[dict]:
    """The pretraining corpus: training problems of every out-of-domain task and the primitives, never a chain.

    Args:
        problems_per_task (`int` or `dict[str, int]`):
            Distinct training problems of each task in [`TASKS`]: one count for every task, or a count per task
            (every task named; 0 leaves a task out).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the problems. The same arguments give identical rows.
        primitive_copies (`int`, *optional*, defaults to `1`):
            How many times each primitive fact appears (there are only a few hundred of them).

    Returns:
        `list[dict]`: Trajectory rows (see [`task_trajectories`]), task by task, then the primitives; no test
        problem of [`benchmark_rows`] is among them.
    """
    if isinstance(problems_per_task, int):
        problems_per_task = dict.fromkeys(TASKS, problems_per_task)
    if set(problems_per_task) != set(TASKS):
        raise ValueError(
            f"problems_per_task must name every task ({', '.join(TASKS)}), got {sorted(problems_per_task)}"
        )
    rows = [row for task in TASKS for row in task_trajectories(task, problems_per_task[task], seed)]
    return rows + primitive_trajectories() * primitive_copies


def benchmark_rows(task: str, num_problems: int, seed: int = 0) -> list[dict]:
    """Distinct *test* problems of one out-of-domain task with their answers, for `glowrl eval --benchmark_file`.

    Args:
        task (`str`):
            A key of [`TASKS`].
        num_problems (`int`):
            Number of distinct problems (at most 68 for `next_term`, whose test split is small).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the task's test stream. A smaller `num_problems` gives a prefix of a larger one.

    Returns:
        `list[dict]`: Rows `{"id", "problem_id", "problem", "answer", "task"}` (the fields of
        [`~glowrl.toy.arithmetic.generate_problems`], plus `id`, the field the evaluation reports per problem);
        `answer` is the integer as a string.
    """
    return [
        {"id": f"{task}-test-s{seed}-{i:05d}", "problem_id": f"{task}-test-s{seed}-{i:05d}"}
        | {"problem": problem, "answer": str(answer), "task": task}
        for i, (problem, _, answer) in enumerate(_draw(task, num_problems, seed, "test"))
    ]


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Text covering every task's prompts and solutions, the primitives and the arithmetic chains (all splits).

    Returns:
        `list[str]`: [`~glowrl.toy.arithmetic.tokenizer_corpus`]`(seed)`, then prompts and solutions of 100 training
        problems of each out-of-domain task and every primitive fact, so that no symbol the study uses is left to
        byte fallback.
    """
    corpus = arithmetic.tokenizer_corpus(seed)
    for row in pretraining_rows(100, seed):
        corpus += [row["prompt"], row["completion"]]
    return corpus
