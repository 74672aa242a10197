"""GPU checks: the stages that only run for real on a CUDA device, at the real Qwen2.5-0.5B shape.

What this is: a `pytest -m gpu` suite for one CUDA GPU (written for one H200; about 5-6 minutes), run by
`benchmarks/gpu_check.py` or alone:

    python -m pytest -m gpu tests/test_gpu.py

Each test runs a glowrl command as a user does (`python -m glowrl <command>` or `glowrl pipeline`, in a process of its
own, so that every test starts with the whole GPU free for vLLM) and then reads what the command wrote:

- `glowrl sft` in bf16 with GLOW: the weights of the second epoch are applied (not all 1.0) and are the GLOW formula
  of each sample's logged gain, each sample's previous loss is its first-epoch loss, losses are finite, model saved;
- `glowrl rl` (GRPO) with vLLM colocated in the training process: two optimizer steps logged with a finite reward and
  vLLM's sampling log-probabilities, one `entropy.jsonl` row per step;
- `glowrl generate --backend vllm`: every problem x sample row written, labelled and counted;
- `glowrl eval --backend vllm`: every problem with every sample, each with a finite entropy within the top-20 bound;
- `glowrl pipeline` of LoRA SFT -> LoRA GRPO with vLLM colocated, with the SFT -> RL hand-off report (sampled with
  vLLM before and after RL, the RL stage's default).

The model is a random init of Qwen2.5-0.5B's shape (`SHAPES["qwen2.5-0.5b"]` of `benchmarks/harness.py`: vocabulary
151,936, hidden 896, 24 layers, 14 heads, 2 KV heads), built locally with
[`~glowrl.toy.tiny_model.build_tiny_model`]: no Hub access is needed. Its tokenizer is the small arithmetic one (a
few hundred tokens), below the model's vocabulary, which both transformers and vLLM accept (vLLM refuses prompt ids
above the tokenizer's largest id, never a vocabulary larger than the tokenizer). A random init samples mostly ids that
the tokenizer has no text for, so completions are short strings and rewards are 0: the tests check the plumbing and
the numbers' sanity, not learning. The 7B shape is left to `benchmarks/gpu_check.py`, which runs the GLOW SFT speed
benchmark at Qwen2.5-7B's width with 4 of its 28 layers.

What this is not: a CPU test (every test is skipped with its reason without CUDA, and the vLLM ones without vLLM), a
multi-GPU test (the child processes see one GPU: `CUDA_VISIBLE_DEVICES` defaults to 0), or a benchmark. Set
`GLOWRL_GPU_LOG_DIR` to keep every command's output there (`gpu_check.py` does); otherwise logs go to pytest's tmp
folders and a failure's message ends with the last lines of the command's output.
"""

import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from utils import REPO, read_jsonl

from glowrl.io import read_log_history, read_trainer_state, write_jsonl
from glowrl.processes import UNATTENDED_ENV


HAS_CUDA = torch.cuda.is_available()
HAS_VLLM = importlib.util.find_spec("vllm") is not None
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)")
needs_vllm = pytest.mark.skipif(
    not (HAS_CUDA and HAS_VLLM),
    reason="needs a CUDA device and vLLM"
    + ("" if HAS_VLLM else " (vllm is not installed: pip install 'glowrl[vllm]')"),
)
pytestmark = [pytest.mark.gpu, needs_cuda]

