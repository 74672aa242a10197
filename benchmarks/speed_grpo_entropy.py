#!/usr/bin/env python
"""Step time of GRPO with glowrl's rollout-entropy logging against plain TRL GRPO, on the same model and prompts.

Two variants train the same tiny Qwen2 (one saved random init, loaded by every run) on the same arithmetic prompts
with the same rewards and the same `GRPOConfig` fields:

- `trl`: plain `trl.GRPOTrainer` (`GRPOConfig`).
- `glowrl`: `glowrl.grpo.MathGRPOTrainer` (`MathGRPOConfig`, `log_rollout_entropy=True`): the per-token entropies of
  the loss forward are captured, reduced per rollout and per correct/incorrect split in `_compute_loss`, summarised
  (quantiles, means) and appended to `entropy.jsonl` in `_end_entropy_step` at every optimizer step, and averaged
  into the logs. Each run checks that `entropy.jsonl` has one line per step, so the logging really ran.

Prompts are `glowrl.arithmetic.generate_problems(split="train")` rendered by `glowrl.prompts.prompt_messages` (chat
prompts, `answer` column); rewards `glowrl.rewards.math_accuracy` and `boxed_format` (weights 1.0 and 0.1, as in
`recipes/tiny/grpo.yaml`). Both variants start every repeat from the same seed and the same RNG state, so they
sample the same completions: their logged `loss`, `entropy`, `reward` and completion lengths are compared step by
step (`checks`, expected 0).

Interleaving (`--interleave`):

- `step` (default): each repeat builds both trainers (fresh model each) and runs their `train()` in two threads that
  take turns one optimizer step at a time (glowrl step 1, trl step 1, glowrl step 2, ...; the first mover alternates
  between repeats). Only one thread runs at a time: the turn passes in `on_step_begin`, and the Python, NumPy and
  torch RNG states are saved and restored at every hand-over, so each trainer sees exactly the RNG stream it would
  see alone. Paired steps are then ~1 s apart, which is what makes a 2 % resolution possible on a shared CPU whose
  speed drifts by ±40 % within a minute.
- `run`: variant after variant, one whole `train()` each, alternating the order (ABBA) between repeats.

Times (wall clock `time.perf_counter`, with `torch.cuda.synchronize()` around each on CUDA; on CPU also process
CPU time `time.process_time`, which does not count the time this process waits for a core, so it is far less
sensitive to other users of the machine):

- step: `on_step_begin` -> `on_step_end` of a `TrainerCallback` added after the trainer's own callbacks: generation
  and scoring, the loss forward, backward, clipping, the optimizer step and glowrl's `_end_entropy_step` (run by
  glowrl's own `on_step_end` callback, which comes first). TRL's logged `step_time` covers `training_step` only,
  so it would miss `_end_entropy_step`.
- generation: the time in TRL's `GRPOTrainer._generate_and_score_completions` (sampling with
  `transformers.generate`, decoding, reward functions, advantages) within the step; `step - generation` is the step
  excluding generation. `_generate` (sampling and decoding alone) and `_calculate_rewards` are timed too.
- glowrl's own code: the time in each `RolloutEntropyMixin` override minus the TRL method it wraps through `super()`
  (`_generate_and_score_completions`, `_calculate_rewards`, `_get_per_token_logps_and_entropies`,
  `_compute_loss`, `log`), plus `_end_entropy_step`, from one step's start to the next one's (so the `log` call
  after each step is included). This is the direct measure of the overhead; the step ratios are the end-to-end one.

These timers are class-level wrappers installed once for the process (both variants pay the same few microseconds
per call); `--no-breakdown` leaves the trainer classes untouched and reports step times only. A micro-benchmark of
the pieces of glowrl's per-step code on tensors of the run's shape (`--micro-iters`) ends the run.

Per variant: the median over all measured steps of all repeats; the headline ratio is the median of the per-step
paired ratios glowrl/trl (same repeat, same step index), with a bootstrap 95 % interval.

    python benchmarks/bench_grpo_entropy.py                  # default: hidden 128, 3 layers, 64 tokens, 8 x (2 + 10)
    python benchmarks/bench_grpo_entropy.py --smoke          # hidden 64, 2 layers, 16 tokens, 1 + 1 steps (< 40 s)
    python benchmarks/bench_grpo_entropy.py --device cuda --bf16 --hidden-size 1024 --num-layers 8
"""

import argparse
import functools
import gc
import json
import math
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from machine import machine_info  # benchmarks/machine.py (this folder is on sys.path)


VARIANTS = ("glowrl", "trl")

