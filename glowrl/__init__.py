"""glowrl: GLOW-weighted SFT on unfiltered reasoning trajectories, then RL, on Hugging Face TRL."""

from .glow_config import GLOWConfig
from .glow_trainer import GLOWTrainer, glow_weights


__version__ = "0.1.0"
__all__ = ["GLOWConfig", "GLOWTrainer", "glow_weights"]
