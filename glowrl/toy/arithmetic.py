r"""A built-in multi-step arithmetic task with correct and incorrect reasoning trajectories, generated from a seed.

GLOW trains on *unfiltered* trajectories: the correct ones ("positives") and the incorrect ones ("negatives"), whose
reasoning is mostly valid and goes wrong somewhere. This module builds such a dataset with no download, small enough
that a tiny Qwen2 model (see [`~glowrl.toy.tiny_model.build_tiny_model`]) learns it on a CPU in minutes, so every stage
(SFT, GLOW-weighted SFT, DPO, GRPO, evaluation) can be exercised end to end and actually show learning.

**Problems** are left-to-right chains of operations on small whole numbers:

```
Start with 7. Add 5. Subtract 9. Multiply by 3. What is the result?
```

The start is 1-9; each operation is `Add b` or `Subtract b` with b in 1-9, or `Multiply by b` with b in 2-3. Every
value along the correct chain stays within 0-[`MAX_VALUE`], so a step is at most a two-digit number combined with a
one-digit one. The gold answer is the last value.

**Trajectories** follow one fixed, very regular format, one checkable equation per operation (digits are single
tokens for the tiny model's Qwen2 pre-tokenizer, so each result is written digit by digit):

```
Step 1: 7 + 5 = 12.
Step 2: 12 - 9 = 3.
Step 3: 3 * 3 = 9.
The answer is \boxed{9}.
```

A positive is the correct solution. Every positive of a problem is the same text (the task has one canonical
solution); the negatives of a problem are distinct from each other. A negative makes exactly one realistic mistake,
so that the reasoning around it stays valid, as in the negatives GLOW learns from:

- **slip** (propagating error): one *middle* step (neither the first nor the last) writes a wrong result: off by 1,
  2 or 10 (a carry slip), or the result of the wrong operation (`12 - 9 = 21`, `3 * 3 = 6`). Every later step is
  then computed correctly from the wrong value, so the steps before the slip are identical to the correct
  solution's and the steps after it are arithmetically right. Only chains of 3 or more steps have a middle step.
- **last_step**: every step is correct except the last one, whose result is wrong in the same ways; the box repeats
  that wrong result.
- **boxed**: every step is correct, but the final answer copied into the box is off by 1, 2 or 10.

The three kinds are drawn with probabilities [`MISTAKE_WEIGHTS`]. Since `+`, `-` and `* 2`/`* 3` are injective, a
wrong value propagated through correct later steps never lands back on the gold answer, so every negative's final
answer is wrong: [`~glowrl.grading.verify_answer`] scores every positive 1 and every negative 0.

**Splits** (all with known answers):

- `"train"`: 3-4 operations; the problems [`generate_trajectories`] writes solutions for.
- `"in_domain"`: the same distribution as `"train"` (3-4 operations), for testing. Every possible problem is
  assigned once and for all to `"train"` or `"in_domain"` by a hash of its text ([`IN_DOMAIN_FRACTION`] of them go to
  `"in_domain"`), so the two never share a problem, for any seeds and sizes.
- `"out_of_domain"`: longer chains, 5-6 operations, same operations and ranges. The model has to run the step
  format past the lengths it was trained on.

Everything is deterministic: the same arguments give identical rows, and each split and the mistakes draw from their
own `random.Random` stream seeded from `seed` (never the global one). `generate_problems(n, seed, split="train")`
are exactly the problems of `generate_trajectories(n, seed)`, and a smaller `num_problems` gives a prefix of a larger
one.

The bundled `glowrl/assets/arithmetic_trajectories.jsonl` (50 problems x 4 trajectories, seed 0, default arguments:
about 87 KB, as every row repeats the problem and the instruction) is regenerated with
`glowrl arithmetic-data --num_problems 50 --seed 0 --output glowrl/assets/arithmetic_trajectories.jsonl
--overwrite`.
Training runs that need more data call [`generate_trajectories`] directly.
"""

import hashlib
import random

from ..chat import DEFAULT_INSTRUCTION, user_prompt


INSTRUCTION = DEFAULT_INSTRUCTION
MAX_VALUE = 20
"""Largest value a correct chain may reach (every intermediate result and the answer lie in 0-`MAX_VALUE`)."""
NUM_STEPS = {"train": (3, 4), "in_domain": (3, 4), "out_of_domain": (5, 6)}
"""Inclusive range of the number of operations per problem, per split."""
IN_DOMAIN_FRACTION = 0.2
"""Share of the in-distribution problem space reserved for the `"in_domain"` test split."""
MISTAKE_WEIGHTS = {"slip": 0.5, "last_step": 0.3, "boxed": 0.2}
"""Relative frequency of each mistake kind among negatives (`"slip"` needs 3 or more steps)."""
SPLITS = tuple(NUM_STEPS)

