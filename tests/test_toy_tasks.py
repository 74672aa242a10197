"""Tests for the out-of-domain toy tasks (`glowrl.toy.tasks`) and the pretrained tiny base (`glowrl.demo.pretrain`).

Every solution is checked with an independent solver here (the answer recomputed from the problem text, not with
the module's own generators) and with the grader the evaluation uses; the train/test split is checked to be
disjoint over several seeds; the primitives are checked to cover every step of a correct arithmetic chain; and a
ci-size base model is pretrained for real and loaded (slow).
"""

import collections
import itertools
import json
import re

import pytest

from glowrl.demo.pretrain import SIZES, benchmark_path, build_pretrained_base
from glowrl.grading import verify_batch
from glowrl.io import read_jsonl
from glowrl.toy import arithmetic
from glowrl.toy.tasks import (
    MAX_VALUE,
    PRIMITIVE,
    SEQUENCE_MAX,
    TASKS,
    benchmark_rows,
    pretraining_rows,
    primitive_trajectories,
    task_trajectories,
    tokenizer_corpus,
)


ROW_KEYS = ["problem_id", "problem", "prompt", "completion", "answer", "correct", "task"]
ANSWER_LINE = re.compile(r"The answer is \\boxed\{(\d+)\}\.")


def solve(problem: str) -> int:
    """The answer of any task's or primitive's problem, computed from its text alone."""
    if match := re.fullmatch(r"What is the largest number in the list ([\d, ]+)\?", problem):
        return max(int(x) for x in match[1].split(", "))
    if match := re.fullmatch(r"What is the next number in the sequence ([\d, ]+)\?", problem):
        terms = [int(x) for x in match[1].split(", ")]
        assert len({b - a for a, b in itertools.pairwise(terms)}) == 1, problem  # an arithmetic sequence
        return terms[-1] + terms[1] - terms[0]
    if match := re.fullmatch(r"How many times does the digit (\d) appear in (\d+)\?", problem):
        return match[2].count(match[1])
    if match := re.fullmatch(r"What is the sum of the digits of (\d+)\?", problem):
        return sum(int(d) for d in match[1])
    if match := re.fullmatch(r"What is (\d+) ([+*-]) (\d+)\?", problem):
        a, op, b = int(match[1]), match[2], int(match[3])
        return {"+": a + b, "-": a - b, "*": a * b}[op]
    raise AssertionError(f"unknown problem shape: {problem!r}")


def test_rows_are_deterministic_prefixes_and_seeded():
    assert pretraining_rows(20, seed=3, primitive_copies=2) == pretraining_rows(20, seed=3, primitive_copies=2)
    for task in TASKS:
        assert task_trajectories(task, 30, seed=1) == task_trajectories(task, 30, seed=1)
        assert task_trajectories(task, 10, seed=1) == task_trajectories(task, 30, seed=1)[:10]
        assert benchmark_rows(task, 10, seed=1) == benchmark_rows(task, 30, seed=1)[:10]
        assert task_trajectories(task, 30, seed=1) != task_trajectories(task, 30, seed=2)
    assert tokenizer_corpus(0) == tokenizer_corpus(0)


def test_rows_have_the_trajectory_and_benchmark_schemas():
    rows = pretraining_rows(10, seed=0)
    assert all(list(row) == ROW_KEYS and row["correct"] is True for row in rows)
    assert {row["task"] for row in rows} == {*TASKS, PRIMITIVE}
    for task in TASKS:
        ids = [row["problem_id"] for row in task_trajectories(task, 50, seed=0)]
        assert len(set(ids)) == 50
        problems = [row["problem"] for row in task_trajectories(task, 50, seed=0)]
        assert len(set(problems)) == 50  # distinct problems
        bench = benchmark_rows(task, 50, seed=0)
        assert all(set(row) == {"id", "problem_id", "problem", "answer", "task"} for row in bench)
        assert len({row["problem"] for row in bench}) == 50
    assert all(row["prompt"] == f"{row['problem']}\n{arithmetic.INSTRUCTION}" for row in rows)
    with pytest.raises(ValueError, match="task must be one of"):
        task_trajectories("sorting", 1)


def test_every_solution_is_right_and_graded_right():
    rows = pretraining_rows(200, seed=0)
    for row in rows:
        *steps, last = row["completion"].split("\n")
        assert ANSWER_LINE.fullmatch(last), row["completion"]
        assert steps, row["completion"]
        assert int(row["answer"]) == solve(row["problem"]), row
        assert ANSWER_LINE.fullmatch(last)[1] == row["answer"]
    assert verify_batch([r["completion"] for r in rows], [r["answer"] for r in rows]) == [1.0] * len(rows)
    for task in TASKS:
        bench = benchmark_rows(task, 60, seed=0)
        assert all(int(row["answer"]) == solve(row["problem"]) for row in bench)


