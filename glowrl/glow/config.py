"""[`GLOWConfig`]: `trl.SFTConfig` plus the GLOW fields of [`~glowrl.glow.arguments.GLOWArguments`]."""

from dataclasses import dataclass

from trl import SFTConfig

from ..errors import RecipeError
from .arguments import GLOWArguments, check_glow_arguments, check_parallelism


@dataclass
class GLOWConfig(GLOWArguments, SFTConfig):
    # docstyle-ignore
    r"""
    Configuration class for the [`~glowrl.glow.trainer.GLOWTrainer`].

    [`GLOWConfig`] inherits every parameter of [`~trl.SFTConfig`] and adds the GLOW parameters of
    [`~glowrl.glow.arguments.GLOWArguments`] (`glow`, `glow_alpha`, `glow_beta`, `glow_offset`, `glow_min_weight`,
    `glow_max_weight`, `glow_warmup_epochs`, `glow_reduction`, `glow_log_samples`), documented there. With
    `glow=False` the trainer is exactly [`~trl.SFTTrainer`]. Options that would lose per-sample identity or replace the
    per-token loss GLOW reweights are refused by name while `glow` is on.
    """

    def __post_init__(self):
        super().__post_init__()
        check_glow_arguments(self)
        if not self.glow:
            # A baseline's per-sample log needs each sample's own loss, as GLOW does; its loss is TRL's, untouched.
            for failed, name in ((self.packing, "packing"), (self.padding_free, "padding_free")):
                if failed and self.glow_log_samples:
                    raise RecipeError(
                        f"{name} merges samples into one row, so glow_log_samples cannot log per-sample losses; set "
                        f"{name}: false, or glow_log_samples: false"
                    )
            return
        # Each of these loses per-sample identity or replaces the per-token loss GLOW reweights.
        checks = [
            (
                self.packing,
                "packing",
                "cannot be used with GLOW (packed rows lose per-sample identity); set packing: false",
            ),
            (
                self.padding_free,
                "padding_free",
                "cannot be used with GLOW (a flattened batch loses per-sample identity); set padding_free: false",
            ),
            (
                self.loss_type == "dft",
                "loss_type",
                "'dft' reweights tokens by probability and cannot be combined with GLOW; use loss_type: nll",
            ),
            (
                self.label_smoothing_factor > 0,
                "label_smoothing_factor",
                "cannot be used with GLOW (it replaces the per-token loss GLOW reweights); set it to 0",
            ),
        ]
        for failed, name, message in checks:
            if failed:
                raise RecipeError(f"{name} {message}")
        check_parallelism(self.parallelism_config, "the recipe")