_OPERATION_TEXT = {"+": "Add {}.", "-": "Subtract {}.", "*": "Multiply by {}."}


def _apply(value: int, op: str, operand: int) -> int:
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    return value * operand


def _problem_text(start: int, operations: list[tuple[str, int]]) -> str:
    ops = " ".join(_OPERATION_TEXT[op].format(b) for op, b in operations)
    return f"Start with {start}. {ops} What is the result?"


def _is_in_domain_test(problem: str) -> bool:
    # A stable hash (not Python's salted `hash`) so the train/test assignment never changes between runs.
    digest = hashlib.sha256(problem.encode()).digest()
    return int.from_bytes(digest[:8], "big") < IN_DOMAIN_FRACTION * 2**64


def _sample_chain(rng: random.Random, num_steps: int) -> tuple[int, list[tuple[str, int]]]:
    start = rng.randint(1, 9)
    value, operations = start, []
    for _ in range(num_steps):
        choices = [("+", b) for b in range(1, 10) if value + b <= MAX_VALUE]
        choices += [("-", b) for b in range(1, 10) if value - b >= 0]
        choices += [("*", b) for b in (2, 3) if value * b <= MAX_VALUE]
        # Pick the operation first, then the operand, so that `*` is not drowned out by the nine operands of +/-.
        op = rng.choice(sorted({op for op, _ in choices}))
        operand = rng.choice([b for o, b in choices if o == op])
        operations.append((op, operand))
        value = _apply(value, op, operand)
    return start, operations


def _split_rng(seed: int, split: str) -> random.Random:
    return random.Random(f"glowrl.arithmetic:{split}:{seed}")


def _problems(num_problems: int, seed: int, split: str) -> list[tuple[str, int, list[tuple[str, int]]]]:
    if split not in NUM_STEPS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = _split_rng(seed, split)
    low, high = NUM_STEPS[split]
    seen, problems = set(), []
    attempts = 0
    while len(problems) < num_problems:
        attempts += 1
        if attempts > 100 * num_problems + 1000:
            raise ValueError(f"could not draw {num_problems} distinct {split!r} problems")
        start, operations = _sample_chain(rng, rng.randint(low, high))
        problem = _problem_text(start, operations)
        if problem in seen:
            continue
        if split != "out_of_domain" and _is_in_domain_test(problem) != (split == "in_domain"):
            continue
        seen.add(problem)
        problems.append((problem, start, operations))
    return problems


def _problem_id(seed: int, split: str, index: int) -> str:
    return f"arith-{split}-s{seed}-{index:05d}"


def generate_problems(num_problems: int, seed: int = 0, *, split: str = "in_domain") -> list[dict]:
    """Draw distinct arithmetic problems with their answers.

    Args:
        num_problems (`int`):
            Number of distinct problems.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the split's random stream. The same seed gives the same problems.
        split (`str`, *optional*, defaults to `"in_domain"`):
            `"train"` (3-4 operations, the problems [`generate_trajectories`] solves), `"in_domain"` (same
            distribution, disjoint problems, for testing) or `"out_of_domain"` (5-6 operations).

    Returns:
        `list[dict]`: Rows `{"problem_id", "problem", "answer"}`; `answer` is the integer result as a string.
    """
    rows = []
    for index, (problem, start, operations) in enumerate(_problems(num_problems, seed, split)):
        value = start
        for op, operand in operations:
            value = _apply(value, op, operand)
        rows.append({"problem_id": _problem_id(seed, split, index), "problem": problem, "answer": str(value)})
    return rows


def _wrong_results(rng: random.Random, value: int, op: str, operand: int) -> list[int]:
    """Plausible wrong results for `value op operand`, in random order (never the right one)."""
    right = _apply(value, op, operand)
    candidates = {right + d for d in (-10, -2, -1, 1, 2, 10)}
    candidates.add(_apply(value, "-" if op == "+" else "+", operand))  # the wrong operation: 12 - 9 = 21, 3 * 3 = 6
    candidates = sorted(c for c in candidates if c != right and c >= 0)
    rng.shuffle(candidates)
    return candidates


def _render(start: int, operations: list[tuple[str, int]], results: list[int], boxed: int) -> str:
    lines, value = [], start
    for i, ((op, operand), result) in enumerate(zip(operations, results, strict=True), 1):
        lines.append(f"Step {i}: {value} {op} {operand} = {result}.")
        value = result
    lines.append(f"The answer is \\boxed{{{boxed}}}.")
    return "\n".join(lines)


