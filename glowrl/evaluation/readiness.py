"""The SFT -> RL hand-off report: is this model a good start for group-based RL on these prompts?

On a sample of the RL prompts, draw `num_generations` completions per prompt from the model with the RL sampling
settings and measure what GRPO/RLOO will see: the mean reward, pass@k for k <= num_generations, the share of prompts
whose group is all correct or all wrong (a group with no reward variance has zero advantage: it gives no gradient),
the inference entropy (token-weighted, and its spread across prompts) and the truncation rate. Recent work reports
that the SFT model's entropy on its own samples predicts how far GRPO gets, and that over-trained SFT collapses it so
that most groups carry no signal (arXiv 2606.18487); GLOW's claim is that negatives keep that entropy up. The RL stage
writes this report before training and again after it (`readiness.json`), so it shows what RL changed.

[`handoff_figures`] is the pure part (hand-checked in the tests); [`readiness`] samples and scores.
"""

import random

from ..grading import extract_boxed, verify_batch
from ..io import pyplot, save_figure
from .metrics import pass_at_k


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def handoff_figures(
    correct: list[list],
    entropy: list[list[float]],
    tokens: list[list[int]],
    truncated: list[list],
    answered: list[list] | None = None,
):
    """The hand-off figures from per-prompt groups of samples (all lists: prompts x samples).

    Args:
        correct: 1/True, 0/False, or None (unscorable: the gold does not parse) per sample.
        entropy: each sample's mean token entropy (nats).
        tokens: each sample's generated tokens.
        truncated: whether each sample ran out of tokens.
        answered: whether each sample gives a final answer (a complete `\\boxed{}`), the format the reward reads.

    Returns:
        `dict`: `prompts`, `num_generations`, `mean_reward`, `pass@k` (k = 1..G), `share_all_correct`,
        `share_all_wrong`, `share_no_signal` (their sum), `entropy` (token-weighted), `entropy_p10|p50|p90` (over
        prompts of each prompt's token-weighted entropy), `truncation_rate`, and `unscorable_prompts` (left out of the
        reward and group figures), and with `answered`, `no_answer_rate`.
    """
    groups = len(correct[0]) if correct else 0
    scored = [[bool(c) for c in row] for row in correct if all(c is not None for c in row)]
    figures = {"prompts": len(correct), "num_generations": groups, "unscorable_prompts": len(correct) - len(scored)}
    if scored:
        figures["mean_reward"] = sum(map(sum, scored)) / (len(scored) * groups)
        for k in range(1, groups + 1):
            figures[f"pass@{k}"] = sum(pass_at_k(groups, sum(row), k) for row in scored) / len(scored)
        figures["share_all_correct"] = sum(all(row) for row in scored) / len(scored)
        figures["share_all_wrong"] = sum(not any(row) for row in scored) / len(scored)
        figures["share_no_signal"] = figures["share_all_correct"] + figures["share_all_wrong"]
    total = sum(map(sum, tokens))
    figures["entropy"] = (
        sum(e * t for row_e, row_t in zip(entropy, tokens, strict=True) for e, t in zip(row_e, row_t, strict=True))
        / total
    )
    per_prompt = [
        sum(e * t for e, t in zip(re, rt, strict=True)) / sum(rt)
        for re, rt in zip(entropy, tokens, strict=True)
        if sum(rt)
    ]
    for q in (10, 50, 90):
        figures[f"entropy_p{q}"] = _quantile(per_prompt, q / 100)
    figures["truncation_rate"] = sum(map(sum, truncated)) / sum(len(row) for row in truncated)
    if answered is not None:
        figures["no_answer_rate"] = 1 - sum(map(sum, answered)) / sum(len(row) for row in answered)
    return figures


