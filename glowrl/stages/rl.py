"""The RL stage: one of glowrl's RL algorithms (GRPO, RLOO, DPO, KTO, or your own) from the SFT checkpoint.

    glowrl rl --config recipes/tiny/rloo.yaml --model_name_or_path outputs/tiny/sft
    glowrl rl --config recipes/tiny/pipeline.yaml --algorithm dpo
    accelerate launch --config_file accelerate_configs/zero3.yaml -m glowrl rl --config my_recipe.yaml

`algorithm` (default `grpo`) is a field like any other: in a flat recipe, in the `rl:` section, or `--algorithm` on
the command line. It picks the algorithm's dataclasses ([`~glowrl.rl.get_algorithm`]); the rest of the values parse
into them. In a pipeline, an unset `model_name_or_path` is the latest earlier model (the SFT output).
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from .base import Stage
from .training import RunArguments


HANDOFF_NAME = "readiness.json"


@dataclass
class RLArguments(RunArguments):
    """Which RL algorithm the stage runs (and the options of every stage run)."""

    algorithm: str = field(
        default="grpo",
        metadata={"help": "RL algorithm: grpo, rloo, dpo, kto, or a dotted module path exporting ALGORITHM."},
    )
    readiness_prompts: int = field(
        default=64,
        metadata={
            "help": "Prompts of the hand-off report (readiness.json) before and after RL, for GRPO/RLOO (0: none)."
        },
    )


def dataclass_types(values: dict) -> tuple:
    from ..rl import get_algorithm

    return (RLArguments, *get_algorithm(values.get("algorithm", "grpo")).dataclass_types)


def check(rl_args: RLArguments, *parsed, linked=()):
    """Everything that can be checked without loading data or a model: values, paths, the output directory."""
    from ..models import check_model_path
    from ..rl import get_algorithm
    from .training import check_stage_output

    algorithm = get_algorithm(rl_args.algorithm)
    *script_args, training_args, model_args = parsed
    if algorithm.check is not None:
        algorithm.check(*script_args, training_args)
    if "model_name_or_path" not in linked:
        check_model_path(model_args.model_name_or_path)
        if getattr(training_args, "use_vllm", False):
            from ..vllm_support import check_vllm_model

            check_vllm_model(model_args.model_name_or_path, "model_name_or_path")
    data = script_args[0]
    if "dataset_paths" not in linked:
        data.check_files()
        if "output_dir" in linked and rl_args.algorithm in ("dpo", "kto"):  # in a pipeline: fail before SFT trains
            algorithm.build_dataset(*script_args, training_args)  # no pairs (positive-only data): one line
    if "output_dir" not in linked:  # the pipeline manages its stages' output directories itself
        return check_stage_output(rl_args, training_args, model_args, data.dataset_paths)
    return None


def run(rl_args: RLArguments, *parsed):
    """Build the algorithm's dataset and train its trainer from `model_name_or_path`; save to `output_dir`."""
    from transformers import set_seed

    from ..models import load_tokenizer
    from ..rl import get_algorithm
    from .training import train_and_save

    algorithm = get_algorithm(rl_args.algorithm)
    *script_args, training_args, model_args = parsed
    resume = check(rl_args, *parsed)
    set_seed(training_args.seed)
    dataset = algorithm.build_dataset(*script_args, training_args)
    tokenizer = load_tokenizer(
        model_args.model_name_or_path, model_args.model_revision, algorithm.chat_template_path(*script_args)
    )
    report = None
    if _has_groups(rl_args, training_args, dataset) and int(os.environ.get("RANK", "0")) == 0:
        rewards = algorithm.trainer_kwargs(*script_args).get("reward_funcs")
        report = handoff_report(rl_args, training_args, dataset, model_args.model_name_or_path, resume, rewards)
    trainer = train_and_save(
        algorithm.trainer_class,
        rl_args,
        model_args,
        training_args,
        dataset,
        tokenizer,
        algorithm.describe(dataset),
        resume,
        **algorithm.trainer_kwargs(*script_args),
    )
    if report is not None and trainer.accelerator.is_main_process:
        try:
            release_memory(trainer)
            after = (rl_args, training_args, dataset, training_args.output_dir, rewards)
            if getattr(training_args, "use_vllm", False) and training_args.vllm_mode == "colocate":
                from ..processes import run_apart  # a second vLLM engine cannot start where the colocated one ran

                report["after"] = run_apart(handoff_figures_for, *after)
            else:
                report["after"] = handoff_figures_for(*after)
        except Exception as error:  # noqa: BLE001 - a diagnostic after a saved model must not fail the stage
            report["after_error"] = f"{type(error).__name__}: {error}".splitlines()[0]
            print(
                f"glowrl: warning: the hand-off report after RL failed ({report['after_error']}); the model is "
                f"saved; `glowrl readiness --model {training_args.output_dir} --config ...` computes it alone"
            )
        write_handoff(training_args.output_dir, report)
    return trainer


