"""The toy study's pretrained base: a tiny Qwen2 trained on the corpus of [`~glowrl.toy.tasks`], by the SFT stage.

    from glowrl.demo.pretrain import build_pretrained_base
    base = build_pretrained_base(Path("outputs/study"), "full")   # ~5 min on one CPU core

[`build_pretrained_base`] writes the pretraining corpus and the benchmarks (one per out-of-domain task, plus
held-out arithmetic chains) under `root/data/`, builds a randomly initialised tiny Qwen2 with a tokenizer trained on
every task's text, and trains it with plain SFT (`glow: false`) by running the real SFT stage in this process, as the
demo trains its teacher. The result, `root/base`, is an ordinary model directory: the study's SFT arms start from it
and `glowrl eval --benchmark_file root/data/<task>.jsonl --domain out` measures what they keep of it.

It is not a general pretraining tool: the sizes are fixed in [`SIZES`] for the toy study's CPU budget (the whole
study, 20 runs, in an hour on 2 cores). It runs a stage, so it lives in the demo layer, above the stages,
while the data it trains on ([`~glowrl.toy.tasks`]) stays in `glowrl.toy` below them.
"""

import time
from pathlib import Path

from ..io import write_jsonl
from ..toy import arithmetic
from ..toy.tasks import TASKS, benchmark_rows, pretraining_rows, tokenizer_corpus
from .run import plain_sft


# `full` is the toy study's base: a 216k-parameter Qwen2 (hidden size 96, 2 layers), 17 epochs of 2,976 rows =
# 1,581 steps of 32. In the README's toy study (2 cores, measured once): 209 s of training; pass@1 on 50 test problems
# x 16 samples at temperature 0.6: max_of_list 97.6%, next_term 59.0%, digit_count 92.2%, digit_sum 92.8%, held-out
# arithmetic chains 4.9%. The arithmetic tasks are learned last: after 1,000-1,500 steps they were still below 50%.
# `ci` is the same code path in seconds, for the tests.
SIZES = {
    "full": {
        # More problems (and primitives) for the arithmetic-heavy tasks; next_term has only 264 training problems.
        "problems_per_task": {"max_of_list": 400, "next_term": 260, "digit_count": 400, "digit_sum": 800},
        "primitive_copies": 3,
        "hidden_size": 96,
        "num_hidden_layers": 2,
        "epochs": 17,
        "learning_rate": 3e-3,
        "benchmark_problems": 50,
    },
    "ci": {
        "problems_per_task": 8,
        "primitive_copies": 1,
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "epochs": 1,
        "learning_rate": 3e-3,
        "benchmark_problems": 4,
    },
}
IN_DOMAIN_FILE = "in_domain.jsonl"
"""Held-out arithmetic chains (arithmetic.py's `"in_domain"` split), written next to the task benchmarks."""


def benchmark_path(root: Path, task: str) -> Path:
    """Where [`build_pretrained_base`] writes `task`'s benchmark (its stem is the name the evaluation reports)."""
    return Path(root) / "data" / f"{task}.jsonl"


def build_pretrained_base(root: Path, size: str, seed: int = 0) -> Path:
    """Write the corpus and benchmarks under `root/data/` and pretrain a tiny Qwen2 on the corpus into `root/base`.

    Writes `root/data/pretrain.jsonl` ([`pretraining_rows`]), one benchmark per out-of-domain task
    (`root/data/<task>.jsonl`, [`benchmark_rows`]) and `root/data/in_domain.jsonl` (held-out arithmetic chains),
    builds a randomly initialised tiny Qwen2 in `root/init` with a tokenizer trained on [`tokenizer_corpus`], and
    trains it with the SFT stage (plain SFT, `glow: false`, in this process, as the demo trains its teacher).

    Args:
        root (`Path`):
            Directory to write into; `root/base` must not hold a model yet (the SFT stage refuses to overwrite).
        size (`str`):
            A key of [`SIZES`]: `"full"` (the toy study's base) or `"ci"` (seconds, for tests).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the data, the initialisation and the training.

    Returns:
        `Path`: `root/base`, a model directory every glowrl stage loads by path.
    """
    from ..toy.tiny_model import build_tiny_model

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    config, root = SIZES[size], Path(root)
    data = root / "data"
    write_jsonl(
        pretraining_rows(config["problems_per_task"], seed, primitive_copies=config["primitive_copies"]),
        data / "pretrain.jsonl",
    )
    for task in TASKS:
        write_jsonl(benchmark_rows(task, config["benchmark_problems"], seed), benchmark_path(root, task))
    write_jsonl(
        arithmetic.generate_problems(config["benchmark_problems"], seed, split="in_domain"), data / IN_DOMAIN_FILE
    )
    hidden = config["hidden_size"]
    build_tiny_model(
        root / "init",
        tokenizer_corpus(seed),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=config["num_hidden_layers"],
        seed=seed,
    )
    start = time.time()
    plain_sft(
        root / "init",
        data / "pretrain.jsonl",
        root / "base",
        epochs=config["epochs"],
        learning_rate=config["learning_rate"],
        seed=seed,
        warmup_steps=0.05,
    )
    print(f"== pretrained the {size} base in {time.time() - start:.0f}s -> {root / 'base'}", flush=True)
    return root / "base"
