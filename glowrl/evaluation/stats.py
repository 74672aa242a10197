"""95% intervals for evaluation figures: accuracies over problems (and samples), and paired differences of models.

Pure functions, hand-checked in `tests/test_stats.py`, with their coverage simulated there
(`test_intervals_keep_their_coverage`). The unit of an eval is the problem: a benchmark's problems are a sample of the
problems it could have held, and the samples of one problem are correlated (an easy problem is solved by most).
- [`accuracy_interval`]: an accuracy, pass@k or maj@k, the mean of per-problem values in [0, 1] (0 or 1 with one
  sample per problem; the share correct, the unbiased pass@k estimate or the majority's correctness otherwise). It is
  the Agresti-Coull interval (Wilson's centre with a Wald half-width there, which keeps 93% coverage or more where
  Wilson's falls to 84-92%, at 1-3 successes) on the *effective number of problems* `n_eff = n p(1 - p) / s^2`: the
  number of independent 0/1 outcomes with the spread `s^2` that the per-problem values show (the usual design effect
  of a clustered sample, Kish 1965; Korn and Graubard 1998). Values in [0, 1] vary at most as much as 0/1 values
  with the same mean, so `n_eff >= n`; `n_eff <= n x samples` (every sample independent). `p` and `s^2` are taken
  with half a pseudo-problem solved every time and half never solved, so that a benchmark with few or no solved
  problems does not look unclustered: at 0% the interval is Agresti-Coull's for n problems, not zero-width.
- [`paired_difference`]: model B minus model A on the same problems, from the per-problem differences (so what the
  problems share cancels), with pseudo-problems added as Agresti and Min (2005) add 1/2 to each cell of the paired
  2x2 table: w = 1 / (2 sqrt(samples)) problems at +1, w at -1 and 2w at 0 (w = 1/2, their interval, for one sample).
  The 1/sqrt scaling is the one of 1/2, 1/(2 sqrt m), 1/(2m) that keeps coverage in the simulation (1/2 is valid but
  wide for 16 samples, 1/(2m) falls to 92%).
- [`mean_interval`], [`paired_interval`]: Student's t over a few continuous values, e.g. a study's seeds.
Simulated coverage (per-problem accuracies drawn from Beta distributions with the stated mean, from U-shaped to all
equal; 30, 100, 500 problems; 1, 4, 16 samples): at least 93% at true accuracies of 1%, 3%, 50% and 97%.
Not here: the tables' formatting (`report`, `glowrl.study.aggregate`), and any claim about another set of prompts or
seeds than the ones sampled (a study's seeds are the unit of its own t-intervals).
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


PSEUDO_PROBLEMS = 0.5  # solved every time and never solved, each, when estimating the spread of an accuracy


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n` (kept for reference; [`agresti_coull_interval`] is
    the one the reports use: Wilson's lower bound for 1-3 successes can lie above the truth, 92% coverage at 1% of
    100)."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, center - half), min(1.0, center + half))


def agresti_coull(proportion: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Agresti-Coull's centre and standard error of a proportion from `n` (effective) trials: z^2/2 successes and z^2/2
    failures added, `p~ = (p n + z^2/2) / (n + z^2)`, `se = sqrt(p~ (1 - p~) / (n + z^2))`."""
    total = n + z * z
    centre = (proportion * n + z * z / 2) / total
    return centre, math.sqrt(centre * (1 - centre) / total)


