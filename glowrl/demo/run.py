"""`glowrl demo`: the whole method on a laptop CPU, with its own task and model, nothing downloaded.

    glowrl demo               # teacher samples -> GLOW SFT -> hand-off report -> GRPO -> evaluation (~8 min, 2 cores)
    glowrl demo --synthetic   # the same from the built-in synthetic trajectories, without stage 0 (~4 min)

It writes the built-in arithmetic task (an in-domain and an out-of-domain test split) and a tiny Qwen2 model into the
output directory, and trains a tiny teacher whose samples at temperature 1 are the SFT data, correct and incorrect
(or, with --synthetic, writes trajectories with realistic mistakes instead). It writes a pipeline recipe for them
and runs it with `glowrl pipeline`, exactly the code path of a real recipe: generate (stage 0), GLOW SFT, GRPO with
the hand-off report before and after it, and the eval stage (base, SFT and RL models, in-domain and out-of-domain,
with 95% intervals). It then writes `report.md`, `report.json` and PNG plots. A run that does not learn raises
[`~glowrl.errors.LearningCheckFailed`] saying what did not. The command line is `glowrl.cli`'s.
"""

import json
import math
import shutil
import time
from pathlib import Path

import yaml

from ..errors import GlowrlError, LearningCheckFailed
from ..io import read_jsonl, read_log_history, reward_trend, write_jsonl, write_text_atomic
from ..threads import pin_threads
from ..toy.arithmetic import generate_problems, generate_trajectories, tokenizer_corpus
from .plots import plot_glow_weights, plot_rl, plot_sft_loss, weight_summary
from .report import deltas_line, learning_checks, write_report


# `full` is the default run; `ci` is the same code path with a few steps, for the test suite.
SIZES = {
    # 2000 trajectories x 16 epochs = 1000 SFT steps of 32: where the ~100k-parameter model reaches ~65% greedy
    # in-domain accuracy (measured with glowrl/toy/arithmetic.py's task).
    "full": {
        "train_problems": 500,
        "eval_problems": 100,
        "eval_samples": 2,
        "sft_epochs": 16,
        "rl_problems": 64,
        "rl_steps": 48,
        "readiness_prompts": 32,
        "hidden_size": 64,
        "max_new_tokens": 128,
        "teacher_epochs": 60,  # on 500 correct trajectories: 960 steps of 32
        "teacher_hidden_size": 96,
        "enforce_checks": True,
    },
    "ci": {
        "train_problems": 24,
        "eval_problems": 4,
        "eval_samples": 1,
        "sft_epochs": 2,
        "rl_problems": 16,  # at least one step's prompts (64 rollouts / 4 per prompt)
        "rl_steps": 2,
        "readiness_prompts": 4,
        "hidden_size": 32,
        "max_new_tokens": 32,
        "teacher_epochs": 2,
        "teacher_hidden_size": 32,
        "enforce_checks": False,
    },
}
SFT_BATCH_SIZE = 32
TEACHER_SAMPLES = 4  # per problem: the synthetic data's 4 trajectories a problem


def _tiny(path: Path, hidden: int, seed: int) -> Path:
    from ..toy.tiny_model import build_tiny_model

    return build_tiny_model(
        path,
        tokenizer_corpus(seed=0),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        seed=seed,
    )


def build_inputs(root: Path, size: dict, teacher: bool, seed: int = 0) -> None:
    """Write the task's splits and the tiny base model (and, with `teacher`, train the tiny teacher) under `root`."""
    data = root / "data"
    if teacher:  # the problems the teacher solves; the trajectories are its samples
        write_jsonl(generate_problems(size["train_problems"], seed=seed, split="train"), data / "problems.jsonl")
    else:
        write_jsonl(generate_trajectories(size["train_problems"], seed=seed), data / "train.jsonl")
    # GRPO revisits a fixed pool of training problems (every 4 steps), so the reward of its first and last steps is
    # measured on the same problems: with fresh problems each step, which problems were drawn dominates the
    # step-to-step reward of so small a batch and hides the learning.
    write_jsonl(generate_problems(size["rl_problems"], seed=seed, split="train"), data / "rl_problems.jsonl")
    for split in ("in_domain", "out_of_domain"):
        write_jsonl(generate_problems(size["eval_problems"], seed=seed, split=split), data / f"{split}.jsonl")
    _tiny(root / "base", size["hidden_size"], seed)
    if teacher:
        train_teacher(root, size, seed)


