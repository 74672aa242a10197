"""`glowrl demo --study`: the paper's comparison as a toy replication on a CPU, designed so it *could* show the effect.

    glowrl demo --study              # pretrain a tiny base, then 4 SFT data arms x 5 seeds -> GRPO -> evaluation
    glowrl demo --study --size ci    # the same code path in about two minutes, for the tests

The paper fine-tunes a pretrained model on one domain's reasoning trajectories and asks what the negatives do to the
model's other abilities (out-of-domain) and to RL from it. A model trained from scratch on one task cannot answer
that, so this study first pretrains a tiny Qwen2 on a broad synthetic corpus ([`~glowrl.toy.tasks`]: single-step
arithmetic facts and four other tasks: largest of a list, next term of a sequence, counting a digit, digit sums),
then runs `glowrl study` on it:

- SFT on a narrow domain, the multi-step arithmetic chains of [`~glowrl.toy.arithmetic`] (never in the pretraining
  corpus), 4 trajectories per problem, half of them with a realistic mistake, in the many-epoch regime (20 epochs of
  the largest arm; every arm the same number of optimizer steps), with the held-out loss on correct solutions of
  other problems logged every epoch;
- the paper's four arms: positive-only, negative-only, all unweighted, GLOW (α=2, β=10, as in `glowrl demo`);
- GRPO from each SFT model with the same budget, then the evaluation of the SFT and RL models: in-domain = held-out
  chains, out-of-domain = the four other tasks, 16 samples per problem (pass@1 to pass@16, inference entropy);
- 5 seeds per arm (data order, sampling; the base model and the data are shared), 2 runs at a time.

Nothing here was tuned to make an arm win: the regime (a base that can do the other tasks, SFT long enough to overfit
a small narrow set) was set before any arm was compared, and `study.md` states whatever the study finds, with its
intervals over seeds. It writes the pretrained base and its evaluation (`base_eval/`), the study recipe and its base
recipe, and the study's own outputs (`study.json`, `study.md`, plots) into the output directory.
"""

import json
import time
from pathlib import Path

import yaml

from ..io import write_json, write_jsonl, write_text_atomic
from ..study.aggregate import study_markdown
from ..threads import pin_threads
from ..toy.arithmetic import generate_problems, generate_trajectories
from ..toy.tasks import TASKS
from .pretrain import IN_DOMAIN_FILE, benchmark_path, build_pretrained_base
from .run import fresh_output_dir, grpo_section


SIZES = {
    "full": {
        "sft_problems": 150,  # x 4 trajectories: 600 (300 correct), the largest arm's data
        "heldout_problems": 40,
        "rl_problems": 64,
        "sft_epochs": 20,
        "rl_steps": 24,
        "eval_samples": 16,
        "seeds": 5,
        "parallel": 2,
        "max_new_tokens": 128,
    },
    "ci": {
        "sft_problems": 6,
        "heldout_problems": 2,
        "rl_problems": 8,
        "sft_epochs": 2,
        "rl_steps": 1,
        "eval_samples": 2,
        "seeds": 2,
        "parallel": 2,
        "max_new_tokens": 24,
    },
}
ARMS = {
    "positive": {"sft": {"trajectories": "positive", "glow": False}},
    "negative": {"sft": {"trajectories": "negative", "glow": False}},
    "all": {"sft": {"trajectories": "all", "glow": False}},
    # glow_log_samples: sft/glow_samples.jsonl, every sample's loss, gain and weight at every visit
    "glow": {"sft": {"trajectories": "all", "glow": True, "glow_log_samples": True}},
}


def benchmark_files(pretrain: Path) -> tuple[list[str], list[str]]:
    """The in-domain (held-out chains) and out-of-domain (one per other task) benchmark files of the base."""
    return [str(pretrain / "data" / IN_DOMAIN_FILE)], [str(benchmark_path(pretrain, t)) for t in TASKS]


