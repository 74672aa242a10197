"""Results of an evaluation: in-domain / out-of-domain averages, paired differences, and the markdown table.

Every accuracy carries a 95% interval; every other model's accuracy also carries its difference from the first model
with the paired interval of that difference (over the same problems), marked `*` when the interval excludes 0.
"""

import math

from .stats import average_interval, excludes_zero, paired_difference


COUNT_KEYS = ("num_problems", "num_samples", "num_unscorable", "accuracy_se")
PERCENT_KEYS = ("accuracy", "no_answer_rate", "truncated_rate")
DOMAINS = {"in_domain": "in-domain avg", "out_of_domain": "out-of-domain avg"}


def domain_averages(benchmarks: dict[str, dict]) -> dict[str, dict]:
    """Unweighted mean of every metric over the in-domain and over the out-of-domain benchmarks.

    Args:
        benchmarks (`dict[str, dict]`):
            Benchmark name to its result, with `domain` (`"in_domain"` or `"out_of_domain"`) and `metrics`.

    Returns:
        `dict`: for each domain with at least one benchmark, `benchmarks` (the names averaged), the mean of each metric
        (a benchmark counts equally whatever its size, as in the paper's averages) and `accuracy_ci`, from the
        benchmarks' standard errors (the benchmarks are independent samples); a domain of one benchmark keeps that
        benchmark's own interval.
    """
    averages = {}
    for domain in DOMAINS:
        members = {name: result["metrics"] for name, result in benchmarks.items() if result["domain"] == domain}
        if not members:
            continue
        first = next(iter(members.values()))
        keys = [
            key
            for key in first
            if key not in COUNT_KEYS and not key.endswith("_ci") and all(m[key] is not None for m in members.values())
        ]
        averages[domain] = {
            "benchmarks": list(members),
            **{key: sum(m[key] for m in members.values()) / len(members) for key in keys},
            "accuracy_ci": list(
                average_interval(
                    [m["accuracy"] for m in members.values()], [m["accuracy_se"] for m in members.values()]
                )
            )
            if len(members) > 1
            else first["accuracy_ci"],  # one benchmark: its own interval, not a normal approximation of it
        }
    return averages


def _per_problem_accuracy(benchmark: dict) -> list[float]:
    n = benchmark["metrics"]["num_samples"]
    return [p["num_correct"] / n for p in benchmark["problems"]]


def compare(reference: dict, model: dict) -> dict:
    """`model`'s accuracy minus `reference`'s on the benchmarks both have, paired over the same problems.

    Returns:
        `dict`: `{"benchmarks": {name: [delta, low, high]}, "averages": {domain: [delta, low, high]}}`, the 95% paired
        interval of [`~glowrl.evaluation.stats.paired_difference`]; a domain average is the unweighted mean of its
        benchmarks' deltas with a normal interval from their standard errors (a domain of one benchmark keeps that
        benchmark's interval). Benchmarks and domains are separate keys, so a benchmark named like a domain (a file
        `in_domain.jsonl`) cannot take the place of the domain's average.
    """
    per_benchmark, errors = {}, {domain: [] for domain in DOMAINS}
    for name, benchmark in model["benchmarks"].items():
        if name not in reference["benchmarks"]:
            continue
        a, b = _per_problem_accuracy(reference["benchmarks"][name]), _per_problem_accuracy(benchmark)
        delta, low, high, se = paired_difference(a, b, benchmark["metrics"]["num_samples"])
        per_benchmark[name] = [delta, low, high]
        errors[benchmark["domain"]].append((name, delta, se))
    averages = {}
    for domain, entries in errors.items():
        if len(entries) == 1:
            averages[domain] = per_benchmark[entries[0][0]]
        elif entries:
            deltas = [delta for _, delta, _ in entries]
            low, high = average_interval(deltas, [se for _, _, se in entries], clip=False)
            averages[domain] = [sum(deltas) / len(deltas), low, high]
    return {"benchmarks": per_benchmark, "averages": averages}


def add_deltas(results: dict) -> None:
    """Give every model after the first `deltas`: [`compare`] against the first model."""
    reference = results["models"][0]
    for model in results["models"][1:]:
        model["deltas"] = compare(reference, model)


def format_value(key: str, value: float | None) -> str:
    """Render a metric: rates and pass/maj@k as percentages, entropy in nats, lengths in tokens."""
    if value is None:
        return "-"
    if key in PERCENT_KEYS or "@" in key:
        return f"{100 * value:.1f}"
    return f"{value:.3f}" if key == "entropy" else f"{value:.0f}"


def format_interval(low: float, high: float) -> str:
    return "" if math.isnan(low) or math.isnan(high) else f" [{100 * low:.1f}, {100 * high:.1f}]"


def format_delta(key: str, value: float | None, reference: float | None) -> str:
    """Render `value` with its signed difference from `reference` (the first model), in the metric's units."""
    if value is None or reference is None:
        return format_value(key, value)
    delta = format_value(key, abs(value - reference))
    return f"{format_value(key, value)} ({'-' if value < reference else '+'}{delta})"


def _accuracy_cell(values: dict, delta: list | None) -> str:
    low, high = values.get("accuracy_ci") or (math.nan, math.nan)
    cell = format_value("accuracy", values.get("accuracy")) + format_interval(low, high)
    if delta is not None:
        change, low, high = delta
        star = "*" if excludes_zero(low, high) else ""
        cell += f" ({'+' if change >= 0 else '-'}{100 * abs(change):.1f}{format_interval(low, high)}{star})"
    return cell


def format_markdown(results: dict, ks: list[int]) -> str:
    """The results as one markdown table: a row per benchmark (then per domain average) and model, a column per
    metric; rows of every model after the first also show the difference from the first model."""
    models = results["models"]
    metrics = ["accuracy", *(f"pass@{k}" for k in ks if k > 1), *(f"maj@{k}" for k in ks)]
    metrics += ["no_answer_rate", "truncated_rate", "entropy", "mean_tokens"]
    config = results["config"]
    rows = [
        (name, ("benchmarks", name), [m["benchmarks"][name]["metrics"] for m in models])
        for name in models[0]["benchmarks"]
    ]
    rows += [
        (f"**{label}**", ("averages", domain), [m["averages"].get(domain, {}) for m in models])
        for domain, label in DOMAINS.items()
        if domain in models[0]["averages"]
    ]
    lines = [
        "# glowrl eval",
        "",
        (
            f"n = {config['num_samples']} samples per problem, temperature {config['temperature']}, "
            f"top-p {config['top_p']}, at most {config['max_new_tokens']} new tokens, seed {config['seed']}, "
            f"backend {config['backend']}. All columns are percentages (accuracy = pass@1, the mean over samples) "
            "except entropy (nats per generated token) and mean_tokens. [a, b]: 95% interval over problems "
            "(Agresti-Coull on the effective number of problems, which counts the samples of one problem as far as "
            "they vary independently); (+x [a, b]): the difference from the first model with its paired interval "
            "over the same problems, `*` when that interval excludes 0."
        ),
        "",
        "| benchmark | model | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 2) + "|",
    ]
    for label, key, per_model in rows:
        for index, (model, values) in enumerate(zip(models, per_model, strict=True)):
            delta = model.get("deltas", {}).get(key[0], {}).get(key[1]) if index else None
            cells = [
                _accuracy_cell(values, delta)
                if metric == "accuracy"
                else format_value(metric, values.get(metric))
                if index == 0
                else format_delta(metric, values.get(metric), per_model[0].get(metric))
                for metric in metrics
            ]
            lines.append(f"| {label if index == 0 else ''} | {model['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
