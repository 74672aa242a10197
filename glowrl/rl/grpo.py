"""GRPO with verifiable math rewards, from the GLOW SFT checkpoint, with policy entropy during rollouts.

    glowrl rl --config recipes/tiny/grpo.yaml --model_name_or_path outputs/tiny/sft
    accelerate launch --config_file accelerate_configs/zero3.yaml -m glowrl rl \
        --config recipes/qwen2.5-7b/grpo_vllm.yaml

Prompts are built from the dataset's problem column with the same system prompt and instruction as SFT and evaluation
(`glowrl.data.problems`); rewards are `glowrl.rewards` by name. Every `trl.GRPOConfig` option is a recipe key: loss
variants (`loss_type: dr_grpo | dapo | grpo`), GSPO (`importance_sampling_level: sequence`), `beta`, vLLM
(`use_vllm`, `vllm_mode`), and LoRA through `trl.ModelConfig` (`use_peft`, `lora_r`, ...).
"""

from dataclasses import dataclass

from trl import GRPOConfig, GRPOTrainer

from ..data import ProblemArguments, build_problem_dataset
from ..rewards import RewardArguments, get_reward_funcs
from ..rollout_entropy import RolloutEntropyArguments, RolloutEntropyMixin
from .base import Algorithm


@dataclass
class RolloutEntropyGRPOConfig(RolloutEntropyArguments, GRPOConfig):
    # docstyle-ignore
    r"""
    Configuration class for the [`RolloutEntropyGRPOTrainer`]: every parameter of [`~trl.GRPOConfig`], plus
    [`~glowrl.rollout_entropy.RolloutEntropyArguments`] (`log_rollout_entropy`, `entropy_correctness_reward`).
    """


class RolloutEntropyGRPOTrainer(RolloutEntropyMixin, GRPOTrainer):
    """
    [`~trl.GRPOTrainer`] that also logs policy entropy during rollouts.

    The only change is [`~glowrl.rollout_entropy.RolloutEntropyMixin`]: `entropy/seq_p10|p50|p90`, `entropy/correct`,
    `entropy/incorrect` and, once, `entropy/initial` are logged from the per-token entropies GRPO already computes,
    and `<output_dir>/entropy.jsonl` gets one line per optimizer step.
    """


def rollout_algorithm(name: str, config_class: type, trainer_class: type) -> Algorithm:
    """The record of an online algorithm on math problems (GRPO, RLOO): problems in, rewards by name."""
    return Algorithm(
        name=name,
        script_types=(ProblemArguments, RewardArguments),
        config_class=config_class,
        trainer_class=trainer_class,
        build_dataset=lambda problems, rewards, training_args: build_problem_dataset(problems),
        trainer_kwargs=lambda problems, rewards: {"reward_funcs": get_reward_funcs(rewards.reward_funcs)},
        describe=lambda dataset: f"{len(dataset)} problems",
        chat_template_path=lambda problems, rewards: problems.chat_template_path,
    )


ALGORITHM = rollout_algorithm("grpo", RolloutEntropyGRPOConfig, RolloutEntropyGRPOTrainer)
