"""What a job's vLLM server node would refuse hours later, refused when the job is submitted.

`vllm serve` splits a model's attention heads evenly over its tensor-parallel GPUs, so a tensor parallel size that does
not divide them (8 GPUs for Qwen2.5-7B's 28 heads) makes the server exit when RL starts, after SFT has run. And TRL's
client reads `vllm_server_base_url` before the host and port the launcher passes, so a recipe that sets it would talk
to another server than the job's. [`check_server_stage`] refuses both, in one line, naming the fix.

The heads come from the model's `config.json`: in a local model folder, in the Hugging Face cache, or, for an RL stage
that starts from an earlier stage's output (not written yet when the job is submitted), from that stage's own starting
model, whose architecture it keeps. A model found nowhere is checked again when the stage starts. Not here: starting
or waiting for the server (`glowrl.launch.slurm`, `glowrl.launch.common.wait_for_server`). Standard library only
(`huggingface_hub`, if installed, for the cache lookup).
"""

import json
from pathlib import Path

from ..errors import RecipeError


def _same_path(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def starting_model(values: dict, resolved: dict) -> str:
    """The model whose config describes `values`' model: its own, or, when an earlier stage writes it, that stage's."""
    model = values["model_name_or_path"]
    for _ in range(len(resolved)):  # each step goes one stage up the chain
        earlier = [v for v in resolved.values() if v is not values and _same_path(v.get("output_dir", ""), model)]
        if not earlier or not earlier[0].get("model_name_or_path"):
            return model
        values, model = earlier[0], earlier[0]["model_name_or_path"]
    return model


def read_model_config(model: str) -> dict | None:
    """`config.json` of a local model folder or of a Hub model in the local cache; None when neither has it."""
    local = Path(model).expanduser() / "config.json"
    path = local if local.is_file() else None
    hub_id = not Path(model).is_absolute() and model.count("/") == 1 and not Path(model).expanduser().exists()
    if path is None and hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model, "config.json")
        except (ImportError, ValueError):  # not installed; not a valid repo id
            return None
        path = Path(cached) if isinstance(cached, str) else None
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def attention_heads(config: dict) -> int | None:
    """`num_attention_heads` of a model config (of its text model, for a multimodal one)."""
    for section in (config, config.get("text_config") or {}, config.get("llm_config") or {}):
        heads = section.get("num_attention_heads")
        if isinstance(heads, int) and heads > 0:
            return heads
    return None


def check_server_stage(
    stage: str, values: dict, resolved: dict, tensor_parallel: int, gpus: int, tensor_parallel_given: bool
) -> None:
    """Refuse, in one line, a server stage the job's vLLM node cannot serve (see the module docstring)."""
    flag = "--vllm_tensor_parallel_size" if tensor_parallel_given else "--gpus_per_node (the default tensor parallel)"
    url = values.get("vllm_server_base_url")
    if url:
        raise RecipeError(
            f"{stage}.vllm_server_base_url {url}: the job starts its own vLLM server on its last node and passes its "
            "address as vllm_server_host/port, which TRL ignores when a base URL is set; remove the key"
        )
    if tensor_parallel < 1:
        raise RecipeError(f"--vllm_tensor_parallel_size {tensor_parallel}: give 1 or more")
    if gpus and tensor_parallel > gpus:
        raise RecipeError(
            f"--vllm_tensor_parallel_size {tensor_parallel}: the vLLM node has {gpus} GPU(s); give at most {gpus}"
        )
    if not gpus and tensor_parallel != 1:
        raise RecipeError(f"--vllm_tensor_parallel_size {tensor_parallel}: a CPU vLLM node serves with 1")
    model = starting_model(values, resolved)
    config = read_model_config(model)
    heads = attention_heads(config) if config else None
    if heads is None or heads % tensor_parallel == 0:
        return
    fits = [n for n in range(1, max(gpus, 1) + 1) if heads % n == 0]
    raise RecipeError(
        f"{flag} {tensor_parallel}: vLLM splits the {heads} attention heads of {model} evenly over its "
        f"tensor-parallel GPUs and {tensor_parallel} does not divide {heads}; give --vllm_tensor_parallel_size "
        f"{fits[-1]} (a divisor of {heads} up to the node's {gpus} GPUs: {', '.join(map(str, fits))})"
    )
