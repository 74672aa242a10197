"""Policy entropy during RL rollouts: summaries of the per-token entropies the trainer already computes, and the
mixin that logs them on TRL's GRPO and RLOO trainers.

TRL's GRPO and RLOO trainers compute the entropy of the policy at every completion token in the loss forward (at the
sampling temperature) and log only its token-weighted mean as `entropy`. The pure functions here turn the same
tensors into the view GLOW's claim is about (negatives raise policy entropy, which helps exploration): the spread of
entropy across rollouts, and how it differs between correct and incorrect rollouts. [`RolloutEntropyMixin`] wires
them into a trainer with no extra forward pass; its private TRL hooks are listed in `glowrl._trl_compat`.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from ._trl_compat import (
    adapt_colocated_vllm,
    completion_token_mask,
    cpu_server_client,
    local_rows,
    post_init_rollout_config,
    trl_metrics,
)
from .io import read_jsonl, write_jsonl
from .vllm_support import set_cpu_kv_cache_env


ENTROPY_LOG_NAME = "entropy.jsonl"


def sequence_entropy(entropies: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token entropy of each rollout.

    Args:
        entropies (`torch.Tensor` of shape `(B, T)`): per-token entropy (nats).
        mask (`torch.Tensor` of shape `(B, T)`): 1 for completion tokens, 0 for padding.

    Returns:
        `torch.Tensor` of shape `(B,)`: masked mean per rollout; NaN for a rollout with no tokens.
    """
    mask = mask.to(entropies.dtype)
    counts = mask.sum(-1)
    return torch.where(counts > 0, (entropies * mask).sum(-1) / counts.clamp(min=1), torch.nan)