SHAPE = "qwen2.5-0.5b"
LOG_TAIL_LINES = 60
# What the children of every test see: no Hub, no usage reporting, full tracebacks from glowrl, one GPU.
CHILD_ENV = {**UNATTENDED_ENV, "GLOWRL_TRACEBACK": "1"}
LORA = {"use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "k_proj", "v_proj"]}
# GRPO settings shared by the vLLM runs: 2 prompts x 4 generations per step, short completions, vLLM's share of the
# GPU kept small so that training has the rest.
GRPO_VLLM = {
    "use_vllm": True,
    "vllm_mode": "colocate",
    "vllm_gpu_memory_utilization": 0.2,
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "max_completion_length": 32,
    "max_steps": 2,
    "logging_steps": 1,
    "save_strategy": "no",
    "bf16": True,
    "use_cpu": False,
}


# ----------------------------------------------------------------------------------------------------- helpers


def log_dir(tmp_path: Path) -> Path:
    """Where a test's command logs go: `$GLOWRL_GPU_LOG_DIR` when set (kept after the run), else the test's tmp."""
    root = os.environ.get("GLOWRL_GPU_LOG_DIR")
    path = Path(root) if root else tmp_path / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def run_glowrl(argv: list[str], log: Path, timeout_s: float) -> int:
    """`python -m glowrl <argv>` in a process group of its own, its output to `log`; returns its exit status.

    The whole group (vLLM's engine processes included) is killed when the command overruns `timeout_s` (the test
    fails), when pytest is interrupted, and after the command ends (leftovers would hold GPU memory).
    """
    env = {**os.environ, **CHILD_ENV}
    env.setdefault("CUDA_VISIBLE_DEVICES", "0")
    command = [sys.executable, "-m", "glowrl", *argv]
    with log.open("w") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        proc = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            pytest.fail(f"glowrl {argv[0]} did not finish in {timeout_s:.0f} s; last lines of {log}:\n{tail(log)}")
        except BaseException:
            _kill_group(proc)
            raise
        _kill_group(proc)
    return status


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def assert_ran(status: int, what: str, log: Path) -> None:
    assert status == 0, f"{what} exited with status {status}; last lines of {log}:\n{tail(log)}"


def write_recipe(path: Path, base: str | None, **values) -> Path:
    """A recipe: a shipped one (`base`, relative to the repository) with `values` on top, or `values` alone."""
    recipe = yaml.safe_load((REPO / base).read_text()) if base else {}
    recipe.update(values)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def training_args(output_dir: Path):
    """The `TrainingArguments` a run saved (to check what it ran with)."""
    return torch.load(output_dir / "training_args.bin", weights_only=False)


def one_tensor(model_dir: Path, name: str) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(model_dir / "model.safetensors"), framework="pt") as f:
        return f.get_tensor(name)


def train_logs(output_dir: Path) -> list[dict]:
    """The per-step training logs (the final summary row has `train_loss`, not `loss`)."""
    return [entry for entry in read_log_history(output_dir) if "loss" in entry]