def agresti_coull_interval(proportion: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Agresti-Coull 95% interval `p~ +- z se`, clipped to [0, 1] (NaN for n = 0)."""
    if n <= 0:
        return (math.nan, math.nan)
    centre, se = agresti_coull(proportion, n, z)
    return (max(0.0, centre - z * se), min(1.0, centre + z * se))


def effective_problems(total: float, total_sq: float, n: int, num_samples: int) -> float:
    """The effective number of problems of a mean of `n` per-problem values in [0, 1] with sum `total` and sum of
    squares `total_sq`: `n p(1 - p) / s^2` over the values and [`PSEUDO_PROBLEMS`] problems at 1 and at 0, within
    `[n, n * num_samples]`."""
    size = n + 2 * PSEUDO_PROBLEMS
    p = (total + PSEUDO_PROBLEMS) / size
    spread = (total_sq + PSEUDO_PROBLEMS - size * p * p) / (size - 1)  # > 0: the pseudo-problems differ
    return min(max(n * p * (1 - p) / spread, float(n)), float(n * max(1, num_samples)))


def interval_from_sums(total: float, total_sq: float, n: int, num_samples: int) -> tuple[float, float, float]:
    """(low, high, se) of the mean `total / n` of per-problem values in [0, 1]: Agresti-Coull on the effective number
    of problems. `se` is Agresti-Coull's standard error, for averages over benchmarks."""
    if n == 0:
        return (math.nan, math.nan, math.nan)
    n_eff = effective_problems(total, total_sq, n, num_samples)
    low, high = agresti_coull_interval(total / n, n_eff)
    return (low, high, agresti_coull(total / n, n_eff)[1])


def accuracy_interval(per_problem: Sequence[float], num_samples: int) -> tuple[float, float]:
    """The 95% interval of an accuracy, pass@k or maj@k: the mean of per-problem values in [0, 1] from `num_samples`
    samples per problem (see the module docstring). Values all 0 or 1 (one sample, pass@n, maj@k) give
    Agresti-Coull's interval on the problems."""
    values = list(per_problem)
    return interval_from_sums(sum(values), sum(v * v for v in values), len(values), num_samples)[:2]


def accuracy_standard_error(per_problem: Sequence[float], num_samples: int) -> float:
    """The standard error that goes with [`accuracy_interval`] (half its unclipped width over 1.96)."""
    values = list(per_problem)
    return interval_from_sums(sum(values), sum(v * v for v in values), len(values), num_samples)[2]


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A t-interval for the mean of a few continuous values, e.g. seeds (NaN for fewer than two values)."""
    n = len(values)
    if n < 2:
        return (math.nan, math.nan)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return (mean - half, mean + half)


def average_interval(means: Sequence[float], errors: Sequence[float], clip: bool = True) -> tuple[float, float]:
    """A normal 95% interval for the unweighted average of independent benchmark figures with these standard errors
    (clipped to [0, 1] for accuracies, to [-1, 1] for differences with `clip=False`)."""
    if not means or any(math.isnan(e) for e in errors):
        return (math.nan, math.nan)
    average = sum(means) / len(means)
    half = Z95 * math.sqrt(sum(e * e for e in errors)) / len(means)
    return (max(0.0 if clip else -1.0, average - half), min(1.0, average + half))


def paired_from_sums(total: float, total_sq: float, n: int, num_samples: int) -> tuple[float, float, float, float]:
    """(delta, low, high, se) of the mean difference `total / n` of per-problem differences in [-1, 1] with sum of
    squares `total_sq`, with w = 1 / (2 sqrt(num_samples)) pseudo-problems at +1 and at -1 and 2w at 0."""
    if n == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    w = 0.5 / math.sqrt(max(1, num_samples))
    size = n + 4 * w
    centre = total / size
    se = math.sqrt(max(0.0, (total_sq + 2 * w) / size - centre * centre) / size)
    return (total / n, max(-1.0, centre - Z95 * se), min(1.0, centre + Z95 * se), se)


def paired_difference(a: Sequence[float], b: Sequence[float], num_samples: int) -> tuple[float, float, float, float]:
    """Model B minus model A over the same problems, from per-problem accuracies (or pass@k) of `num_samples` samples
    each: (delta, low, high, se), a 95% interval that keeps its coverage at 0% and 100% (module docstring)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same problems: {len(a)} vs {len(b)}")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    return paired_from_sums(sum(diffs), sum(d * d for d in diffs), len(diffs), num_samples)


def paired_interval(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """The difference `mean(b) - mean(a)` of continuous values paired by index (a study's seeds), with its paired
    t-interval: (delta, low, high)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same problems: {len(a)} vs {len(b)}")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    low, high = mean_interval(diffs)
    return (sum(diffs) / len(diffs) if diffs else math.nan, low, high)


def excludes_zero(low: float, high: float) -> bool:
    """Whether an interval of positive width lies entirely on one side of 0 (a difference the data supports). A
    zero-width interval (identical values, no measured spread; up to rounding, 1e-9 of its ends) supports nothing."""
    if math.isnan(low) or math.isnan(high) or not high - low > 1e-9 * max(abs(low), abs(high)):
        return False
    return low > 0 or high < 0
