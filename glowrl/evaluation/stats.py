"""95% intervals for evaluation figures: accuracies over problems (and samples), and paired differences of models.

Pure functions, hand-checked in `tests/test_stats.py`:
- [`wilson_interval`]: a proportion from one sample per problem (n = 1), e.g. 15 of 30 AIME problems right.
- [`mean_interval`]: a mean of per-problem values in [0, 1] (accuracy over n > 1 samples, pass@k, maj@k) with
  Student's t over problems. A per-problem mean over n samples varies with the problem *and* the samples, so its spread
  over problems carries both, as in the usual "clustered" standard error of an eval.
- [`paired_interval`]: the difference of two models on the same problems, from the per-problem differences, so the
  variance the problems share cancels; a delta whose interval excludes 0 is marked significant.
With AIME's 30 problems, a 3-point difference is well inside these intervals: the tables say so.
"""

import math
from collections.abc import Sequence


Z95 = 1.959963984540054


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t cumulative distribution function."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom (bisection on [`t_cdf`])."""
    low, high = -1e3, 1e3
    for _ in range(200):
        mid = (low + high) / 2
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n` (exact coverage is close to 95% even for small n)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, center - half), min(1.0, center + half))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A t-interval for the mean of per-problem values (NaN for fewer than two values)."""
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def accuracy_interval(per_problem: Sequence[float], num_samples: int) -> tuple[float, float]:
    """The 95% interval of an accuracy (or pass@k, maj@k): Wilson's when every per-problem value is 0 or 1 and there
    is one sample per problem, else a t-interval over problems, clipped to [0, 1]."""
    if num_samples == 1 and all(v in (0, 1) for v in per_problem):
        return wilson_interval(round(sum(per_problem)), len(per_problem))
    low, high = mean_interval(per_problem)
    return (max(0.0, low), min(1.0, high))


def standard_error(values: Sequence[float]) -> float:
    """The standard error of a mean over problems (NaN for fewer than two)."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def average_interval(means: Sequence[float], errors: Sequence[float]) -> tuple[float, float]:
    """A normal 95% interval for the unweighted average of independent benchmark means with these standard errors."""
    if not means or any(math.isnan(e) for e in errors):
        return (math.nan, math.nan)
    average = sum(means) / len(means)
    half = Z95 * math.sqrt(sum(e * e for e in errors)) / len(means)
    return (average - half, average + half)


def paired_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """The difference `mean(b) - mean(a)` over the same problems, with its paired t-interval: (delta, low, high)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same problems: {len(a)} vs {len(b)}")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    low, high = mean_interval(diffs)
    return (sum(diffs) / len(diffs) if diffs else math.nan, low, high)


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval lies entirely on one side of 0 (a difference the data supports)."""
    return (low > 0 or high < 0) and not (math.isnan(low) or math.isnan(high))