def advice(figures: dict, temperature: float) -> str | None:
    """A warning when most groups will carry no signal, saying which way to move; `None` when they will.

    Mostly all wrong because most samples give no final answer is a different problem from prompts that are too hard:
    the model has not learned the answer format, and easier prompts or a higher temperature will not teach it."""
    if figures.get("share_no_signal", 0.0) <= 0.5:
        return None
    share = f"{figures['share_no_signal']:.0%} of the groups have no reward variance (no advantage, no gradient)"
    mostly_wrong = figures["share_all_wrong"] >= figures["share_all_correct"]
    if mostly_wrong and figures.get("no_answer_rate", 0.0) > 0.5:
        return (
            f"{share}, mostly all wrong, and {figures['no_answer_rate']:.0%} of the samples give no final \\boxed{{}} "
            f"answer ({figures['truncation_rate']:.0%} run out of tokens): the model has not learned the answer "
            "format; train SFT further (more steps or epochs) on data that ends in a boxed answer before RL, or give "
            "more max_completion_length if its answers are cut off"
        )
    if mostly_wrong:
        return (
            f"{share}, mostly all wrong: the prompts are too hard for this model; use easier prompts, more "
            f"num_generations, or a higher temperature (now {temperature}; entropy {figures['entropy']:.3f} nats)"
        )
    return (
        f"{share}, mostly all correct: the prompts are too easy for this model; use harder prompts (drop the ones it "
        f"always solves), or a higher temperature (now {temperature}; entropy {figures['entropy']:.3f} nats)"
    )


def readiness(
    model: str,
    prompts: list,
    golds: list,
    num_generations: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int = 0,
    backend: str = "transformers",
    batch_size: int = 16,
) -> dict:
    """Sample `num_generations` completions per chat prompt from `model`, score them against `golds`, and return the
    hand-off figures (plus `advice` when most groups carry no signal and the per-prompt `pass_rates`)."""
    from .generation import SamplingConfig, TransformersGenerator, VLLMGenerator, load_tokenizer

    tokenizer = load_tokenizer(model)
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    sampling = SamplingConfig(temperature, top_p, max_new_tokens, num_generations, seed)
    if backend == "vllm":
        generator = VLLMGenerator(model, tokenizer, seed, 1)
    else:
        generator = TransformersGenerator(model, tokenizer, batch_size=batch_size)
    completions = generator.generate(texts, sampling, desc="hand-off report")
    generator.close()
    flat = [c.text for group in completions for c in group]
    scores = verify_batch(flat, [g for g in golds for _ in range(num_generations)])
    correct = [scores[i * num_generations : (i + 1) * num_generations] for i in range(len(prompts))]
    figures = handoff_figures(
        [[None if s is None else s == 1.0 for s in row] for row in correct],
        [[c.entropy for c in group] for group in completions],
        [[c.num_tokens for c in group] for group in completions],
        [[c.truncated for c in group] for group in completions],
        [[extract_boxed(c.text) is not None for c in group] for group in completions],
    )
    figures["pass_rates"] = [sum(s == 1.0 for s in row) / num_generations for row in correct]
    figures["advice"] = advice(figures, temperature)
    return figures


def sample_prompts(count: int, total: int, seed: int) -> list[int]:
    """Which of `total` prompts the report uses: `count` of them, drawn by `seed`, in order."""
    return sorted(random.Random(seed).sample(range(total), min(count, total)))


def plot_handoff(report: dict, output) -> None:
    """Per-prompt pass rates before and after RL (histograms), and the entropy spread over prompts."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(9, 3))
    g = report["before"]["num_generations"]
    bins = [(i - 0.5) / g for i in range(g + 2)]
    for when, color in (("before", "tab:blue"), ("after", "tab:orange")):
        if when in report:
            left.hist(report[when]["pass_rates"], bins=bins, alpha=0.55, color=color, label=f"{when} RL")
            figures = report[when]
            right.errorbar(
                [when],
                [figures["entropy_p50"]],
                yerr=[
                    [figures["entropy_p50"] - figures["entropy_p10"]],
                    [figures["entropy_p90"] - figures["entropy_p50"]],
                ],
                fmt="o",
                color=color,
                capsize=4,
            )
    left.set_xlabel(f"share of the {g} generations that are correct")
    left.set_ylabel("prompts")
    left.legend(fontsize=7)
    left.set_title("groups: 0 and 1 carry no signal")
    right.set_ylabel("entropy (nats/token): p10, p50, p90 over prompts")
    right.set_title("inference entropy")
    save_figure(fig, output)
