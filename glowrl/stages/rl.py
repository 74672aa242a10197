"""The RL stage: one of glowrl's RL algorithms (GRPO, RLOO, DPO, KTO, or your own) from the SFT checkpoint.

    glowrl rl --config recipes/tiny/rloo.yaml --model_name_or_path outputs/tiny/sft
    glowrl rl --config recipes/tiny/pipeline.yaml --algorithm dpo
    accelerate launch --config_file accelerate_configs/zero3.yaml -m glowrl rl --config my_recipe.yaml

`algorithm` (default `grpo`) is a field like any other: in a flat recipe, in the `rl:` section, or `--algorithm` on
the command line. It picks the algorithm's dataclasses ([`~glowrl.rl.get_algorithm`]); the rest of the values parse
into them. In a pipeline, an unset `model_name_or_path` is the latest earlier model (the SFT output).
"""

from dataclasses import dataclass, field

from .base import Stage
from .training import RunArguments


@dataclass
class RLArguments(RunArguments):
    """Which RL algorithm the stage runs (and the options of every stage run)."""

    algorithm: str = field(
        default="grpo",
        metadata={"help": "RL algorithm: grpo, rloo, dpo, kto, or a dotted module path exporting ALGORITHM."},
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
    data = script_args[0]
    if "dataset_paths" not in linked:
        data.check_files()
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
    return train_and_save(
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


STAGE = Stage(
    name="rl",
    help="RL from the SFT model: grpo, rloo, dpo or kto (rl.algorithm), with math rewards and rollout entropy",
    dataclass_types=dataclass_types,
    run=run,
    check=check,
    inputs={"model_name_or_path": "model"},
    selector="algorithm",
    help_types=(RLArguments,),
    help_note="and the fields of the algorithm's dataclasses (`glowrl rl --algorithm grpo --help-all` lists them)",
)
