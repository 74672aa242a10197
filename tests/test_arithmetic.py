"""Tests for the built-in arithmetic task (`glowrl.toy.arithmetic`).

The trajectories are checked with an independent parser here, not with the module's own helpers: every positive's
steps are right, every negative makes exactly one mistake of a documented kind (a propagating middle-step slip, a
wrong last step, or a wrong boxed answer) with the steps before it identical to the correct solution, and the labels
agree with the verifier the RL reward uses. Also: determinism, disjoint splits, the bundled data file and the CLI.
"""

import collections
import json
import re
from importlib import resources

import pytest

from glowrl.chat import DEFAULT_INSTRUCTION, user_prompt
from glowrl.cli import main as glowrl_main
from glowrl.grading import verify_answer
from glowrl.io import read_jsonl, write_jsonl
from glowrl.toy.arithmetic import (
    INSTRUCTION,
    MAX_VALUE,
    NUM_STEPS,
    generate_problems,
    generate_trajectories,
    tokenizer_corpus,
)


ROW_KEYS = ["problem_id", "problem", "prompt", "completion", "answer", "correct"]
OPS = {"Add": "+", "Subtract": "-", "Multiply by": "*"}
STEP_RE = re.compile(r"Step (\d+): (-?\d+) ([+*-]) (\d+) = (-?\d+)\.")
BOXED_RE = re.compile(r"The answer is \\boxed\{(-?\d+)\}\.")


def apply(value, op, operand):
    return {"+": value + operand, "-": value - operand, "*": value * operand}[op]


def parse_problem(problem):
    """Return (start, [(op, operand), ...]) of a problem text, checking its exact shape."""
    match = re.fullmatch(r"Start with (\d+)\. ((?:(?:Add|Subtract|Multiply by) \d+\. )+)What is the result\?", problem)
    assert match, problem
    operations = [(OPS[word], int(b)) for word, b in re.findall(r"(Add|Subtract|Multiply by) (\d+)\.", match[2])]
    return int(match[1]), operations


def solve(problem):
    start, operations = parse_problem(problem)
    values = [start]
    for op, operand in operations:
        values.append(apply(values[-1], op, operand))
    return values


def parse_completion(completion):
    """Return ([(left, op, operand, result), ...], boxed) of a trajectory, checking its exact line format."""
    *step_lines, last = completion.split("\n")
    steps = []
    for i, line in enumerate(step_lines, 1):
        match = STEP_RE.fullmatch(line)
        assert match and int(match[1]) == i, line
        steps.append((int(match[2]), match[3], int(match[4]), int(match[5])))
    match = BOXED_RE.fullmatch(last)
    assert match, last
    return steps, int(match[1])


def classify_negative(problem, completion):
    """Check a negative's structure and return its mistake kind and the index of the wrong step (or None)."""
    start, operations = parse_problem(problem)
    correct = solve(problem)[1:]
    steps, boxed = parse_completion(completion)
    assert len(steps) == len(operations)
    previous = start
    for (left, op, operand, result), expected_op in zip(steps, operations, strict=True):
        assert (op, operand) == expected_op  # every step performs the problem's operation...
        assert left == previous  # ...on the result the trajectory wrote before (a consistent chain)
        previous = result
    wrong = [i for i, (left, op, operand, result) in enumerate(steps) if apply(left, op, operand) != result]
    assert len(wrong) <= 1, completion  # exactly one mistake: every other step is arithmetically right
    if not wrong:
        assert [s[3] for s in steps] == correct and boxed != correct[-1]
        return "boxed", None
    k = wrong[0]
    assert [s[3] for s in steps[:k]] == correct[:k]  # the valid prefix: identical to the correct solution
    assert boxed == steps[-1][3]  # the box repeats the (propagated) result of the last step
    assert k >= 1  # the first step is always right
    return ("last_step" if k == len(steps) - 1 else "slip"), k


