r"""Scoring and metrics for `glowrl eval`: answer extraction, pass@k, maj@k and token entropy.

Every answer is read from the last `\boxed{...}` of a completion ([`~glowrl.grading.extract_boxed`]), as in the GLOW
paper's harness. Math answers are then checked by the same verifier as the RL reward
([`~glowrl.grading.verify_batch`]); multiple-choice answers by the option letter; BIG-Bench Hard answers by exact
match after [`normalize_bbh_answer`].
"""

import math
import re
from collections.abc import Callable, Sequence

import torch

from ..grading import answers_match, extract_boxed, verify_batch
from .stats import accuracy_interval, accuracy_standard_error


_TEXT_WRAPPER = re.compile(r"^\\(?:text|textbf|textrm|mathrm|mathbf)\{(.*)\}$", re.DOTALL)
_CHOICE = re.compile(r"^\(?([A-Za-z])\)?(?![A-Za-z0-9])")
_PARENTHESISED = re.compile(r"^\(([^()]*)\)$")


def _unwrap(answer: str) -> str:
    r"""Strip spaces and `$`, and unwrap a whole-answer `\text{...}` (models often box `\text{True}`)."""
    answer = answer.strip().strip("$").strip()
    match = _TEXT_WRAPPER.match(answer)
    return match.group(1).strip() if match else answer


def normalize_bbh_answer(answer: str) -> str:
    r"""Normalise a BIG-Bench Hard answer for exact match.

    Unwraps a whole-answer `\text{...}`, lower-cases, collapses whitespace, and removes parentheses around the whole
    answer, so that `(A)`, `A` and `\text{(a)}` all become `a`.

    Example:
    ```python
    >>> normalize_bbh_answer("  (B) ")
    'b'
    >>> normalize_bbh_answer("\\text{Ringo  Starr}")
    'ringo starr'
    ```
    """
    answer = " ".join(_unwrap(answer).lower().split())
    match = _PARENTHESISED.match(answer)
    return match.group(1).strip() if match else answer


def extract_choice(completion: str) -> str | None:
    r"""Return the option letter boxed last in `completion`, upper-cased, or `None`.

    The box may hold the letter alone (`A`, `(A)`, `\text{A}`) or the letter followed by the option (`A. 10^-4 ev`).

    Example:
    ```python
    >>> extract_choice("so the answer is \\boxed{(c)} and not B")
    'C'
    ```
    """
    answer = extract_boxed(completion)
    match = _CHOICE.match(_unwrap(answer)) if answer is not None else None
    return match.group(1).upper() if match else None


def score_completions(kind: str, completions: Sequence[str], golds: Sequence[str]) -> list[tuple]:
    """Extract the answer of each completion and grade it against its gold answer by the benchmark's `kind`.

    Math completions are graded in one [`~glowrl.grading.verify_batch`] call (the RL reward's verifier, in its time-
    bounded worker processes).

    Returns:
        `list[tuple[str | None, bool | None]]`: per completion, the extracted answer (`None` when there is none, which
        grades `False`) and whether it is correct; correctness is `None` (unscorable) when the gold answer is missing
        or, for `"math"`, does not parse.
    """
    scored = _score_known_golds(kind, completions, golds)
    return [(answer, None if gold is None else correct) for (answer, correct), gold in zip(scored, golds, strict=True)]


def _score_known_golds(kind: str, completions: Sequence[str], golds: Sequence[str | None]) -> list[tuple]:
    golds = ["" if gold is None else gold for gold in golds]  # graded, then reported unscorable by the caller
    if kind == "mc":
        answers = [extract_choice(completion) for completion in completions]
        return [(answer, answer == gold) for answer, gold in zip(answers, golds, strict=True)]
    answers = [extract_boxed(completion) for completion in completions]
    if kind == "bbh":
        return [
            (answer, answer is not None and normalize_bbh_answer(answer) == normalize_bbh_answer(gold))
            for answer, gold in zip(answers, golds, strict=True)
        ]
    scores = verify_batch(completions, golds)
    return [(a, None if score is None else score == 1.0) for a, score in zip(answers, scores, strict=True)]


