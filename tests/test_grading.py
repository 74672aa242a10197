r"""Tests for `glowrl.grading`: box extraction, math equivalence, unparseable golds, and the time bound.

Covers `extract_boxed` edge cases (text and stray `}` after the box, nesting, `\fbox`, last box wins, long inputs),
`verify_answer` / `verify_batch` / `answers_match` on plain and LaTeX golds, every MATH-500 solution against its own
answer and against its neighbour's, and that adversarial inputs return within the bound without raising, from the
main thread, from other threads and from a forked process.

Run: `python -m pytest tests/test_grading.py -q`
"""

import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from glowrl.grading import answers_match, extract_boxed, verify_answer, verify_batch
from glowrl.grading.verifier import MAX_ANSWER_CHARS
from glowrl.io import read_jsonl


REPO = Path(__file__).resolve().parents[1]
# The generous ceiling for one call with a 1 s timeout: the timeout, plus starting a replacement worker (about a second
# on a loaded 2-core machine). Without the bound these inputs run for minutes.
TIMEOUT = 1.0
BOUND = 10.0


def load_math500() -> list[dict]:
    for path in (REPO / "glowrl/assets/eval_sets/math500.jsonl", REPO.parent / "shared/data/benchmarks/math500.jsonl"):
        if path.exists():
            with open(path) as f:
                return [json.loads(line) for line in f]
    pytest.skip("math500.jsonl is in neither glowrl/assets/eval_sets/ nor ../shared/data/benchmarks/")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{5}. Done }} {", "5"),  # text after the box, stray `}` included, is ignored
        (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),  # nested braces
        (r"\fbox{7}", "7"),  # \fbox counts as a box
        (r"\boxed{1} no, \boxed{2}", "2"),  # the last box wins
        (r"\boxed{1} then \boxed{2", "1"),  # a box never closed (truncated output) is skipped
        (r"\boxed{\boxed{3}}", "3"),  # the box that opens last
        (r"$\boxed 5$", "5"),  # brace-less box
        (r"\boxed {4}", "4"),  # space before the brace
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),  # escaped braces do not count
        (r"\boxed{\left\{ x \right.}", r"\left\{ x \right."),  # even when unbalanced
        (r"\boxed{a \\ {b}}", r"a \\ {b}"),  # `\\` is a line break, and the `{` after it a real brace
        (r"\boxedx{1}", None),  # another command
        (r"\boxed{", None),
        ("the answer is 7", None),
        ("", None),
        (None, None),  # not even a string
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_extract_boxed_long_nested_input_is_fast():
    nested = "\\boxed{" + "{" * 10_000 + "x" + "}" * 10_000 + "}"
    unclosed = "\\boxed{" * 3_000 + "{" * 10_000
    start = time.monotonic()
    assert extract_boxed(nested) == "{" * 10_000 + "x" + "}" * 10_000
    assert extract_boxed(unclosed) is None
    assert time.monotonic() - start < 1.0  # a rescan from every `\boxed{` would be quadratic


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (r"so \boxed{\dfrac{28}{6}}", r"\frac{14}{3}", 1.0),  # equivalent, not equal
        (r"\boxed{27}", "27.0", 1.0),  # plain number gold
        (r"\boxed{(3, \frac{\pi}{2})}", r"\left( 3, \frac{\pi}{2} \right)", 1.0),  # tuples, \left( \right)
        (r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", 1.0),  # text answers
        (r"\boxed{\frac43}", r"\frac{4}{3}", 1.0),  # brace-less \frac, common in MATH
        (r"\boxed{0.5}", r"\frac12", 1.0),
        (r"\boxed{3, 5, 7}", "7, 5, 3", 1.0),  # solution sets
        (r"\boxed{2}", r"worked solution ... so \boxed{2}.", 1.0),  # a gold solution's last box is the gold
        (r"\boxed{7}", 7, 1.0),  # an int gold from a dataset column
        (r"\boxed{8}", "7", 0.0),
        (r"\boxed{\frac{14}{3}}", "4.6667", 0.0),
        ("the answer is 7", "7", 0.0),  # no box
        (r"\boxed{}", "7", 0.0),  # empty box
        (r"\boxed{1}", "\\frac{", None),  # gold does not parse
        ("no box", "\\frac{", None),  # ... even when there is no box
        (r"\boxed{1}", "", None),
        (r"\boxed{1}", None, None),
    ],
)
def test_verify_answer(completion, gold, expected):
    assert verify_answer(completion, gold) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        (r"\frac{1}{2}", "0.5", True),
        ("3,5,7", "3, 5, 7", True),
        (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", True),
        (r"x = 5", "5", True),  # math-verify reads an assignment as its value
        ("1000", "1000.0", True),
        ("2", "3", False),
        (r"\sqrt{2}", "1.41", False),
        ("", "1", False),
        ("1", "\\frac{", None),  # gold does not parse
    ],
)
def test_answers_match(pred, gold, expected):
    assert answers_match(pred, gold) is expected


