"""Shared fixtures: a tiny Qwen2 model and tokenizer built locally, small trajectory files, a GLOW SFT checkpoint.

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


@pytest.fixture(scope="session")
def sft_checkpoint(tmp_path_factory, tiny_model_dir, addition_file):
    """A short GLOW SFT run through `glowrl sft`: the tiny model learns to answer in a box."""
    out = tmp_path_factory.mktemp("sft") / "model"
    argv = [
        "sft",
        "--config",
        str(Path(__file__).resolve().parents[1] / "recipes/tiny/sft.yaml"),
        "--model_name_or_path",
        tiny_model_dir,
        "--dataset_paths",
        addition_file,
        "--output_dir",
        str(out),
        "--num_train_epochs",
        "6",
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
