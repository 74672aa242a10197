"""The GLOW fields, in a dataclass that imports nothing heavy (so `glowrl sft --help` can list them), and their checks.

[`~glowrl.glow.config.GLOWConfig`] is `trl.SFTConfig` plus these fields.
"""

from dataclasses import dataclass, field

from ..errors import RecipeError


@dataclass
class GLOWArguments:
    # docstyle-ignore
    r"""
    The GLOW fields of [`GLOWConfig`], in a dataclass of their own that imports nothing heavy.

    GLOW (Gain-based LOss Weighting) is from [Learning from Mistakes: Negative Reasoning Samples Enhance Out-of-Domain
    Generalization](https://huggingface.co/papers/2601.04992). Each training sample's loss is multiplied by

        w = clamp(glow_offset + glow_alpha * (1 - sigmoid(glow_beta * gain)), glow_min_weight, glow_max_weight)

    where `gain` is the sample's loss at its previous visit minus its loss now (before this step's update). Samples
    whose loss fell a lot are down-weighted; samples whose loss stalled or rose are up-weighted. With `glow=False` the
    trainer is exactly [`~trl.SFTTrainer`].

    Parameters:
        > Parameters that control GLOW

        glow (`bool`, *optional*, defaults to `True`):
            Whether to weight each sample's loss by its inter-epoch gain. `False` reproduces plain SFT exactly.
        glow_alpha (`float`, *optional*, defaults to `1.0`):
            Scale α of the sigmoid term. Must be ≥ 0.
        glow_beta (`float`, *optional*, defaults to `20.0`):
            Sharpness β of the sigmoid in the gain. Must be ≥ 0; `0` makes every weight `offset + α/2`.
        glow_offset (`float`, *optional*, defaults to `0.0`):
            Constant added before clamping. `0.0` is the published code's active formula `α(1 − σ(βΔ))`; `1.0` is its
            alternative `1 + α(1 − σ(βΔ))`.
        glow_min_weight (`float`, *optional*, defaults to `0.5`):
            Lower clamp of the weight (the published value).
        glow_max_weight (`float`, *optional*, defaults to `5.0`):
            Upper clamp of the weight (the published value).
        glow_warmup_epochs (`int`, *optional*, defaults to `1`):
            Number of initial epochs trained unweighted (weight 1) while the loss history fills. The published code
            uses 1.
        glow_reduction (`str`, *optional*, defaults to `"sample"`):
            How weighted losses are reduced. `"sample"`: mean over the samples of the optimizer step of
            `weight × per-sample mean token loss`, as published (every sample counts equally whatever its length).
            `"token"`: TRL's token-level normalisation, `Σ weight × token loss / number of tokens`. Both are exact
            under gradient accumulation and multi-process training.
        glow_log_samples (`bool`, *optional*, defaults to `False`):
            Whether to write one JSON line per sample visit to `<output_dir>/glow_samples.jsonl` with keys `epoch`,
            `step`, `sample_id`, `loss`, `prev_loss`, `gain`, `weight`, and `correct` when the dataset has it. With
            `glow=False` it logs the baseline's per-sample losses (weight 1) in the same format, training unchanged.
    """

    glow: bool = field(
        default=True,
        metadata={"help": "Whether to weight each sample's loss by its inter-epoch gain. False reproduces plain SFT."},
    )
    glow_alpha: float = field(default=1.0, metadata={"help": "Scale α of the sigmoid term. Must be ≥ 0."})
    glow_beta: float = field(default=20.0, metadata={"help": "Sharpness β of the sigmoid in the gain. Must be ≥ 0."})
    glow_offset: float = field(
        default=0.0,
        metadata={
            "help": "Constant added before clamping: 0.0 is the published α(1 − σ(βΔ)), 1.0 is 1 + α(1 − σ(βΔ))."
        },
    )
    glow_min_weight: float = field(default=0.5, metadata={"help": "Lower clamp of the weight."})
    glow_max_weight: float = field(default=5.0, metadata={"help": "Upper clamp of the weight."})
    glow_warmup_epochs: int = field(
        default=1, metadata={"help": "Number of initial epochs trained unweighted while the loss history fills."}
    )
    glow_reduction: str = field(
        default="sample",
        metadata={
            "help": "How weighted losses are reduced: 'sample' (mean of weight × per-sample mean loss, as published) "
            "or 'token' (TRL's token-level normalisation).",
            "choices": ["sample", "token"],
        },
    )
    glow_log_samples: bool = field(
        default=False,
        metadata={
            "help": "Whether to write one JSON line per sample visit to <output_dir>/glow_samples.jsonl (with glow: "
            "false too: the baseline's per-sample losses, weight 1)."
        },
    )


def check_glow_arguments(args) -> None:
    """Raise a [`~glowrl.errors.RecipeError`] naming the field for a GLOW value out of range."""
    checks = [
        (args.glow_alpha < 0, "glow_alpha", f"must be ≥ 0, got {args.glow_alpha}"),
        (args.glow_beta < 0, "glow_beta", f"must be ≥ 0, got {args.glow_beta}"),
        (
            args.glow_min_weight > args.glow_max_weight,
            "glow_min_weight",
            f"({args.glow_min_weight}) must not exceed glow_max_weight ({args.glow_max_weight})",
        ),
        (args.glow_warmup_epochs < 0, "glow_warmup_epochs", f"must be ≥ 0, got {args.glow_warmup_epochs}"),
        (
            args.glow_reduction not in ("sample", "token"),
            "glow_reduction",
            f"must be 'sample' or 'token', got {args.glow_reduction!r}",
        ),
    ]
    for failed, name, message in checks:
        if failed:
            raise RecipeError(f"{name} {message}")


def check_parallelism(config, where: str) -> None:
    """Refuse context and sequence parallelism: each rank would weight a sample by the loss of its own chunk."""
    for name in ("cp_size", "sp_size"):
        size = getattr(config, name, 1) or 1
        if size > 1:
            raise RecipeError(
                f"parallelism_config.{name}: {size} (from {where}) splits each sample's tokens over ranks, so GLOW "
                f"would weight every chunk by its own partial loss; set {name}: 1 (and shorten max_length or use "
                "ZeRO-3/FSDP to fit long sequences), or glow: false"
            )