def test_rows_have_the_documented_schema():
    rows = generate_trajectories(20, seed=0)
    assert len(rows) == 80
    for row in rows:
        assert list(row) == ROW_KEYS
        assert row["prompt"] == user_prompt(row["problem"])
        assert row["prompt"].endswith("\n" + DEFAULT_INSTRUCTION) and INSTRUCTION == DEFAULT_INSTRUCTION
        assert row["answer"] == str(solve(row["problem"])[-1])
        assert isinstance(row["correct"], bool)
    by_problem = collections.defaultdict(list)
    for row in rows:
        by_problem[row["problem_id"]].append(row)
    assert len(by_problem) == 20
    for group in by_problem.values():
        assert len({row["problem"] for row in group}) == 1
        assert [row["correct"] for row in group] == [True, True, False, False]  # positives first
        negatives = [row["completion"] for row in group if not row["correct"]]
        assert len(set(negatives)) == len(negatives)
    # The problems are exactly those of the "train" split.
    problems = generate_problems(20, seed=0, split="train")
    assert [p["problem"] for p in problems] == list(dict.fromkeys(row["problem"] for row in rows))
    assert [p["problem_id"] for p in problems] == list(by_problem)


def test_samples_per_problem_and_negative_fraction():
    rows = generate_trajectories(10, seed=0, samples_per_problem=4, negative_fraction=0.25)
    assert sum(not row["correct"] for row in rows) == 10
    assert all(row["correct"] for row in generate_trajectories(5, seed=0, negative_fraction=0.0))
    assert not any(row["correct"] for row in generate_trajectories(5, seed=0, negative_fraction=1.0))
    rows = generate_trajectories(400, seed=0, samples_per_problem=3, negative_fraction=0.5)  # 1.5 per problem
    counts = collections.Counter(row["problem_id"] for row in rows if not row["correct"])
    assert len(rows) == 1200 and set(counts.values()) <= {1, 2}
    assert 0.4 < sum(not row["correct"] for row in rows) / len(rows) < 0.6
    with pytest.raises(ValueError):
        generate_trajectories(2, negative_fraction=1.5)
    with pytest.raises(ValueError):
        generate_problems(2, split="test")


def test_deterministic_per_seed():
    assert generate_trajectories(30, seed=0) == generate_trajectories(30, seed=0)
    assert generate_trajectories(30, seed=0) != generate_trajectories(30, seed=1)
    for split in NUM_STEPS:
        assert generate_problems(30, seed=3, split=split) == generate_problems(30, seed=3, split=split)
        assert generate_problems(30, seed=3, split=split) != generate_problems(30, seed=4, split=split)
        assert generate_problems(10, seed=3, split=split) == generate_problems(30, seed=3, split=split)[:10]
    assert generate_trajectories(10, seed=5) == generate_trajectories(30, seed=5)[:40]


def test_labels_agree_with_the_reward_verifier():
    rows = generate_trajectories(100, seed=1)
    for row in rows:
        _, boxed = parse_completion(row["completion"])
        assert (boxed == int(row["answer"])) == row["correct"]  # negatives' final answers are really wrong
        assert verify_answer(row["completion"], row["answer"]) == float(row["correct"]), row


def test_positives_are_correct_step_by_step():
    for row in generate_trajectories(300, seed=2, negative_fraction=0.0)[::4]:
        _, operations = parse_problem(row["problem"])
        steps, boxed = parse_completion(row["completion"])
        values = solve(row["problem"])
        assert [(left, op, operand) for left, op, operand, _ in steps] == [
            (value, op, operand) for value, (op, operand) in zip(values[:-1], operations, strict=True)
        ]
        assert [result for *_, result in steps] == values[1:] and boxed == values[-1]


def test_negatives_make_one_realistic_mistake():
    rows = [row for row in generate_trajectories(500, seed=0) if not row["correct"]]
    kinds = collections.Counter()
    for row in rows:
        kind, k = classify_negative(row["problem"], row["completion"])
        kinds[kind] += 1
        if kind == "slip":
            # A middle step, so the error propagates through at least one later (correctly computed) step.
            steps, _ = parse_completion(row["completion"])
            assert 1 <= k < len(steps) - 1
            assert steps[-1][3] != solve(row["problem"])[-1]
    assert set(kinds) == {"slip", "last_step", "boxed"}
    assert kinds["slip"] > 0.35 * len(rows) and min(kinds.values()) > 0.1 * len(rows)


