"""Every recipe in recipes/ parses into its stage's dataclasses, and every accelerate config is launchable YAML.

GPU recipes are parsed on CPU with `use_cpu`/`bf16`/`use_vllm` overridden, which checks every key and value but the
hardware ones.

    python -m pytest tests/test_recipes.py
"""

from pathlib import Path

import pytest
import yaml
from utils import REPO

from glowrl.recipe import field_names, load_recipe
from glowrl.stages import available_stages, get_stage, parse_stage_args, resolve_recipe, selected_dataclass_types


STUDIES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if "arms" in load_recipe(p))
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml") if p not in STUDIES)
CPU_OVERRIDES = ["--use_cpu", "true", "--bf16", "false"]


def stages_of(path: Path, recipe: dict) -> list[str]:
    """The stages a recipe configures: its sections, or for a flat recipe the stage its file name starts with."""
    sections = [name for name in recipe if name in available_stages()]
    if sections:
        return sections
    stage = next((name for name in available_stages() if path.stem.startswith(name)), "rl")
    return [stage]  # grpo*.yaml, rloo*.yaml, dpo*.yaml, kto*.yaml: the rl stage with their algorithm


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_recipe_instantiates_every_stage_config(path, monkeypatch):
    """Each stage of each shipped recipe parses into its dataclasses and builds its configs, without running."""
    monkeypatch.chdir(REPO)  # recipes use paths relative to the repository root
    text = path.read_text()
    assert text.startswith("# ") and "Launch" in text.split("\n\n")[0], "a recipe opens with what/hardware/launch"
    recipe = load_recipe(path)
    if any(name in recipe for name in available_stages()):
        assert set(resolve_recipe(recipe)) == set(stages_of(path, recipe))
    for stage in stages_of(path, recipe):
        known = field_names(selected_dataclass_types(get_stage(stage), {**recipe, **(recipe.get(stage) or {})}))
        argv = ["--config", str(path), *(CPU_OVERRIDES if "use_cpu" in known else [])]
        if recipe.get("use_vllm") or (recipe.get(stage) or {}).get("use_vllm"):
            argv += ["--use_vllm", "false"]  # vLLM is GPU-only; the other keys are still checked
        parsed = parse_stage_args(get_stage(stage), argv)
        training_args = next(p for p in parsed if hasattr(p, "output_dir"))
        assert training_args.output_dir


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


@pytest.mark.parametrize(
    "path", [p for p in RECIPES if "slurm" in load_recipe(p)], ids=lambda p: str(p.relative_to(REPO / "recipes"))
)
def test_every_slurm_section_is_a_layout_its_stages_can_use(path, monkeypatch):
    """The `slurm:` section parses, and its layout passes the launcher's checks (a vLLM node exactly when RL serves
    with vLLM, a multi-machine accelerate config when training spans nodes)."""
    from glowrl.launch import SlurmLauncher, slurm_settings

    monkeypatch.chdir(REPO)
    recipe = load_recipe(path)
    resolved = resolve_recipe(recipe)
    settings = slurm_settings(recipe, resolved)
    nodes = [f"node{i}" for i in range(settings.nodes)]
    SlurmLauncher(recipe.get("accelerate_config"), nodes, nodes, settings).check(resolved)
    assert settings.gpus_per_node == 8


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_study_recipe_builds_every_run_recipe(path, monkeypatch):
    """A study recipe's base is a recipe a study can run, and every arm's run recipe resolves (every key known)."""
    from glowrl.study.design import base_recipe, load_study, run_recipe

    monkeypatch.chdir(REPO)
    assert path.read_text().startswith("# ") and "Launch" in path.read_text().split("\n\n")[0]
    study = load_study(str(path))
    base = base_recipe(study)
    assert len(study.arms) == 4 and len(study.seeds) >= 2
    for arm in study.arms:
        recipe = run_recipe(study, base, arm, study.seeds[-1], 100)
        assert resolve_recipe(recipe)["sft"]["max_steps"] == 100 and recipe["seed"] == study.seeds[-1]
