"""A new RL algorithm or pipeline stage is one definition, registered through the public mechanism.

The algorithm and the stage below are defined here, in the test module, and registered with
`glowrl.rl.register_algorithm` / `glowrl.stages.register_stage`; nothing in glowrl names them. The algorithm then runs
through `glowrl rl --algorithm ...`, one in a module of its own through a dotted `rl.algorithm` path, and the stage
gets a recipe section, a `glowrl <name>` command and a place in the pipeline, linked to SFT by what SFT produces.

python -m pytest tests/test_plugins.py
"""

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from trl import GRPOConfig, GRPOTrainer
from utils import REPO, flags

from glowrl.cli import main as glowrl_main
from glowrl.data import ProblemArguments, build_problem_dataset
from glowrl.io import read_log_history
from glowrl.pipeline import run as run_pipeline
from glowrl.rl import Algorithm, available_algorithms, get_algorithm, register_algorithm
from glowrl.stages import Stage, available_stages, register_stage, unregister_stage


def short_answer(completions, **kwargs):
    """A reward defined here: 1 for completions under 40 characters."""
    return [float(len(c[-1]["content"]) < 40) for c in completions]


# A new algorithm: TRL's plain GRPOTrainer with a reward of our own, on glowrl's problem data.
SHORT_GRPO = Algorithm(
    name="short_grpo",
    script_types=(ProblemArguments,),
    config_class=GRPOConfig,
    trainer_class=GRPOTrainer,
    build_dataset=lambda problems, training_args: build_problem_dataset(problems),
    trainer_kwargs=lambda problems: {"reward_funcs": [short_answer]},
    describe=lambda dataset: f"{len(dataset)} problems, rewarded for short answers",
)

# The README's worked example, verbatim: TRL's experimental GMPO in a module of its own.
ALGORITHM_MODULE = """
from trl.experimental.gmpo import GMPOConfig, GMPOTrainer

from glowrl.data import ProblemArguments, build_problem_dataset
from glowrl.rewards import RewardArguments, get_reward_funcs
from glowrl.rl import Algorithm

ALGORITHM = Algorithm(
    name="gmpo",
    script_types=(ProblemArguments, RewardArguments),        # glowrl's dataclasses, before the TRL config
    config_class=GMPOConfig,                                  # every GMPOConfig field becomes a recipe key
    trainer_class=GMPOTrainer,
    build_dataset=lambda problems, rewards, training_args: build_problem_dataset(problems),
    trainer_kwargs=lambda problems, rewards: {"reward_funcs": get_reward_funcs(rewards.reward_funcs)},
)
"""


def rl_argv(model, data, out, algorithm):
    return [
        *["rl", "--algorithm", algorithm],
        *flags(model_name_or_path=model, dataset_paths=data, output_dir=out, max_steps=1, logging_steps=1),
        *flags(num_generations=4, per_device_train_batch_size=4, max_completion_length=16, use_cpu="true"),
        *flags(bf16="false", gradient_checkpointing="false", report_to="none", save_strategy="no"),
    ]


def test_an_algorithm_defined_here_runs_through_glowrl_rl(tmp_path, sft_checkpoint, addition_file):
    register_algorithm(SHORT_GRPO)
    assert "short_grpo" in available_algorithms() and get_algorithm("short_grpo") is SHORT_GRPO
    assert glowrl_main(rl_argv(sft_checkpoint, addition_file, tmp_path / "rl", "short_grpo")) == 0
    logs = [e for e in read_log_history(tmp_path / "rl") if "loss" in e]
    assert len(logs) == 1 and "rewards/short_answer/mean" in logs[0]


def test_an_algorithm_in_its_own_module_is_found_by_dotted_path(tmp_path, monkeypatch, sft_checkpoint, addition_file):
    package = tmp_path / "my_algorithms"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "gmpo.py").write_text(ALGORITHM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    readme = (REPO / "README.md").read_text()
    assert ALGORITHM_MODULE.strip() in readme  # the README's example is the code tested here
    argv = rl_argv(sft_checkpoint, addition_file, tmp_path / "rl", "my_algorithms.gmpo")
    assert glowrl_main(argv) == 0
    logs = [e for e in read_log_history(tmp_path / "rl") if "loss" in e]
    assert "rewards/math_accuracy/mean" in logs[0] and "rewards/boxed_format/mean" in logs[0]
    assert get_algorithm("my_algorithms.gmpo").config_class.__name__ == "GMPOConfig"


@dataclass
class CountArguments:
    model_name_or_path: str = field(default=None, metadata={"help": "Model whose parameters are counted."})
    output_dir: str = field(default=None, metadata={"help": "Where count.json goes."})


def count_parameters(args: CountArguments):
    from transformers import AutoModelForCausalLM

    count = AutoModelForCausalLM.from_pretrained(args.model_name_or_path).num_parameters()
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(args.output_dir) / "count.json").write_text(json.dumps({"model": args.model_name_or_path, "count": count}))


# A new stage: counts the parameters of the latest model an earlier stage produced.
COUNT = Stage(
    name="count",
    help="count the parameters of a model",
    dataclass_types=lambda values: (CountArguments,),
    run=count_parameters,
    outputs=lambda values: {"report": str(Path(values["output_dir"]) / "count.json")},
    inputs={"model_name_or_path": "model"},
    help_types=(CountArguments,),
)


@pytest.fixture
def count_stage():
    register_stage(COUNT)
    yield COUNT
    unregister_stage("count")


def in_process(command: list[str]) -> int:
    """A launcher that runs `... -m glowrl <stage> ...` in this process, where the test's stage is registered."""
    print("$ " + shlex.join(command))
    start = next(i + 2 for i in range(len(command) - 2) if command[i : i + 2] == ["-m", "glowrl"])
    return glowrl_main(command[start:])


def test_a_stage_defined_here_gets_a_section_a_command_and_a_place_in_the_pipeline(
    tmp_path, capsys, count_stage, tiny_model_dir, addition_file
):
    assert "count" in available_stages()
    assert glowrl_main(["--help"]) == 0 and "count " in capsys.readouterr().out
    assert glowrl_main(["count", "--help"]) == 0 and "--model_name_or_path" in capsys.readouterr().out

    recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())

    del recipe["eval"]  # SFT and RL only: the eval stage has its own tests
    recipe.update(model_name_or_path=tiny_model_dir, dataset_paths=[addition_file], output_root=str(tmp_path / "run"))
    recipe["sft"].update(num_train_epochs=1, save_strategy="no", logging_steps=1)
    del recipe["rl"]
    recipe["count"] = {}  # a section for the new stage: its model is the SFT output, by what SFT produces
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert run_pipeline(str(path), [], runner=in_process) == 0
    count = json.loads((tmp_path / "run" / "count" / "count.json").read_text())
    assert count["model"] == str(tmp_path / "run" / "sft") and count["count"] > 10_000
    manifest = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [(s, info["status"]) for s, info in manifest["stages"].items()] == [("sft", "done"), ("count", "done")]
    # and alone, as `glowrl count`
    assert glowrl_main(["count", "--model_name_or_path", tiny_model_dir, "--output_dir", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "count.json").read_text())["model"] == tiny_model_dir
