r"""Reward functions for TRL trainers (GRPO, RLOO, ...): math correctness through [`~glowrl.grading`], and format.

Each function has TRL's reward signature `f(completions, **kwargs) -> list[float | None]`, where `completions` is a
list of strings or of conversational completions (`[{"role": "assistant", "content": ...}]`); the extra keyword
arguments are the dataset's columns, aligned with the completions. The function's `__name__` becomes the logged metric
`rewards/<name>/mean`. None of them raises on any completion text, and each is bounded in time per completion.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from .chat import completion_text
from .errors import GlowrlError
from .grading import extract_boxed, verify_batch


def math_accuracy(
    completions: list,
    answer: list | None = None,
    solution: list | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs,
) -> list[float | None]:
    r"""
    Reward function that checks whether the last `\boxed{}` answer of each completion is math-equivalent to the gold.

    Equivalence is decided by [`~glowrl.grading.verify_batch`] (math-verify, with a time bound per completion), the
    same grader that labels SFT data and scores evaluations.

    Args:
        completions (`list[str]` or `list[list[dict[str, str]]]`):
            Completions to score, as strings or as conversational completions (the last message's `"content"` is read).
        answer (`list[str]`, *optional*):
            Gold answers, LaTeX without `$` (e.g. `"\\frac{14}{3}"`). Used when present.
        solution (`list[str]`, *optional*):
            Worked solutions whose last `\boxed{}` is the gold answer. Used where `answer` is missing or `None`.
        log_metric (`callable`, *optional*):
            Provided by [`~trl.GRPOTrainer`]; receives `rewards/gold_unparsed`, the number of completions in this call
            whose gold answer does not parse.
        **kwargs:
            Other dataset columns and trainer arguments; unused.

    Returns:
        `list[float | None]`: `1.0` when correct, `0.0` when wrong, unboxed or too slow to verify, `None` (skipped by
        the trainer) when the gold answer does not parse.

    Example:
    ```python
    >>> from glowrl.rewards import math_accuracy

    >>> completions = [
    ...     [{"role": "assistant", "content": r"So $x = \boxed{\frac{1}{3}}$."}],
    ...     [{"role": "assistant", "content": r"So $x = \boxed{0.5}$."}],
    ... ]
    >>> math_accuracy(completions, answer=[r"\frac{1}{3}", r"\frac{1}{3}"])
    [1.0, 0.0]
    >>> math_accuracy([r"\boxed{2}"], solution=[r"Since $1 + 1 = 2$, the answer is $\boxed{2}$."])
    [1.0]
    ```
    """
    if answer is None and solution is None:
        raise ValueError("math_accuracy needs the gold answer: give the dataset an `answer` or a `solution` column.")
    answers = answer if answer is not None else [None] * len(completions)
    solutions = solution if solution is not None else [None] * len(completions)
    golds = [a if a is not None else s for a, s in zip(answers, solutions, strict=True)]
    rewards = verify_batch([completion_text(c) for c in completions], golds)
    if callable(log_metric):
        log_metric("rewards/gold_unparsed", sum(r is None for r in rewards))
    return rewards


def boxed_format(completions: list, **kwargs) -> list[float]:
    r"""
    Reward function that checks whether the completion ends its work with a complete, non-empty `\boxed{...}`.

    The box is found as [`~glowrl.grading.extract_boxed`] finds it for grading, so a `1.0` here means
    [`math_accuracy`] had an answer to grade.

    Args:
        completions (`list[str]` or `list[list[dict[str, str]]]`):
            Completions to score, as strings or as conversational completions.
        **kwargs:
            Dataset columns and trainer arguments; unused.

    Returns:
        `list[float]`: `1.0` for a complete non-empty box, else `0.0`.

    Example:
    ```python
    >>> from glowrl.rewards import boxed_format

    >>> boxed_format([r"The answer is \boxed{7}.", r"The answer is \boxed{7", r"\boxed{}", "7"])
    [1.0, 0.0, 0.0, 0.0]
    ```
    """
    return [float(bool((extract_boxed(completion_text(c)) or "").strip())) for c in completions]


def think_format(completions: list, **kwargs) -> list[float]:
    r"""
    Reward function that checks for one `<think>...</think>` block at the start, followed by a non-empty answer.

    Meant for reasoning models. Leading whitespace is allowed; a second `<think>` or `</think>` anywhere fails.

    Args:
        completions (`list[str]` or `list[list[dict[str, str]]]`):
            Completions to score, as strings or as conversational completions.
        **kwargs:
            Dataset columns and trainer arguments; unused.

    Returns:
        `list[float]`: `1.0` when the format holds, else `0.0`.

    Example:
    ```python
    >>> from glowrl.rewards import think_format

    >>> completions = [
    ...     [{"role": "assistant", "content": "<think>\n2 + 2 = 4\n</think>\nThe answer is 4."}],
    ...     [{"role": "assistant", "content": "<think>\n2 + 2 = 4\nThe answer is 4."}],
    ...     [{"role": "assistant", "content": "<think>\n2 + 2 = 4\n</think>\n"}],
    ... ]
    >>> think_format(completions)
    [1.0, 0.0, 0.0]
    ```
    """
    rewards = []
    for completion in completions:
        text = completion_text(completion).lstrip()
        ok = text.startswith("<think>") and text.count("<think>") == 1 and text.count("</think>") == 1
        rewards.append(float(ok and bool(text.partition("</think>")[2].strip())))
    return rewards


REWARD_FUNCS = {"math_accuracy": math_accuracy, "boxed_format": boxed_format, "think_format": think_format}


def get_reward_funcs(names: list[str]) -> list[Callable]:
    """Return the reward functions named in `names` (keys of [`REWARD_FUNCS`]), in order.

    Example:
    ```python
    >>> [f.__name__ for f in get_reward_funcs(["math_accuracy", "boxed_format"])]
    ['math_accuracy', 'boxed_format']
    ```
    """
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in REWARD_FUNCS]
    if unknown:
        raise GlowrlError(
            f"reward_funcs: unknown reward function(s) {unknown}; valid names are {sorted(REWARD_FUNCS)}"
        )
    return [REWARD_FUNCS[name] for name in names]


@dataclass
class RewardArguments:
    """The reward functions of an online RL run (GRPO, RLOO), by name; TRL's `reward_weights` weighs them."""

    reward_funcs: list[str] = field(
        default_factory=lambda: ["math_accuracy", "boxed_format"],
        metadata={"help": f"Reward functions, among {', '.join(REWARD_FUNCS)}."},
    )

    def __post_init__(self):
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        if not self.reward_funcs:
            raise GlowrlError(
                f"reward_funcs: an empty list gives RL nothing to learn from; name some of {sorted(REWARD_FUNCS)}"
            )
        get_reward_funcs(self.reward_funcs)  # unknown names fail here, listing the valid ones
