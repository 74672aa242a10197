"""RLOO (REINFORCE leave-one-out) with math rewards from the GLOW SFT checkpoint, with policy entropy during rollouts.

    glowrl rl --config recipes/tiny/rloo.yaml --model_name_or_path outputs/tiny/sft

The same problems, prompts, rewards and `entropy/*` figures as `glowrl.rl.grpo`; only the trainer differs:
[`~trl.RLOOTrainer`] ([RLOO](https://huggingface.co/papers/2402.14740)) baselines each completion with the mean reward
of the other completions of its prompt and, by default (`beta: 0.05`), puts a KL penalty to the starting model into
the reward. That reference model is reloaded from `model_name_or_path`, so give a saved model directory (the SFT
stage's output is one); `beta: 0.0` loads no reference model.
"""

from dataclasses import dataclass

from trl import RLOOConfig, RLOOTrainer

from ..rollout_entropy import RolloutEntropyArguments, RolloutEntropyMixin
from .grpo import rollout_algorithm


@dataclass
class RolloutEntropyRLOOConfig(RolloutEntropyArguments, RLOOConfig):
    """[`~trl.RLOOConfig`] plus `log_rollout_entropy` and `entropy_correctness_reward` (as the GRPO config)."""


class RolloutEntropyRLOOTrainer(RolloutEntropyMixin, RLOOTrainer):
    """[`~trl.RLOOTrainer`] plus the `entropy/*` rollout figures, as [`~glowrl.rl.grpo.RolloutEntropyGRPOTrainer`]."""


ALGORITHM = rollout_algorithm("rloo", RolloutEntropyRLOOConfig, RolloutEntropyRLOOTrainer)
