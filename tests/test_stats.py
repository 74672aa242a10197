"""The interval code against hand-computed values (textbook tables and formulas written out), and the intervals'
coverage simulated.

python -m pytest tests/test_stats.py -s     # -s prints the coverage tables
"""

import math

import numpy as np
import pytest

from glowrl.demo.report import deltas_line
from glowrl.demo.run import rl_minus_sft
from glowrl.evaluation.metrics import pass_at_k
from glowrl.evaluation.report import add_deltas, domain_averages, format_markdown
from glowrl.evaluation.stats import (
    accuracy_interval,
    agresti_coull_interval,
    average_interval,
    effective_problems,
    excludes_zero,
    interval_from_sums,
    mean_interval,
    paired_difference,
    paired_from_sums,
    paired_interval,
    t_quantile,
    wilson_interval,
)


@pytest.mark.parametrize(("df", "expected"), [(1, 12.7062), (3, 3.1824), (9, 2.2622), (29, 2.0452), (1000, 1.9623)])
def test_t_quantiles_match_the_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_wilson_interval_hand_values():
    # p = 0.5, n = 30, z = 1.96: centre 0.5, half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n) = 0.16846
    low, high = wilson_interval(15, 30)
    assert (low, high) == pytest.approx((0.33154, 0.66846), abs=1e-5)
    # 0 of 10: [0, z^2/(n + z^2)] = [0, 3.8415 / 13.8415]
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert math.isnan(wilson_interval(0, 0)[0])


def test_mean_interval_hand_values():
    # [0, 1, .5, .5]: mean .5, sd = sqrt(0.5 / 3) = .40825, se = .20412, t(.975, 3) = 3.18245 -> half .64962
    assert mean_interval([0, 1, 0.5, 0.5]) == pytest.approx((-0.14962, 1.14962), abs=1e-5)


def test_agresti_coull_hand_values():
    # 15 of 30: n~ = 30 + z^2 = 33.8415, p~ = (15 + 1.92073) / 33.8415 = .5, se = sqrt(.25 / 33.8415) = .085950,
    # half = 1.96 * .085950 = .168459 (at p = .5 Wilson's interval is the same)
    assert agresti_coull_interval(0.5, 30) == pytest.approx((0.33154, 0.66846), abs=1e-5)
    assert agresti_coull_interval(0.5, 30) == pytest.approx(wilson_interval(15, 30), abs=1e-9)
    # 0 of 10: n~ = 13.8415, p~ = 1.92073 / 13.8415 = .138766, se = sqrt(.138766 * .861234 / 13.8415) = .092920,
    # high = .138766 + 1.96 * .092920 = .320887 (Wilson's: .27753, whose lower bounds for 1-3 successes undercover)
    assert agresti_coull_interval(0.0, 10) == pytest.approx((0.0, 0.320887), abs=1e-5)
    assert math.isnan(agresti_coull_interval(0.0, 0)[0])


def test_effective_problems_hand_values():
    # [0, .5, 1, .5] from 2 samples each, with half a problem at 1 and half at 0: 5 values, sum 2.5, mean .5,
    # s^2 = (1.5 + .5 - 5 * .25) / 4 = .1875 -> n_eff = 4 * .25 / .1875 = 5.333 (between 4 problems and 8 samples)
    assert effective_problems(2.0, 1.5, 4, 2) == pytest.approx(16 / 3)
    # every problem at .5: s^2 = (1 + .5 - 1.25) / 4 = .0625 -> 16, at most 4 problems x 2 samples
    assert effective_problems(2.0, 1.0, 4, 2) == 8.0
    # 0/1 values (one sample, pass@n, maj@k): n p(1-p) / s^2 = n^2 / (n + 1) < n -> exactly the problems
    assert effective_problems(3.0, 3.0, 4, 16) == 4.0
    # nothing solved: the spread of the pseudo-problems alone -> the problems, never zero width
    assert effective_problems(0.0, 0.0, 30, 16) == 30.0
    assert accuracy_interval([0.0] * 30, 16) == accuracy_interval([0] * 30, 1) == agresti_coull_interval(0.0, 30)
    assert accuracy_interval([0.0] * 30, 16)[1] == pytest.approx(0.134712, abs=1e-5)
    assert accuracy_interval([0, 0.5, 1, 0.5], 2) == agresti_coull_interval(0.5, 16 / 3)
    assert accuracy_interval([1, 1, 0, 1], num_samples=1) == agresti_coull_interval(0.75, 4)