def _negative(rng: random.Random, start: int, operations: list[tuple[str, int]], correct: list[int]) -> str:
    """One trajectory with exactly one mistake (see the module docstring for the kinds)."""
    kinds = [k for k in MISTAKE_WEIGHTS if k != "slip" or len(operations) >= 3]
    kind = rng.choices(kinds, weights=[MISTAKE_WEIGHTS[k] for k in kinds])[0]
    if kind == "boxed":
        wrong = sorted(correct[-1] + d for d in (-10, -2, -1, 1, 2, 10) if correct[-1] + d >= 0)
        return _render(start, operations, correct, rng.choice(wrong))
    position = len(operations) - 1 if kind == "last_step" else rng.randrange(1, len(operations) - 1)
    value = correct[position - 1]
    op, operand = operations[position]
    fallback = None
    for wrong in _wrong_results(rng, value, op, operand):
        results = correct[:position] + [wrong]
        for later_op, later_operand in operations[position + 1 :]:
            results.append(_apply(results[-1], later_op, later_operand))
        if min(results) >= 0:  # prefer slips whose propagated chain stays non-negative, like the problems
            return _render(start, operations, results, results[-1])
        fallback = fallback or results
    return _render(start, operations, fallback, fallback[-1])


def generate_trajectories(
    num_problems: int, seed: int = 0, *, samples_per_problem: int = 4, negative_fraction: float = 0.5
) -> list[dict]:
    r"""Generate positive and negative step-by-step solutions for `"train"` problems.

    Args:
        num_problems (`int`):
            Number of problems, those of `generate_problems(num_problems, seed, split="train")`.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the problems and of the mistakes. The same arguments give identical rows.
        samples_per_problem (`int`, *optional*, defaults to `4`):
            Trajectories per problem, positives first, then negatives.
        negative_fraction (`float`, *optional*, defaults to `0.5`):
            Expected share of negatives per problem. A problem gets `floor(samples_per_problem * negative_fraction)`
            negatives, plus one with probability equal to the fractional part. The defaults give exactly 2
            positives and 2 negatives per problem.

    Returns:
        `list[dict]`: Rows `{"problem_id", "problem", "prompt", "completion", "answer", "correct"}` grouped by
        problem, where `prompt` is [`~glowrl.prompts.user_prompt`]`(problem)`, `completion` the trajectory ending
        in `\boxed{}`, `answer` the gold answer and `correct` whether the trajectory's boxed answer is right.
    """
    if samples_per_problem < 1:
        raise ValueError(f"samples_per_problem must be at least 1, got {samples_per_problem}")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    rng = random.Random(f"glowrl.arithmetic:trajectories:{seed}")
    rows = []
    for index, (problem, start, operations) in enumerate(_problems(num_problems, seed, "train")):
        correct = [start]
        for op, operand in operations:
            correct.append(_apply(correct[-1], op, operand))
        correct = correct[1:]
        expected = samples_per_problem * negative_fraction
        num_negatives = int(expected) + (rng.random() < expected - int(expected))
        positive = _render(start, operations, correct, correct[-1])
        completions = [(positive, True)] * (samples_per_problem - num_negatives)
        negatives: list[str] = []
        for _ in range(20 * num_negatives):  # distinct negatives; the mistake space is far larger than needed
            if len(negatives) == num_negatives:
                break
            negative = _negative(rng, start, operations, correct)
            if negative not in negatives:
                negatives.append(negative)
        # Only for very many negatives per problem: repeat some rather than return fewer rows.
        negatives += [negatives[i % len(negatives)] for i in range(num_negatives - len(negatives))]
        completions += [(negative, False) for negative in negatives]
        prompt = user_prompt(problem)
        for completion, is_correct in completions:
            rows.append(
                {
                    "problem_id": _problem_id(seed, "train", index),
                    "problem": problem,
                    "prompt": prompt,
                    "completion": completion,
                    "answer": str(correct[-1]),
                    "correct": is_correct,
                }
            )
    return rows


def tokenizer_corpus(seed: int = 0) -> list[str]:
    """Text covering every symbol the task uses, to train the tiny model's tokenizer on.

    Args:
        seed (`int`, *optional*, defaults to `0`):
            Seed of the sample of trajectories and out-of-domain problems the text is taken from.

    Returns:
        `list[str]`: Prompts (problem and instruction) and completions of all kinds, plus every operation phrase and
        digit, so that no symbol of any split is left to byte fallback.
    """
    corpus = []
    for row in generate_trajectories(200, seed, samples_per_problem=4, negative_fraction=0.5):
        corpus += [row["prompt"], row["completion"]]
    corpus += [user_prompt(row["problem"]) for row in generate_problems(50, seed, split="out_of_domain")]
    corpus += [_problem_text(b, [(op, b)]) for op in "+-*" for b in range(10)]
    corpus += [f"Step {i}: {i} - {i + 1} = -1." for i in range(10)]
    corpus.append(INSTRUCTION)
    return corpus