def score_completion(kind: str, completion: str, gold: str) -> tuple[str | None, bool | None]:
    """[`score_completions`] for one completion."""
    return score_completions(kind, [completion], [gold])[0]


def same_answer_fn(kind: str) -> Callable[[str, str], bool]:
    """Return the equivalence used to group answers for maj@k: math-verify for math, normalised equality otherwise."""
    if kind == "mc":
        return str.__eq__
    if kind == "bbh":
        return lambda a, b: normalize_bbh_answer(a) == normalize_bbh_answer(b)
    return lambda a, b: a.strip() == b.strip() or bool(answers_match(a, b))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from `n` samples of which `c` are correct: `1 - C(n - c, k) / C(n, k)`.

    Computed as `1 - prod_{i = n - c + 1}^{n} (1 - k / i)` (the Codex paper's stable form,
    https://huggingface.co/papers/2107.03374), which never forms the large binomials.

    Example:
    ```python
    >>> pass_at_k(4, 1, 2)  # 1 - C(3, 2) / C(4, 2) = 1 - 3 / 6
    0.5
    ```
    """
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_at_k(answers: Sequence[str | None], correct: Sequence[bool], same: Callable[[str, str], bool]):
    """maj@k for every `k` from 1 to `len(answers)`: is the most frequent of the first `k` answers correct?

    Answers are grouped with `same` against each group's first member. Samples with no extractable answer do not
    vote. Ties go to the group that appeared first, and a group is correct when its first member is.

    Returns:
        `list[bool]`: element `k - 1` is maj@k for this problem (`False` while no sample has an answer).
    """
    firsts: list[int] = []  # index of each group's first member, in order of appearance
    counts: list[int] = []
    majority = []
    for i, answer in enumerate(answers):
        if answer is not None:
            group = next((g for g, first in enumerate(firsts) if same(answer, answers[first])), None)
            if group is None:
                firsts.append(i)
                counts.append(1)
            else:
                counts[group] += 1
        # `max` returns the first of equal counts, i.e. the group that appeared first.
        best = max(range(len(counts)), key=counts.__getitem__, default=None)
        majority.append(best is not None and bool(correct[firsts[best]]))
    return majority


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Shannon entropy (nats) of `softmax(logits / temperature)` over the last dimension, in float32.

    Example:
    ```python
    >>> round(token_entropy(torch.zeros(8)).item(), 4)  # uniform over 8 tokens: log 8
    2.0794
    ```
    """
    logps = torch.log_softmax(logits.float() / temperature, dim=-1)
    # Masked (-inf) logits have p = 0; clamping log p to a finite value makes their term 0 * finite = 0, not nan.
    return -(logps.exp() * logps.clamp(min=torch.finfo(logps.dtype).min)).sum(-1)


def summarize_benchmark(problems: list[dict], num_samples: int) -> dict[str, float | int | None]:
    """Aggregate per-sample results into the benchmark's metrics.

    Args:
        problems (`list[dict]`):
            One dict per problem with `samples` (dicts with `answer`, `correct`, `num_tokens`, `entropy`,
            `truncated`) and `maj_correct` (maj@k for k = 1..n, from [`majority_at_k`]).
        num_samples (`int`):
            Samples per problem, `n`.

    Returns:
        `dict`: `accuracy` (mean over all samples), `pass@k` and `maj@k` for every k <= n (means over problems), each
        with its 95% interval (`accuracy_ci`, `pass@k_ci`, `maj@k_ci`: [`~glowrl.evaluation.stats.accuracy_interval`],
        Agresti-Coull on the effective number of problems) and `accuracy_se` (its standard error), `no_answer_rate`,
        `truncated_rate`, `mean_tokens`, `entropy` (token-weighted mean over every generated token), and the counts
        `num_problems`, `num_samples`, `num_unscorable` (problems whose gold is missing or does not parse,
        graded wrong).
    """
    samples = [s for p in problems for s in p["samples"]]
    num_correct = [sum(bool(s["correct"]) for s in p["samples"]) for p in problems]
    tokens = sum(s["num_tokens"] for s in samples)
    per_problem = [c / num_samples for c in num_correct]
    metrics: dict[str, float | int | list | None] = {
        "num_problems": len(problems),
        "num_samples": num_samples,
        "num_unscorable": sum(any(s["correct"] is None for s in p["samples"]) for p in problems),
        "accuracy": sum(num_correct) / len(samples),
        "accuracy_ci": list(accuracy_interval(per_problem, num_samples)),
        "accuracy_se": accuracy_standard_error(per_problem, num_samples),
    }
    for k in range(1, num_samples + 1):
        values = [pass_at_k(num_samples, c, k) for c in num_correct]
        metrics[f"pass@{k}"] = sum(values) / len(problems)
        metrics[f"pass@{k}_ci"] = list(accuracy_interval(values, num_samples))
    for k in range(1, num_samples + 1):
        values = [float(p["maj_correct"][k - 1]) for p in problems]
        metrics[f"maj@{k}"] = sum(values) / len(problems)
        metrics[f"maj@{k}_ci"] = list(accuracy_interval(values, num_samples))
    metrics["no_answer_rate"] = sum(s["answer"] is None for s in samples) / len(samples)
    metrics["truncated_rate"] = sum(s["truncated"] for s in samples) / len(samples)
    metrics["mean_tokens"] = tokens / len(samples)
    metrics["entropy"] = sum(s["entropy"] * s["num_tokens"] for s in samples) / tokens if tokens else None
    return metrics


def score_benchmark(kind: str, problems: list, prompts: list[str], completions: list[list], num_samples: int) -> dict:
    """Score every sample of a benchmark and summarise it.

    Args:
        kind (`str`):
            How answers are graded (see [`score_completion`]).
        problems (`list[Problem]`):
            The rows, with `id`, `question` and `gold`.
        prompts (`list[str]`):
            The rendered prompt of each problem.
        completions (`list[list[Completion]]`):
            `num_samples` completions per problem, with `text`, `num_tokens`, `entropy` and `truncated`.
        num_samples (`int`):
            Samples per problem.

    Returns:
        `dict`: `metrics` (from [`summarize_benchmark`]) and `problems`, one record per problem with `id`, `prompt`,
        `gold`, `num_correct`, `maj_correct` (maj@k for k = 1..n) and `samples` (`completion`, `answer`, `correct`,
        `num_tokens`, `entropy`, `truncated`).
    """
    same = same_answer_fn(kind)
    texts = [completion.text for samples in completions for completion in samples]
    golds = [problem.gold for problem, samples in zip(problems, completions, strict=True) for _ in samples]
    graded = iter(score_completions(kind, texts, golds))
    records = []
    for problem, prompt, samples in zip(problems, prompts, completions, strict=True):
        scored = []
        for completion in samples:
            answer, correct = next(graded)
            scored.append(
                {
                    "completion": completion.text,
                    "answer": answer,
                    "correct": correct,
                    "num_tokens": completion.num_tokens,
                    "entropy": completion.entropy,
                    "truncated": completion.truncated,
                }
            )
        answers = [s["answer"] for s in scored]
        records.append(
            {
                "id": problem.id,
                "prompt": prompt,
                "gold": problem.gold,
                "num_correct": sum(bool(s["correct"]) for s in scored),
                "maj_correct": majority_at_k(answers, [bool(s["correct"]) for s in scored], same),
                "samples": scored,
            }
        )
    return {"metrics": summarize_benchmark(records, num_samples), "problems": records}