def test_the_old_intervals_collapsed_where_these_do_not():
    # one AIME problem solved once in 8 samples: the t-interval over problems gave 0.42% [0, 1.27]
    low, high = accuracy_interval([1 / 8] + [0.0] * 29, 8)
    assert low == 0.0 and high > 0.1  # n_eff = 30: one solved problem is all the evidence there is
    assert interval_from_sums(0.0, 0.0, 30, 8)[1] > 0.1  # 0%: not the zero-width [0, 0] of a t-interval


def test_paired_interval_cancels_what_the_problems_share():
    a = [0.0, 0.2, 0.4, 0.6, 0.8]
    b = [0.1, 0.3, 0.5, 0.7, 1.0]  # differences .1 .1 .1 .1 .2: mean .12, sd .04472, se .02, t(.975, 4) 2.77645
    delta, low, high = paired_interval(a, b)
    assert (delta, low, high) == pytest.approx((0.12, 0.12 - 0.05553, 0.12 + 0.05553), abs=1e-5)
    assert excludes_zero(low, high)
    unpaired = mean_interval(b)
    assert unpaired[1] - unpaired[0] > 5 * (high - low)  # the same change, measured unpaired, would be noise
    assert not excludes_zero(-0.01, 0.02) and not excludes_zero(math.nan, 1.0)


def test_a_zero_width_interval_is_not_significant():
    # two seeds with the same difference: sd 0, so the t-interval is [d, d], which supports nothing
    _, low, high = paired_interval([0.5, 0.6], [0.5 - 7.4e-5, 0.6 - 7.4e-5])  # equal up to rounding
    assert 0 <= high - low < 1e-15 and high < 0 and not excludes_zero(low, high)
    assert excludes_zero(-0.3, -0.1) and excludes_zero(0.1, 0.3)


def test_paired_difference_is_agresti_min_for_one_sample():
    # a = [0, 0, 1, 1], b = [1, 1, 1, 0]: the 2x2 table n11 = 1, n10 = 1 (a right, b wrong), n01 = 2, n00 = 0; with
    # 1/2 added to each cell (Agresti and Min 2005): n* = 6, p01* = 2.5/6, p10* = 1.5/6, centre 1/6,
    # var = ((p01* + p10*) - (p01* - p10*)^2) / n* = (4/6 - 1/36) / 6 = .106481, se = .326315, half = .639566
    delta, low, high, se = paired_difference([0, 0, 1, 1], [1, 1, 1, 0], 1)
    assert delta == 0.25 and se == pytest.approx(0.326315, abs=1e-6)
    assert (low, high) == pytest.approx((1 / 6 - 0.639566, 1 / 6 + 0.639566), abs=1e-6)
    # 4 samples: w = 1 / (2 sqrt 4) = .25 at +1 and at -1, .5 at 0; diffs [0, 0, .25, 0]: size 5, centre .05,
    # var = (.0625 + .5) / 5 - .0025 = .11, se = sqrt(.11 / 5) = .148324, half = .290710
    delta, low, high, se = paired_difference([0, 0, 0, 0], [0, 0, 0.25, 0], 4)
    assert (delta, low, high, se) == pytest.approx((0.0625, 0.05 - 0.290710, 0.05 + 0.290710, 0.148324), abs=1e-6)
    # two models at 0% everywhere: an interval of positive width around 0, not [0, 0]
    delta, low, high, _ = paired_from_sums(0.0, 0.0, 30, 16)
    assert delta == 0.0 and low < 0 < high