# (owner in trl, method, label): TRL's methods, timed in both variants.
TRL_TIMERS = (
    ("GRPOTrainer", "_generate_and_score_completions", "trl.generate_and_score"),
    ("GRPOTrainer", "_generate", "trl.generate"),
    ("GRPOTrainer", "_calculate_rewards", "trl.calculate_rewards"),
    ("GRPOTrainer", "_get_per_token_logps_and_entropies", "trl.logps_entropies"),
    ("GRPOTrainer", "_compute_loss", "trl.compute_loss"),
    ("GRPOTrainer", "log", "trl.log"),
)
# glowrl's overrides: (method of RolloutEntropyMixin, label, label of the TRL method it calls through super()).
GLOWRL_TIMERS = (
    ("_generate_and_score_completions", "glowrl._generate_and_score_completions", "trl.generate_and_score"),
    ("_calculate_rewards", "glowrl._calculate_rewards", "trl.calculate_rewards"),
    ("_get_per_token_logps_and_entropies", "glowrl._get_per_token_logps_and_entropies", "trl.logps_entropies"),
    ("_compute_loss", "glowrl._compute_loss", "trl.compute_loss"),
    ("log", "glowrl.log", "trl.log"),
    ("_end_entropy_step", "glowrl._end_entropy_step", None),
)
# Per-step figures: (key, "wall" or "cpu").
STEP_KEYS = (
    "step_s",
    "cpu_step_s",
    "train_part_s",
    "cpu_train_part_s",
    "generation_s",
    "cpu_generation_s",
    "sampling_s",
    "rewards_s",
    "trl_compute_loss_s",
    "glowrl_own_s",
    "cpu_glowrl_own_s",
    "glowrl_own_in_step_s",
)
RATIO_KEYS = ("step_s", "cpu_step_s", "train_part_s", "cpu_train_part_s")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vocab-size", type=int, default=512, help="model vocabulary (the trained tokenizer has ~350)")
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--intermediate-size", type=int, default=None, help="MLP width (default 4 x hidden size)")
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--num-generations", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=16, help="per_device_train_batch_size (completions per step)")
    p.add_argument("--max-completion-length", type=int, default=64)
    p.add_argument("--warmup-steps", type=int, default=2, help="optimizer steps run before the measured ones")
    p.add_argument("--steps", type=int, default=10, help="measured optimizer steps per run")
    p.add_argument("--repeats", type=int, default=8, help="repeats, each with fresh trainers of every variant")
    p.add_argument(
        "--interleave",
        choices=("step", "run"),
        default="step",
        help="alternate the variants every optimizer step (two trainers taking turns) or every run",
    )
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (CUDA only)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: 1 on CPU, torch's default on CUDA; 0 = torch's default). On a shared, "
        "oversubscribed 2-core CPU, 2 OpenMP threads made generation ~15x slower and far noisier than 1",
    )
    p.add_argument("--output", default="results.json", help="JSON file with the raw runs and the summary")
    p.add_argument("--model-dir", default=None, help="reuse a model built by a previous run instead of building one")
    p.add_argument(
        "--no-breakdown",
        dest="breakdown",
        action="store_false",
        help="no method timers (step times only; the trainer classes are left untouched)",
    )
    p.add_argument(
        "--micro-iters",
        type=int,
        default=300,
        help="iterations of the final micro-benchmark of glowrl's per-step code (0: skip it)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="hidden 64, 2 layers, 16 tokens, 1 warm-up + 1 measured step, one repeat"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.hidden_size, args.num_layers, args.max_completion_length = 64, 2, 16
        args.warmup_steps, args.steps, args.repeats, args.micro_iters = 1, 1, 1, min(args.micro_iters, 20)
    if args.intermediate_size is None:
        args.intermediate_size = 4 * args.hidden_size
    if args.threads is None:
        args.threads = 1 if args.device == "cpu" else 0
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or not args.variants or len(set(args.variants)) != len(args.variants):
        p.error(f"--variants: give distinct names among {list(VARIANTS)}")
    if args.bf16 and args.device != "cuda":
        p.error("--bf16 is for --device cuda (the CPU comparison runs in fp32)")
    if args.steps < 1 or args.warmup_steps < 0 or args.repeats < 1:
        p.error("need --steps >= 1, --warmup-steps >= 0, --repeats >= 1")
    if args.num_generations < 2 or args.batch_size % args.num_generations:
        p.error("--batch-size must be a multiple of --num-generations (>= 2)")
    return args


def log(msg):
    print(msg, flush=True)


def device_sync(device: str):
    if device == "cuda":
        import torch

        return torch.cuda.synchronize
    return lambda: None


# --------------------------------------------------------------------------------------------------------------------
# Method timers
# --------------------------------------------------------------------------------------------------------------------


class Recorder:
    """Collects `(label, thread id, wall start, wall end, cpu start, cpu end)` of every timed call while active."""

    calls: list | None = None
    sync = staticmethod(lambda: None)


def install_timers(device: str):
    import trl

    from glowrl.grpo import RolloutEntropyMixin

    Recorder.sync = staticmethod(device_sync(device))

    def wrap(owner, name, label):
        original = owner.__dict__[name]

        @functools.wraps(original)
        def timed(*a, **kw):
            calls = Recorder.calls
            if calls is None:
                return original(*a, **kw)
            Recorder.sync()
            t, c = time.perf_counter(), time.process_time()
            try:
                return original(*a, **kw)
            finally:
                Recorder.sync()
                calls.append((label, threading.get_ident(), t, time.perf_counter(), c, time.process_time()))

        setattr(owner, name, timed)

    for owner, name, label in TRL_TIMERS:
        wrap(getattr(trl, owner), name, label)
    for name, label, _ in GLOWRL_TIMERS:
        wrap(RolloutEntropyMixin, name, label)


def window_sums(calls, thread: int, start: float, end: float, cpu: bool = False) -> dict[str, float]:
    """Seconds (wall, or CPU) per label of the calls of `thread` that started in [start, end) (wall clock)."""
    sums: dict[str, float] = {}
    for label, tid, t0, t1, c0, c1 in calls:
        if tid == thread and start <= t0 < end:
            sums[label] = sums.get(label, 0.0) + ((c1 - c0) if cpu else (t1 - t0))
    return sums


def glowrl_own(sums: dict[str, float]) -> dict[str, float]:
    """glowrl's own seconds per override: the override's time minus the TRL method it wraps."""
    own = {}
    for _, label, inner in GLOWRL_TIMERS:
        if label in sums:
            own[label] = sums[label] - (sums.get(inner, 0.0) if inner else 0.0)
    return own


# --------------------------------------------------------------------------------------------------------------------
# Turn-taking between the trainers of one repeat (--interleave step)
# --------------------------------------------------------------------------------------------------------------------


class RngState:
    """The Python, NumPy and torch (CPU and CUDA) RNG states, saved and restored together."""

    def __init__(self, device: str):
        self.device = device
        self.save()

    def save(self):
        import numpy as np
        import torch

        self.py, self.np, self.torch = random.getstate(), np.random.get_state(), torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if self.device == "cuda" else None

    def restore(self):
        import numpy as np
        import torch

        random.setstate(self.py)
        np.random.set_state(self.np)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class Baton:
    """Lets one trainer thread run at a time, passing the turn round-robin; each thread keeps its own RNG state."""

    def __init__(self, names: list[str], device: str):
        self.cond = threading.Condition()
        self.order = list(names)
        self.active = set(names)
        self.turn = names[0]
        self.rng = {name: RngState(device) for name in names}  # all start from the current (seeded) state

    def _next(self, name):
        i = self.order.index(name)
        for other in self.order[i + 1 :] + self.order[: i + 1]:
            if other in self.active:
                return other
        return None

    def acquire(self, name):
        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)
        self.rng[name].restore()

    def pass_on(self, name):
        self.rng[name].save()
        with self.cond:
            self.turn = self._next(name)
            self.cond.notify_all()

    def finish(self, name):
        with self.cond:
            self.active.discard(name)
            if self.turn == name:
                self.turn = self._next(name)
            self.cond.notify_all()


