"""A study's numbers: each run's metrics from what its stages wrote, and their aggregation over seeds.

Pure functions (no torch, no training), hand-checked in `tests/test_study.py`:
- [`run_metrics`]: one run's flat metrics, `<stage>/<domain>/<metric>` from its eval stage's `results.json`
  (accuracy, pass@k and maj@k for every k, inference entropy, no-answer and truncation rates of each model the run
  produced, averaged over each domain's benchmarks), `<stage>/<domain>/<benchmark>/accuracy` (each benchmark's),
  `sft/heldout_loss` (the last held-out loss) and `rl/train_reward` (the mean reward of the last third of the RL
  steps, `glowrl.io.reward_trend`) from the trainer states;
- [`aggregate`]: per arm and metric, the mean over seeds with its 95% t-interval;
- [`differences`]: per arm and metric, the difference from the reference arm paired by seed (the seeds share the
  data order and the initialisation of every arm), with its paired 95% t-interval;
- [`study_markdown`]: the tables of `study.md`.
Seeds are the unit: the intervals say how far another set of seeds could move a figure, which is what a claim
about an arm needs. A run that failed has no metrics and is left out of every figure (and listed).
"""

import math
from collections import Counter
from pathlib import Path

from ..evaluation.stats import excludes_zero, mean_interval, paired_interval
from ..io import read_log_history, reward_trend


DOMAINS = ("in_domain", "out_of_domain")
SKIP_KEYS = {"benchmarks", "accuracy_ci", "mean_tokens"}


def run_metrics(results: dict, stage_of_model: dict, stage_dirs: dict) -> dict:
    """A run's flat metrics.

    Args:
        results: its eval stage's `results.json`.
        stage_of_model: model path (as `results.json` names it) -> the stage that produced it (`sft`, `rl`).
        stage_dirs: stage -> its output directory (for the trainer states).
    """
    metrics = {}
    for model in results["models"]:
        stage = stage_of_model.get(model["model"], model["name"])
        for domain, values in model.get("averages", {}).items():
            for key, value in values.items():
                if key not in SKIP_KEYS and isinstance(value, (int, float)):
                    metrics[f"{stage}/{domain}/{key}"] = float(value)
        for name, benchmark in model.get("benchmarks", {}).items():
            accuracy = benchmark.get("metrics", {}).get("accuracy")
            if benchmark.get("domain") in DOMAINS and isinstance(accuracy, (int, float)):
                metrics[f"{stage}/{benchmark['domain']}/{name}/accuracy"] = float(accuracy)
    if "sft" in stage_dirs:
        losses = [e["eval_loss"] for e in read_log_history(stage_dirs["sft"]) if "eval_loss" in e]
        if losses:
            metrics["sft/heldout_loss"] = losses[-1]
    if "rl" in stage_dirs:
        trend = reward_trend(read_log_history(stage_dirs["rl"]))
        if trend:
            metrics["rl/train_reward"] = trend[1]
    return metrics


def heldout_curve(sft_dir: Path) -> list[tuple[int, float]]:
    """(step, held-out loss) of an SFT stage, for the plot."""
    return [(e["step"], e["eval_loss"]) for e in read_log_history(sft_dir) if "eval_loss" in e]


def _by_arm(runs: list[dict]) -> dict:
    arms = {}
    for run in runs:
        if run.get("metrics"):
            arms.setdefault(run["arm"], {})[run["seed"]] = run["metrics"]
    return arms


def aggregate(runs: list[dict]) -> dict:
    """`{arm: {metric: {"mean", "low", "high", "n"}}}` over the arm's finished seeds (NaN interval for one seed)."""
    result = {}
    for arm, seeds in _by_arm(runs).items():
        keys = sorted({key for metrics in seeds.values() for key in metrics})
        result[arm] = {}
        for key in keys:
            values = [m[key] for m in seeds.values() if key in m and not math.isnan(m[key])]
            if values:
                low, high = mean_interval(values)
                result[arm][key] = {"mean": sum(values) / len(values), "low": low, "high": high, "n": len(values)}
    return result


