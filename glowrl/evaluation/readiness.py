"""The SFT -> RL hand-off report: is this model a good start for group-based RL on these prompts?

On a sample of the RL prompts, draw `num_generations` completions per prompt from the model with the RL sampling
settings and measure what GRPO/RLOO will see, computed as TRL 1.16 computes it: each completion's reward is the sum
of the recipe's reward functions times their `reward_weights` (a function that returns `None` is left out of the
sum; a completion no function scores is left out of everything), and a group whose total rewards do not vary (with
`multi_objective_aggregation: normalize_then_sum`: no function varies) gets zero advantage: no gradient. Beside the
reward figures, the correctness figures: accuracy, pass@k for k <= num_generations, the share of prompts whose group
is all correct or all wrong; then the inference entropy (token-weighted, and its spread across prompts) and the
truncation rate. With the shipped recipes' `boxed_format` at weight 0.1, an all-wrong group that mixes boxed and
unboxed answers still has reward variance: the correctness shares alone would call it dead. Prompts whose gold does
not parse (correctness `None`) are counted apart (`unscorable_prompts`) and left out of the correctness figures.
Recent work reports that the SFT model's entropy on its own samples predicts how far GRPO gets, and that over-trained
SFT collapses it so that most groups carry no signal (arXiv 2606.18487); GLOW's claim is that negatives keep that
entropy up. The RL stage writes this report before training and again after it (`readiness.json`), so it shows what
RL changed.

[`handoff_figures`], [`total_rewards`] and [`group_has_signal`] are the pure part (hand-checked in the tests);
[`readiness`] samples and scores.
"""

import math
import random

from ..grading import extract_boxed, verify_batch
from ..io import pyplot, save_figure
from .metrics import pass_at_k


ZERO_STD = 1e-8  # TRL: torch.isclose(std, 0), atol 1e-8
AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _std(values: list[float]) -> float:
    """TRL's `nanstd` of the values present: Bessel-corrected (NaN for fewer than two)."""
    if len(values) < 2:
        return math.nan
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def total_rewards(per_function: list[list[float | None]], weights: list[float]) -> list[float | None]:
    """Each completion's total reward as TRL sums it: `sum_i w_i r_i` over the functions that scored it (`None` is
    NaN there, and `nansum` skips it); `None` when no function scored it (TRL leaves that completion out)."""
    totals = []
    for scores in per_function:
        present = [w * r for w, r in zip(weights, scores, strict=True) if r is not None]
        totals.append(sum(present) if present else None)
    return totals


