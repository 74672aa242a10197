"""LoRA end to end: a LoRA SFT output is a loadable model for the next stage and for evaluation.

With `use_peft: true` the trainer saves an adapter; the stage then writes the merged model into its output directory
(adapter in `adapter/`). The pipeline runs LoRA SFT -> GRPO and LoRA SFT -> DPO on the tiny model, and `glowrl eval`
loads the outputs.

python -m pytest tests/test_lora.py
"""

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file
from utils import REPO

from glowrl.cli import main as glowrl_main
from glowrl.pipeline import run


pytestmark = pytest.mark.slow
LORA = {"use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "k_proj", "v_proj"]}


def lora_recipe(tmp_path, tiny_model_dir, data, rl: dict) -> str:
    recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
    del recipe["eval"]  # SFT and RL only: the eval stage has its own tests
    recipe.update(model_name_or_path=tiny_model_dir, dataset_paths=[data], output_root=str(tmp_path / "run"))
    recipe["sft"].update(num_train_epochs=2, per_device_train_batch_size=16, learning_rate=1e-2, save_strategy="no")
    recipe["sft"].update(LORA)
    recipe["rl"] = {"max_steps": 2, "logging_steps": 1, "save_strategy": "no", **rl}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def assert_merged_model(stage_dir, base_dir, trained: bool = True):
    """A full model with the adapter kept beside it; after real training its weights differ from the base's."""
    assert (stage_dir / "config.json").is_file() and not (stage_dir / "adapter_config.json").exists()
    assert (stage_dir / "adapter" / "adapter_config.json").is_file()
    merged, base = load_file(stage_dir / "model.safetensors"), load_file(f"{base_dir}/model.safetensors")
    assert merged.keys() == base.keys()
    if trained:  # (2 GRPO steps whose groups all score alike give no gradient: the adapter stays at B = 0)
        changed = [k for k in base if "q_proj.weight" in k and not torch.equal(merged[k], base[k])]
        assert changed, "the merged q_proj weights equal the base: the adapter was not merged"


@pytest.mark.parametrize(
    ("rl", "data"),
    [
        (
            {
                "algorithm": "grpo",
                "num_generations": 4,
                "per_device_train_batch_size": 8,
                "max_completion_length": 32,
                **LORA,
            },
            "addition_file",
        ),
        ({"algorithm": "dpo", "per_device_train_batch_size": 4}, "trajectory_file"),
    ],
    ids=["sft-grpo", "sft-dpo"],
)
def test_lora_sft_hands_a_loadable_model_to_rl_and_eval(tmp_path, tiny_model_dir, rl, data, request):
    recipe = lora_recipe(tmp_path, tiny_model_dir, request.getfixturevalue(data), rl)
    assert run(recipe, []) == 0
    root = tmp_path / "run"
    assert_merged_model(root / "sft", tiny_model_dir)
    manifest = json.loads((root / "pipeline.json").read_text())
    assert manifest["stages"]["rl"]["config"]["model_name_or_path"] == str(root / "sft")
    assert (root / "rl" / "config.json").is_file()
    if rl.get("use_peft"):
        assert_merged_model(root / "rl", root / "sft", trained=False)
    output = tmp_path / "eval.json"
    argv = ["eval", "--model", str(root / "sft"), "--model", str(root / "rl"), "--benchmarks", "amc23"]
    assert glowrl_main([*argv, "--max_problems", "1", "--max_new_tokens", "8", "--output", str(output)]) == 0
    assert json.loads(output.read_text())["complete"] is True


def test_an_adapter_without_a_model_is_named_as_such(tmp_path, capsys, tiny_model_dir):
    adapter = tmp_path / "adapter_only"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "tokenizer.json").write_text("{}")
    output = tmp_path / "eval.json"
    assert glowrl_main(["eval", "--model", str(adapter), "--benchmarks", "amc23", "--output", str(output)]) == 2
    assert "is a LoRA adapter with no model" in capsys.readouterr().err and not output.exists()
