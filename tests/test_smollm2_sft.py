"""GLOW SFT with LoRA on a real pretrained model: `recipes/smollm2-135m/sft.yaml` on SmolLM2-135M-Instruct, one step.

What a tiny model built here cannot show: a real tokenizer and ChatML template through TRL's tokenization, and the
LoRA merge of a Llama model with tied embeddings. The model comes from the `smollm2_dir` fixture (conftest.py).

python -m pytest tests/test_smollm2_sft.py -x -q
"""

import json
from pathlib import Path

import pytest
from utils import REPO

from glowrl.cli import main as glowrl_main


@pytest.mark.slow
def test_lora_sft_on_real_text_saves_a_merged_model_that_ends_turns_like_the_base(smollm2_dir, tmp_path, capsys):
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    argv = ["sft", "--config", str(REPO / "recipes/smollm2-135m/sft.yaml"), "--model_name_or_path", smollm2_dir]
    argv += ["--dataset_paths", str(REPO / "recipes/smollm2-135m/math500_easy_solutions.jsonl")]
    argv += ["--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2"]
    assert glowrl_main(argv) == 0
    printed = capsys.readouterr().out
    assert "LoRA adapter merged into" in printed and "end-of-turn token" not in printed  # every solution fits

    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "adapter_config.json").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] and "quantization_config" not in config
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template

    def tensor(directory, name):
        with safe_open(Path(directory) / "model.safetensors", "pt") as weights:
            assert "lm_head.weight" not in list(weights.keys())  # still tied to the embedding
            return weights.get_tensor(name)

    q_proj = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(tensor(out, q_proj), tensor(smollm2_dir, q_proj))  # the adapter is merged in
    embed = "model.embed_tokens.weight"
    assert torch.equal(tensor(out, embed), tensor(smollm2_dir, embed))  # LoRA left what it does not target

    model = AutoModelForCausalLM.from_pretrained(out)
    batch = tokenizer("The capital of France is Paris. It is known for the Eiffel Tower.", return_tensors="pt")
    with torch.no_grad():
        assert model(**batch, labels=batch["input_ids"]).loss.item() < 4.0  # one small step kept it a language model