def group_has_signal(group: list[list[float | None]], weights: list[float], aggregation: str) -> bool:
    """Whether GRPO/RLOO gives any completion of this group (samples x reward functions) a non-zero advantage: its
    scored total rewards vary (`sum_then_normalize`, and RLOO), or, with `normalize_then_sum` (each function
    normalised within the group before the weighted sum), some weighted function varies. A group with fewer than two
    scored completions has none (TRL zeroes the NaN advantages)."""
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"multi_objective_aggregation: unknown {aggregation!r}; TRL has {', '.join(AGGREGATIONS)}")
    if aggregation == "normalize_then_sum":
        for i, weight in enumerate(weights):
            values = [row[i] for row in group if row[i] is not None]
            if weight != 0 and len(values) > 1 and _std(values) > ZERO_STD:
                return True
        return False
    totals = [t for t in total_rewards(group, weights) if t is not None]
    return len(totals) > 1 and _std(totals) > ZERO_STD


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def handoff_figures(
    correct: list[list],
    entropy: list[list[float]],
    tokens: list[list[int]],
    truncated: list[list],
    rewards: list[list[list[float | None]]] | None = None,
    weights: list[float] | None = None,
    reward_names: list[str] | None = None,
    aggregation: str = "sum_then_normalize",
    answered: list[list] | None = None,
) -> dict:
    """The hand-off figures from per-prompt groups of samples (all lists: prompts x samples).

    Args:
        correct: 1/True, 0/False, or None (unscorable: the gold does not parse) per sample.
        entropy: each sample's mean token entropy (nats).
        tokens: each sample's generated tokens.
        truncated: whether each sample ran out of tokens.
        rewards: per sample, each reward function's score (`None` where it does not score); default: correctness
            alone, as a recipe with only `math_accuracy`.
        weights: the reward functions' `reward_weights` (default: 1 each, as TRL).
        reward_names: their names, for the per-function means.
        aggregation: TRL's `multi_objective_aggregation`.
        answered: whether each sample gives a final answer (a complete `\\boxed{}`), the format the reward reads.

    Returns:
        `dict`: `prompts`, `num_generations`; GRPO's view: `mean_reward` (the mean total reward of the scored
        completions, TRL's logged `reward`), `reward_means` (per function), `share_no_signal` (groups whose advantages
        are all zero); correctness, over the `scorable_prompts` (`unscorable_prompts` counted apart): `accuracy`,
        `pass@k` (k = 1..G), `share_all_correct`, `share_all_wrong`; `entropy` (token-weighted; `None` when no token
        was generated), `entropy_p10|p50|p90` (over prompts that generated tokens, of each one's token-weighted
        entropy), `truncation_rate`, and with `answered`, `no_answer_rate`.
    """
    groups = len(correct[0]) if correct else 0
    if rewards is None:
        rewards = [[[None if c is None else float(c)] for c in row] for row in correct]
        reward_names = reward_names or ["correct"]
    functions = len(rewards[0][0]) if rewards and rewards[0] else 0
    weights = list(weights) if weights is not None else [1.0] * functions
    names = list(reward_names) if reward_names is not None else [f"reward_{i}" for i in range(functions)]
    scored = [[bool(c) for c in row] for row in correct if all(c is not None for c in row)]
    figures = {
        "prompts": len(correct),
        "num_generations": groups,
        "scorable_prompts": len(scored),
        "unscorable_prompts": len(correct) - len(scored),
        "reward_weights": weights,
        "mean_reward": _mean([t for group in rewards for t in total_rewards(group, weights)]),
        "reward_means": {
            name: _mean([sample[i] for group in rewards for sample in group]) for i, name in enumerate(names)
        },
        "share_no_signal": (
            sum(not group_has_signal(group, weights, aggregation) for group in rewards) / len(rewards)
            if rewards
            else None
        ),
    }
    if scored:
        figures["accuracy"] = sum(map(sum, scored)) / (len(scored) * groups)
        for k in range(1, groups + 1):
            figures[f"pass@{k}"] = sum(pass_at_k(groups, sum(row), k) for row in scored) / len(scored)
        figures["share_all_correct"] = sum(all(row) for row in scored) / len(scored)
        figures["share_all_wrong"] = sum(not any(row) for row in scored) / len(scored)
    total = sum(map(sum, tokens))
    weighted = [[e * t for e, t in zip(re, rt, strict=True)] for re, rt in zip(entropy, tokens, strict=True)]
    figures["entropy"] = sum(map(sum, weighted)) / total if total else None
    per_prompt = [sum(w) / sum(rt) for w, rt in zip(weighted, tokens, strict=True) if sum(rt)]
    for q in (10, 50, 90):
        figures[f"entropy_p{q}"] = _quantile(per_prompt, q / 100) if per_prompt else None
    samples = sum(len(row) for row in truncated)
    figures["truncation_rate"] = sum(map(sum, truncated)) / samples if samples else None
    if answered is not None and samples:
        figures["no_answer_rate"] = 1 - sum(map(sum, answered)) / samples
    return figures


def _nats(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} nats"


def advice(figures: dict, temperature: float) -> str | None:
    """A warning when most groups will carry no signal, saying which way to move; `None` when they will.

    Mostly all wrong because most samples give no final answer is a different problem from prompts that are too hard:
    the model has not learned the answer format, and easier prompts or a higher temperature will not teach it."""
    if (figures.get("share_no_signal") or 0.0) <= 0.5:
        return None
    share = f"{figures['share_no_signal']:.0%} of the groups have no reward variance (no advantage, no gradient)"
    entropy = _nats(figures.get("entropy"))
    mostly_wrong = figures.get("share_all_wrong", 0.0) >= figures.get("share_all_correct", 0.0)
    if mostly_wrong and (figures.get("no_answer_rate") or 0.0) > 0.5:
        return (
            f"{share}, mostly all wrong, and {figures['no_answer_rate']:.0%} of the samples give no final \\boxed{{}} "
            f"answer ({figures['truncation_rate']:.0%} run out of tokens): the model has not learned the answer "
            "format; train SFT further (more steps or epochs) on data that ends in a boxed answer before RL, or give "
            "more max_completion_length if its answers are cut off"
        )
    if mostly_wrong:
        return (
            f"{share}, mostly all wrong: the prompts are too hard for this model; use easier prompts, more "
            f"num_generations, or a higher temperature (now {temperature}; entropy {entropy})"
        )
    return (
        f"{share}, mostly all correct: the prompts are too easy for this model; use harder prompts (drop the ones it "
        f"always solves), or a higher temperature (now {temperature}; entropy {entropy})"
    )


