"""A real pretrained model through every stage: `recipes/smollm2-135m/pipeline.yaml` at its smallest size.

SmolLM2-135M-Instruct (converted from its GGUF by the `smollm2_dir` fixture) samples its own trajectories with vLLM,
GLOW SFT with LoRA trains on them, the hand-off report and GRPO run with vLLM (the LoRA-merged SFT model loaded in a
colocated engine; the hand-off after RL loads the merged RL model in vLLM), and the eval stage scores base, SFT and
RL (with transformers at this size; the recipe uses vLLM). What the tiny models cannot show: a real
tokenizer and ChatML template with a default system turn, real text, a tied LM head through LoRA merges and vLLM.

python -m pytest tests/test_smollm2_pipeline.py -x -q
"""

import json
import math

import pytest
import yaml
from transformers import AutoTokenizer
from utils import REPO, read_jsonl

from glowrl.io import read_log_history
from glowrl.pipeline import run


pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_every_stage_on_real_text(tmp_path, smollm2_dir):
    recipe = yaml.safe_load((REPO / "recipes/smollm2-135m/pipeline.yaml").read_text())
    problems = [json.loads(line) for line in (REPO / recipe["dataset_paths"][0]).read_text().splitlines()][:4]
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in problems))
    recipe.update(model_name_or_path=smollm2_dir, dataset_paths=[str(data)], output_root=str(tmp_path / "run"))
    recipe["generate"].update(teacher=smollm2_dir, num_samples=2, max_new_tokens=48)  # most run longer: negatives
    recipe["sft"].update(num_train_epochs=1, max_steps=2, per_device_train_batch_size=2, max_length=256)
    recipe["rl"].update(max_steps=2, num_generations=2, per_device_train_batch_size=2, max_completion_length=24)
    recipe["rl"]["readiness_prompts"] = 2
    # Evaluation with transformers here: vLLM has loaded the merged SFT and RL models already (GRPO, hand-off), and
    # three more engine starts would double the test's time.
    recipe["eval"].update(max_problems=3, max_new_tokens=24, backend="transformers")
    recipe["eval"]["benchmark_files"] = [str(REPO / path) for path in recipe["eval"]["benchmark_files"]]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert run(str(path), []) == 0
    root = tmp_path / "run"

    # Stage 0: every sample once; its text is what the model wrote, ended where it stopped (no template tokens).
    rows = read_jsonl(root / "generate" / "trajectories.jsonl")
    assert len(rows) == 4 * 2
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    for row in rows:
        assert "<|im_end|>" not in row["completion"] and "<|im_start|>" not in row["completion"]
        if row["finish_reason"] == "stop":  # the template ends the turn exactly where the model stopped
            chat = tokenizer.apply_chat_template(
                [*row["prompt"], {"role": "assistant", "content": row["completion"]}], tokenize=False
            )
            assert chat.rstrip("\n").endswith(row["completion"] + "<|im_end|>")

    # SFT (LoRA, merged) and RL (LoRA with a colocated vLLM engine loaded from the merged SFT model).
    assert (root / "sft" / "adapter" / "adapter_config.json").is_file() and (root / "sft" / "config.json").is_file()
    logs = [e for e in read_log_history(root / "rl") if "loss" in e]
    assert len(logs) == 2 and all(math.isfinite(e["sampling/sampling_logp_difference/mean"]) for e in logs)
    entropy = read_jsonl(root / "rl" / "entropy.jsonl")
    assert [r["step"] for r in entropy] == [1, 2] and all(math.isfinite(r["entropy/seq_p50"]) for r in entropy)
    handoff = json.loads((root / "rl" / "readiness.json").read_text())
    assert "after_error" not in handoff, handoff.get("after_error")
    assert all(math.isfinite(handoff[when]["entropy"]) for when in ("before", "after"))

    # Evaluation: every problem of every benchmark scored, for base, SFT and RL.
    results = json.loads((root / "eval" / "results.json").read_text())
    assert results["complete"] is True and len(results["models"]) == 3
    for model in results["models"]:
        for name, benchmark in model["benchmarks"].items():
            assert len(benchmark["problems"]) == 3, name
            assert all(s["correct"] in (True, False) for p in benchmark["problems"] for s in p["samples"])
