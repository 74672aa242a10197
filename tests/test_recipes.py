"""Every recipe in recipes/ parses into its stage's dataclasses, and every accelerate config is launchable YAML.

GPU recipes are parsed on CPU with `use_cpu`/`bf16`/`use_vllm` overridden, which checks every key and value but the
hardware ones.

    python -m pytest tests/test_recipes.py
"""

from pathlib import Path

import pytest
import yaml

from glowrl.pipeline import resolve, stage_dataclass_types
from glowrl.recipe import RL_ALGORITHMS, STAGES, load_recipe, parse_stage_args


REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
CPU_OVERRIDES = ["--use_cpu", "true", "--bf16", "false"]


def stage_of(path: Path, recipe: dict) -> tuple[str, str]:
    """(stage, algorithm) of a flat recipe, from its file name: sft*.yaml, or <algorithm>*.yaml for RL."""
    for algorithm in RL_ALGORITHMS:
        if path.stem.startswith(algorithm):
            return "rl", algorithm
    assert path.stem.startswith("sft"), f"{path.name}: name a flat recipe sft*.yaml or <algorithm>*.yaml"
    return "sft", "grpo"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_recipe_parses(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # recipes use paths relative to the repository root
    text = path.read_text()
    assert text.startswith("# ") and "Launch" in text.split("\n\n")[0], "a recipe opens with what/hardware/launch"
    recipe = load_recipe(path)
    if any(s in recipe for s in STAGES):
        resolved = resolve(recipe)
        stages = [(stage, resolved["rl"]["algorithm"] if stage == "rl" else "grpo") for stage in resolved]
    else:
        stages = [stage_of(path, recipe)]
        if "algorithm" in recipe:  # `glowrl rl` reads it to pick the module, then passes the rest on
            path = tmp_path / path.name
            path.write_text(yaml.safe_dump({k: v for k, v in recipe.items() if k != "algorithm"}))
    for stage, algorithm in stages:
        argv = ["--config", str(path), *CPU_OVERRIDES]
        if stage == "rl" and algorithm in ("grpo", "rloo"):
            argv += ["--use_vllm", "false"]  # vLLM is GPU-only; the other keys are still checked
        parsed = parse_stage_args(stage_dataclass_types(stage, algorithm), stage, argv)
        assert parsed[1].output_dir


def test_the_four_data_arms_differ_only_where_the_arms_differ():
    arms = {
        arm: load_recipe(REPO / f"recipes/qwen2.5-7b/sft_{arm}.yaml")
        for arm in ("glow", "all", "positive", "negative")
    }
    expected = {
        "glow": ("all", True),
        "all": ("all", False),
        "positive": ("positive", False),
        "negative": ("negative", False),
    }
    for arm, recipe in arms.items():
        assert (recipe["trajectories"], recipe["glow"]) == expected[arm]
        differing = {k for k in recipe if recipe[k] != arms["glow"][k]}
        assert differing <= {"trajectories", "glow", "output_dir"}, (arm, differing)


@pytest.mark.parametrize("path", sorted((REPO / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_config_has_a_launch_header_and_a_distributed_type(path):
    text = path.read_text()
    assert text.startswith("# ") and "accelerate launch --config_file accelerate_configs/" + path.name in text
    config = yaml.safe_load(text)
    assert config["distributed_type"] in {"NO", "MULTI_GPU", "DEEPSPEED", "FSDP"}
    assert config["use_cpu"] is False  # use_cpu here would make accelerate start a single process
