"""Results of an evaluation: in-domain / out-of-domain averages and the markdown table."""

COUNT_KEYS = ("num_problems", "num_samples", "num_unscorable")
PERCENT_KEYS = ("accuracy", "no_answer_rate", "truncated_rate")
DOMAINS = {"in_domain": "in-domain avg", "out_of_domain": "out-of-domain avg"}


def domain_averages(benchmarks: dict[str, dict]) -> dict[str, dict]:
    """Unweighted mean of every metric over the in-domain and over the out-of-domain benchmarks.

    Args:
        benchmarks (`dict[str, dict]`):
            Benchmark name to its result, with `domain` (`"in_domain"` or `"out_of_domain"`) and `metrics`.

    Returns:
        `dict`: for each domain with at least one benchmark, `benchmarks` (the names averaged) and the mean of each
        metric (a benchmark counts equally whatever its size, as in the paper's averages).
    """
    averages = {}
    for domain in DOMAINS:
        members = {name: result["metrics"] for name, result in benchmarks.items() if result["domain"] == domain}
        if not members:
            continue
        first = next(iter(members.values()))
        keys = [key for key in first if key not in COUNT_KEYS and all(m[key] is not None for m in members.values())]
        averages[domain] = {
            "benchmarks": list(members),
            **{key: sum(m[key] for m in members.values()) / len(members) for key in keys},
        }
    return averages


def format_value(key: str, value: float | None) -> str:
    """Render a metric: rates and pass/maj@k as percentages, entropy in nats, lengths in tokens."""
    if value is None:
        return "-"
    if key in PERCENT_KEYS or "@" in key:
        return f"{100 * value:.1f}"
    return f"{value:.3f}" if key == "entropy" else f"{value:.0f}"


def format_delta(key: str, value: float | None, reference: float | None) -> str:
    """Render `value` with its signed difference from `reference` (the first model), in the metric's units."""
    if value is None or reference is None:
        return format_value(key, value)
    delta = format_value(key, abs(value - reference))
    return f"{format_value(key, value)} ({'-' if value < reference else '+'}{delta})"


def format_markdown(results: dict, ks: list[int]) -> str:
    """The results as one markdown table: a row per benchmark (then per domain average) and model, a column per
    metric; rows of every model after the first also show the difference from the first model."""
    models = results["models"]
    metrics = ["accuracy", *(f"pass@{k}" for k in ks if k > 1), *(f"maj@{k}" for k in ks)]
    metrics += ["no_answer_rate", "truncated_rate", "entropy", "mean_tokens"]
    config = results["config"]
    rows = [(name, [m["benchmarks"][name]["metrics"] for m in models]) for name in models[0]["benchmarks"]]
    rows += [
        (f"**{label}**", [m["averages"].get(domain, {}) for m in models])
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
            "except entropy (nats per generated token) and mean_tokens; (+x) is the difference from the first model."
        ),
        "",
        "| benchmark | model | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 2) + "|",
    ]
    for label, per_model in rows:
        for index, (model, values) in enumerate(zip(models, per_model, strict=True)):
            cells = [
                format_value(key, values.get(key))
                if index == 0
                else format_delta(key, values.get(key), per_model[0].get(key))
                for key in metrics
            ]
            lines.append(f"| {label if index == 0 else ''} | {model['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