def train_teacher(root: Path, size: dict, seed: int) -> None:
    """A tiny teacher: plain SFT of another tiny model on correct trajectories (different problems than the test)."""
    positives = generate_trajectories(
        size["train_problems"], seed=seed + 1, samples_per_problem=1, negative_fraction=0
    )
    write_jsonl(positives, root / "data" / "teacher_train.jsonl")
    _tiny(root / "teacher_base", size["teacher_hidden_size"], seed + 1)
    print("== training the tiny teacher (plain SFT on correct trajectories)", flush=True)
    plain_sft(
        root / "teacher_base",
        root / "data" / "teacher_train.jsonl",
        root / "teacher",
        epochs=size["teacher_epochs"],
        learning_rate=3e-3,
        seed=seed,
    )


def plain_sft(
    model: Path, data: Path, output: Path, *, epochs: int, learning_rate: float, seed: int, warmup_steps: float = 0.0
) -> Path:
    """Plain SFT (`glow: false`, cosine schedule, batches of 32, CPU) of `model` on `data` into `output`, in-process.

    The demo's teacher and the study's pretrained base are trained this way: by the real SFT stage, as a recipe
    would run it.
    """
    from ..stages import run_stage

    flags = {
        "model_name_or_path": model,
        "dataset_paths": data,
        "output_dir": output,
        "glow": "false",
        "num_train_epochs": epochs,
        "per_device_train_batch_size": SFT_BATCH_SIZE,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": warmup_steps,
        "use_cpu": "true",
        "bf16": "false",
        "gradient_checkpointing": "false",
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 50,
        "disable_tqdm": "true",
        "seed": seed,
    }
    run_stage("sft", [item for key, value in flags.items() for item in (f"--{key}", str(value))])
    return Path(output)


def grpo_section(data: Path, steps: int, prompts_per_step: int, readiness: int) -> dict:
    """The demos' `rl:` section: GRPO with the verifiable reward on `data/rl_problems.jsonl`, 4 rollouts a prompt."""
    return {
        "algorithm": "grpo",
        "readiness_prompts": readiness,
        "reward_funcs": ["math_accuracy", "boxed_format"],
        "reward_weights": [1.0, 0.1],
        "dataset_paths": [str(data / "rl_problems.jsonl")],
        "num_generations": 4,
        "per_device_train_batch_size": 4 * prompts_per_step,
        "max_completion_length": 96,
        "temperature": 1.0,
        "loss_type": "dapo",
        "max_steps": steps,
        "learning_rate": 1.0e-4,  # 3e-4 made the policy worse; measured on the arithmetic task
        "lr_scheduler_type": "constant",
        "logging_steps": 4,
        "save_strategy": "no",
    }


def demo_recipe(root: Path, size: dict, teacher: bool, seed: int = 42) -> dict:
    """The demo's pipeline recipe: [generate,] GLOW SFT (α=2, β=10), GRPO with its hand-off report, evaluation."""
    data = root / "data"
    recipe = {
        "model_name_or_path": str(root / "base"),
        "output_root": str(root),
        "seed": seed,
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "disable_tqdm": False,
    }
    if teacher:
        recipe["generate"] = {
            "teacher": str(root / "teacher"),
            "dataset_paths": [str(data / "problems.jsonl")],
            "num_samples": TEACHER_SAMPLES,
            "temperature": 1.0,
            "max_new_tokens": size["max_new_tokens"],
            "batch_size": TEACHER_SAMPLES,
        }
    recipe["sft"] = {
        **({} if teacher else {"dataset_paths": [str(data / "train.jsonl")]}),  # with a teacher: its samples
        "trajectories": "all",
        "glow": True,
        # α=2, β=10 (from the authors' sweep): a gain of 0 maps to weight 1, stalled samples get up to 2 and
        # well-learned ones down to 0.5. With the published α=1, every sample whose loss fell sits at the 0.5
        # floor, which on a task this regular is nearly every sample.
        "glow_alpha": 2.0,
        "glow_beta": 10.0,
        "glow_log_samples": True,
        "num_train_epochs": size["sft_epochs"],
        "per_device_train_batch_size": SFT_BATCH_SIZE,
        "learning_rate": 3.0e-3,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "max_length": 256,
        "logging_steps": 25,
        "save_strategy": "no",
    }
    recipe["rl"] = grpo_section(data, size["rl_steps"], prompts_per_step=16, readiness=size["readiness_prompts"])
    recipe["eval"] = {
        "include_base": True,
        "benchmark_files": [str(data / "in_domain.jsonl")],
        "ood_benchmark_files": [str(data / "out_of_domain.jsonl")],
        "num_samples": size["eval_samples"],
        "temperature": 0.6,
        "top_p": 0.95,
        "max_new_tokens": size["max_new_tokens"],
        "batch_size": 50,
    }
    return recipe


def run_pipeline(root: Path, recipe: dict) -> None:
    from ..pipeline import run

    path = write_text_atomic(root / "recipe.yaml", yaml.safe_dump(recipe, sort_keys=False))
    if run(str(path), []) != 0:
        raise GlowrlError(f"the pipeline failed; see {root / 'pipeline.json'} and the stage output above")