# --------------------------------------------------------------------------------------------------------------------
# Trainers
# --------------------------------------------------------------------------------------------------------------------


def build_model(args, output_dir: Path) -> Path:
    from glowrl.arithmetic import tokenizer_corpus
    from glowrl.tiny_model import build_tiny_model

    return build_tiny_model(
        output_dir,
        tokenizer_corpus(args.seed),
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        intermediate_size=args.intermediate_size,
        seed=args.seed,
    )


def make_dataset(args, num_problems: int):
    from datasets import Dataset

    from glowrl.arithmetic import generate_problems
    from glowrl.prompts import prompt_messages

    rows = generate_problems(num_problems, args.seed, split="train")
    return Dataset.from_list([{"prompt": prompt_messages(r["problem"]), "answer": r["answer"]} for r in rows])


def step_timer(tag: str, warmup: int, total: int, sync, baton: "Baton | None" = None, name: str | None = None):
    """A `TrainerCallback` timing `on_step_begin` -> `on_step_end` (wall and CPU); with a baton, it first passes the
    turn to the other trainer and waits for it to come back."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begins, self.ends, self.cpu_begins, self.cpu_ends, self.enters = [], [], [], [], []

        def on_step_begin(self, a, state, control, **kw):
            self.enters.append(time.perf_counter())  # before the hand-over: end of this trainer's previous turn
            if baton is not None and state.global_step > 0:
                baton.pass_on(name)
                baton.acquire(name)
            sync()
            self.begins.append(time.perf_counter())
            self.cpu_begins.append(time.process_time())

        def on_step_end(self, a, state, control, **kw):
            sync()
            self.ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())
            kind = "warm-up" if len(self.ends) <= warmup else "measured"
            log(
                f"{tag} step {state.global_step}/{total} ({kind}): {self.ends[-1] - self.begins[-1]:.3f} s wall, "
                f"{self.cpu_ends[-1] - self.cpu_begins[-1]:.3f} s CPU"
            )

    return StepTimer()


def make_trainer(args, variant: str, model_dir: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    from glowrl.grpo import MathGRPOConfig, MathGRPOTrainer
    from glowrl.rewards import boxed_format, math_accuracy

    total_steps = args.warmup_steps + args.steps
    prompts_per_step = args.batch_size // args.num_generations
    dataset = make_dataset(args, prompts_per_step * total_steps)  # one epoch of exactly `total_steps` steps
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    output_dir = tempfile.mkdtemp(prefix=f"bench_grpo_{variant}_")
    common = {
        "output_dir": output_dir,
        "use_cpu": args.device == "cpu",
        "bf16": args.bf16,
        "activation_checkpointing": False,  # `gradient_checkpointing` is its deprecated alias in transformers 5
        "gradient_checkpointing": False,
        "num_generations": args.num_generations,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "max_completion_length": args.max_completion_length,
        "temperature": 1.0,
        "beta": 0.0,
        "loss_type": "dapo",
        "reward_weights": [1.0, 0.1],
        "learning_rate": 1e-3,
        "lr_scheduler_type": "constant",
        "max_steps": total_steps,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": args.seed,
        "data_seed": args.seed,
        "dataloader_num_workers": 0,
    }
    rewards = [math_accuracy, boxed_format]
    if variant == "glowrl":
        config = MathGRPOConfig(**common, log_rollout_entropy=True, entropy_correctness_reward="math_accuracy")
        trainer = MathGRPOTrainer(
            model=model, reward_funcs=rewards, args=config, train_dataset=dataset, processing_class=tokenizer
        )
    else:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=rewards,
            args=GRPOConfig(**common),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    return trainer


def collect_result(args, variant, repeat, trainer, timer, calls, thread, t_train, t_done, train_output) -> dict:
    from glowrl.grpo import ENTROPY_LOG_NAME

    total_steps = args.warmup_steps + args.steps
    tag = f"[{variant} r{repeat}]"
    steps = []
    for k, (b, e) in enumerate(zip(timer.begins, timer.ends, strict=True)):
        row = {"step_s": e - b, "cpu_step_s": timer.cpu_ends[k] - timer.cpu_begins[k]}
        if calls is not None:
            after = timer.enters[k + 1] if k + 1 < len(timer.enters) else t_done
            inside, through = window_sums(calls, thread, b, e), window_sums(calls, thread, b, after)
            inside_cpu, through_cpu = (
                window_sums(calls, thread, b, e, cpu=True),
                window_sums(calls, thread, b, after, cpu=True),
            )
            row["generation_s"] = inside.get("trl.generate_and_score", 0.0)
            row["cpu_generation_s"] = inside_cpu.get("trl.generate_and_score", 0.0)
            row["sampling_s"] = inside.get("trl.generate", 0.0)
            row["rewards_s"] = inside.get("trl.calculate_rewards", 0.0)
            row["train_part_s"] = row["step_s"] - row["generation_s"]
            row["cpu_train_part_s"] = row["cpu_step_s"] - row["cpu_generation_s"]
            row["trl_compute_loss_s"] = inside.get("trl.compute_loss", 0.0)
            if variant == "glowrl":
                own = glowrl_own(through)  # includes the `log` call that follows the step
                row["glowrl_own_s"] = sum(own.values())
                row["cpu_glowrl_own_s"] = sum(glowrl_own(through_cpu).values())
                row["glowrl_own_in_step_s"] = sum(glowrl_own(inside).values())
                row["glowrl_own_by_method_s"] = own
        steps.append(row)
    if len(steps) != total_steps:
        raise RuntimeError(f"{tag}: {len(steps)} steps timed, expected {total_steps}")
    measured = steps[args.warmup_steps :]

    logs = [row for row in trainer.state.log_history if "loss" in row and "step" in row]
    keep = (
        "loss",
        "entropy",
        "reward",
        "completions/mean_length",
        "rewards/math_accuracy/mean",
        "rewards/boxed_format/mean",
        "entropy/seq_p50",
        "entropy/incorrect",
    )
    entropy_rows = None
    if variant == "glowrl":
        path = Path(trainer.args.output_dir) / ENTROPY_LOG_NAME
        entropy_rows = len(path.read_text().splitlines()) if path.is_file() else 0
        if entropy_rows != total_steps or not all("entropy/seq_p50" in row for row in logs):
            raise RuntimeError(f"{tag}: glowrl entropy logging did not run on every step ({entropy_rows} rows)")
    result = {
        "variant": variant,
        "repeat": repeat,
        "steps": steps,
        **{f"median_{key}": statistics.median(s[key] for s in measured) for key in STEP_KEYS if key in measured[0]},
        "train_s": t_done - t_train,
        "train_loss": train_output.training_loss,
        "step_logs": [{k: row.get(k) for k in keep} for row in logs],
        "entropy_jsonl_rows": entropy_rows,
    }
    if variant == "glowrl" and calls is not None:
        result["glowrl_own_by_method_median_s"] = {
            label: statistics.median(s["glowrl_own_by_method_s"].get(label, 0.0) for s in measured)
            for _, label, _ in GLOWRL_TIMERS
        }
    line = f"{tag} done: median step {result['median_step_s']:.3f} s wall, {result['median_cpu_step_s']:.3f} s CPU"
    if calls is not None:
        line += (
            f"; generation {result['median_generation_s']:.3f} s, excl. generation "
            f"{result['median_train_part_s'] * 1e3:.1f} ms wall / "
            f"{result['median_cpu_train_part_s'] * 1e3:.1f} ms CPU"
        )
        if variant == "glowrl":
            line += f"; glowrl's own code {result['median_glowrl_own_s'] * 1e3:.2f} ms"
    log(line)
    return result


def run_repeat(args, model_dir: Path, repeat: int) -> list[dict]:
    """One repeat: a fresh trainer (and model) per variant, trained with the chosen interleaving."""
    import torch
    from transformers import set_seed

    total_steps = args.warmup_steps + args.steps
    sync = device_sync(args.device)
    order = args.variants if repeat % 2 == 0 else args.variants[::-1]  # neither variant always goes first
    results = []
    if args.interleave == "run":
        for variant in order:
            trainer = make_trainer(args, variant, model_dir)
            timer = step_timer(f"[{variant} r{repeat}]", args.warmup_steps, total_steps, sync)
            trainer.add_callback(timer)  # after glowrl's on_step_end callback: `_end_entropy_step` is in the step
            set_seed(args.seed)
            calls = [] if args.breakdown else None
            Recorder.calls = calls
            t_train = time.perf_counter()
            try:
                output = trainer.train()
            finally:
                Recorder.calls = None
            results.append(
                collect_result(
                    args,
                    variant,
                    repeat,
                    trainer,
                    timer,
                    calls,
                    threading.get_ident(),
                    t_train,
                    time.perf_counter(),
                    output,
                )
            )
            shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
            del trainer
            gc.collect()
        return results

    trainers = {v: make_trainer(args, v, model_dir) for v in order}
    set_seed(args.seed)
    baton = Baton(order, args.device)  # every thread starts from this seeded RNG state
    timers = {v: step_timer(f"[{v} r{repeat}]", args.warmup_steps, total_steps, sync, baton, v) for v in order}
    for v in order:
        trainers[v].add_callback(timers[v])
    calls = [] if args.breakdown else None
    outcome: dict[str, dict] = {}

    def worker(variant):
        baton.acquire(variant)
        try:
            t_train = time.perf_counter()
            output = trainers[variant].train()
            outcome[variant] = {
                "output": output,
                "t_train": t_train,
                "t_done": time.perf_counter(),
                "thread": threading.get_ident(),
            }
        except Exception as e:  # noqa: BLE001 (re-raised by the main thread)
            outcome[variant] = {"error": e}
        finally:
            baton.rng[variant].save()
            baton.finish(variant)

    Recorder.calls = calls
    threads = [threading.Thread(target=worker, args=(v,), name=f"bench-{v}") for v in order]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        Recorder.calls = None
    for v in order:
        if "error" in outcome[v]:
            raise RuntimeError(f"[{v} r{repeat}] training failed") from outcome[v]["error"]
    for v in order:
        o = outcome[v]
        results.append(
            collect_result(
                args, v, repeat, trainers[v], timers[v], calls, o["thread"], o["t_train"], o["t_done"], o["output"]
            )
        )
        shutil.rmtree(trainers[v].args.output_dir, ignore_errors=True)
    trainers.clear()
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return results


# --------------------------------------------------------------------------------------------------------------------
# Micro-benchmark of glowrl's per-step code (diagnosis of where its time goes)
# --------------------------------------------------------------------------------------------------------------------


def micro_benchmark(args) -> dict:
    """Per-call time of each piece of glowrl's per-step work on tensors of the run's shape (median, microseconds).

    `_compute_loss` extra: `sequence_entropy(...).double().cpu()`, `entropy_sums(...)` and `sums.cpu()`;
    `_end_entropy_step`: the real method on a stub trainer (single process: no gather/pad), and its parts
    `summarize_rollout_entropy` (two `torch.quantile`-based quantiles ...), `torch.quantile` alone and the
    `entropy.jsonl` append (mkdir, open, json.dumps, write, close).
    """
    from types import SimpleNamespace

    import torch

    from glowrl.entropy import entropy_sums, sequence_entropy, summarize_rollout_entropy
    from glowrl.grpo import RolloutEntropyMixin

    device, sync = args.device, device_sync(args.device)
    g = torch.Generator().manual_seed(args.seed)
    B, T = args.batch_size, args.max_completion_length
    entropies = (torch.rand(B, T, generator=g) * 6).to(device)
    mask = (torch.rand(B, T, generator=g) > 0.1).long().to(device)
    correct = (torch.rand(B, generator=g) > 0.5).float().to(device)
    out_dir = Path(tempfile.mkdtemp(prefix="bench_grpo_micro_"))

    def compute_loss_extra():  # as in RolloutEntropyMixin._compute_loss: stays on the tensors' device
        seq = sequence_entropy(entropies, mask).double()
        sums = torch.zeros(6, dtype=torch.float64, device=entropies.device)
        sums += entropy_sums(entropies.double(), mask, correct.double())
        return seq, sums

    seq, sums = compute_loss_extra()
    stub = SimpleNamespace(
        _entropy_step=None,
        accelerator=SimpleNamespace(num_processes=1, is_main_process=True, device=entropies.device),
        _entropy_initial_logged=True,
        _entropy_window=[],
        _metrics={"train": {"entropy": [1.0]}},
        _trl_entropy_seen=0,
        state=SimpleNamespace(global_step=1),
        args=SimpleNamespace(output_dir=str(out_dir)),
    )
    stub._empty_entropy_step = lambda: RolloutEntropyMixin._empty_entropy_step(stub)

    def end_entropy_step():
        stub._entropy_step = {"seq": [seq], "sums": sums.clone()}
        stub._entropy_window.clear()
        stub._trl_entropy_seen = 0
        RolloutEntropyMixin._end_entropy_step(stub)

    figures = summarize_rollout_entropy(seq, sums)
    q = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    jsonl = out_dir / "alone.jsonl"

    def append_jsonl():
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        with jsonl.open("a") as f:
            f.write(json.dumps({"step": 1, **figures}) + "\n")

    pieces = {
        "_compute_loss extra (sequence_entropy + entropy_sums + 2 x .cpu())": compute_loss_extra,
        "_end_entropy_step (whole, 1 process)": end_entropy_step,
        "  summarize_rollout_entropy": lambda: summarize_rollout_entropy(seq, sums),
        "    torch.quantile (3 quantiles)": lambda: torch.quantile(seq, q).tolist(),
        "  entropy.jsonl append (open/write/close)": append_jsonl,
    }
    result = {}
    for name, fn in pieces.items():
        for _ in range(5):
            fn()
        sync()
        times = []
        for _ in range(args.micro_iters):
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        result[name] = {
            "median_us": 1e6 * statistics.median(times),
            "p90_us": 1e6 * sorted(times)[int(0.9 * len(times))],
        }
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------


def bootstrap_median_ci(values: list[float], iters: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap 95 % interval of the median."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(iters))
    return medians[int(0.025 * iters)], medians[int(0.975 * iters) - 1]


def summarize(args, runs: list[dict]) -> dict:
    by_variant = {v: [r for r in runs if r["variant"] == v] for v in args.variants}
    summary = {}
    for v, rs in by_variant.items():
        measured = [s for r in rs for s in r["steps"][args.warmup_steps :]]
        entry = {
            "runs": len(rs),
            "measured_steps": len(measured),
            "train_loss": statistics.median(r["train_loss"] for r in rs),
        }
        for key in STEP_KEYS:
            values = [s[key] for s in measured if key in s]
            if values:
                entry[key] = statistics.median(values)
                entry[f"{key}_min"], entry[f"{key}_max"] = min(values), max(values)
        if "glowrl_own_by_method_s" in (measured[0] if measured else {}):
            entry["glowrl_own_by_method_s"] = {
                label: statistics.median(s["glowrl_own_by_method_s"].get(label, 0.0) for s in measured)
                for _, label, _ in GLOWRL_TIMERS
            }
        summary[v] = entry
    ratios, checks = {}, {}
    if "glowrl" in by_variant and "trl" in by_variant:
        pairs = [(a, b) for a in by_variant["glowrl"] for b in by_variant["trl"] if a["repeat"] == b["repeat"]]
        for key in RATIO_KEYS:
            if key not in summary["glowrl"] or (key.startswith("cpu") and args.device == "cuda"):
                continue
            per_step = [
                x[key] / y[key]
                for a, b in pairs
                for x, y in zip(a["steps"][args.warmup_steps :], b["steps"][args.warmup_steps :], strict=True)
            ]
            per_repeat = [a[f"median_{key}"] / b[f"median_{key}"] for a, b in pairs]
            lo, hi = bootstrap_median_ci(per_step)
            ratios[key] = {
                "paired_step_median": statistics.median(per_step),
                "paired_step_ci95": [lo, hi],
                "paired_repeat_median": statistics.median(per_repeat),
                "of_medians": summary["glowrl"][key] / summary["trl"][key],
                "per_repeat": per_repeat,
            }
        if "glowrl_own_s" in summary["glowrl"]:
            ratios["glowrl_own_over_trl_step"] = summary["glowrl"]["glowrl_own_s"] / summary["trl"]["step_s"]
            ratios["glowrl_own_over_trl_train_part"] = (
                summary["glowrl"]["glowrl_own_s"] / summary["trl"]["train_part_s"]
            )
        # Same seed, init, prompts and RNG stream: both variants must sample and train identically.
        for key in ("loss", "entropy", "reward", "completions/mean_length"):
            diffs = [
                abs(x[key] - y[key])
                for a, b in pairs
                for x, y in zip(a["step_logs"], b["step_logs"], strict=True)
                if x.get(key) is not None and y.get(key) is not None
            ]
            checks[f"max_abs_diff_{key}"] = max(diffs) if diffs else None
    return {"variants": summary, "ratios": ratios, "checks": checks}


def markdown(args, summary: dict, meta: dict) -> str:
    variants, ratios = summary["variants"], summary["ratios"]
    cpu = args.device == "cpu"

    def ratio(v, key):
        if v == "trl":
            return "1"
        r = ratios.get(key)
        return f"**{r['paired_step_median']:.3f}**" if r else "–"

    def rng(s, key, scale, fmt):
        return f"{s[key] * scale:{fmt}} ({s[key + '_min'] * scale:{fmt}}–{s[key + '_max'] * scale:{fmt}})"

    head = ["variant", "step, wall (s)", "× trl"]
    if cpu:
        head += ["step, CPU (s)", "× trl"]
    if args.breakdown:
        head += ["excl. generation, wall (ms)", "× trl"] + (["excl. generation, CPU (ms)", "× trl"] if cpu else [])
        head += ["generation + scoring, wall (s)", "glowrl's own code (ms/step)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, s in variants.items():
        row = [f"`{v}`", rng(s, "step_s", 1, ".3f"), ratio(v, "step_s")]
        if cpu:
            row += [rng(s, "cpu_step_s", 1, ".3f"), ratio(v, "cpu_step_s")]
        if args.breakdown:
            row += [rng(s, "train_part_s", 1e3, ".0f"), ratio(v, "train_part_s")]
            if cpu:
                row += [rng(s, "cpu_train_part_s", 1e3, ".0f"), ratio(v, "cpu_train_part_s")]
            row += [f"{s['generation_s']:.3f}", f"{s['glowrl_own_s'] * 1e3:.2f}" if "glowrl_own_s" in s else "–"]
        lines.append("| " + " | ".join(row) + " |")
    shape = (
        f"Qwen2 vocab {args.vocab_size}, hidden {args.hidden_size}, {args.num_layers} layers, MLP "
        f"{args.intermediate_size}; {args.batch_size} completions per step "
        f"({args.batch_size // args.num_generations} prompts × {args.num_generations} generations), "
        f"max_completion_length {args.max_completion_length}; "
        f"{args.warmup_steps} warm-up + {args.steps} measured steps × {args.repeats} repeats, interleaved per "
        f"{args.interleave}; device {args.device}{' bf16' if args.bf16 else ' fp32'}, "
        f"{meta['machine']['torch_threads']} torch thread(s); load average "
        f"{meta['machine'].get('load_avg_at_start', [math.nan])[0]:.1f} at start, "
        f"{meta.get('load_avg_at_end', [math.nan])[0]:.1f} at end"
    )
    v = meta["machine"]["versions"]
    lines += [
        "",
        "Medians over all measured steps (range in parentheses); × trl: median of the per-step paired ratios.",
        f"Shape: {shape}.",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cpus_usable']} usable cores"
        + (f", {meta['machine']['gpu']}" if "gpu" in meta["machine"] else "")
        + f"; torch {v['torch']}, trl {v['trl']}, transformers {v['transformers']}, accelerate {v['accelerate']}.",
        f"Command: `{meta['command']}` ({meta['elapsed_s'] / 60:.1f} min)",
    ]
    names = {
        "step_s": "optimizer step, wall",
        "cpu_step_s": "optimizer step, CPU time",
        "train_part_s": "step excl. generation, wall",
        "cpu_train_part_s": "step excl. generation, CPU time",
    }
    for key, name in names.items():
        r = ratios.get(key)
        if r:
            lo, hi = r["paired_step_ci95"]
            lines.append(
                f"Ratio glowrl/trl, {name}: {r['paired_step_median']:.4f} (95 % bootstrap interval "
                f"{lo:.4f}–{hi:.4f}; median of per-repeat ratios {r['paired_repeat_median']:.4f}; ratio of "
                f"medians {r['of_medians']:.4f})."
            )
    if "glowrl_own_over_trl_step" in ratios:
        g = variants["glowrl"]
        parts = ", ".join(f"{k.removeprefix('glowrl.')} {t * 1e3:.3f}" for k, t in g["glowrl_own_by_method_s"].items())
        lines.append(
            f"glowrl's own code per step (ms, median): {parts}; total {g['glowrl_own_s'] * 1e3:.2f} ms wall"
            + (f" ({g['cpu_glowrl_own_s'] * 1e3:.2f} ms CPU)" if cpu else "")
            + f" = {100 * ratios['glowrl_own_over_trl_step']:.3f} % of the trl step, "
            f"{100 * ratios['glowrl_own_over_trl_train_part']:.2f} % of its step excluding generation."
        )
    checks = {k: c for k, c in summary["checks"].items() if c is not None}
    if checks:
        lines.append(
            "Same rollouts in both variants, max |glowrl − trl| over all steps: "
            + ", ".join(f"{k.removeprefix('max_abs_diff_')} {c:.1e}" for k, c in checks.items())
            + "."
        )
    micro = meta.get("micro")
    if micro:
        lines += [
            "",
            "| glowrl per-step piece (micro-benchmark, run shape) | median (µs) | p90 (µs) |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name.strip()}{' (part)' if name.startswith('  ') else ''} | {m['median_us']:.0f} | "
            f"{m['p90_us']:.0f} |"
            for name, m in micro.items()
        ]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5's own `gradient_checkpointing` notices
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    script = os.path.relpath(os.path.abspath(__file__))
    command = shlex.join(["python", script, *(sys.argv[1:] if argv is None else argv)])
    log(f"bench_grpo_entropy: {command}")
    meta = {"command": command, "machine": machine_info(args.device), "args": vars(args)}
    log(
        f"machine: {meta['machine']['cpu']}, {meta['machine']['cpus_usable']} cores, torch threads "
        f"{meta['machine']['torch_threads']}, versions {meta['machine']['versions']}, load average "
        f"{meta['machine'].get('load_avg_at_start')}"
    )
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    workdir = Path(tempfile.mkdtemp(prefix="bench_grpo_entropy_"))
    t0 = time.perf_counter()
    try:
        if args.model_dir is None:
            t = time.perf_counter()
            model_dir = build_model(args, workdir / "model")
            log(
                f"built model (vocab {args.vocab_size}, hidden {args.hidden_size}, {args.num_layers} layers) in "
                f"{time.perf_counter() - t:.1f} s"
            )
        else:
            model_dir = Path(args.model_dir)
        if args.breakdown:
            install_timers(args.device)
        runs = []
        for repeat in range(args.repeats):
            log(f"repeat {repeat + 1}/{args.repeats} ({time.perf_counter() - t0:.0f} s elapsed)")
            runs += run_repeat(args, model_dir, repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if args.micro_iters > 0 and "glowrl" in args.variants:
        meta["micro"] = micro_benchmark(args)
    summary = summarize(args, runs)
    meta["elapsed_s"] = time.perf_counter() - t0
    try:
        meta["load_avg_at_end"] = os.getloadavg()
    except OSError:
        pass
    table = markdown(args, summary, meta)
    log("\n" + table + "\n")
    out = {"meta": meta, "summary": summary, "markdown": table, "runs": runs}
    Path(args.output).write_text(json.dumps(out, indent=1))
    log(f"wrote {args.output} ({meta['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