def test_verify_batch_aligned_with_duplicates():
    completions = [r"\boxed{2}", r"\boxed{\sqrt{4}}", r"\boxed{3}", r"\boxed{2}", "none", r"\boxed{2}"]
    golds = ["2", "2", "2", "2", "2", "\\frac{"]
    assert verify_batch(completions, golds) == [1.0, 1.0, 0.0, 1.0, 0.0, None]
    assert verify_batch([], []) == []


def test_math500_solution_matches_own_answer():
    rows = load_math500()
    scores = verify_batch([row["solution"] for row in rows], [row["answer"] for row in rows])
    assert sum(score == 1.0 for score in scores) >= 0.99 * len(rows)


def test_math500_solution_does_not_match_next_answer():
    rows = load_math500()
    pairs = [(rows[i + 1]["solution"], rows[i]["answer"]) for i in range(len(rows) - 1)]
    pairs = [pair for i, pair in enumerate(pairs) if rows[i + 1]["answer"] != rows[i]["answer"]]  # same gold: skip
    scores = verify_batch(*zip(*pairs, strict=True))
    assert sum(score == 0.0 for score in scores) >= 0.99 * len(pairs)


def test_verify_batch_rejects_misuse():
    with pytest.raises(ValueError):
        verify_batch([r"\boxed{1}"], ["1", "2"])  # misaligned lists
    with pytest.raises(ValueError, match="timeout"):
        verify_answer(r"\boxed{1}", "1", timeout=0)  # not math-verify's "0 disables the timeout"


ADVERSARIAL = [
    "",
    "no box at all " * 1_000,
    "\\boxed{" + "{" * 10_000 + "}" * 10_000 + "}",  # 20,000 nested braces
    "\\boxed{" + "{" * 60 + "1" + "}" * 60 + "}",  # short enough to reach math-verify, which then recurses for long
    "\\boxed{" * 5_000 + "}" * 3,  # unbalanced
    "\\boxed{{{1}",
    "\\boxed{}}}}{{{{",
    "\\boxed{\x00\ud800\U0001f600\u202e\ufffd}",  # NUL, lone surrogate, emoji, bidi override
    "\\boxed{9^{9^{9^{9}}}}",  # an integer with billions of digits
    "\\boxed{2^{10^{10}}}",
    "\\boxed{(1+x)^{1000000}}",
    "\\boxed{" + "x" * (MAX_ANSWER_CHARS + 1) + "}",
]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=range(len(ADVERSARIAL)))
def test_verify_answer_adversarial_completion_is_bounded(completion):
    start = time.monotonic()
    assert verify_answer(completion, "3", timeout=TIMEOUT) == 0.0
    assert time.monotonic() - start < BOUND


def test_gold_that_does_not_parse_in_time_is_none():
    start = time.monotonic()
    assert verify_answer(r"\boxed{1}", "x" * 20_000, timeout=TIMEOUT) is None  # parsing this gold takes ~15 s
    assert time.monotonic() - start < BOUND


def test_grader_recovers_after_timeout():
    assert verify_answer(r"\boxed{3^{3^{3^{3^{3}}}}}", "4", timeout=TIMEOUT) == 0.0
    assert verify_answer(r"\boxed{\sqrt{16}}", "4", timeout=TIMEOUT) == 1.0


