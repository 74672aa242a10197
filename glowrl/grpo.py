"""Stage 2: GRPO with verifiable math rewards from the GLOW SFT checkpoint, with policy entropy during rollouts.

Launch:

    glowrl grpo --config recipes/tiny/grpo.yaml --model_name_or_path outputs/tiny/sft
    accelerate launch --config_file accelerate_configs/zero3.yaml -m glowrl.grpo \\
        --config recipes/qwen2.5-7b/grpo_vllm.yaml

The model is a path (normally the SFT stage's output directory) or a Hub name. Prompts are built from the dataset's
problem column with the same system prompt and instruction as SFT and evaluation (`glowrl.prompts`). LoRA comes from
TRL's `ModelConfig` (`use_peft: true`, `lora_r`, ...); vLLM generation from TRL's `use_vllm` / `vllm_mode`.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, concatenate_datasets
from transformers import TrainerCallback, set_seed
from trl import GRPOConfig, GRPOTrainer, ModelConfig, get_peft_config
from trl.import_utils import is_vllm_available

from .data import load_table
from .entropy import entropy_sums, sequence_entropy, summarize_rollout_entropy
from .prompts import DEFAULT_INSTRUCTION, prompt_messages
from .recipe import parse_stage_args
from .rewards import REWARD_FUNCS, get_reward_funcs
from .stage import check_model_path, load_tokenizer, set_model_init_kwargs, train_and_save


ENTROPY_LOG_NAME = "entropy.jsonl"


@dataclass
class ProblemArguments:
    # docstyle-ignore
    r"""
    The RL prompts: problems with gold answers, and how to turn them into chat prompts.

    Parameters:
        dataset_paths (`list[str]`):
            Local JSONL/Parquet files or Hub dataset names with a problem and a gold answer per row. A trajectory file
            works too: its rows are deduplicated by problem.
        dataset_split (`str`, *optional*, defaults to `"train"`):
            Split to load from Hub datasets.
        problem_column (`str`, *optional*, defaults to `"problem"`):
            Column holding the problem text.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Column holding the gold final answer; when missing, `solution` (a worked solution whose last `\boxed{}`
            is the answer) is used.
        system_prompt (`str` or `None`, *optional*, defaults to `None`):
            System turn added to every prompt.
        instruction (`str`, *optional*, defaults to the paper's "Please reason step by step, ..."):
            Appended to each problem to build the user turn.
        chat_template_path (`str` or `None`, *optional*, defaults to `None`):
            Jinja chat template to put on the tokenizer (use the SFT stage's, if it set one).
        reward_funcs (`list[str]`, *optional*, defaults to `["math_accuracy", "boxed_format"]`):
            Reward functions from `glowrl.rewards`, weighted by `reward_weights`.
    """

    dataset_paths: list[str] = field(
        default=None, metadata={"help": "Files or Hub datasets of problems with answers."}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to load from Hub datasets."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold final answer."})
    system_prompt: str = field(default=None, metadata={"help": "System turn added to every prompt."})
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "Appended to each problem."})
    chat_template_path: str = field(default=None, metadata={"help": "Jinja chat template for the tokenizer."})
    reward_funcs: list[str] = field(
        default_factory=lambda: ["math_accuracy", "boxed_format"],
        metadata={"help": f"Reward functions, among {', '.join(REWARD_FUNCS)}."},
    )

    def __post_init__(self):
        if isinstance(self.dataset_paths, str):
            self.dataset_paths = [self.dataset_paths]
        if isinstance(self.reward_funcs, str):
            self.reward_funcs = [self.reward_funcs]
        get_reward_funcs(self.reward_funcs)  # unknown names fail here, listing the valid ones


def build_problem_dataset(args: ProblemArguments) -> Dataset:
    """Load the problems, check the columns, deduplicate by problem, and build chat prompts with `answer` kept."""
    if not args.dataset_paths:
        raise ValueError("dataset_paths is required: give one or more files of problems with gold answers")
    tables = []
    for path in args.dataset_paths:
        table = load_table(path, args.dataset_split)
        columns = set(table.column_names)
        if args.problem_column not in columns:
            raise ValueError(
                f"dataset {path}: no problem column {args.problem_column!r} (columns: {sorted(columns)}); set "
                "problem_column"
            )
        answer = args.answer_column if args.answer_column in columns else "solution" if "solution" in columns else None
        if answer is None:
            raise ValueError(
                f"dataset {path}: no answer column {args.answer_column!r} and no 'solution' column (columns: "
                f"{sorted(columns)}); set answer_column"
            )
        table = table.map(
            lambda row, answer=answer: {"problem": row[args.problem_column], "answer": str(row[answer])},
            remove_columns=table.column_names,
            desc=f"Reading {path}",
        )
        tables.append(table)
    dataset = concatenate_datasets(tables) if len(tables) > 1 else tables[0]
    seen: set[str] = set()
    keep = [i for i, p in enumerate(dataset["problem"]) if not (p in seen or seen.add(p))]
    dataset = dataset.select(keep)
    return dataset.map(
        lambda row: {"prompt": prompt_messages(row["problem"], args.instruction, args.system_prompt)},
        desc="Building prompts",
    )


def post_init_rollout_config(args, parent_post_init, algorithm: str):
    """Run a GRPO/RLOO config's `__post_init__`, turning its batch and vLLM errors into ones that name the fix."""
    if args.num_generations is not None and args.num_generations < 2:
        raise ValueError(
            f"num_generations must be at least 2 ({algorithm} compares completions of the same prompt), got "
            f"{args.num_generations}"
        )
    if args.use_vllm and not is_vllm_available():
        raise ValueError(
            "use_vllm: true needs vLLM, which is not installed; pip install 'glowrl[vllm]' on a GPU machine, or "
            "set use_vllm: false to generate with transformers"
        )
    try:
        parent_post_init()
    except ValueError as e:
        if "divisible by num_generations" not in str(e):
            raise
        per_device, steps = args.per_device_train_batch_size, args.steps_per_generation or 1
        raise ValueError(
            f"per_device_train_batch_size: {e}: the generation batch is per_device_train_batch_size "
            f"({per_device}) × processes ({args.world_size}) × steps_per_generation ({steps}) completions; make "
            f"it a multiple of num_generations, e.g. per_device_train_batch_size: {args.num_generations}, or a "
            f"num_generations that divides {per_device * args.world_size * steps}"
        ) from None


@dataclass
class RolloutEntropyArguments:
    # docstyle-ignore
    r"""
    The rollout-entropy fields shared by [`MathGRPOConfig`] and [`~glowrl.rloo.MathRLOOConfig`].

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


@dataclass
class MathGRPOConfig(RolloutEntropyArguments, GRPOConfig):
    # docstyle-ignore
    r"""
    Configuration class for the [`MathGRPOTrainer`].

    [`MathGRPOConfig`] inherits every parameter of [`~trl.GRPOConfig`] (loss variants such as `loss_type: dr_grpo` or
    `dapo`, `importance_sampling_level: sequence` for GSPO, `beta`, `use_vllm`, ...) and adds the
    [`RolloutEntropyArguments`]: `log_rollout_entropy` and `entropy_correctness_reward`.
    """

    def __post_init__(self):
        post_init_rollout_config(self, super().__post_init__, "GRPO")


class RolloutEntropyMixin:
    """Adds the `entropy/*` rollout figures to a TRL trainer that computes per-token entropies in its loss forward.

    No extra forward pass: the per-token entropies of the loss forward (the ones behind TRL's `entropy`) are kept
    for the micro-batch, summarised per optimizer step together with each rollout's correctness, and logged. Works
    for [`~trl.GRPOTrainer`] and [`~trl.RLOOTrainer`], which share the hooks used here.
    """

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
            rows = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
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
            mask = (
                inputs["completion_mask"]
                if "tool_mask" not in inputs
                else inputs["completion_mask"] * inputs["tool_mask"]
            )
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
        trl_entropy = self._metrics["train"].get("entropy", [])[self._trl_entropy_seen :]
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
        if state.global_step == 0 and state.is_world_process_zero:  # a fresh run, not a resume
            (Path(args.output_dir) / ENTROPY_LOG_NAME).unlink(missing_ok=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._end_entropy_step()


class MathGRPOTrainer(RolloutEntropyMixin, GRPOTrainer):
    """
    [`~trl.GRPOTrainer`] with rollout-entropy logging.

    The only change w.r.t. [`~trl.GRPOTrainer`] is [`RolloutEntropyMixin`]: `entropy/seq_p10|p50|p90`,
    `entropy/correct`, `entropy/incorrect` and, once, `entropy/initial` are logged from the per-token entropies GRPO
    already computes, and `<output_dir>/entropy.jsonl` gets one line per optimizer step.
    """

    _tag_names = ["trl", "grpo", "glowrl"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_rollout_entropy()


DATACLASS_TYPES = (ProblemArguments, MathGRPOConfig, ModelConfig)


def run_rollout_stage(trainer_class, script_args: ProblemArguments, training_args, model_args: ModelConfig):
    """Build the prompts and rewards, train `trainer_class` (GRPO or RLOO), save the model and trainer state."""
    check_model_path(model_args.model_name_or_path)
    set_seed(training_args.seed)
    dataset = build_problem_dataset(script_args)
    tokenizer = load_tokenizer(model_args, script_args.chat_template_path)
    set_model_init_kwargs(training_args, model_args)
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        reward_funcs=get_reward_funcs(script_args.reward_funcs),
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    trainer.accelerator.print(
        f"{trainer._name} on {len(dataset)} problems from {model_args.model_name_or_path}, rewards "
        f"{script_args.reward_funcs}, beta {training_args.beta}"
    )
    return train_and_save(trainer, training_args)


def main(script_args: ProblemArguments, training_args: MathGRPOConfig, model_args: ModelConfig):
    """Train with [`MathGRPOTrainer`] from `model_name_or_path`; save the model and tokenizer to `output_dir`."""
    return run_rollout_stage(MathGRPOTrainer, script_args, training_args, model_args)


def cli(argv: list[str] | None = None) -> int:
    main(*parse_stage_args(DATACLASS_TYPES, "rl", argv))
    return 0


if __name__ == "__main__":
    from functools import partial

    from .cli import run_guarded
    from .rl import cli as rl_cli

    # Through `glowrl.rl`, so that a recipe's `algorithm: grpo` (pipeline stage recipes have one) is accepted.
    sys.exit(run_guarded(partial(rl_cli, algorithms=("grpo",), default="grpo")))
