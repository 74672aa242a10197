r"""Tests for `glowrl.rewards`: the TRL reward functions and their registry.

Covers `math_accuracy` on string and conversational completions, gold from the `answer` or the `solution` column,
`None` and the `rewards/gold_unparsed` count for golds that do not parse, the call exactly as `GRPOTrainer` makes it,
the `boxed_format` and `think_format` format checks, that no reward raises or hangs on adversarial text, and
`REWARD_FUNCS` / `get_reward_funcs`.

Run: `python -m pytest tests/test_rewards.py -q`
"""

import time

import pytest

from glowrl.rewards import REWARD_FUNCS, boxed_format, get_reward_funcs, math_accuracy, think_format


def conversational(texts: list[str]) -> list[list[dict[str, str]]]:
    return [[{"role": "assistant", "content": text}] for text in texts]


TEXTS = [r"so \boxed{\frac{1}{3}}", r"so \boxed{0.5}", "no box", r"\boxed{2}"]
GOLDS = [r"\frac{1}{3}", r"\frac{1}{3}", r"\frac{1}{3}", "2"]


@pytest.mark.parametrize("as_messages", [False, True], ids=["str", "conversational"])
def test_math_accuracy_answer_column(as_messages):
    completions = conversational(TEXTS) if as_messages else TEXTS
    assert math_accuracy(completions, answer=GOLDS) == [1.0, 0.0, 0.0, 1.0]


def test_math_accuracy_solution_column_uses_last_box():
    solutions = [rf"First \boxed{{0}} was wrong; in fact $x = \boxed{{{gold}}}$." for gold in GOLDS]
    assert math_accuracy(conversational(TEXTS), solution=solutions) == [1.0, 0.0, 0.0, 1.0]


def test_math_accuracy_answer_wins_over_solution_where_present():
    rewards = math_accuracy(TEXTS[:2], answer=[r"\frac{1}{3}", None], solution=[r"\boxed{0.5}", r"\boxed{0.5}"])
    assert rewards == [1.0, 1.0]  # row 0 grades against `answer`, row 1 falls back to its `solution`


def test_math_accuracy_unparseable_gold_is_none_and_counted():
    logged = []
    rewards = math_accuracy(
        TEXTS, answer=["\\frac{", r"\frac{1}{3}", "", "2"], log_metric=lambda name, value: logged.append((name, value))
    )
    assert rewards == [None, 0.0, None, 1.0]
    assert logged == [("rewards/gold_unparsed", 2)]


def test_math_accuracy_logs_zero_when_every_gold_parses():
    logged = []
    math_accuracy(TEXTS, answer=GOLDS, log_metric=lambda name, value: logged.append((name, value)))
    assert logged == [("rewards/gold_unparsed", 0)]  # logged every call, so the trainer's mean counts clean batches


def test_math_accuracy_called_as_grpo_trainer_calls_it():
    # GRPOTrainer._calculate_rewards passes every dataset column (rows repeated per generation) and these extras.
    logged, extra = {}, {}
    rewards = math_accuracy(
        prompts=conversational(["q1", "q1"]),
        completions=conversational([r"\boxed{4}", r"\boxed{5}"]),
        completion_ids=[[1, 2], [3]],
        answer=["4", "4"],
        solution=[r"\boxed{4}", r"\boxed{4}"],
        problem=["2+2?", "2+2?"],
        trainer_state=None,
        log_extra=lambda column, values: extra.setdefault(column, values),
        log_metric=lambda name, value: logged.setdefault(name, value),
    )
    assert rewards == [1.0, 0.0]
    assert logged == {"rewards/gold_unparsed": 0}


def test_math_accuracy_without_gold_column_raises():
    with pytest.raises(ValueError, match="answer.*solution"):
        math_accuracy(TEXTS)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"The answer is \boxed{7}.", 1.0),
        (r"\fbox{x + 1} and more } text", 1.0),  # text after the box does not matter
        (r"The answer is \boxed{7", 0.0),  # never closed
        (r"\boxed{}", 0.0),  # empty
        (r"\boxed{  }", 0.0),  # blank
        ("The answer is 7.", 0.0),
        ("", 0.0),
    ],
)
def test_boxed_format(text, expected):
    assert boxed_format([text]) == [expected]
    assert boxed_format(conversational([text])) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>\n2 + 2 = 4\n</think>\nThe answer is 4.", 1.0),
        ("\n  <think>ok</think>4", 1.0),  # leading whitespace is fine
        ("<think>\n2 + 2 = 4\nThe answer is 4.", 0.0),  # never closed
        ("<think>2 + 2 = 4</think>\n  \n", 0.0),  # nothing after the block
        ("The answer is 4. <think>why</think> 4", 0.0),  # block not at the start
        ("<think>a</think><think>b</think> 4", 0.0),  # two blocks
        ("<think>a <think> b</think> 4", 0.0),  # nested open tag
        ("<think>a</think> 4 </think>", 0.0),  # stray close tag
        ("2 + 2 = 4</think> 4", 0.0),  # no open tag
        ("", 0.0),
    ],
)
def test_think_format(text, expected):
    assert think_format([text]) == [expected]
    assert think_format(conversational([text])) == [expected]


ODD_COMPLETIONS = [
    "",
    "\\boxed{" + "{" * 10_000 + "}" * 10_000 + "}",
    "\\boxed{" * 5_000,
    "<think>" * 5_000 + "</think>" * 5_000,
    "\x00\ud800\U0001f600\u202e \\boxed{\ufffd}",
    "\\boxed{4^{4^{4^{4^{4}}}}}",
    [],  # a conversational completion with no message
    [{"role": "assistant", "content": None}],  # a tool-call turn with no text
    [{"role": "assistant", "content": [{"type": "text", "text": r"\boxed{1}"}, {"type": "image"}]}],  # multimodal
    None,
]


@pytest.mark.parametrize("reward_func", list(REWARD_FUNCS.values()), ids=list(REWARD_FUNCS))
def test_rewards_never_raise_and_are_bounded(reward_func, monkeypatch):
    monkeypatch.setattr("glowrl.grading.verifier.GRADING_TIMEOUT", 1.0)
    start = time.monotonic()
    rewards = reward_func(ODD_COMPLETIONS, answer=["1"] * len(ODD_COMPLETIONS))
    assert time.monotonic() - start < 10.0  # one 1 s timeout plus a worker restart, with room for a slow machine
    expected_math = [0.0] * 8 + [1.0, 0.0]  # only the multimodal completion boxes the right answer
    expected = {"math_accuracy": expected_math, "boxed_format": [0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]}
    assert rewards == expected.get(reward_func.__name__, [0.0] * len(ODD_COMPLETIONS))


def test_reward_names_are_metric_keys():
    # TRL logs each reward as rewards/<__name__>/mean, so the registry key, the name and the metric must agree.
    assert all(name == func.__name__ for name, func in REWARD_FUNCS.items())
    assert set(REWARD_FUNCS) == {"math_accuracy", "boxed_format", "think_format"}


def test_get_reward_funcs_keeps_order():
    assert get_reward_funcs(["think_format", "math_accuracy"]) == [think_format, math_accuracy]
    assert get_reward_funcs("boxed_format") == [boxed_format]


def test_get_reward_funcs_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"\['accuracy'\].*boxed_format.*math_accuracy.*think_format"):
        get_reward_funcs(["math_accuracy", "accuracy"])