def entropy_sums(entropies: torch.Tensor, mask: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """Token-weighted entropy sums and token counts: over all rollouts, correct ones and incorrect ones.

    Args:
        entropies (`torch.Tensor` of shape `(B, T)`): per-token entropy.
        mask (`torch.Tensor` of shape `(B, T)`): completion-token mask.
        correct (`torch.Tensor` of shape `(B,)`): 1 for a correct rollout, 0 for an incorrect one, NaN when unscored.

    Returns:
        `torch.Tensor` of shape `(6,)`: `[sum, tokens, sum over correct, tokens of correct, sum over incorrect,
        tokens of incorrect]`, ready to be added up across ranks and micro-batches. Unscored rollouts count only in
        the first pair.
    """
    mask = mask.to(entropies.dtype)
    per_row_sum, per_row_tokens = (entropies * mask).sum(-1), mask.sum(-1)
    is_correct, is_incorrect = (correct == 1).to(entropies.dtype), (correct == 0).to(entropies.dtype)
    return torch.stack(
        [
            per_row_sum.sum(),
            per_row_tokens.sum(),
            (per_row_sum * is_correct).sum(),
            (per_row_tokens * is_correct).sum(),
            (per_row_sum * is_incorrect).sum(),
            (per_row_tokens * is_incorrect).sum(),
        ]
    )


def summarize_rollout_entropy(seq_entropy: torch.Tensor, sums: torch.Tensor) -> dict[str, float]:
    """The logged figures from per-rollout means and the sums of [`entropy_sums`].

    Returns:
        `dict`: `entropy/seq_p10`, `entropy/seq_p50`, `entropy/seq_p90` (quantiles of the per-rollout mean entropy),
        `entropy/correct`, `entropy/incorrect` (token-weighted means; absent when no rollout of that kind) and
        `entropy/tokens_correct`, `entropy/tokens_incorrect` (the token counts behind them).
    """
    figures = {}
    seq_entropy = seq_entropy[~seq_entropy.isnan()].double()
    if len(seq_entropy):
        p10, p50, p90 = torch.quantile(seq_entropy, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
        figures.update({"entropy/seq_p10": p10, "entropy/seq_p50": p50, "entropy/seq_p90": p90})
    _, _, correct_sum, correct_tokens, incorrect_sum, incorrect_tokens = sums.double().tolist()
    if correct_tokens:
        figures["entropy/correct"] = correct_sum / correct_tokens
    if incorrect_tokens:
        figures["entropy/incorrect"] = incorrect_sum / incorrect_tokens
    figures["entropy/tokens_correct"] = correct_tokens
    figures["entropy/tokens_incorrect"] = incorrect_tokens
    return figures


@dataclass
class RolloutEntropyArguments:
    # docstyle-ignore
    r"""
    The rollout-entropy fields shared by the GRPO and RLOO configs of `glowrl.rl`.

    Parameters:
        > Parameters that control the entropy logging

        log_rollout_entropy (`bool`, *optional*, defaults to `True`):
            Whether to log `entropy/*` figures and write `<output_dir>/entropy.jsonl` (see the README).
        entropy_correctness_reward (`str`, *optional*, defaults to `"math_accuracy"`):
            Reward function whose 1/0 score splits rollouts into correct and incorrect for `entropy/correct` and
            `entropy/incorrect`.
    """

    log_rollout_entropy: bool = field(default=True, metadata={"help": "Whether to log entropy/* figures."})
    entropy_correctness_reward: str = field(
        default="math_accuracy", metadata={"help": "Reward whose 1/0 score splits rollouts into correct/incorrect."}
    )

    def __post_init__(self):
        # Mixed in before a TRL GRPO/RLOO config: run its checks, with batch and vLLM errors that name the fix.
        post_init_rollout_config(self, super().__post_init__)


class RolloutEntropyMixin:
    """Adds the `entropy/*` rollout figures to a TRL trainer that computes per-token entropies in its loss forward.

    No extra forward pass: the per-token entropies of the loss forward (the ones behind TRL's `entropy`) are kept
    for the micro-batch, summarised per optimizer step together with each rollout's correctness, and logged. Works
    for [`~trl.GRPOTrainer`] and [`~trl.RLOOTrainer`], which share the hooks used here.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._tag_names = [*getattr(cls, "_tag_names", []), "glowrl"]  # the TRL trainer's tags, e.g. trl, grpo

    def __init__(self, *args, **kwargs):
        if getattr(kwargs.get("args"), "use_vllm", False):
            set_cpu_kv_cache_env()  # before TRL starts a colocated engine
        with cpu_server_client(kwargs.get("args")):
            super().__init__(*args, **kwargs)
        adapt_colocated_vllm(self)
        self._init_rollout_entropy()

    def _init_rollout_entropy(self):
        self._entropy_enabled = self.args.log_rollout_entropy
        names = self.reward_func_names
        self._correct_index = (
            names.index(self.args.entropy_correctness_reward)
            if self.args.entropy_correctness_reward in names
            else None
        )
        self._entropy_step = self._empty_entropy_step()
        self._entropy_window: list[dict] = []
        self._entropy_initial_logged = False
        self._trl_entropy_seen = 0
        self._captured_entropies = None
        if self._entropy_enabled:
            self.add_callback(_EntropyStepEnd(self))

    def _empty_entropy_step(self):
        # Kept on the accelerator until the step ends: one device-to-host copy per optimizer step, not per micro-batch.
        return {"seq": [], "sums": torch.zeros(6, dtype=torch.float64, device=self.accelerator.device)}

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._last_rewards_per_func = rewards_per_func  # gathered over ranks, (B_global, num_funcs)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        if self._entropy_enabled:
            local = len(output["advantages"])
            rows = local_rows(self, local)
            if self._correct_index is None:
                correct = torch.full((local,), torch.nan)
            else:
                correct = self._last_rewards_per_func[rows, self._correct_index]
            # Any (B,) tensor in the output is shuffled and split with the rollouts, so it reaches the loss forward.
            output["rollout_correct"] = correct.to(output["advantages"].device)
        return output

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if kwargs.get("compute_entropy") and self.model.training:
            self._captured_entropies = entropies.detach()
        return (logps, entropies, *rest)

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        entropies, self._captured_entropies = self._captured_entropies, None
        if self._entropy_enabled and entropies is not None and self.model.training:
            mask = completion_token_mask(inputs)
            self._entropy_step["seq"].append(sequence_entropy(entropies, mask).double())
            sums = entropy_sums(entropies.double(), mask, inputs["rollout_correct"].double())
            self._entropy_step["sums"] += sums
        return loss

    def _end_entropy_step(self):
        """Reduce this optimizer step's figures over ranks (one all-gather) and record them; runs on every rank."""
        device = self.accelerator.device
        step = self._entropy_step
        seq = torch.cat(step["seq"]) if step["seq"] else torch.empty(0, dtype=torch.float64, device=device)
        sums = step["sums"]
        self._entropy_step = self._empty_entropy_step()
        if self.accelerator.num_processes > 1:
            seq = self.accelerator.gather(self.accelerator.pad_across_processes(seq, pad_index=torch.nan))
            sums = self.accelerator.gather(sums[None]).sum(0)
        seq, sums = seq.cpu(), sums.cpu()
        if sums[1] == 0:
            return
        figures = summarize_rollout_entropy(seq, sums)
        if not self._entropy_initial_logged:
            # Every loss forward of the first optimizer step runs before the first update: the initial policy.
            figures["entropy/initial"] = (sums[0] / sums[1]).item()
            self._entropy_initial_logged = True
        self._entropy_window.append(figures)
        trl_entropy = trl_metrics(self).get("entropy", [])[self._trl_entropy_seen :]
        self._trl_entropy_seen += len(trl_entropy)
        if self.accelerator.is_main_process:
            row = {"step": self.state.global_step, **figures}
            if trl_entropy:
                row["entropy"] = sum(trl_entropy) / len(trl_entropy)
            path = Path(self.args.output_dir) / ENTROPY_LOG_NAME
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def log(self, logs, start_time=None):
        if self._entropy_enabled and self.model.training and self._entropy_window:
            keys = {k for figures in self._entropy_window for k in figures if not k.startswith("entropy/tokens")}
            for key in sorted(keys):
                values = [f[key] for f in self._entropy_window if key in f]
                logs[key] = sum(values) / len(values)
            self._entropy_window = []
        super().log(logs, start_time)
        self._trl_entropy_seen = 0  # TRL clears its metrics at every log


class _EntropyStepEnd(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / ENTROPY_LOG_NAME
        if not state.is_world_process_zero or not path.is_file():
            return
        if state.global_step == 0:  # a fresh run, not a resume
            path.unlink()
        else:  # a resume: keep the steps the checkpoint holds, drop the ones that will run again
            rows = [row for row in read_jsonl(path) if row["step"] <= state.global_step]
            write_jsonl(rows, path)

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_entropy_step()
