"""A study's figures, from `study.json`'s aggregate and the runs' held-out loss curves.

- `study_metrics.png`: accuracy per arm, SFT and RL models, in-domain and out-of-domain: mean over seeds with its 95%
  interval, and each seed as a dot;
- `study_pass_at_k.png`: pass@k against k per arm (means over seeds, with the interval as a band);
- `study_entropy.png`: inference entropy per arm (SFT and RL models, both domains);
- `study_heldout_loss.png`: the SFT held-out loss against the step per arm (mean over seeds, band: min to max; log
  scale).
"""

import math
import re
from pathlib import Path

from ..io import pyplot, save_figure
from .aggregate import DOMAINS


plt = pyplot()


def _colors(arms: list[str]) -> dict:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {arm: cycle[i % len(cycle)] for i, arm in enumerate(arms)}


def _panel(ax, study: dict, key: str, title: str, percent: bool = True) -> None:
    arms, colors = study["arms"], _colors(study["arms"])
    scale = 100 if percent else 1
    for i, arm in enumerate(arms):
        figure = study["aggregate"].get(arm, {}).get(key)
        if figure is None:
            continue
        low, high = figure["low"], figure["high"]
        err = None if math.isnan(low) else [[scale * (figure["mean"] - low)], [scale * (high - figure["mean"])]]
        ax.errorbar([i], [scale * figure["mean"]], yerr=err, fmt="o", color=colors[arm], capsize=4, markersize=7)
        seeds = [r["metrics"][key] for r in study["runs"] if r["arm"] == arm and key in (r.get("metrics") or {})]
        ax.scatter([i + 0.15] * len(seeds), [scale * v for v in seeds], s=10, color=colors[arm], alpha=0.5)
    ax.set_xticks(range(len(arms)), arms, fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-0.5, len(arms) - 0.5)


def _per_arm(study: dict, stages: list[str], metric: str, label: str, percent: bool):
    """One panel per (model, domain): `metric` per arm, mean over seeds with its interval and each seed."""
    fig, axes = plt.subplots(len(stages), 2, figsize=(9, 3 * len(stages)), squeeze=False)
    for row, stage in enumerate(stages):
        for col, domain in enumerate(DOMAINS):
            _panel(
                axes[row][col],
                study,
                f"{stage}/{domain}/{metric}",
                f"{stage.upper()} model, {domain}: {label}",
                percent,
            )
    return fig


def plot_study(study: dict, curves: dict, folder: Path) -> list[Path]:
    """Write the study's plots into `folder`; returns their paths."""
    paths = []
    keys = {key for arm in study["aggregate"].values() for key in arm}
    stages = [s for s in ("sft", "rl") if any(k.startswith(f"{s}/") for k in keys)]
    if stages:
        paths.append(
            save_figure(_per_arm(study, stages, "accuracy", "accuracy (%)", True), folder / "study_metrics.png")
        )

        fig, axes = plt.subplots(len(stages), 2, figsize=(9, 3 * len(stages)), squeeze=False)
        colors = _colors(study["arms"])
        for row, stage in enumerate(stages):
            for col, domain in enumerate(DOMAINS):
                ax = axes[row][col]
                for arm in study["arms"]:
                    figures = study["aggregate"].get(arm, {})
                    ks = sorted(
                        int(m.group(1)) for key in figures if (m := re.fullmatch(rf"{stage}/{domain}/pass@(\d+)", key))
                    )
                    if not ks:
                        continue
                    means = [100 * figures[f"{stage}/{domain}/pass@{k}"]["mean"] for k in ks]
                    lows = [100 * figures[f"{stage}/{domain}/pass@{k}"]["low"] for k in ks]
                    highs = [100 * figures[f"{stage}/{domain}/pass@{k}"]["high"] for k in ks]
                    ax.plot(ks, means, marker="o", markersize=3, color=colors[arm], label=arm)
                    if not any(math.isnan(v) for v in lows):
                        ax.fill_between(ks, lows, highs, color=colors[arm], alpha=0.15)
                ax.set_xscale("log", base=2)
                ax.set_xlabel("k")
                ax.set_title(f"{stage.upper()} model, {domain}: pass@k (%)", fontsize=9)
                ax.legend(fontsize=7)
        paths.append(save_figure(fig, folder / "study_pass_at_k.png"))

        entropy = _per_arm(study, stages, "entropy", "inference entropy (nats/token)", False)
        paths.append(save_figure(entropy, folder / "study_entropy.png"))

    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        colors = _colors(study["arms"])
        for arm in study["arms"]:
            runs = [curve for (a, _), curve in curves.items() if a == arm and curve]
            if not runs:
                continue
            steps = sorted({step for curve in runs for step, _ in curve})
            rows = [[dict(curve).get(step) for curve in runs] for step in steps]
            means = [sum(v for v in row if v is not None) / sum(v is not None for v in row) for row in rows]
            ax.plot(steps, means, color=colors[arm], label=f"{arm} ({len(runs)} seeds)")
            ax.fill_between(
                steps,
                [min(v for v in row if v is not None) for row in rows],
                [max(v for v in row if v is not None) for row in rows],
                color=colors[arm],
                alpha=0.15,
            )
        ax.set_xlabel("SFT step")
        ax.set_yscale("log")  # the late rise of an overfitting arm is a few hundredths against an early 2-3
        ax.set_ylabel("held-out loss (nats/token, log scale)")
        ax.set_title("SFT held-out loss (mean over seeds; band: min to max)", fontsize=9)
        ax.legend(fontsize=7)
        paths.append(save_figure(fig, folder / "study_heldout_loss.png"))
    return paths