def test_splits_are_disjoint_and_documented():
    splits = {
        split: generate_problems(n, seed=0, split=split)
        for split, n in [("train", 2000), ("in_domain", 500), ("out_of_domain", 300)]
    }
    texts = {split: {p["problem"] for p in rows} for split, rows in splits.items()}
    assert [len(t) for t in texts.values()] == [2000, 500, 300]  # distinct problems within a split
    assert not texts["train"] & texts["in_domain"]
    assert not texts["train"] & texts["out_of_domain"] and not texts["in_domain"] & texts["out_of_domain"]
    # The train/in_domain partition holds across seeds too.
    assert not texts["train"] & {p["problem"] for p in generate_problems(500, seed=1, split="in_domain")}
    ids = [p["problem_id"] for rows in splits.values() for p in rows]
    assert len(set(ids)) == len(ids)
    for split, rows in splits.items():
        lengths = collections.Counter()
        for p in rows:
            values = solve(p["problem"])
            assert p["answer"] == str(values[-1])
            assert all(0 <= v <= MAX_VALUE for v in values) and 1 <= values[0] <= 9
            lengths[len(values) - 1] += 1
        low, high = NUM_STEPS[split]
        assert set(lengths) == set(range(low, high + 1))
    assert NUM_STEPS["train"] == NUM_STEPS["in_domain"] == (3, 4) and NUM_STEPS["out_of_domain"] == (5, 6)
    ops = collections.Counter(op for p in splits["train"] for op, _ in parse_problem(p["problem"])[1])
    assert min(ops.values()) > 0.15 * sum(ops.values())  # all three operations are well represented


def test_bundled_file_matches_the_generator():
    path = resources.files("glowrl").joinpath("assets/arithmetic_trajectories.jsonl")
    text = path.read_text(encoding="utf-8")
    assert len(text.encode()) <= 100_000
    rows = [json.loads(line) for line in text.splitlines()]
    # Regenerate with: glowrl arithmetic-data --num_problems 50 --seed 0 --output <this file> --overwrite
    assert rows == generate_trajectories(50, seed=0, samples_per_problem=4, negative_fraction=0.5)
    groups = collections.defaultdict(set)
    for row in rows:
        groups[row["problem_id"]].add(row["correct"])
    assert sum(g == {True, False} for g in groups.values()) >= 0.9 * len(groups)


def test_bundled_evaluation_splits_match_the_generator():
    for split in ("in_domain", "out_of_domain"):
        rows = read_jsonl(resources.files("glowrl").joinpath(f"assets/arithmetic_{split}.jsonl"))
        assert rows == generate_problems(50, seed=0, split=split)


def test_cli_and_write_jsonl(tmp_path, capsys):
    output = tmp_path / "sub" / "traj.jsonl"
    argv = ["arithmetic-data", "--num_problems", "5", "--seed", "3", "--output", str(output)]
    assert glowrl_main(argv) == 0
    assert "20 trajectories" in capsys.readouterr().out
    assert glowrl_main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    rows = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert rows == generate_trajectories(5, seed=3)
    write_jsonl(rows[:2], tmp_path / "two.jsonl")
    assert (tmp_path / "two.jsonl").read_text(encoding="utf-8").count("\n") == 2


def test_tokenizer_corpus_covers_every_symbol():
    corpus = tokenizer_corpus(seed=0)
    assert corpus == tokenizer_corpus(seed=0)
    text = "\n".join(corpus)
    assert INSTRUCTION in text
    for symbol in ["Start with", "Add", "Subtract", "Multiply by", "What is the result?", "Step", "The answer is"]:
        assert symbol in text
    for symbol in [*"0123456789", "+", "-", "*", "=", ":", ".", "\\boxed{", "}", "= -"]:
        assert symbol in text
    # Every character of every split is in the corpus, so the trained tokenizer never meets an unseen symbol.
    alphabet = set(text)
    for split in NUM_STEPS:
        for p in generate_problems(50, seed=7, split=split):
            assert set(user_prompt(p["problem"])) <= alphabet
    assert set("".join(row["completion"] for row in generate_trajectories(50, seed=7))) <= alphabet
