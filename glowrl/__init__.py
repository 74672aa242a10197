"""glowrl: GLOW-weighted SFT on unfiltered reasoning trajectories, then RL, on Hugging Face TRL.

The public names are imported on first use, so `import glowrl` (and `glowrl --help`) does not load torch or TRL.
"""

from importlib import import_module

from ._version import __version__


_EXPORTS = {
    "GLOWConfig": "glowrl.glow.config",
    "GLOWTrainer": "glowrl.glow.trainer",
    "glow_weights": "glowrl.glow.weights",
}
__all__ = ["GLOWConfig", "GLOWTrainer", "__version__", "glow_weights"]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