def differences(runs: list[dict], reference: str) -> dict:
    """`{arm: {metric: {"delta", "low", "high", "n"}}}`: arm minus `reference`, over the seeds both finished."""
    arms = _by_arm(runs)
    base = arms.get(reference, {})
    result = {}
    for arm, seeds in arms.items():
        if arm == reference:
            continue
        shared = sorted(set(seeds) & set(base))
        keys = sorted({key for s in shared for key in seeds[s] if key in base[s]})
        result[arm] = {}
        for key in keys:
            pairs = [(base[s][key], seeds[s][key]) for s in shared if key in seeds[s] and key in base[s]]
            delta, low, high = paired_interval([a for a, _ in pairs], [b for _, b in pairs])
            result[arm][key] = {"delta": delta, "low": low, "high": high, "n": len(pairs)}
    return result


def _percent(key: str) -> bool:
    return not key.endswith(("entropy", "loss", "reward"))


def _decimals(key: str, value: float, low: float = math.nan, high: float = math.nan) -> int:
    """Decimals that show a figure: the metric's usual ones (1 for %, 3 otherwise), more when the value (or, if
    wider, the interval's half-width) is smaller, so that two significant digits show (-7.4e-05 is not -0.000)."""
    scale = 100 if _percent(key) else 1
    half = (high - low) / 2 if not (math.isnan(low) or math.isnan(high)) else 0.0
    magnitude = scale * max(abs(value), half)
    usual = 1 if _percent(key) else 3
    if magnitude == 0 or math.isnan(magnitude):
        return usual
    return max(usual, min(12, 1 - math.floor(math.log10(magnitude))))


def _value(key: str, value: float, decimals: int | None = None) -> str:
    if math.isnan(value):
        return "–"
    decimals = _decimals(key, value) if decimals is None else decimals
    return f"{100 * value:.{decimals}f}" if _percent(key) else f"{value:.{decimals}f}"


def _interval(key: str, low: float, high: float, decimals: int) -> str:
    return "" if math.isnan(low) else f" [{_value(key, low, decimals)}, {_value(key, high, decimals)}]"


def headline_metrics(aggregated: dict) -> list[str]:
    """The metrics shown in the tables, in order, among those the runs have: per model and domain accuracy, pass@k
    at the largest k, inference entropy; then the held-out loss and RL's training reward."""
    present = {key for arm in aggregated.values() for key in arm}
    wanted = []
    for stage in ("sft", "rl"):
        for domain in DOMAINS:
            prefix = f"{stage}/{domain}/"
            ks = [int(k[len(prefix) + 5 :]) for k in present if k.startswith(prefix + "pass@")]
            top = [f"{prefix}pass@{max(ks)}"] if ks and max(ks) > 1 else []
            wanted += [f"{prefix}accuracy", *top, f"{prefix}entropy"]
    wanted += ["sft/heldout_loss", "rl/train_reward"]
    return [key for key in wanted if key in present]


def _cell(key: str, figure: dict | None) -> str:
    if figure is None:
        return "–"
    decimals = _decimals(key, figure["mean"], figure["low"], figure["high"])
    return _value(key, figure["mean"], decimals) + _interval(key, figure["low"], figure["high"], decimals)


def _difference(key: str, d: dict | None) -> str:
    """`+x [a, b]*`: the star only for an interval of positive width that excludes 0 (identical seeds give a
    zero-width interval, which is no evidence)."""
    if d is None:
        return "–"
    decimals = _decimals(key, d["delta"], d["low"], d["high"])
    sign = "+" if d["delta"] >= 0 else "-"
    star = "*" if excludes_zero(d["low"], d["high"]) else ""
    return f"{sign}{_value(key, abs(d['delta']), decimals)}{_interval(key, d['low'], d['high'], decimals)}{star}"


