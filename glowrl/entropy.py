"""Policy-entropy summaries of RL rollouts, from the per-token entropies the trainer already computes.

TRL's GRPO and RLOO trainers compute the entropy of the policy at every completion token in the loss forward (at the
sampling temperature) and log only its token-weighted mean as `entropy`. These pure functions turn the same tensors
into the view GLOW's claim is about (negatives raise policy entropy, which helps exploration): the spread of entropy
across rollouts, and how it differs between correct and incorrect rollouts.
"""

import torch


def sequence_entropy(entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token entropy of each rollout.

    Args:
        entropies (`torch.Tensor` of shape `(B, T)`): per-token entropy (nats).
        mask (`torch.Tensor` of shape `(B, T)`): 1 for completion tokens, 0 for padding.

    Returns:
        `torch.Tensor` of shape `(B,)`: masked mean per rollout; NaN for a rollout with no tokens.
    """
    mask = mask.to(entropies.dtype)
    counts = mask.sum(-1)
    return torch.where(counts > 0, (entropies * mask).sum(-1) / counts.clamp(min=1), torch.nan)


def entropy_sums(entropies: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Token-weighted entropy sums and token counts: over all rollouts, correct ones and incorrect ones.

    Args:
        entropies (`torch.Tensor` of shape `(B, T)`): per-token entropy.
        mask (`torch.Tensor` of shape `(B, T)`): completion-token mask.
        correct (`torch.Tensor` of shape `(B,)`): 1 for a correct rollout, 0 for an incorrect one, NaN when unscored.

    Returns:
        `torch.Tensor` of shape `(6,)`: `[sum, tokens, sum over correct, tokens of correct, sum over incorrect,
        tokens of incorrect]`, ready to be added up across ranks and micro-batches. Unscored rollouts count only in
        the first pair.
    """
    mask = mask.to(entropies.dtype)
    per_row_sum, per_row_tokens = (entropies * mask).sum(-1), mask.sum(-1)
    is_correct, is_incorrect = (correct == 1).to(entropies.dtype), (correct == 0).to(entropies.dtype)
    return torch.stack(
        [
            per_row_sum.sum(),
            per_row_tokens.sum(),
            (per_row_sum * is_correct).sum(),
            (per_row_tokens * is_correct).sum(),
            (per_row_sum * is_incorrect).sum(),
            (per_row_tokens * is_incorrect).sum(),
        ]
    )


def summarize_rollout_entropy(seq_entropy: torch.Tensor, sums: torch.Tensor) -> dict[str, float]:
    """The logged figures from per-rollout means and the sums of [`entropy_sums`].

    Returns:
        `dict`: `entropy/seq_p10`, `entropy/seq_p50`, `entropy/seq_p90` (quantiles of the per-rollout mean entropy),
        `entropy/correct`, `entropy/incorrect` (token-weighted means; absent when no rollout of that kind) and
        `entropy/tokens_correct`, `entropy/tokens_incorrect` (the token counts behind them).
    """
    figures = {}
    seq_entropy = seq_entropy[~seq_entropy.isnan()].double()
    if len(seq_entropy):
        p10, p50, p90 = torch.quantile(seq_entropy, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
        figures.update({"entropy/seq_p10": p10, "entropy/seq_p50": p50, "entropy/seq_p90": p90})
    _, _, correct_sum, correct_tokens, incorrect_sum, incorrect_tokens = sums.double().tolist()
    if correct_tokens:
        figures["entropy/correct"] = correct_sum / correct_tokens
    if incorrect_tokens:
        figures["entropy/incorrect"] = incorrect_sum / incorrect_tokens
    figures["entropy/tokens_correct"] = correct_tokens
    figures["entropy/tokens_incorrect"] = incorrect_tokens
    return figures
