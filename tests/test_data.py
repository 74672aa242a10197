"""Trajectory loading, mixing, labelling with math-verify, data arms and sample ids.

python -m pytest tests/test_data.py
"""

import json
from importlib import resources

import pytest
from utils import read_jsonl

from glowrl.chat import DEFAULT_INSTRUCTION
from glowrl.cli import main as glowrl_main
from glowrl.data import TrajectoryArguments, build_trajectory_dataset
from glowrl.errors import DataError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def build(paths, **kwargs):
    return build_trajectory_dataset(TrajectoryArguments(dataset_paths=paths, **kwargs))


def test_accepts_every_documented_format(tmp_path):
    chat = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": r"\boxed{2}"}]
    files = [
        write(tmp_path / "a.jsonl", [{"prompt": "1+1?", "completion": r"\boxed{2}"}]),
        write(tmp_path / "b.jsonl", [{"messages": chat}]),
        write(tmp_path / "c.jsonl", [{"problem": "1+1?", "completion": r"\boxed{2}"}]),
        write(tmp_path / "d.jsonl", [{"prompt": chat[:1], "completion": chat[1:]}]),
    ]
    dataset = build(files, system_prompt="Be brief.")
    assert dataset["sample_id"] == [0, 1, 2, 3]
    assert all(c == [{"role": "assistant", "content": r"\boxed{2}"}] for c in dataset["completion"])
    # a bare problem gets the shared instruction; string prompts get the system turn
    assert dataset[2]["prompt"][-1]["content"] == f"1+1?\n{DEFAULT_INSTRUCTION}"
    assert dataset[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert dataset["source"] == files


def test_sample_ids_are_unique_across_a_mixture_and_assigned_after_filtering(tmp_path):
    pos = write(tmp_path / "pos.jsonl", [{"prompt": f"q{i}", "completion": "c", "correct": True} for i in range(3)])
    neg = write(tmp_path / "neg.jsonl", [{"prompt": f"q{i}", "completion": "c", "correct": False} for i in range(3)])
    mixed = build([pos, neg])
    assert mixed["sample_id"] == list(range(6))  # the published code gave both files ids 0..2
    negatives = build([pos, neg], trajectories="negative")
    assert negatives["sample_id"] == [0, 1, 2] and negatives["correct"] == [False] * 3
    assert build([pos, neg], trajectories="positive")["correct"] == [True] * 3


def test_labels_math500_solutions_with_math_verify(tmp_path):
    rows = read_jsonl(resources.files("glowrl").joinpath("assets/eval_sets/math500.jsonl"))[:12]  # shipped unchanged
    trajectories = [{"problem": r["problem"], "completion": r["solution"], "answer": r["answer"]} for r in rows]
    # pair each problem with the next problem's worked solution: a wrong final answer
    trajectories += [
        {"problem": r["problem"], "completion": rows[(i + 1) % len(rows)]["solution"], "answer": r["answer"]}
        for i, r in enumerate(rows)
        if rows[(i + 1) % len(rows)]["answer"] != r["answer"]
    ]
    dataset = build([write(tmp_path / "t.jsonl", trajectories)])
    assert dataset["correct"][: len(rows)] == [True] * len(rows)
    assert dataset["correct"][len(rows) :] == [False] * (len(trajectories) - len(rows))

    output = tmp_path / "labelled.jsonl"
    assert glowrl_main(["label", "--input", str(tmp_path / "t.jsonl"), "--output", str(output)]) == 0
    labelled = read_jsonl(output)
    assert [r["correct"] for r in labelled] == dataset["correct"]
    assert labelled[0]["problem"] == rows[0]["problem"]  # the other columns are kept as they were


def test_existing_labels_are_kept_and_missing_ones_filled(tmp_path):
    rows = [
        {"prompt": "q", "completion": r"\boxed{3}", "answer": "3", "correct": False},  # label given: kept
        {"prompt": "q", "completion": r"\boxed{3}", "answer": "3", "correct": None},  # missing: labelled
        {"prompt": "q", "completion": r"\boxed{4}", "answer": "3", "correct": None},
    ]
    assert build([write(tmp_path / "t.jsonl", rows)])["correct"] == [False, True, False]


@pytest.mark.parametrize(
    ("rows", "kwargs", "message"),
    [
        ([{"prompt": "q", "text": "c"}], {}, "no completion column 'completion'"),
        ([{"question": "q", "completion": "c"}], {}, "no prompt column 'prompt' or problem column 'problem'"),
        ([{"prompt": "q", "completion": "   "}, {"prompt": "q", "completion": ""}], {}, "every completion is empty"),
        ([{"prompt": "q", "completion": "c", "correct": True}], {"trajectories": "negative"}, "0 incorrect"),
        ([{"prompt": "q", "completion": "c"}], {"trajectories": "positive"}, "neither a 'correct' nor an 'answer'"),
    ],
)
def test_bad_data_is_a_clear_error(tmp_path, rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build([write(tmp_path / "t.jsonl", rows)], **kwargs)


def test_empty_completions_are_left_out_and_named(tmp_path, capsys):
    rows = [
        {"prompt": "q", "completion": r"\boxed{3}", "answer": "3"},
        {"prompt": "q", "completion": "", "answer": "3"},  # the teacher ended its turn at once
        {"prompt": "q", "completion": " \n\t", "answer": "3"},  # whitespace only
        {"prompt": "q", "completion": "<think>\n", "answer": "3", "correct": False, "empty": True},  # stage 0's mark
        {"prompt": "q", "completion": r"\boxed{4}", "answer": "3"},
    ]
    first = write(tmp_path / "t.jsonl", rows)
    second = write(tmp_path / "u.jsonl", [{"prompt": "p", "completion": " ", "correct": True}, *rows[:1]])
    dataset = build([first, second])
    texts = [c[0]["content"] for c in dataset["completion"]]
    assert texts == [r"\boxed{3}", r"\boxed{4}", r"\boxed{3}"]
    assert dataset["correct"] == [True, False, True] and dataset["sample_id"] == [0, 1, 2]
    assert "empty" not in dataset.column_names and "row" not in dataset.column_names
    out = capsys.readouterr().out
    assert (
        f"Left out 4 trajectories whose completion is empty (no tokens to train on): {first} row 1, {first} row 2, "
        f"{first} row 3, {second} row 0\n" in out
    )


def test_missing_local_path_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build([str(tmp_path / "missing.jsonl")])


def test_label_without_answer_column_is_refused(tmp_path, capsys):
    source = write(tmp_path / "t.jsonl", [{"prompt": "q", "completion": "c"}])
    assert glowrl_main(["label", "--input", source, "--output", str(tmp_path / "out.jsonl")]) == 2
    assert "--answer_column" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_bundled_trajectories_load_with_both_arms():
    path = str(resources.files("glowrl").joinpath("assets/arithmetic_trajectories.jsonl"))
    dataset = build([path])
    assert len(dataset) > 100 and set(dataset["correct"]) == {True, False}


def test_nothing_left_to_train_on_is_one_line_naming_why(tmp_path):
    """A real model's samples that all ran past max_new_tokens (dropped unless keep_truncated): not an empty dataset
    for TRL to fail on (`StopIteration` in SFTTrainer), but the count and the fixes."""
    rows = [{"problem": "q", "completion": "c", "answer": "1", "correct": False, "truncated": True}] * 3
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"no trajectory is left to train on \(3 of the 3 read were truncated"):
        build_trajectory_dataset(TrajectoryArguments(dataset_paths=[str(path)]))
    assert len(build_trajectory_dataset(TrajectoryArguments(dataset_paths=[str(path)], keep_truncated=True))) == 3
