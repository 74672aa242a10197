"""The demo's report: learning checks, the results table and `report.md` / `report.json`."""

from pathlib import Path

from ..io import write_json, write_text_atomic


MIN_SFT_GAIN = 0.10  # in-domain accuracy points the SFT model must gain over the base model


def learning_checks(figures: dict, reward_first: float, reward_last: float) -> list[dict]:
    base, sft = figures["base"]["in_domain_accuracy"], figures["sft"]["in_domain_accuracy"]
    return [
        {
            "check": "SFT learned the task",
            "passed": sft >= base + MIN_SFT_GAIN,
            "detail": f"in-domain accuracy {base:.1%} (base) -> {sft:.1%} (SFT); needs +{MIN_SFT_GAIN:.0%}",
        },
        {
            "check": "RL improved the reward",
            "passed": reward_last > reward_first,
            "detail": f"mean reward {reward_first:.3f} (first third of the steps) -> {reward_last:.3f} (last third)",
        },
    ]


def _interval(row: dict, split: str) -> str:
    low, high = row[f"{split}_ci"]
    return f"{row[f'{split}_accuracy']:.1%} [{low:.1%}, {high:.1%}]"


def results_table(figures: dict) -> str:
    """Per model: accuracy with its 95% interval, inference entropy and the share of outputs with no answer."""
    lines = [
        "| model | in-domain acc [95% CI] | out-of-domain acc [95% CI] | entropy in / out | no answer in / out |",
        "|---|---|---|---|---|",
    ]
    for name, row in figures.items():
        lines.append(
            f"| {name} | {_interval(row, 'in_domain')} | {_interval(row, 'out_of_domain')} | "
            f"{row['in_domain_entropy']:.3f} / {row['out_of_domain_entropy']:.3f} | "
            f"{row['in_domain_no_answer']:.1%} / {row['out_of_domain_no_answer']:.1%} |"
        )
    return "\n".join(lines)


def deltas_line(deltas: dict) -> str:
    """RL minus SFT per domain in points, with the paired 95% interval (`*` when it excludes 0)."""
    from ..evaluation.stats import excludes_zero

    cells = []
    for domain, label in (("in_domain", "in-domain"), ("out_of_domain", "out-of-domain")):
        if domain in deltas:
            delta, low, high = deltas[domain]
            star = "*" if excludes_zero(low, high) else ""
            cells.append(f"{label} {100 * delta:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]{star}")
    return "RL - SFT (accuracy points, paired 95% interval over the same problems): " + ", ".join(cells)


def handoff_table(handoff: dict) -> str:
    """The hand-off figures before and after RL, side by side: GRPO's reward view, then correctness."""
    keys = [
        k
        for k in (
            "mean_reward",
            "share_no_signal",
            "accuracy",
            "pass@1",
            f"pass@{handoff['before']['num_generations']}",
            "share_all_correct",
            "share_all_wrong",
            "unscorable_prompts",
            "entropy",
            "truncation_rate",
        )
        if k in handoff["before"]
    ]
    lines = ["| figure | before RL | after RL |", "|---|---|---|"]
    for key in keys:
        cells = [handoff.get(when, {}).get(key) for when in ("before", "after")]
        shown = ["-" if v is None else str(v) if isinstance(v, int) else f"{v:.3f}" for v in cells]
        lines.append(f"| {key} | {' | '.join(shown)} |")
    return "\n".join(lines)


def write_report(root: Path, report: dict) -> None:
    weights = report["glow_weights"]
    weight_lines = [
        "| epoch | weight (positives) | weight (negatives) | gain (positives) | gain (negatives) |",
        "|---|---|---|---|---|",
    ]
    for row in weights:
        weight_lines.append(
            "| {epoch} | {pw} | {nw} | {pg} | {ng} |".format(
                epoch=row["epoch"],
                **{
                    k: "-" if row.get(v) is None else f"{row[v]:.3f}"
                    for k, v in (
                        ("pw", "positive_weight"),
                        ("nw", "negative_weight"),
                        ("pg", "positive_gain"),
                        ("ng", "negative_gain"),
                    )
                },
            )
        )
    checks = "\n".join(f"- {'PASS' if c['passed'] else 'FAIL'} {c['check']}: {c['detail']}" for c in report["checks"])
    source = (
        "sampled from a tiny teacher (stage 0), graded by math-verify"
        if report["teacher"]
        else "synthetic, the incorrect ones with a realistic mistake"
    )
    # Paragraphs with values in them are one line each: markdown wraps them, hard breaks would leave ragged lines.
    overview = (
        f"Size `{report['size']}`, {report['elapsed_s']:.0f} s. Task: multi-step arithmetic "
        f"({report['train_trajectories']} trajectories {source}: {report['positives']} correct, "
        f"{report['negatives']} incorrect); in-domain test: same distribution, unseen problems; out-of-domain: longer "
        f"chains. Model: tiny Qwen2 built locally ({report['parameters']:,} parameters). Recipe: "
        f"`{root / 'recipe.yaml'}` (re-run it with `glowrl pipeline --config {root / 'recipe.yaml'}`)."
    )
    before = report["handoff"]["before"]
    handoff = (
        f"On {before['prompts']} RL prompts, {before['num_generations']} rollouts each with GRPO's sampling settings, "
        "before and after RL (`rl/readiness.json`). Reward: the recipe's reward functions times their weights, summed "
        "as GRPO sums them; a group whose total rewards do not vary (`share_no_signal`) gives GRPO no gradient. "
        "Correctness (accuracy, pass@k, groups all correct / all wrong) beside it."
    )
    rl = (
        f"RL: mean reward {report['rl_reward_first']:.3f} over the first third of the steps, "
        f"{report['rl_reward_last']:.3f} over the last; policy entropy of the initial policy "
        f"{report['rl_entropy_initial']:.3f} nats/token."
    )
    text = f"""# glowrl demo report

{overview}

## Results

{results_table(report["figures"])}

{deltas_line(report["rl_minus_sft"])}

Accuracy: sampled at temperature 0.6, top-p 0.95, final `\\boxed{{}}` checked with math-verify; the interval is a
95% interval over problems (Agresti-Coull on the effective number of problems: the samples of one problem count as
far as they vary independently). RL - SFT: the paired difference over the same problems (Agresti-Min).
Entropy: mean per-token entropy (nats) of the model's own sampled outputs. Full results: `eval/results.md`.

## SFT -> RL hand-off

{handoff}

{handoff_table(report["handoff"])}

![hand-off](readiness.png)

## Learning checks

{checks}

## GLOW weights per epoch

{chr(10).join(weight_lines)}

![GLOW weights](glow_weights.png)

## Training curves

![SFT loss](sft_loss.png)

![RL reward and entropy](rl.png)

{rl}
"""
    write_text_atomic(root / "report.md", text)
    write_json(report, root / "report.json")