def write_inputs(root: Path, size: dict, seed: int = 0) -> None:
    """The SFT domain's trajectories, the held-out trajectories and the RL problems, under `root/data`."""
    data = root / "data"
    write_jsonl(generate_trajectories(size["sft_problems"], seed=seed), data / "sft.jsonl")
    heldout = generate_trajectories(
        size["heldout_problems"], seed=seed + 100, samples_per_problem=1, negative_fraction=0
    )
    write_jsonl(heldout, data / "heldout.jsonl")
    write_jsonl(generate_problems(size["rl_problems"], seed=seed + 200, split="train"), data / "rl_problems.jsonl")


def base_recipe(root: Path, size: dict) -> dict:
    """The pipeline every run of the study is a variant of: SFT -> GRPO -> evaluation of both models."""
    data = root / "data"
    in_domain, out_of_domain = benchmark_files(root / "pretrain")
    return {
        "model_name_or_path": str(root / "pretrain" / "base"),
        "output_root": str(root / "unused"),  # the study gives every run its own
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "disable_tqdm": True,
        "sft": {
            "dataset_paths": [str(data / "sft.jsonl")],
            "eval_dataset_paths": [str(data / "heldout.jsonl")],
            "eval_strategy": "epoch",
            "trajectories": "all",
            "glow": False,
            "glow_alpha": 2.0,
            "glow_beta": 10.0,
            "num_train_epochs": size["sft_epochs"],
            "per_device_train_batch_size": 32,
            "learning_rate": 1.0e-3,
            "lr_scheduler_type": "cosine",
            "warmup_steps": 0.05,
            "max_length": 256,
            "logging_steps": 25,
            "save_strategy": "no",
        },
        "rl": grpo_section(data, size["rl_steps"], prompts_per_step=8, readiness=0),
        "eval": {
            "benchmark_files": in_domain,
            "ood_benchmark_files": out_of_domain,
            "num_samples": size["eval_samples"],
            "temperature": 0.6,
            "top_p": 0.95,
            "max_new_tokens": size["max_new_tokens"],
            "batch_size": 64,
        },
    }


def evaluate_base(root: Path, recipe: dict) -> dict:
    """The pretrained base on the study's benchmarks, with the study's sampling (what SFT starts from): its entry in
    the eval stage's `results.json`."""
    from ..stages import run_stage

    values = {**recipe["eval"], "models": [recipe["model_name_or_path"]], "output_dir": str(root / "base_eval")}
    path = write_text_atomic(root / "base_eval.yaml", yaml.safe_dump(values, sort_keys=False))
    run_stage("eval", ["--config", str(path)])
    return json.loads((root / "base_eval" / "results.json").read_text())["models"][0]


def run(output_dir: str | Path, size: str = "full", overwrite: bool = False) -> dict:
    """Pretrain the base, run the study into `output_dir` (refusing a non-empty one without `overwrite`)."""
    from ..study.run import run_study

    root = fresh_output_dir(output_dir, overwrite)
    pin_threads(1)  # tiny models, as in the demo (glowrl.demo.run.run)
    config = SIZES[size]
    start = time.time()
    print(f"== glowrl demo --study ({size}) -> {root}", flush=True)
    print("== pretraining the tiny base on the broad corpus", flush=True)
    build_pretrained_base(root / "pretrain", size)
    write_inputs(root, config)
    recipe = base_recipe(root, config)
    write_text_atomic(root / "study_base.yaml", yaml.safe_dump(recipe, sort_keys=False))
    print("== the pretrained base on the study's benchmarks", flush=True)
    base = evaluate_base(root, recipe)
    study = {
        "name": "toy-arms",
        "base": str(root / "study_base.yaml"),
        "output_root": str(root),
        "seeds": config["seeds"],
        "reference": "positive",
        "sft_steps": "auto",
        "parallel": config["parallel"],
        "arms": ARMS,
    }
    path = write_text_atomic(root / "study.yaml", yaml.safe_dump(study, sort_keys=False))
    result = run_study(str(path))
    result.update(
        base_model=base["averages"],
        base_benchmarks={name: b["metrics"]["accuracy"] for name, b in base["benchmarks"].items()},
        elapsed_s=time.time() - start,
    )
    write_json(result, root / "study.json")
    write_text_atomic(root / "study.md", study_markdown(result))
    print(f"== done in {result['elapsed_s']:.0f} s: {root / 'study.md'}", flush=True)
    return result