def study_markdown(study: dict) -> str:
    """`study.md`: a row per metric, a column per arm (mean [95% CI] over seeds); then the differences from the
    reference arm; then the runs without results and the plots."""
    aggregated, diffs, reference = study["aggregate"], study["differences"], study["reference"]
    keys = headline_metrics(aggregated)
    arms = study["arms"]
    finished = {arm: max((m["n"] for m in aggregated.get(arm, {}).values()), default=0) for arm in arms}
    intro = (
        f"Base recipe `{study['base']}`; seeds {study['seeds']}; SFT budget {study['sft_steps']} optimizer steps for "
        "every arm. Each cell: mean over the seeds [95% t-interval over seeds]; accuracies and pass@k in %, entropy "
        "in nats/token (inference entropy on the model's own samples), losses in nats/token. A domain's figures "
        "average its benchmarks. `sft/...`: the SFT model; `rl/...`: the RL model trained from it."
    )
    lines = [f"# Study: {study['name']}", "", intro, ""]
    lines += ["| metric | " + " | ".join(f"{arm} ({finished[arm]} seeds)" for arm in arms) + " |"]
    lines += ["|---|" + "---|" * len(arms)]
    for key in keys:
        lines.append(f"| {key} | " + " | ".join(_cell(key, aggregated.get(arm, {}).get(key)) for arm in arms) + " |")
    others = [arm for arm in arms if arm != reference]
    if others:
        lines += [
            "",
            f"## Differences from `{reference}`, paired by seed",
            "",
            (
                "Arm minus reference on the same seeds, mean [95% paired t-interval]; `*` when the interval excludes "
                "0 and has a width (seeds that agree exactly measure no spread)."
            ),
            "",
            "| metric | " + " | ".join(f"{arm} − {reference}" for arm in others) + " |",
            "|---|" + "---|" * len(others),
        ]
        lines += [
            f"| {key} | " + " | ".join(_difference(key, diffs.get(arm, {}).get(key)) for arm in others) + " |"
            for key in keys
        ]
    per_benchmark = sorted(
        (key for key in {key for arm in aggregated.values() for key in arm} if key.count("/") == 3),
        key=lambda key: (key.split("/")[0] != "sft", DOMAINS.index(key.split("/")[1]), key),
    )
    per_domain = Counter(tuple(key.split("/")[:2]) for key in per_benchmark)
    if any(count > 1 for count in per_domain.values()):  # a domain of one benchmark: its accuracy is the domain's
        lines += ["", "## Accuracy per benchmark", "", "Mean over seeds [95% t-interval], %.", ""]
        base = study.get("base_benchmarks")  # {benchmark: accuracy} of the model every arm starts from, if measured
        columns = (["base"] if base else []) + arms
        lines += ["| model / domain / benchmark | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for key in per_benchmark:
            cells = [_cell(key, aggregated.get(arm, {}).get(key)) for arm in arms]
            if base:
                start = base.get(key.split("/")[2])
                cells.insert(0, "–" if start is None else _value(key, start))
            lines.append(f"| {' / '.join(key.split('/')[:3])} | " + " | ".join(cells) + " |")
    if study.get("base_model"):  # the model every arm starts from, evaluated once with the same settings
        lines += ["", "## The base model every arm starts from", "", "| metric | base |", "|---|---|"]
        for key in keys:
            stage, _, rest = key.partition("/")
            domain, _, metric = rest.partition("/")
            value = study["base_model"].get(domain, {}).get(metric) if stage == "sft" else None
            if value is not None:
                lines.append(f"| {domain}/{metric} | {_value(metric, value)} |")
    if study.get("elapsed_s"):
        lines += ["", f"Wall time of the whole study: {study['elapsed_s'] / 60:.1f} min."]
    failed = [run for run in study["runs"] if run["status"] != "done"]
    if failed:
        lines += ["", "## Runs without results", ""]
        lines += [f"- {r['arm']} seed {r['seed']}: {r['status']}: {r.get('error') or '-'}" for r in failed]
    plots = study.get("plots") or []
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"
