"""Figures of a glowrl run, drawn from the files the stages write (no live state needed).

- [`plot_glow_weights`]: GLOW weight distributions per epoch, positives vs negatives (`sft/glow_samples.jsonl`);
- [`plot_sft_loss`]: SFT training loss and mean GLOW weight per step (`sft/trainer_state.json`);
- [`plot_rl`]: RL reward and policy entropy per step, with the per-rollout spread and the correct/incorrect split
  (`rl/trainer_state.json`, `rl/entropy.jsonl`).
"""

from collections import defaultdict
from pathlib import Path

from ..io import pyplot, read_jsonl, read_log_history, save_figure


plt = pyplot()


def weight_summary(glow_samples: Path) -> list[dict]:
    """Per epoch: mean GLOW weight and mean gain of positives and of negatives."""
    groups = defaultdict(list)
    for visit in read_jsonl(glow_samples):
        groups[(visit["epoch"], visit.get("correct"))].append(visit)
    rows = []
    for epoch in sorted({e for e, _ in groups}):
        row = {"epoch": epoch}
        for label, name in ((True, "positive"), (False, "negative")):
            visits = groups.get((epoch, label), [])
            if visits:
                row[f"{name}_weight"] = sum(v["weight"] for v in visits) / len(visits)
                gains = [v["gain"] for v in visits if v["gain"] is not None]
                row[f"{name}_gain"] = sum(gains) / len(gains) if gains else None
                row[f"{name}_loss"] = sum(v["loss"] for v in visits) / len(visits)
        rows.append(row)
    return rows


def plot_glow_weights(glow_samples: Path, output: Path, max_panels: int = 8) -> Path:
    """Histograms of GLOW weights, positives vs negatives, for up to `max_panels` evenly spaced epochs."""
    visits = read_jsonl(glow_samples)
    epochs = sorted({v["epoch"] for v in visits})
    if len(epochs) > max_panels:
        epochs = sorted({epochs[round(i * (len(epochs) - 1) / (max_panels - 1))] for i in range(max_panels)})
    columns = min(4, len(epochs))
    rows = -(-len(epochs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharex=True, squeeze=False)
    low = min(v["weight"] for v in visits)
    high = max(v["weight"] for v in visits)
    bins = [low + (high - low) * i / 30 for i in range(31)] if high > low else 10
    for ax, epoch in zip(axes.flat, epochs, strict=False):
        for label, name, color in ((True, "positives", "tab:green"), (False, "negatives", "tab:red")):
            weights = [v["weight"] for v in visits if v["epoch"] == epoch and v.get("correct") is label]
            if weights:
                mean = sum(weights) / len(weights)
                ax.hist(weights, bins=bins, alpha=0.55, color=color, label=f"{name} (mean {mean:.3f})")
        unweighted = all(v["weight"] == 1.0 for v in visits if v["epoch"] == epoch)
        ax.set_title(f"epoch {epoch}" + (" (unweighted)" if unweighted else ""), fontsize=9)
        ax.legend(fontsize=7)
    for ax in axes.flat[len(epochs) :]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("GLOW weight")
    fig.suptitle("GLOW weights per epoch: positives vs negatives")
    return save_figure(fig, output)


def plot_sft_loss(stage_dir: Path, output: Path) -> Path:
    """SFT training loss (weighted, as optimised) and mean GLOW weight per logged step."""
    logs = [e for e in read_log_history(stage_dir) if "loss" in e]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot([e["step"] for e in logs], [e["loss"] for e in logs], color="tab:blue", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if any("glow/weight_mean" in e for e in logs):
        twin = ax.twinx()
        twin.plot(
            [e["step"] for e in logs],
            [e.get("glow/weight_mean") for e in logs],
            color="tab:orange",
            label="mean GLOW weight",
        )
        twin.set_ylabel("mean GLOW weight")
        twin.legend(loc="upper center", fontsize=7)
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title("SFT")
    return save_figure(fig, output)


def plot_rl(stage_dir: Path, output: Path) -> Path:
    """RL reward per step, and policy entropy per step with the p10-p90 band and the correct/incorrect split."""
    logs = [e for e in read_log_history(stage_dir) if "reward" in e]
    entropy = read_jsonl(stage_dir / "entropy.jsonl") if (stage_dir / "entropy.jsonl").is_file() else []
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.plot([e["step"] for e in logs], [e["reward"] for e in logs], label="total reward", color="tab:blue")
    accuracy = [e.get("rewards/math_accuracy/mean") for e in logs]
    if any(a is not None for a in accuracy):
        left.plot([e["step"] for e in logs], accuracy, label="math_accuracy", color="tab:green")
    left.set_xlabel("step")
    left.set_ylabel("reward")
    left.legend(fontsize=7)
    left.set_title("RL reward")
    if entropy:
        steps = [r["step"] for r in entropy]
        right.fill_between(
            steps,
            [r.get("entropy/seq_p10") for r in entropy],
            [r.get("entropy/seq_p90") for r in entropy],
            alpha=0.25,
            color="tab:purple",
            label="rollouts p10-p90",
        )
        right.plot(steps, [r.get("entropy") for r in entropy], color="tab:purple", label="mean (TRL entropy)")
        for key, color in (("entropy/correct", "tab:green"), ("entropy/incorrect", "tab:red")):
            points = [(r["step"], r[key]) for r in entropy if key in r]
            if points:
                right.scatter(*zip(*points, strict=True), s=8, color=color, label=key.split("/")[1])
    right.set_xlabel("step")
    right.set_ylabel("entropy (nats/token)")
    right.legend(fontsize=7)
    right.set_title("policy entropy during rollouts")
    return save_figure(fig, output)