def rl_minus_sft(results: dict) -> dict:
    """The RL model's accuracy minus the SFT model's (the eval's second and third models), per domain, paired over the
    same problems: `{domain: [delta, low, high]}` (the eval table's deltas are against the base model)."""
    from ..evaluation.report import compare

    _, sft, rl = results["models"]
    return compare(sft, rl)["averages"]


def evaluation_figures(root: Path) -> dict:
    """Per model (base, sft, rl): accuracy with its interval, entropy and no-answer share, in and out of domain."""
    results = json.loads((root / "eval" / "results.json").read_text())
    figures = {}
    for label, entry in zip(("base", "sft", "rl"), results["models"], strict=True):
        row = {}
        for split in ("in_domain", "out_of_domain"):
            metrics = entry["benchmarks"][split]["metrics"]
            row[f"{split}_accuracy"] = metrics["accuracy"]
            row[f"{split}_ci"] = metrics["accuracy_ci"]
            row[f"{split}_entropy"] = metrics["entropy"]
            row[f"{split}_no_answer"] = metrics["no_answer_rate"]
        figures[label] = row
    return figures


def run_demo(root: Path, size_name: str, size: dict, teacher: bool) -> dict:
    start = time.time()
    print(f"== glowrl demo ({size_name}{', from a teacher' if teacher else ''}) -> {root}", flush=True)
    print("== building the arithmetic task and the tiny base model", flush=True)
    build_inputs(root, size, teacher)
    run_pipeline(root, demo_recipe(root, size, teacher))
    figures = evaluation_figures(root)
    deltas = rl_minus_sft(json.loads((root / "eval" / "results.json").read_text()))
    reward_first, reward_last = reward_trend(read_log_history(root / "rl"))
    entropy_rows = read_jsonl(root / "rl" / "entropy.jsonl")
    train = read_jsonl(root / "generate" / "trajectories.jsonl" if teacher else root / "data" / "train.jsonl")
    from transformers import AutoModelForCausalLM

    parameters = AutoModelForCausalLM.from_pretrained(root / "base").num_parameters()
    report = {
        "size": size_name,
        "teacher": teacher,
        "elapsed_s": time.time() - start,
        "train_trajectories": len(train),
        "positives": sum(bool(r["correct"]) for r in train),
        "negatives": sum(r["correct"] is False for r in train),
        "parameters": parameters,
        "figures": figures,
        "rl_minus_sft": deltas,
        "handoff": json.loads((root / "rl" / "readiness.json").read_text()),
        "rl_reward_first": reward_first,
        "rl_reward_last": reward_last,
        "rl_entropy_initial": entropy_rows[0].get("entropy/initial", math.nan),
        "glow_weights": weight_summary(root / "sft" / "glow_samples.jsonl"),
        "checks": learning_checks(figures, reward_first, reward_last),
    }
    plot_glow_weights(root / "sft" / "glow_samples.jsonl", root / "glow_weights.png")
    plot_sft_loss(root / "sft", root / "sft_loss.png")
    plot_rl(root / "rl", root / "rl.png")
    shutil.copyfile(root / "rl" / "readiness.png", root / "readiness.png")
    write_report(root, report)
    # the eval stage printed its table above; report.md has the demo's summary of it (results_table)
    print("\n" + deltas_line(deltas))
    for check in report["checks"]:
        print(f"{'PASS' if check['passed'] else 'FAIL'} {check['check']}: {check['detail']}")
    print(f"== done in {report['elapsed_s']:.0f}s: report in {root / 'report.md'}")
    failed = [c["check"] for c in report["checks"] if not c["passed"]]
    if failed and size["enforce_checks"]:
        raise LearningCheckFailed(f"the run did not learn: {'; '.join(failed)}")
    return report


def fresh_output_dir(output_dir: str | Path, overwrite: bool) -> Path:
    """`output_dir`, created empty: a non-empty one is refused unless `overwrite` (then emptied), a file refused."""
    root = Path(output_dir)
    if root.exists() and not root.is_dir():
        raise GlowrlError(f"--output_dir: {root} is a file; give a directory")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise GlowrlError(f"--output_dir: {root} is not empty; pass --overwrite or choose another directory")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    return root


def run(output_dir: str | Path, size: str = "full", teacher: bool = True, overwrite: bool = False) -> dict:
    """Run the demo into `output_dir` (refusing a non-empty one without `overwrite`); returns the report.

    One torch thread per process (unless `OMP_NUM_THREADS` is set): its models are tiny, where more threads only add
    waiting (benchmarks/threads.py), and its figures then do not depend on the machine's cores or load."""
    pin_threads(1)
    return run_demo(fresh_output_dir(output_dir, overwrite), size, SIZES[size], teacher)