def test_domain_average_interval_and_paired_deltas():
    # two benchmarks with standard errors .03 and .04: half = 1.96 * sqrt(.0009 + .0016) / 2 = .049
    assert average_interval([0.5, 0.7], [0.03, 0.04]) == pytest.approx((0.6 - 0.049, 0.6 + 0.049), abs=1e-4)
    assert average_interval([0.0, 0.01], [0.03, 0.04]) == pytest.approx((0.0, 0.005 + 0.049), abs=1e-4)

    def model(correct_a, correct_b):
        benchmarks = {}
        for name, correct in (("a", correct_a), ("b", correct_b)):
            problems = [{"num_correct": c} for c in correct]
            accuracy = sum(correct) / len(correct)
            metrics = {"num_samples": 1, "accuracy": accuracy, "accuracy_se": 0.1, "accuracy_ci": [0, 1]}
            benchmarks[name] = {"domain": "in_domain", "metrics": metrics, "problems": problems}
        return {"benchmarks": benchmarks, "averages": domain_averages(benchmarks)}

    results = {"models": [model([0, 0, 1, 1], [0, 1, 0, 1]), model([1, 1, 1, 1], [0, 1, 0, 1])]}
    add_deltas(results)
    deltas = results["models"][1]["deltas"]
    # a: diffs [1, 1, 0, 0]: Agresti-Min centre 2/6, var = (2 + 1) / 6 - 1/9 = .388889, se = .254588
    assert deltas["benchmarks"]["a"] == pytest.approx([0.5, 1 / 3 - 0.498985, 1 / 3 + 0.498985], abs=1e-5)
    # b: no change: centre 0, se = sqrt((0 + 1) / 6 / 6) = 1/6, half .326661
    assert deltas["benchmarks"]["b"] == pytest.approx([0.0, -0.326661, 0.326661], abs=1e-5)
    # in-domain: mean of .5 and 0; half = 1.96 * sqrt(.0648148 + .0277778) / 2 = 1.96 * .304290 / 2 = .298199
    assert deltas["averages"]["in_domain"] == pytest.approx([0.25, 0.25 - 0.298199, 0.25 + 0.298199], abs=1e-5)


def test_a_benchmark_named_like_a_domain_keeps_its_own_delta():
    # The demo's files are `in_domain.jsonl` and `out_of_domain.jsonl`: the benchmark `in_domain` and the in-domain
    # average of two benchmarks must not share a key (the table showed the average's delta on the file's row).
    def model(first, second):
        benchmarks = {}
        for name, correct in (("in_domain", first), ("other", second)):
            metrics = {"num_samples": 1, "accuracy": sum(correct) / 4, "accuracy_se": 0.1, "accuracy_ci": [0, 1]}
            metrics["no_answer_rate"] = metrics["truncated_rate"] = metrics["mean_tokens"] = metrics["entropy"] = 0
            benchmarks[name] = {
                "domain": "in_domain",
                "metrics": metrics,
                "problems": [{"num_correct": c} for c in correct],
            }
        return {
            "name": f"m{len(first)}{sum(first)}",
            "benchmarks": benchmarks,
            "averages": domain_averages(benchmarks),
        }

    results = {"models": [model([0, 0, 0, 0], [0, 0, 0, 0]), model([1, 1, 1, 1], [0, 0, 0, 0])]}
    results["config"] = dict.fromkeys(("num_samples", "temperature", "top_p", "max_new_tokens", "seed", "backend"), 1)
    add_deltas(results)
    deltas = results["models"][1]["deltas"]
    own = paired_difference([0, 0, 0, 0], [1, 1, 1, 1], 1)
    assert deltas["benchmarks"]["in_domain"] == pytest.approx(list(own[:3]))
    assert deltas["averages"]["in_domain"][0] == pytest.approx(0.5)  # the average of +1 and 0, a different figure
    rows = [line for line in format_markdown(results, [1]).splitlines() if line.startswith("| ")]
    file_row = next(i for i, line in enumerate(rows) if line.startswith("| in_domain |"))
    assert "(+100.0 [" in rows[file_row + 1]  # the file's own +100 points, not the average's +50
    average_row = next(i for i, line in enumerate(rows) if line.startswith("| **in-domain avg** |"))
    assert "(+50.0 [" in rows[average_row + 1]


