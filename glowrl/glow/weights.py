"""The GLOW weight: a pure function of a sample's inter-epoch gain. No trainer, no state."""

import torch


def glow_weights(
    gain: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 20.0,
    offset: float = 0.0,
    min_weight: float = 0.5,
    max_weight: float = 5.0,
) -> torch.Tensor:
    r"""GLOW weight of each sample from its gain: `clamp(offset + α(1 − σ(β·gain)), min_weight, max_weight)`.

    `gain` is a sample's loss at its previous visit minus its loss now, so a positive gain means the sample is being
    learned. With `offset=0`, `α=1` (the published setting) every sample whose loss fell gets the minimum 0.5 and a
    sample whose loss rose gets up to 1, i.e. at most a 2× relative emphasis on stalled samples.

    Args:
        gain (`torch.Tensor`):
            Per-sample gains, any shape.
        alpha, beta, offset, min_weight, max_weight (`float`):
            See [`GLOWConfig`].

    Returns:
        `torch.Tensor`: Weights, same shape as `gain`, detached from any graph.

    Example:
    ```python
    >>> glow_weights(torch.tensor([-0.1, 0.0, 0.1]), alpha=2.0, beta=10.0)
    tensor([1.4621, 1.0000, 0.5379])
    ```
    """
    # 1 - sigmoid(x) == sigmoid(-x), which does not cancel catastrophically for large x.
    return (offset + alpha * torch.sigmoid(-beta * gain.detach())).clamp(min_weight, max_weight)
