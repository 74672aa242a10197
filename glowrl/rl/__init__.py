"""RL algorithms that train from the GLOW SFT checkpoint: one module each, found by name.

Shipped: `grpo` and `rloo` (online, math rewards, rollout-entropy figures), `dpo` and `kto` (offline, from the SFT
trajectories' positives and negatives). Adding one is one file exporting `ALGORITHM` (see [`~glowrl.rl.base`]).
"""

from .base import Algorithm, available_algorithms, get_algorithm, register_algorithm


__all__ = ["Algorithm", "available_algorithms", "get_algorithm", "register_algorithm"]