def test_the_demo_reports_rl_minus_sft_paired():
    # The demo's eval compares base, SFT and RL (deltas against the base); the README quotes RL - SFT, which the
    # demo's report now prints: paired over the same problems, per domain.
    def model(in_domain, out_of_domain):
        benchmarks = {
            name: {
                "domain": name,
                "metrics": {"num_samples": 2},
                "problems": [{"num_correct": c} for c in correct],
            }
            for name, correct in (("in_domain", in_domain), ("out_of_domain", out_of_domain))
        }
        return {"benchmarks": benchmarks}

    base, sft, rl = model([0] * 4, [0] * 4), model([1, 2, 0, 0], [0, 0, 0, 1]), model([2, 2, 1, 0], [0, 0, 0, 1])
    deltas = rl_minus_sft({"models": [base, sft, rl]})
    assert deltas["in_domain"] == pytest.approx(list(paired_difference([0.5, 1, 0, 0], [1, 1, 0.5, 0], 2)[:3]))
    assert deltas["in_domain"][0] == pytest.approx(0.25) and deltas["out_of_domain"][0] == 0.0
    line = deltas_line(deltas)
    low, high = deltas["in_domain"][1:]
    assert f"in-domain +25.0 [{100 * low:+.1f}, {100 * high:+.1f}]" in line and "out-of-domain +0.0 [" in line


def test_a_domain_of_one_benchmark_keeps_its_own_intervals():
    def model(correct):
        metrics = {"num_samples": 1, "accuracy": sum(correct) / 4, "accuracy_se": 0.2, "accuracy_ci": [0.1, 0.9]}
        benchmarks = {
            "a": {"domain": "out_of_domain", "metrics": metrics, "problems": [{"num_correct": c} for c in correct]}
        }
        return {"benchmarks": benchmarks, "averages": domain_averages(benchmarks)}

    results = {"models": [model([0, 0, 1, 1]), model([1, 1, 1, 0])]}
    assert results["models"][0]["averages"]["out_of_domain"]["accuracy_ci"] == [0.1, 0.9]  # not 1.96 x se
    add_deltas(results)
    deltas = results["models"][1]["deltas"]
    assert deltas["averages"]["out_of_domain"] == deltas["benchmarks"]["a"]
    assert deltas["benchmarks"]["a"] == list(paired_difference([0, 0, 1, 1], [1, 1, 1, 0], 1)[:3])


# The coverage simulation. Model: a benchmark's n problems are drawn from a population whose per-problem accuracies
# follow Beta(mu k, (1 - mu) k), mean mu (the true accuracy the interval must contain); each of the m samples of a
# problem is correct with that problem's accuracy, independently. The concentration k runs from U-shaped (0.3: most
# problems always or never solved, as in real evals) to all problems equally hard (inf); a cell's coverage is the
# lowest over k. With one sample per problem the count of correct problems is Binomial(n, mu) whatever k is, so that
# column is computed exactly. Paired: model B's per-problem accuracy is A's (`same`, true difference 0) or
# 1 - (1 - p)^2 (`better`, a stronger model on the same problems, true difference E[1 - (1 - p)^2] - mu, in closed
# form for a Beta), with independent samples of each.
MEANS = (0.01, 0.03, 0.5, 0.97)
PROBLEMS = (30, 100, 500)
SAMPLES = (1, 4, 16)
CONCENTRATIONS = (0.3, 1.0, 4.0, 30.0, math.inf)
REPETITIONS = 1500
FLOOR = 0.93


def _accuracies(rng, mu, kappa, shape):
    if math.isinf(kappa):
        return np.full(shape, mu)
    return rng.beta(mu * kappa, (1 - mu) * kappa, size=shape)


def _exact_binomial_coverage(mu, n):
    covered = 0.0
    for x in range(n + 1):
        low, high, _ = interval_from_sums(float(x), float(x), n, 1)
        if low <= mu <= high:
            log_pmf = math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)
            covered += math.exp(log_pmf + x * math.log(mu) + (n - x) * math.log1p(-mu))
    return covered


