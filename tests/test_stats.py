"""The interval code against hand-computed values (textbook tables and formulas written out).

python -m pytest tests/test_stats.py
"""

import math

import pytest

from glowrl.evaluation.report import add_deltas, domain_averages
from glowrl.evaluation.stats import (
    accuracy_interval,
    average_interval,
    excludes_zero,
    mean_interval,
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
    assert accuracy_interval([0, 1, 0.5, 0.5], num_samples=2) == pytest.approx((0.0, 1.0))  # clipped to [0, 1]
    assert accuracy_interval([1, 1, 0, 1], num_samples=1) == pytest.approx(wilson_interval(3, 4))


def test_paired_interval_cancels_what_the_problems_share():
    a = [0.0, 0.2, 0.4, 0.6, 0.8]
    b = [0.1, 0.3, 0.5, 0.7, 1.0]  # differences .1 .1 .1 .1 .2: mean .12, sd .04472, se .02, t(.975, 4) 2.77645
    delta, low, high = paired_interval(a, b)
    assert (delta, low, high) == pytest.approx((0.12, 0.12 - 0.05553, 0.12 + 0.05553), abs=1e-5)
    assert excludes_zero(low, high)
    unpaired = mean_interval(b)
    assert unpaired[1] - unpaired[0] > 5 * (high - low)  # the same change, measured unpaired, would be noise
    assert not excludes_zero(-0.01, 0.02) and not excludes_zero(math.nan, 1.0)


def test_domain_average_interval_and_paired_deltas():
    # two benchmarks with standard errors .03 and .04: half = 1.96 * sqrt(.0009 + .0016) / 2 = .049
    assert average_interval([0.5, 0.7], [0.03, 0.04]) == pytest.approx((0.6 - 0.049, 0.6 + 0.049), abs=1e-4)

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
    assert deltas["a"][0] == pytest.approx(0.5) and deltas["b"] == [0.0, 0.0, 0.0]
    # in-domain: mean of .5 and 0; half = 1.96 * sqrt(se_a^2 + 0) / 2 with se_a = sd([1,1,0,0]) / sqrt(4) = .288675
    assert deltas["in_domain"] == pytest.approx([0.25, 0.25 - 0.28290, 0.25 + 0.28290], abs=1e-4)


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
    assert deltas["out_of_domain"] == deltas["a"] == list(paired_interval([0, 0, 1, 1], [1, 1, 1, 0]))