def test_solution_steps_are_right():
    """Each step line of each task's solutions is a true statement about the problem (not only the final box)."""
    for task in TASKS:
        for row in task_trajectories(task, 100, seed=0):
            steps = row["completion"].split("\n")[:-1]
            if task == "max_of_list":
                numbers = [int(x) for x in re.findall(r"\d+", row["problem"])]
                best = numbers[0]
                for number, line in zip(numbers[1:], steps, strict=True):
                    assert line == f"The larger of {best} and {number} is {max(best, number)}.", row
                    best = max(best, number)
            elif task == "next_term":
                terms = [int(x) for x in re.findall(r"\d+", row["problem"])]
                direction, a, b, step = re.fullmatch(
                    r"The numbers go (up|down) by (\d+) - (\d+) = (\d+)\.", steps[0]
                ).groups()
                up = terms[1] > terms[0]
                assert direction == ("up" if up else "down") and (int(a), int(b)) == tuple(
                    terms[1::-1] if up else terms[:2]
                )
                assert int(a) - int(b) == int(step) == abs(terms[1] - terms[0])
                sign = "+" if up else "-"
                assert steps[1] == f"The next number is {terms[-1]} {sign} {step} = {row['answer']}.", row
                assert 0 <= int(row["answer"]) <= SEQUENCE_MAX and max(terms) <= SEQUENCE_MAX
            elif task == "digit_count":
                target, number = re.fullmatch(
                    r"How many times does the digit (\d) appear in (\d+)\?", row["problem"]
                ).groups()
                for i, (digit, line) in enumerate(zip(number, steps, strict=True), 1):
                    mark = "yes" if digit == target else "no"
                    assert line == f"{digit} vs {target}: {mark}, count {number[:i].count(target)}.", row
            else:
                digits = [int(d) for d in re.search(r"\d+", row["problem"])[0]]
                for i, line in enumerate(steps, 1):
                    assert line == f"{sum(digits[:i])} + {digits[i]} = {sum(digits[: i + 1])}.", row


def test_no_test_problem_in_the_pretraining_corpus():
    counts = SIZES["full"]["problems_per_task"]
    pretraining = {row["problem"] for seed in (0, 1, 2) for row in pretraining_rows(counts, seed)}
    for task in TASKS:
        test = {row["problem"] for seed in (0, 1, 2, 7) for row in benchmark_rows(task, 60, seed)}
        assert not test & pretraining, task
    # Nor any arithmetic chain, of any split: the chains are what SFT teaches.
    assert not any(p.startswith("Start with") for p in pretraining)
    assert all(row["completion"].count("\n") == 1 for row in primitive_trajectories())


def test_primitives_cover_every_step_of_a_correct_chain():
    facts = {row["completion"].split("\n")[0] for row in primitive_trajectories()}
    assert len(facts) == len(primitive_trajectories())  # each fact once
    steps = {
        line.split(": ", 1)[1]
        for row in arithmetic.generate_trajectories(300, seed=0)
        if row["correct"]
        for line in row["completion"].split("\n")[:-1]
    }
    assert steps <= facts


def test_task_arithmetic_is_primitive_facts():
    """The sums and differences the tasks write are facts the base is taught directly (adding 0 aside)."""
    facts = {row["completion"].split("\n")[0] for row in primitive_trajectories()}
    equation = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")
    for task in ("next_term", "digit_sum"):
        rows = task_trajectories(task, 200, seed=0) + benchmark_rows(task, 60, seed=0)
        for row in rows:
            for a, op, b, c in equation.findall(row.get("completion", "")):
                assert int(c) <= MAX_VALUE and (b == "0" or f"{a} {op} {b} = {c}." in facts), row
        assert all(int(row["answer"]) <= MAX_VALUE for row in rows)
    counts = collections.Counter(row["answer"] for row in task_trajectories("digit_count", 400, seed=0))
    assert set(counts) == {"0", "1", "2", "3"} and min(counts.values()) > 60  # the count drawn uniformly


def test_tokenizer_corpus_covers_every_task():
    corpus = tokenizer_corpus(0)
    text = "\n".join(corpus)
    for task in TASKS:
        row = task_trajectories(task, 1, seed=0)[0]
        assert row["prompt"] in corpus and row["completion"] in corpus
    assert primitive_trajectories()[0]["completion"] in corpus
    assert any(line.startswith("Start with") for line in corpus)  # the arithmetic chains too
    used = {
        char
        for task in TASKS
        for row in task_trajectories(task, 100, seed=5) + benchmark_rows(task, 60, seed=5)
        for char in row["problem"] + row.get("completion", "")
    }
    used |= {
        char for row in arithmetic.generate_trajectories(50, seed=5) for char in row["prompt"] + row["completion"]
    }
    assert used <= set(text)


@pytest.mark.slow
def test_ci_base_is_a_loadable_pretrained_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = build_pretrained_base(tmp_path, "ci", seed=0)
    assert base == tmp_path / "base"
    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert json.loads((base / "trainer_state.json").read_text())["global_step"] > 0
    initial = AutoModelForCausalLM.from_pretrained(tmp_path / "init")
    assert any(not torch.equal(a, b) for a, b in zip(initial.parameters(), model.parameters(), strict=True))
    pretrain = read_jsonl(tmp_path / "data" / "pretrain.jsonl")
    assert {row["task"] for row in pretrain} == {*TASKS, PRIMITIVE}
    for task in TASKS:
        bench = read_jsonl(benchmark_path(tmp_path, task))
        assert len(bench) == SIZES["ci"]["benchmark_problems"]
        assert not {row["problem"] for row in bench} & {row["problem"] for row in pretrain}
    assert len(read_jsonl(tmp_path / "data" / "in_domain.jsonl")) == SIZES["ci"]["benchmark_problems"]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": pretrain[0]["prompt"]}], add_generation_prompt=True, tokenize=False
    )
    input_ids = tokenizer(text, return_tensors="pt")["input_ids"]
    output = model.generate(input_ids, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > input_ids.shape[1]