def _pass_at_half(mu, kappa, m):
    """pass@(m/2) per count of correct samples (the unbiased estimate) and its true value, E[1 - (1 - p)^k] =
    1 - prod_{j < k} ((1 - mu) kappa + j) / (kappa + j) for p ~ Beta(mu kappa, (1 - mu) kappa)."""
    k = m // 2
    table = np.array([pass_at_k(m, c, k) for c in range(m + 1)])
    if math.isinf(kappa):
        return table, 1 - (1 - mu) ** k
    return table, 1 - math.prod(((1 - mu) * kappa + j) / (kappa + j) for j in range(k))


def _stronger_truth(mu, kappa):
    """E[1 - (1 - p)^2] - mu, with E[(1 - p)^2] = (1 - mu) kappa ((1 - mu) kappa + 1) / (kappa (kappa + 1))."""
    if math.isinf(kappa):
        return 1 - (1 - mu) ** 2 - mu
    return 1 - (1 - mu) * kappa * ((1 - mu) * kappa + 1) / (kappa * (kappa + 1)) - mu


def _covered(values, truth, n, m, interval):
    """The share of the repetitions (rows of `values`, per-problem values) whose interval contains `truth`."""
    hits = 0
    for total, total_sq in zip(values.sum(1).tolist(), (values * values).sum(1).tolist(), strict=True):
        low, high = interval(total, total_sq, n, m)
        hits += low <= truth <= high
    return hits / len(values)


def _coverage(rng, mu, n, m):
    """{figure: coverage}, the lowest over the concentrations; one draw of the problems and of models A, B (the same
    accuracies) and B' (the stronger one) serves every figure."""
    worst = {"accuracy": 1.0, "pass": 1.0, "same": 1.0, "better": 1.0}
    if m == 1:
        worst["accuracy"] = worst["pass"] = _exact_binomial_coverage(mu, n)
    for kappa in CONCENTRATIONS:
        p = _accuracies(rng, mu, kappa, (REPETITIONS, n))
        a, b, stronger = rng.binomial(m, p), rng.binomial(m, p), rng.binomial(m, 1 - (1 - p) ** 2)
        found = {
            "same": _covered((b - a) / m, 0.0, n, m, lambda *sums: paired_from_sums(*sums)[1:3]),
            "better": _covered(
                (stronger - a) / m, _stronger_truth(mu, kappa), n, m, lambda *s: paired_from_sums(*s)[1:3]
            ),
        }
        if m > 1:
            table, truth = _pass_at_half(mu, kappa, m)
            found["accuracy"] = _covered(a / m, mu, n, m, lambda *sums: interval_from_sums(*sums)[:2])
            found["pass"] = _covered(table[a], truth, n, m, lambda *sums: interval_from_sums(*sums)[:2])
        worst = {figure: min(value, found.get(figure, 1.0)) for figure, value in worst.items()}
    return worst


def _table(title, coverage):
    header = "true value | " + " | ".join(f"n={n} m={m}" for n in PROBLEMS for m in SAMPLES)
    lines = [title, header]
    for mu in MEANS:
        cells = " | ".join(f"{100 * coverage[mu, n, m]:>8.1f}" for n in PROBLEMS for m in SAMPLES)
        lines.append(f"{mu:>10.0%} | {cells}")
    return "\n".join(lines)


def test_intervals_keep_their_coverage():
    rng = np.random.default_rng(20261204)
    cells = {(mu, n, m): _coverage(rng, mu, n, m) for mu in MEANS for n in PROBLEMS for m in SAMPLES}
    tables = {
        figure: {cell: found[figure] for cell, found in cells.items()}
        for figure in ("accuracy", "pass", "same", "better")
    }
    print()
    print(_table("accuracy (%, lowest over Beta concentrations 0.3 .. inf; m = 1 exact)", tables["accuracy"]))
    print(_table("pass@(m/2) (%, rows: the per-sample accuracy; m = 1: pass@1, exact)", tables["pass"]))
    print(_table("paired difference, same model (%)", tables["same"]))
    print(_table("paired difference, stronger model 1 - (1 - p)^2 (%)", tables["better"]))
    for name, table in tables.items():
        low = {cell: value for cell, value in table.items() if value < FLOOR}
        assert not low, f"{name}: coverage below {FLOOR:.0%} at (mu, n, m) {low}"
