"""GLOW SFT under real multi-process training on CPU: 2-process DDP (gloo) and DeepSpeed ZeRO-2.

Each run goes through `accelerate launch -m glowrl sft`, the command users run, and must give the same per-sample
GLOW weights as one process with the same global batch.

    python -m pytest tests/test_distributed.py
"""

import importlib.util

import pytest
from utils import assert_same_weights, run_sft, weights_by_visit


pytestmark = pytest.mark.slow


def test_two_process_ddp_gives_the_same_weights_as_one_process(
    tmp_path, tiny_model_dir, trajectory_file, single_process
):
    out = run_sft(tmp_path, "ddp", tiny_model_dir, trajectory_file, 4, "accelerate_configs/cpu_ddp.yaml")
    assert_same_weights(single_process, weights_by_visit(out))
    assert (out / "model.safetensors").is_file()


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed")
def test_deepspeed_zero2_gives_the_same_weights_as_one_process(
    tmp_path, tiny_model_dir, trajectory_file, single_process
):
    out = run_sft(tmp_path, "zero2", tiny_model_dir, trajectory_file, 4, "accelerate_configs/cpu_zero2.yaml")
    assert_same_weights(single_process, weights_by_visit(out))