def test_bound_holds_off_the_main_thread():
    # math-verify's own timeouts use signal.alarm, which raises ValueError outside the main thread.
    hard = [r"\boxed{7^{7^{7^{7}}}}", r"\boxed{(2+y)^{999999}}", r"\boxed{6^{10^{10}}}"]
    easy = [r"\boxed{\frac{10}{2}}", r"\boxed{5.0}", r"\boxed{6}"]
    completions, expected = hard + easy, [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    start = time.monotonic()
    with ThreadPoolExecutor(len(completions)) as pool:
        scores = list(pool.map(lambda c: verify_answer(c, "5", timeout=TIMEOUT), completions))
    assert scores == expected
    assert time.monotonic() - start < BOUND

    result = []
    thread = threading.Thread(target=lambda: result.append(verify_batch([r"\boxed{8^{8^{8^{8}}}}"], ["5"], timeout=1)))
    start = time.monotonic()
    thread.start()
    thread.join(BOUND)
    assert result == [[0.0]]
    assert time.monotonic() - start < BOUND


def _grade_in_child(gold):
    return verify_answer(r"\boxed{\frac{9}{3}}", gold)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_children_do_not_share_the_parents_worker():
    assert verify_answer(r"\boxed{\frac{8}{2}}", "4") == 1.0  # the parent now holds an idle worker
    golds = [r"\sqrt{9}", r"\sqrt{8}", r"\sqrt{9}", r"\sqrt{7}"]
    with multiprocessing.get_context("fork").Pool(4) as pool:  # as `datasets.map(num_proc=4)` does
        assert pool.map(_grade_in_child, golds, chunksize=1) == [1.0, 0.0, 1.0, 0.0]
    assert verify_answer(r"\boxed{\frac{10}{2}}", r"\sqrt{25}") == 1.0


# Raw gold answers as public math benchmarks ship them (Minerva-Math, OlympiadBench), each with how a model writes it.
RAW_GOLDS = [
    ("-2./5", r"-\frac{2}{5}", r"\frac{2}{5}"),
    (r"\frac{2}{5} A_{1}+\frac{3}{5} A_{2}", r"\frac{2}{5}A_1+\frac{3}{5}A_2", r"\frac{3}{5}A_1+\frac{2}{5}A_2"),
    ("A_{1},A_{2}", "A_1, A_2", "A_1, A_3"),
    ("np.sqrt(2)/3", r"\frac{\sqrt{2}}{3}", r"\frac{\sqrt{3}}{2}"),
    ("np.arcsin(10/13)", r"\arcsin\left(\frac{10}{13}\right)", r"\arccos\left(\frac{10}{13}\right)"),
    (r"\frac{1}{3} E_{1}+\frac{2}{3} E_{2}", r"\frac{E_1}{3}+\frac{2E_2}{3}", r"\frac{E_1}{2}+\frac{E_2}{2}"),
    ("$m_{\\max }=n^{2}-n-1$", r"m_{\max}=n^2-n-1", r"m_{\max}=n^2-n"),
    ("$f(x)=a x+b$, where $b$ is an arbitrary integer", "f(x)=ax+b", "f(x)=ax"),
    ("$t(0,4]$", "(0,4]", "[0,4]"),
]


@pytest.mark.parametrize(("gold", "right", "wrong"), RAW_GOLDS, ids=[g for g, _, _ in RAW_GOLDS])
def test_raw_gold_answers_parse_and_only_the_right_answer_matches(gold, right, wrong):
    assert verify_answer(rf"so \boxed{{{right}}}", gold) == 1.0
    assert verify_answer(rf"so \boxed{{{wrong}}}", gold) == 0.0


def test_every_shipped_math_gold_parses_and_matches_itself_only():
    """Recall and false positives of the grader on the raw golds of the five shipped math benchmarks."""
    for name in ("math500", "aime24", "amc23", "minerva_math", "olympiadbench"):
        golds = [str(row["answer"]) for row in read_jsonl(REPO / f"glowrl/assets/eval_sets/{name}.jsonl")]
        own = verify_batch([rf"\boxed{{{g}}}" for g in golds], golds)
        assert own == [1.0] * len(golds), (name, [g for g, s in zip(golds, own, strict=True) if s != 1.0][:5])


# Answers a reader reads as answers (issue 22), each gold with forms a model writes for it and a wrong form.
READABLE_GOLDS = [
    (r"No solution : $\oslash$", [r"\text{No solution}", r"\emptyset", r"\varnothing", "∅"], "0"),
    (r"\text{no real solutions}", [r"\emptyset", r"\text{No solution}"], r"\mathbb{R}"),
    (r"\varnothing", [r"\emptyset", r"\{\}"], r"\{0\}"),
    (r"$x<-7:(-\infty,-7)$", [r"(-\infty,-7)", "x<-7"], r"(-\infty,7)"),
    (
        r"$\{$ All real numbers. $\}: \mathbb{R}$",
        [r"\mathbb{R}", r"(-\infty,\infty)", r"\text{all real numbers}"],
        "0",
    ),
    (r"x=\frac{\mathrm{gb}}{a}", [r"x=\frac{gb}{a}", r"x=\frac{b g}{a}"], r"x=\frac{b}{a}"),
    (r"11\,111\,111\,100", ["11111111100", "11,111,111,100"], "11111111000"),
    (r"1\,000\,000", ["1000000", "10^6"], "1000"),
    ("b > a > c", ["b>a>c", "c<a<b"], "a>b>c"),
    (
        r"\frac{d^{2} v_{o}}{d t^{2}}+\frac{v_{o}}{L C}=\frac{v_{i}}{L C}",
        [r"L C \frac{d^{2} v_{o}}{d t^{2}}+v_{o}=v_{i}"],
        r"L C \frac{d^{2} v_{o}}{d t^{2}}+v_{o}=2 v_{i}",
    ),
]


@pytest.mark.parametrize(("gold", "right", "wrong"), READABLE_GOLDS, ids=[g for g, _, _ in READABLE_GOLDS])
def test_answers_a_reader_reads_as_answers_are_recalled_and_only_they(gold, right, wrong):
    assert verify_batch([rf"\boxed{{{r}}}" for r in right], [gold] * len(right)) == [1.0] * len(right)
    assert verify_answer(rf"\boxed{{{wrong}}}", gold) == 0.0


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        # Both equations have no solution (an absolute value or determinant is never negative): math-verify 0.9
        # compared their two empty solution lists and called them equal.
        (
            r"\left|\begin{array}{cc}1 & 2 \\ 3 & x\end{array}\right|=-32",
            r"\left|\begin{array}{cc}1 & 2 \\ 3 & x\end{array}\right|=-6",
        ),
        ("|x|=-32", "|x|=-6"),
        ("x^2=-1", "x^2=-4"),
        ("x=1", "y=1"),
        ("x=1", "x^2-x=0"),  # x = 1 times x: one more solution
        ("x+y+z=1", "x+y+z=2"),
    ],
)
def test_equations_with_different_values_are_never_equal(gold, pred):
    assert answers_match(pred, gold) is False
    assert answers_match(gold, gold) is True


def test_equations_in_many_unknowns_are_decided_well_under_the_deadline():
    """Two of Minerva-Math's differential equations: math-verify solved each for all its unknowns at once (26 s on a
    loaded 2-core machine; the grader cut it at its 5 s deadline), and the circuit's equation multiplied through by LC
    was not equal to it. Timed with a 60 s deadline, so the time measured is the grader's own; the bound is generous
    for a loaded machine."""
    circuit = r"\frac{d^{2} v_{o}}{d t^{2}}+\frac{v_{o}}{L C}=\frac{v_{i}}{L C}"
    pendulum = r"m l \ddot{\theta}(t)-m g \sin \theta(t)=f(t) \cos \theta(t)"
    scaled = r"L C \frac{d^{2} v_{o}}{d t^{2}}+v_{o}=v_{i}"
    verify_batch([r"\boxed{1}"], ["2"])  # a worker started outside the clock
    for pred, gold, expected in ((pendulum, circuit, False), (circuit, pendulum, False), (scaled, circuit, True)):
        start = time.perf_counter()
        assert answers_match(pred, gold, timeout=60.0) is expected
        assert time.perf_counter() - start < 4.0, (pred, gold)
