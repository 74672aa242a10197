"""glowrl: GLOW-weighted SFT on unfiltered reasoning trajectories, then RL, on Hugging Face TRL."""

__version__ = "0.1.0"