def score_rewards(reward_funcs: list, prompts: list, texts: list[str], columns: dict, num_generations: int) -> list:
    """Each reward function's scores of the completions, called as TRL calls it: `prompts`, conversational
    `completions` and the dataset's other columns, each repeated per generation. Returns functions x completions."""
    repeat = num_generations
    kwargs = {
        key: [value for value in values for _ in range(repeat)]
        for key, values in columns.items()
        if key not in ("prompt", "completion", "completion_ids")
    }
    completions = [[{"role": "assistant", "content": text}] for text in texts]
    repeated = [prompt for prompt in prompts for _ in range(repeat)]
    return [list(func(prompts=repeated, completions=completions, **kwargs)) for func in reward_funcs]


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
    reward_funcs: list | None = None,
    reward_weights: list[float] | None = None,
    aggregation: str = "sum_then_normalize",
    columns: dict | None = None,
) -> dict:
    """Sample `num_generations` completions per chat prompt from `model`, score them with the RL run's reward
    functions and weights (`columns`: the dataset's columns of these prompts, which the functions read) and against
    `golds`, and return the hand-off figures (plus `advice` when most groups carry no signal, and the per-prompt
    `pass_rates`, `None` for a prompt whose gold does not parse)."""
    from ..errors import GlowrlError
    from .generation import SamplingConfig, TransformersGenerator, VLLMGenerator, load_tokenizer

    reward_funcs = list(reward_funcs or [])
    if reward_funcs and reward_weights is not None and len(reward_weights) != len(reward_funcs):
        raise GlowrlError(
            f"reward_weights: {len(reward_weights)} weights for {len(reward_funcs)} reward_funcs; give one weight per "
            "reward function"
        )
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
    names = [getattr(func, "__name__", type(func).__name__) for func in reward_funcs]
    scores = score_rewards(reward_funcs, prompts, flat, columns or {"answer": golds}, num_generations)
    if "math_accuracy" in names:  # the correctness figures from the same grading, not a second pass
        verified = scores[names.index("math_accuracy")]
    else:
        verified = verify_batch(flat, [g for g in golds for _ in range(num_generations)])

    def per_prompt(values):
        return [values[i * num_generations : (i + 1) * num_generations] for i in range(len(prompts))]

    correct = [[None if v is None else v == 1.0 for v in row] for row in per_prompt(verified)]
    rewards = None
    if reward_funcs:
        rewards = per_prompt([list(sample) for sample in zip(*scores, strict=True)])
    figures = handoff_figures(
        correct,
        [[c.entropy for c in group] for group in completions],
        [[c.num_tokens for c in group] for group in completions],
        [[c.truncated for c in group] for group in completions],
        rewards=rewards,
        weights=reward_weights,
        reward_names=names or None,
        aggregation=aggregation,
        answered=[[extract_boxed(c.text) is not None for c in group] for group in completions],
    )
    figures["pass_rates"] = [None if any(c is None for c in row) else sum(row) / num_generations for row in correct]
    figures["advice"] = advice(figures, temperature)
    figures["backend"] = backend  # entropies differ by backend: exact (transformers) or over the top 20 (vLLM)
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
            rates = [rate for rate in report[when]["pass_rates"] if rate is not None]  # unscorable prompts apart
            left.hist(rates, bins=bins, alpha=0.55, color=color, label=f"{when} RL")
            figures = report[when]
            if figures["entropy_p50"] is None:  # no token generated
                continue
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