def assert_grpo_steps(out: Path, steps: int, log: Path) -> None:
    """`steps` optimizer steps with a finite reward, vLLM's sampling log-probabilities and an entropy row each."""
    state = read_trainer_state(out)
    assert state is not None, f"{out} holds no trainer_state.json; last lines of {log}:\n{tail(log)}"
    assert state["global_step"] == steps
    logs = train_logs(out)
    assert [entry["step"] for entry in logs] == list(range(1, steps + 1))
    for entry in logs:
        assert finite(entry["loss"]) and finite(entry["reward"]) and finite(entry["entropy"]), entry
        # Logged only when the completions came from vLLM with their log-probabilities (importance sampling
        # correction): the difference between vLLM's and the trainer's log-probabilities of the same tokens.
        difference = entry.get("sampling/sampling_logp_difference/mean")
        assert finite(difference), f"no vLLM sampling log-probabilities logged: {entry}"
        assert difference < 1.0, f"vLLM and the trainer disagree on the sampled tokens' log-probabilities: {entry}"
    rows = read_jsonl(out / "entropy.jsonl")
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    for row in rows:
        assert finite(row["entropy"]) and row["entropy/seq_p10"] <= row["entropy/seq_p50"] <= row["entropy/seq_p90"]
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def qwen05b(tmp_path_factory) -> Path:
    """A random init of Qwen2.5-0.5B's shape (fp32 on disk, 2 GB), with the arithmetic tokenizer."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from harness import SHAPES
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from transformers import AutoConfig, AutoTokenizer

    from glowrl.toy.arithmetic import tokenizer_corpus
    from glowrl.toy.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp(SHAPE) / "model", tokenizer_corpus(0), **SHAPES[SHAPE], seed=0)
    vocab = AutoConfig.from_pretrained(path).vocab_size
    assert vocab == SHAPES[SHAPE]["vocab_size"] == 151_936
    assert len(AutoTokenizer.from_pretrained(path)) <= vocab  # vLLM needs every tokenizer id inside the model's
    return path


@pytest.fixture(scope="session")
def trajectories(tmp_path_factory) -> Path:
    """16 arithmetic trajectories (4 problems x 2 correct + 2 incorrect)."""
    from glowrl.toy.arithmetic import generate_trajectories

    return write_jsonl(generate_trajectories(4, seed=0), tmp_path_factory.mktemp("data") / "trajectories.jsonl")


@pytest.fixture(scope="session")
def problems(tmp_path_factory) -> tuple[Path, list[dict]]:
    """8 arithmetic problems with ids and gold answers."""
    from glowrl.toy.arithmetic import generate_problems

    rows = generate_problems(8, seed=0, split="train")
    return write_jsonl(rows, tmp_path_factory.mktemp("data") / "problems.jsonl"), rows


# ----------------------------------------------------------------------------------------------------- tests


def test_glow_sft_bf16_applies_the_weights_from_the_second_epoch(tmp_path, qwen05b, trajectories):
    out, log = tmp_path / "sft", log_dir(tmp_path) / "glow_sft_bf16.log"
    recipe = write_recipe(
        tmp_path / "sft.yaml",
        "recipes/tiny/sft.yaml",
        model_name_or_path=str(qwen05b),
        dataset_paths=[str(trajectories)],
        output_dir=str(out),
        num_train_epochs=2,
        per_device_train_batch_size=4,  # 4 steps an epoch
        learning_rate=1.0e-4,
        warmup_steps=0,
        logging_steps=1,
        save_strategy="no",
        use_cpu=False,
        bf16=True,
        glow=True,
        glow_log_samples=True,
    )
    assert_ran(run_glowrl(["sft", "--config", str(recipe)], log, timeout_s=300), "glowrl sft", log)

    args = training_args(out)
    assert args.bf16 and not args.use_cpu and args.glow and args.glow_warmup_epochs == 1
    rows = read_jsonl(out / "glow_samples.jsonl")
    by_epoch = {epoch: [r for r in rows if r["epoch"] == epoch] for epoch in (0, 1)}
    assert len(rows) == 32 and all(len(r) == 16 for r in by_epoch.values()), [(r["epoch"], r["step"]) for r in rows]
    assert all(finite(r["loss"]) for r in rows)
    first = {r["sample_id"]: r for r in by_epoch[0]}
    assert all(r["weight"] == 1.0 and r["prev_loss"] is None for r in by_epoch[0])  # the warm-up epoch
    # Epoch 1: each sample's previous loss is its epoch-0 loss (the history went through the GPU), and its weight is
    # the GLOW formula of the logged gain, not the unweighted 1.0.
    from glowrl.glow.weights import glow_weights

    weight_range = (args.glow_min_weight, args.glow_max_weight)
    for r in by_epoch[1]:
        assert r["prev_loss"] == pytest.approx(first[r["sample_id"]]["loss"], abs=1e-6), r
        gain = torch.tensor(r["gain"], dtype=torch.float64)
        expected = glow_weights(gain, args.glow_alpha, args.glow_beta, args.glow_offset, *weight_range).item()
        assert r["weight"] == pytest.approx(expected, abs=1e-4), r
    assert any(r["weight"] != 1.0 for r in by_epoch[1]), "GLOW weights were not applied in epoch 1"

    logs = train_logs(out)
    assert len(logs) == 8 and all(finite(e["loss"]) and finite(e["grad_norm"]) for e in logs)
    assert logs[-1]["glow/weight_mean"] != 1.0 and "glow/gain_mean" in logs[-1]
    assert finite(read_trainer_state(out)["log_history"][-1]["train_loss"])
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    name = "model.norm.weight"
    assert not torch.equal(one_tensor(out, name), one_tensor(qwen05b, name)), "the saved model equals the init"


@needs_vllm
def test_grpo_two_steps_with_vllm_colocated(tmp_path, qwen05b, problems):
    out, log = tmp_path / "rl", log_dir(tmp_path) / "grpo_vllm_colocate.log"
    recipe = write_recipe(
        tmp_path / "grpo.yaml",
        "recipes/tiny/grpo.yaml",
        model_name_or_path=str(qwen05b),
        dataset_paths=[str(problems[0])],
        output_dir=str(out),
        readiness_prompts=0,  # the hand-off report with vLLM is the LoRA pipeline test's
        dtype="bfloat16",  # as recipes/qwen2.5-7b/grpo_vllm.yaml
        gradient_checkpointing=True,
        **GRPO_VLLM,
    )
    assert_ran(run_glowrl(["rl", "--config", str(recipe)], log, timeout_s=420), "glowrl rl (GRPO, vLLM colocate)", log)

    args = training_args(out)
    assert args.use_vllm and args.vllm_mode == "colocate" and args.bf16 and not args.use_cpu
    assert_grpo_steps(out, 2, log)


@needs_vllm
def test_generate_with_vllm_writes_every_sample(tmp_path, qwen05b, problems):
    rows = problems[1][:4]
    write_jsonl(rows, tmp_path / "problems.jsonl")
    out, log = tmp_path / "generate", log_dir(tmp_path) / "generate_vllm.log"
    argv = ["generate", "--teacher", str(qwen05b), "--dataset_paths", str(tmp_path / "problems.jsonl")]
    argv += ["--output_dir", str(out), "--backend", "vllm", "--num_samples", "2", "--max_new_tokens", "16"]
    assert_ran(run_glowrl(argv, log, timeout_s=300), "glowrl generate --backend vllm", log)

    written = read_jsonl(out / "trajectories.jsonl")
    keys = [(r["problem_id"], r["sample_index"]) for r in written]
    assert keys == [(p["problem_id"], s) for p in rows for s in range(2)]
    golds = {p["problem_id"]: p["answer"] for p in rows}
    for r in written:
        assert r["answer"] == golds[r["problem_id"]] and r["teacher"] == str(qwen05b)
        assert isinstance(r["correct"], bool)  # the gold parses, so the grader labels every sample
        assert 1 <= r["num_tokens"] <= 16 and r["finish_reason"] in ("stop", "length")
        assert r["truncated"] == (r["finish_reason"] == "length")
    summary = json.loads((out / "generate.json").read_text())
    assert (summary["problems"], summary["samples"], summary["generated_this_run"]) == (4, 8, 8)


@needs_vllm
def test_eval_with_vllm_scores_every_sample(tmp_path, qwen05b, problems):
    path, rows = problems
    output, log = tmp_path / "eval.json", log_dir(tmp_path) / "eval_vllm.log"
    argv = ["eval", "--model", str(qwen05b), "--benchmark_file", str(path), "--backend", "vllm"]
    argv += ["--num_samples", "2", "--max_new_tokens", "16", "--temperature", "0.6", "--output", str(output)]
    assert_ran(run_glowrl(argv, log, timeout_s=300), "glowrl eval --backend vllm", log)

    results = json.loads(output.read_text())
    assert results["complete"] is True and len(results["models"]) == 1
    (benchmark,) = results["models"][0]["benchmarks"].values()
    assert (benchmark["metrics"]["num_problems"], benchmark["metrics"]["num_samples"]) == (len(rows), 2)
    assert [p["gold"] for p in benchmark["problems"]] == [r["answer"] for r in rows]
    for problem in benchmark["problems"]:
        assert len(problem["samples"]) == 2
        for sample in problem["samples"]:
            assert 1 <= sample["num_tokens"] <= 16
            # vLLM's entropy is that of the top-20 raw log-probabilities at T = 0.6: between 0 and ln 20.
            assert finite(sample["entropy"]) and 0.0 <= sample["entropy"] <= math.log(20) + 1e-4, sample
    assert finite(benchmark["metrics"]["entropy"]) and output.with_suffix(".md").is_file()


@needs_vllm
def test_lora_sft_then_lora_grpo_with_vllm_in_one_pipeline(tmp_path, qwen05b, trajectories):
    root, log = tmp_path / "run", log_dir(tmp_path) / "pipeline_lora_vllm.log"
    recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
    del recipe["eval"]  # the eval stage with vLLM has its own test
    recipe.update(model_name_or_path=str(qwen05b), dataset_paths=[str(trajectories)], output_root=str(root))
    recipe.update(use_cpu=False, bf16=True, logging_steps=1)
    recipe["sft"].update(num_train_epochs=1, per_device_train_batch_size=8, learning_rate=1.0e-4, save_strategy="no")
    recipe["sft"].update(LORA)
    # The RL stage's hand-off report (readiness_prompts > 0, its default) samples with vLLM before and after RL.
    recipe["rl"] = {"algorithm": "grpo", "readiness_prompts": 2, **GRPO_VLLM, **LORA}
    recipe["rl"] = {k: v for k, v in recipe["rl"].items() if k not in ("bf16", "use_cpu")}  # shared above
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    status = run_glowrl(["pipeline", "--config", str(path)], log, timeout_s=600)

    manifest = root / "pipeline.json"
    assert manifest.is_file(), f"glowrl pipeline exited with status {status}; last lines of {log}:\n{tail(log)}"
    stages = json.loads(manifest.read_text())["stages"]
    assert stages["sft"]["status"] == "done", f"LoRA SFT: {stages['sft']}; last lines of {log}:\n{tail(log)}"
    sft, rl = root / "sft", root / "rl"
    for stage_dir in (sft, rl):  # the merged model, with the adapter kept beside it
        assert (stage_dir / "config.json").is_file() and not (stage_dir / "adapter_config.json").exists()
        assert (stage_dir / "adapter" / "adapter_config.json").is_file()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(one_tensor(sft, name), one_tensor(qwen05b, name)), "the LoRA adapter was not merged"
    args = training_args(rl)
    assert args.use_vllm and args.vllm_mode == "colocate" and stages["rl"]["config"]["use_peft"] is True
    assert_grpo_steps(rl, 2, log)
    # Training is done: what is left is the hand-off report after RL, sampled with vLLM while the trainer (and its
    # colocated engine) still hold their share of the GPU.
    assert status == 0 and stages["rl"]["status"] == "done", f"RL after training: last lines of {log}:\n{tail(log)}"
    report = json.loads((rl / "readiness.json").read_text())
    for when in ("before", "after"):
        assert report[when]["prompts"] == 2 and report[when]["num_generations"] == 4, report[when]
        assert finite(report[when]["entropy"]) and 0.0 <= report[when]["entropy"] <= math.log(20) + 1e-4