def release_memory(trainer) -> None:
    """Free what the trained model's report does not need: the optimizer, the GPU copy of the model, TRL's
    colocated vLLM engine (the report loads the saved model itself)."""
    import gc

    import torch

    from .._trl_compat import release_colocated_vllm

    trainer.optimizer = trainer.lr_scheduler = None
    release_colocated_vllm(trainer)
    trainer.model.to("cpu")
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _has_groups(rl_args: RLArguments, training_args, dataset) -> bool:
    """An online algorithm (groups of generations per prompt) on problems with gold answers: GRPO, RLOO."""
    columns = set(dataset.column_names)
    online = hasattr(training_args, "num_generations")
    return rl_args.readiness_prompts > 0 and online and {"prompt", "answer"} <= columns


def handoff_figures_for(rl_args: RLArguments, training_args, dataset, model: str, reward_funcs=None) -> dict:
    """The hand-off figures of `model` on the report's prompts, with the RL run's sampling settings and its reward
    functions (the trainer's `reward_funcs`), `reward_weights` and `multi_objective_aggregation`, as TRL combines
    them."""
    from ..evaluation.readiness import readiness, sample_prompts

    rows = dataset.select(sample_prompts(rl_args.readiness_prompts, len(dataset), training_args.seed))
    return readiness(
        model,
        list(rows["prompt"]),
        list(rows["answer"]),
        training_args.num_generations,
        training_args.temperature,
        training_args.top_p,
        training_args.max_completion_length,
        seed=training_args.seed,
        backend="vllm" if getattr(training_args, "use_vllm", False) else "transformers",
        reward_funcs=reward_funcs,
        reward_weights=training_args.reward_weights,
        aggregation=getattr(training_args, "multi_objective_aggregation", "sum_then_normalize"),
        columns={column: list(rows[column]) for column in rows.column_names},
    )


def handoff_report(rl_args: RLArguments, training_args, dataset, model: str, resume, reward_funcs=None) -> dict:
    """The report before RL (kept from the first attempt when the run resumes), printed with its advice."""
    path = Path(training_args.output_dir) / HANDOFF_NAME
    if resume and path.is_file():
        return {"before": json.loads(path.read_text())["before"]}
    before = handoff_figures_for(rl_args, training_args, dataset, model, reward_funcs)
    print(handoff_text("before RL", before))
    return {"before": before}


def handoff_summary(output_dir: str) -> str | None:
    """The hand-off report before and after RL, for the pipeline's summary."""
    path = Path(output_dir) / HANDOFF_NAME
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return "\n".join(handoff_text(f"{when} RL", report[when]) for when in ("before", "after") if when in report)


def _figure(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def handoff_text(when: str, figures: dict) -> str:
    """The report's figures in a few lines (and its advice, as a warning)."""
    g = figures["num_generations"]
    unscorable = figures.get("unscorable_prompts", 0)
    apart = f", {unscorable} with an unparseable gold counted apart" if unscorable else ""
    lines = [
        (
            f"hand-off report, {when} ({figures['prompts']} prompts x {g} generations{apart}): mean reward "
            f"{_figure(figures.get('mean_reward'), '.3f')} (the recipe's reward functions and weights), groups with "
            f"no reward variance {_figure(figures.get('share_no_signal'), '.1%')}; accuracy "
            f"{_figure(figures.get('accuracy'), '.3f')}, pass@{g} {_figure(figures.get(f'pass@{g}'), '.3f')}, groups "
            f"all correct {_figure(figures.get('share_all_correct'), '.1%')} / all wrong "
            f"{_figure(figures.get('share_all_wrong'), '.1%')}, entropy {_figure(figures.get('entropy'), '.3f')} nats "
            f"(p10-p90 over prompts {_figure(figures.get('entropy_p10'), '.3f')}-"
            f"{_figure(figures.get('entropy_p90'), '.3f')}), "
            f"truncated {_figure(figures.get('truncation_rate'), '.1%')}"
            + (f", no answer {figures['no_answer_rate']:.1%}" if figures.get("no_answer_rate") is not None else "")
        )
    ]
    if figures.get("advice"):
        lines.append(f"glowrl: warning: {figures['advice']}")
    return "\n".join(lines)


def write_handoff(output_dir: str, report: dict) -> None:
    """`readiness.json`, `readiness.png` (per-prompt pass rates before and after), and the report printed."""
    from ..evaluation.readiness import plot_handoff
    from ..io import write_json

    write_json(report, Path(output_dir) / HANDOFF_NAME)
    plot_handoff(report, Path(output_dir) / "readiness.png")
    if "after" in report:
        print(handoff_text("after RL", report["after"]))


STAGE = Stage(
    name="rl",
    help="RL from the SFT model: grpo, rloo, dpo or kto (rl.algorithm), with math rewards and rollout entropy",
    dataclass_types=dataclass_types,
    run=run,
    check=check,
    inputs={"model_name_or_path": "model"},
    summary=lambda values: handoff_summary(values["output_dir"]),
    selector="algorithm",
    help_types=(RLArguments,),
    help_note="and the fields of the algorithm's dataclasses (`glowrl rl --algorithm grpo --help-all` lists them)",
)
