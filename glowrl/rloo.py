"""Stage 2, RLOO: REINFORCE leave-one-out with math rewards from the GLOW SFT checkpoint, with rollout entropy.

Launch:

    glowrl rl --config recipes/tiny/rloo.yaml --model_name_or_path outputs/tiny/sft
    accelerate launch --config_file accelerate_configs/zero3.yaml -m glowrl.rl --config my_rloo.yaml

The same problems, prompts, rewards and `entropy/*` figures as the GRPO stage (`glowrl.grpo`); only the trainer
differs: [`~trl.RLOOTrainer`] ([RLOO](https://huggingface.co/papers/2402.14740)) baselines each completion with the
mean reward of the other completions of its prompt and, by default (`beta: 0.05`), puts a KL penalty to the starting
model into the reward. That reference model is reloaded from `model_name_or_path`, so give a saved model directory
(the SFT stage's output is one); `beta: 0.0` loads no reference model. `python -m glowrl.rloo --config ...` also
works, and accepts a flat recipe's `algorithm: rloo` key.
"""

import sys
from dataclasses import dataclass
from typing import ClassVar

from trl import ModelConfig, RLOOConfig, RLOOTrainer

from .grpo import (
    ProblemArguments,
    RolloutEntropyArguments,
    RolloutEntropyMixin,
    post_init_rollout_config,
    run_rollout_stage,
)
from .recipe import parse_stage_args


@dataclass
class MathRLOOConfig(RolloutEntropyArguments, RLOOConfig):
    # docstyle-ignore
    r"""
    Configuration class for the [`MathRLOOTrainer`].

    [`MathRLOOConfig`] inherits every parameter of [`~trl.RLOOConfig`] (`beta`, `num_generations`,
    `normalize_advantages`, `use_vllm`, ...) and adds the [`~glowrl.grpo.RolloutEntropyArguments`]:
    `log_rollout_entropy` and `entropy_correctness_reward`.
    """

    def __post_init__(self):
        post_init_rollout_config(self, super().__post_init__, "RLOO")


class MathRLOOTrainer(RolloutEntropyMixin, RLOOTrainer):
    """
    [`~trl.RLOOTrainer`] with rollout-entropy logging.

    The only change w.r.t. [`~trl.RLOOTrainer`] is [`~glowrl.grpo.RolloutEntropyMixin`], as in
    [`~glowrl.grpo.MathGRPOTrainer`]: `entropy/seq_p10|p50|p90`, `entropy/correct`, `entropy/incorrect` and, once,
    `entropy/initial` come from the per-token entropies of RLOO's own loss forward, and `<output_dir>/entropy.jsonl`
    gets one line per optimizer step.
    """

    _tag_names: ClassVar[list[str]] = ["trl", "rloo", "glowrl"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_rollout_entropy()


DATACLASS_TYPES = (ProblemArguments, MathRLOOConfig, ModelConfig)


def main(script_args: ProblemArguments, training_args: MathRLOOConfig, model_args: ModelConfig):
    """Train with [`MathRLOOTrainer`] from `model_name_or_path`; save the model and tokenizer to `output_dir`."""
    return run_rollout_stage(MathRLOOTrainer, script_args, training_args, model_args)


def cli(argv: list[str] | None = None) -> int:
    main(*parse_stage_args(DATACLASS_TYPES, "rl", argv))
    return 0


if __name__ == "__main__":
    from functools import partial

    from .cli import run_guarded
    from .rl import cli as rl_cli

    sys.exit(run_guarded(partial(rl_cli, algorithms=("rloo",), default="rloo")))
