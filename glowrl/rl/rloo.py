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

from .._trl_compat import post_init_rollout_config
from ..rollout_entropy import RolloutEntropyArguments, RolloutEntropyMixin
from .grpo import rollout_algorithm


@dataclass
class RolloutEntropyRLOOConfig(RolloutEntropyArguments, RLOOConfig):
    # docstyle-ignore
    r"""
    Configuration class for the [`RolloutEntropyRLOOTrainer`].

    Every parameter of [`~trl.RLOOConfig`], plus [`~glowrl.rollout_entropy.RolloutEntropyArguments`]
    (`log_rollout_entropy`, `entropy_correctness_reward`). Batch and vLLM errors name the fix.
    """

    def __post_init__(self):
        post_init_rollout_config(self, super().__post_init__, "RLOO")


class RolloutEntropyRLOOTrainer(RolloutEntropyMixin, RLOOTrainer):
    """
    [`~trl.RLOOTrainer`] that also logs policy entropy during rollouts.

    The only change is [`~glowrl.rollout_entropy.RolloutEntropyMixin`], as in
    [`~glowrl.rl.grpo.RolloutEntropyGRPOTrainer`].
    """

    _tag_names = ["trl", "rloo", "glowrl"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_rollout_entropy()


ALGORITHM = rollout_algorithm("rloo", RolloutEntropyRLOOConfig, RolloutEntropyRLOOTrainer)
