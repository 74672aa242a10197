#!/usr/bin/env python
"""Step time of GRPO with glowrl's rollout-entropy logging against plain TRL GRPO, on the same model and prompts.

Two variants train the same saved init on the same arithmetic prompts with the same rewards and `GRPOConfig` fields:

- `trl`: plain `trl.GRPOTrainer`.
- `glowrl`: `glowrl.rl.grpo.RolloutEntropyGRPOTrainer` (`log_rollout_entropy=True`): the per-token entropies of the
  loss forward are reduced per rollout and per correct/incorrect split, summarised at every optimizer step and
  appended to `entropy.jsonl` (checked: one line per step).

Both start every repeat from the same seed and RNG state, so they sample the same completions (their logged `loss`,
`entropy`, `reward` and completion lengths are compared step by step). This file holds the variants, the turn-taking
of `--interleave step` (two trainer threads, one optimizer step each in turn), the method timers that split a step
into generation, the rest and glowrl's own code, and the micro-benchmark of glowrl's per-step code. Flags, timers,
the memory meter, repeats, summary and output are `harness.py`'s; what is measured and how is in README.md.

    python benchmarks/speed_grpo_entropy.py              # vocab 512, hidden 128, 3 layers, 64 tokens, 8 x (2 + 10)
    python benchmarks/speed_grpo_entropy.py --smoke      # hidden 64, 2 layers, 16 tokens, 1 + 1 steps
    python benchmarks/speed_grpo_entropy.py --device cuda --bf16 --shape qwen2.5-0.5b --repeats 3
"""

import json
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import harness
from harness import log


VARIANTS = ("glowrl", "trl")
# TRL's `GRPOTrainer` methods, timed in both variants: {method: label}.
TRL_TIMED = {
    "_generate_and_score_completions": "trl.generate_and_score",
    "_generate": "trl.generate",
    "_calculate_rewards": "trl.calculate_rewards",
    "_get_per_token_logps_and_entropies": "trl.logps_entropies",
    "_compute_loss": "trl.compute_loss",
    "log": "trl.log",
}
# glowrl's overrides (`RolloutEntropyMixin`), `(label, label of the TRL method each calls through super())`.
OVERRIDES = ("_generate_and_score_completions", "_calculate_rewards", "_get_per_token_logps_and_entropies")
GLOWRL_OWN = tuple(
    (f"glowrl.{m}", TRL_TIMED.get(m)) for m in (*OVERRIDES, "_compute_loss", "log", "_end_entropy_step")
)
KEYS = ("step_s", "cpu_step_s", "train_part_s", "cpu_train_part_s", "generation_s", "sampling_s", "rewards_s")
KEYS += ("trl_compute_loss_s", "glowrl_own_s", "cpu_glowrl_own_s", "glowrl_own_in_step_s", "peak_mib")
LOGGED = ("loss", "entropy", "reward", "completions/mean_length", "rewards/math_accuracy/mean", "entropy/seq_p50")


def parse_args(argv=None):
    def flags(a):
        a("--num-generations", type=int, default=8)
        a("--max-completion-length", type=int, help="(64)")
        a("--interleave", choices=("step", "run"), default="step", help="alternate every optimizer step, or every run")
        a(
            "--threads",
            type=int,
            help="torch intra-op threads (default: 1 on CPU, where 2 OpenMP threads on a shared 2-core machine made "
            "generation ~15x slower and far noisier; torch's own default on CUDA; 0 = torch's default)",
        )
        a("--no-breakdown", dest="breakdown", action="store_false", help="no method timers: step times only")
        a("--micro-iters", type=int, help="iterations of the micro-benchmark of glowrl's per-step code (300; 0: skip)")

    defaults = {"vocab_size": 512, "hidden_size": 128, "num_hidden_layers": 3, "batch_size": 16}
    defaults |= {"max_completion_length": 64, "warmup_steps": 2, "steps": 10, "repeats": 8, "micro_iters": 300}
    smoke = {"vocab_size": 512, "max_completion_length": 16, "warmup_steps": 1, "steps": 1, "repeats": 1}
    smoke["micro_iters"] = 20
    args = harness.parse_args(__doc__, "speed_grpo_entropy", VARIANTS, argv, flags, defaults, smoke)
    args.threads = (1 if args.device == "cpu" else 0) if args.threads is None else args.threads
    if args.num_generations < 2 or args.batch_size % args.num_generations:
        raise SystemExit("--batch-size must be a multiple of --num-generations (>= 2)")
    return args


def install_timers(device: str):
    from trl import GRPOTrainer

    from glowrl.rollout_entropy import RolloutEntropyMixin

    harness.CallRecorder.sync = staticmethod(harness.device_sync(device))
    for name, label in TRL_TIMED.items():
        harness.CallRecorder.wrap(GRPOTrainer, name, label)
    for label, _ in GLOWRL_OWN:
        harness.CallRecorder.wrap(RolloutEntropyMixin, label.removeprefix("glowrl."), label)


class Baton:
    """Lets one trainer thread run at a time, passing the turn round-robin. Each thread keeps its own Python, NumPy and
    torch (CPU and CUDA) RNG state, all of them starting from the current (seeded) one."""

    def __init__(self, names: list[str], device: str):
        self.cond, self.order, self.active, self.turn = threading.Condition(), list(names), set(names), names[0]
        self.cuda, self.rng = device == "cuda", {}
        for name in names:
            self._save(name)

    def _save(self, name):
        import numpy as np
        import torch

        cuda = torch.cuda.get_rng_state_all() if self.cuda else None
        self.rng[name] = (random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)

    def _next(self, name):
        i = self.order.index(name)
        return next((o for o in self.order[i + 1 :] + self.order[: i + 1] if o in self.active), None)

    def acquire(self, name):
        import numpy as np
        import torch

        with self.cond:
            self.cond.wait_for(lambda: self.turn == name)
        py, np_state, cpu, cuda = self.rng[name]
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def hand_over(self, name):
        self._save(name)
        with self.cond:
            self.turn = self._next(name)
            self.cond.notify_all()
        self.acquire(name)

    def finish(self, name):
        with self.cond:
            self.active.discard(name)
            if self.turn == name:
                self.turn = self._next(name)
            self.cond.notify_all()


def make_trainer(args, variant: str, model_dir: Path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from glowrl.chat import prompt_messages
    from glowrl.rewards import boxed_format, math_accuracy
    from glowrl.rl.grpo import RolloutEntropyGRPOConfig, RolloutEntropyGRPOTrainer
    from glowrl.toy.arithmetic import generate_problems

    total = args.warmup_steps + args.steps
    rows = generate_problems(args.batch_size // args.num_generations * total, args.seed, split="train")  # one epoch
    dataset = Dataset.from_list([{"prompt": prompt_messages(r["problem"]), "answer": r["answer"]} for r in rows])
    model, tokenizer = harness.load_model(model_dir, args.seed)
    common = harness.trainer_kwargs(args, f"grpo_{variant}", total)
    common |= {"num_generations": args.num_generations, "max_completion_length": args.max_completion_length}
    common |= {"temperature": 1.0, "beta": 0.0, "loss_type": "dapo", "reward_weights": [1.0, 0.1]}
    common |= {"learning_rate": 1e-3, "lr_scheduler_type": "constant"}
    if variant == "glowrl":
        cls = RolloutEntropyGRPOTrainer
        config = RolloutEntropyGRPOConfig(
            **common, log_rollout_entropy=True, entropy_correctness_reward="math_accuracy"
        )
    else:
        cls, config = GRPOTrainer, GRPOConfig(**common)
    rewards = [math_accuracy, boxed_format]
    return cls(model=model, reward_funcs=rewards, args=config, train_dataset=dataset, processing_class=tokenizer)


def collect_result(args, variant: str, repeat: int, trainer, steps: list[dict], calls, outcome: dict) -> dict:
    """The run's steps, split by the recorded calls of its thread, its logs, and the check of `entropy.jsonl`."""
    from glowrl.rollout_entropy import ENTROPY_LOG_NAME

    total, tag, thread = args.warmup_steps + args.steps, f"[{variant} r{repeat}]", outcome["thread"]
    if len(steps) != total:
        raise RuntimeError(f"{tag}: {len(steps)} steps timed, expected {total}")
    for k, row in enumerate(steps if calls is not None else ()):
        # From this step's start to the next one's hand-over: the `log` call after the step counts as glowrl's.
        after = steps[k + 1]["t_enter"] if k + 1 < total else outcome["t_done"]
        inside, inside_cpu = (harness.call_sums(calls, thread, row["t_begin"], row["t_end"], c) for c in (False, True))
        through, through_cpu = (harness.call_sums(calls, thread, row["t_begin"], after, c) for c in (False, True))
        row["generation_s"] = inside.get("trl.generate_and_score", 0.0)
        row["cpu_generation_s"] = inside_cpu.get("trl.generate_and_score", 0.0)
        row["sampling_s"], row["rewards_s"] = inside.get("trl.generate", 0.0), inside.get("trl.calculate_rewards", 0.0)
        row["trl_compute_loss_s"] = inside.get("trl.compute_loss", 0.0)
        row["train_part_s"] = row["step_s"] - row["generation_s"]
        row["cpu_train_part_s"] = row["cpu_step_s"] - row["cpu_generation_s"]
        if variant == "glowrl":
            row["glowrl_own_by_method_s"] = own = harness.own_time(through, GLOWRL_OWN)
            row["glowrl_own_s"] = sum(own.values())
            row["cpu_glowrl_own_s"] = sum(harness.own_time(through_cpu, GLOWRL_OWN).values())
            row["glowrl_own_in_step_s"] = sum(harness.own_time(inside, GLOWRL_OWN).values())
    logs = [row for row in trainer.state.log_history if "loss" in row and "step" in row]
    entropy_rows = None
    if variant == "glowrl":
        path = Path(trainer.args.output_dir) / ENTROPY_LOG_NAME
        entropy_rows = len(path.read_text().splitlines()) if path.is_file() else 0
        if entropy_rows != total or not all("entropy/seq_p50" in row for row in logs):
            raise RuntimeError(f"{tag}: glowrl's entropy logging did not run on every step ({entropy_rows} rows)")
    measured = steps[args.warmup_steps :]
    medians = [
        f"{k} {statistics.median(s[k] for s in measured):.4f}"
        for k in ("step_s", "generation_s", "glowrl_own_s")
        if k in measured[0]
    ]
    log(f"{tag} done, medians: {', '.join(medians)}")
    result = {"variant": variant, "repeat": repeat, "steps": steps, "train_s": outcome["t_done"] - outcome["t_train"]}
    result |= {"train_loss": outcome["output"].training_loss, "entropy_jsonl_rows": entropy_rows}
    return result | {"step_logs": [{k: row.get(k) for k in LOGGED} for row in logs]}


def train_together(args, model_dir: Path, repeat: int, names: list[str]) -> list[dict]:
    """Fresh trainers (and models) of `names`, each in a thread of its own taking turns one optimizer step at a time
    (a single one: in this thread). The memory baseline is taken once all are built."""
    from transformers import set_seed

    total, meter = args.warmup_steps + args.steps, harness.MemoryMeter(args.device, args.sample_interval_ms)
    trainers = {v: make_trainer(args, v, model_dir) for v in names}
    set_seed(args.seed)
    baton = Baton(names, args.device) if len(names) > 1 else None
    timers = {}
    for v in names:
        hand_over = (lambda state, v=v: state.global_step > 0 and baton.hand_over(v)) if baton else None
        timers[v] = harness.step_timer(f"[{v} r{repeat}]", args.warmup_steps, total, args.device, meter, hand_over)
        harness.prepare_trainer(trainers[v], timers[v])
    outcome = {}

    def worker(v):
        if baton:
            baton.acquire(v)
        try:
            t = time.perf_counter()
            outcome[v] = {"output": trainers[v].train(), "t_train": t, "thread": threading.get_ident()}
            outcome[v]["t_done"] = time.perf_counter()
        except Exception as e:  # noqa: BLE001 (re-raised by the main thread)
            outcome[v] = {"error": e}
        finally:
            if baton:
                baton.finish(v)

    threads = [threading.Thread(target=worker, args=(v,), name=f"speed-{v}") for v in names] if baton else []
    meter.start()
    harness.CallRecorder.calls = calls = [] if args.breakdown else None
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if not baton:
            worker(names[0])
    finally:
        harness.CallRecorder.calls = None
        memory = meter.stop()
    for v in names:
        if "error" in outcome[v]:
            raise RuntimeError(f"[{v} r{repeat}] training failed") from outcome[v]["error"]
    results = [collect_result(args, v, repeat, trainers[v], timers[v].steps, calls, outcome[v]) for v in names]
    for v in names:
        shutil.rmtree(trainers[v].args.output_dir, ignore_errors=True)
    return [r | {"memory_of_the_group": memory} for r in results]


def run_repeat(args, model_dir: Path, repeat: int, order: list[str]) -> list[dict]:
    """One repeat: every variant on a fresh trainer, all in turns (`--interleave step`) or one after the other."""
    groups = [order] if args.interleave == "step" else [[v] for v in order]
    return [result for names in groups for result in train_together(args, model_dir, repeat, names)]


def micro_benchmark(args) -> dict:
    """Per-call time (median and p90, µs) of the pieces of glowrl's per-step work on tensors of the run's shape:
    the `_compute_loss` extra (`sequence_entropy`, `entropy_sums`), `_end_entropy_step` (the real method on a stub
    trainer, one process) and its parts: `summarize_rollout_entropy`, `torch.quantile`, the `entropy.jsonl` append."""
    import torch

    from glowrl.rollout_entropy import RolloutEntropyMixin, entropy_sums, sequence_entropy, summarize_rollout_entropy

    sync, g = harness.device_sync(args.device), torch.Generator().manual_seed(args.seed)
    B, T = args.batch_size, args.max_completion_length
    entropies = (torch.rand(B, T, generator=g) * 6).to(args.device)
    mask = (torch.rand(B, T, generator=g) > 0.1).long().to(args.device)
    correct = (torch.rand(B, generator=g) > 0.5).float().to(args.device)
    out_dir = Path(tempfile.mkdtemp(prefix="speed_grpo_micro_"))

    def compute_loss_extra():
        seq = sequence_entropy(entropies, mask).double()
        sums = torch.zeros(6, dtype=torch.float64, device=entropies.device)
        sums += entropy_sums(entropies.double(), mask, correct.double())
        return seq, sums

    seq, sums = compute_loss_extra()
    seq_cpu, sums_cpu = seq.cpu(), sums.cpu()  # what `_end_entropy_step` summarises
    stub = SimpleNamespace(_entropy_initial_logged=True, _entropy_window=[], _trl_entropy_seen=0)
    stub.accelerator = SimpleNamespace(num_processes=1, is_main_process=True, device=entropies.device)
    stub.state, stub.args = SimpleNamespace(global_step=1), SimpleNamespace(output_dir=str(out_dir))
    stub._metrics = {"train": {"entropy": [1.0]}}
    stub._empty_entropy_step = lambda: RolloutEntropyMixin._empty_entropy_step(stub)

    def end_entropy_step():
        stub._entropy_step, stub._entropy_window, stub._trl_entropy_seen = {"seq": [seq], "sums": sums.clone()}, [], 0
        RolloutEntropyMixin._end_entropy_step(stub)

    figures, q = summarize_rollout_entropy(seq_cpu, sums_cpu), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)

    def append_jsonl():
        (out_dir / "alone").mkdir(parents=True, exist_ok=True)
        with (out_dir / "alone" / "entropy.jsonl").open("a") as f:
            f.write(json.dumps({"step": 1, **figures}) + "\n")

    pieces = {
        "_compute_loss extra (sequence_entropy + entropy_sums)": compute_loss_extra,
        "_end_entropy_step (whole, 1 process)": end_entropy_step,
        "  summarize_rollout_entropy": lambda: summarize_rollout_entropy(seq_cpu, sums_cpu),
        "    torch.quantile (3 quantiles)": lambda: torch.quantile(seq_cpu, q).tolist(),
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
        p90 = sorted(times)[int(0.9 * len(times))]
        result[name] = {"median_us": 1e6 * statistics.median(times), "p90_us": 1e6 * p90}
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def markdown(args, meta: dict, summary: dict) -> list[str]:
    cpu, variants = args.device == "cpu", summary["variants"]
    columns = [("step_s", "step, wall (s)", 1, ".3f", True)] + [("cpu_step_s", "step, CPU (s)", 1, ".3f", True)] * cpu
    if args.breakdown:
        columns += [("train_part_s", "excl. generation, wall (ms)", 1e3, ".0f", True)]
        columns += [("cpu_train_part_s", "excl. generation, CPU (ms)", 1e3, ".0f", True)] * cpu
        columns += [("generation_s", "generation + scoring, wall (s)", 1, ".3f", False)]
        columns += [("glowrl_own_s", "glowrl's own code (ms/step)", 1e3, ".2f", False)]
    memory = f"step peak, {'GPU memory' if args.device == 'cuda' else 'RSS'} over baseline (MiB)"
    shape = f"{harness.shape_text(args)}, {args.threads or 'default'} torch thread(s); {args.batch_size} completions"
    shape += f" per step ({args.batch_size // args.num_generations} prompts × {args.num_generations} generations), "
    shape += f"max_completion_length {args.max_completion_length}; {args.warmup_steps} warm-up + {args.steps} measured"
    shape += f" steps per repeat, interleaved per {args.interleave}"
    lines = ["Medians over all measured steps (range in parentheses); × trl: median of the per-step paired ratios."]
    lines += harness.table(summary, [*columns, ("peak_mib", memory, 1, ".0f", True)], "paired_step_median")
    lines += harness.context_lines(meta, shape)
    own, trl = variants.get("glowrl", {}).get("glowrl_own_by_method_s"), variants.get("trl", {})
    if own and "step_s" in trl and "train_part_s" in trl:
        parts = ", ".join(f"{label.removeprefix('glowrl.')} {1e3 * t:.3f}" for label, t in own.items())
        total = variants["glowrl"]["glowrl_own_s"]
        lines.append(
            f"glowrl's own code per step (ms, median): {parts}; total {1e3 * total:.2f} ms = "
            f"{100 * total / trl['step_s']:.3f} % of the trl step, {100 * total / trl['train_part_s']:.2f} % of its "
            "step excluding generation."
        )
    checks = {k.removeprefix("max_abs_diff_"): c for k, c in summary["checks"].items() if c is not None}
    if checks:
        diffs = ", ".join(f"{k} {c:.1e}" for k, c in checks.items())
        lines.append(f"Same rollouts in both variants, max |glowrl − trl| over all steps: {diffs}.")
    if meta.get("micro"):
        lines += [
            "",
            "| glowrl per-step piece (micro-benchmark, run shape) | median (µs) | p90 (µs) |",
            "|---|---|---|",
        ]
        for name, m in meta["micro"].items():
            part = " (part)" if name.startswith("  ") else ""
            lines.append(f"| {name.strip()}{part} | {m['median_us']:.0f} | {m['p90_us']:.0f} |")
    return lines


def main(argv=None):
    args = parse_args(argv)
    harness.quiet_libraries()
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    meta, runs = harness.start(args, "speed_grpo_entropy")
    if args.breakdown:
        install_timers(args.device)
    with harness.saved_model(args, "speed_grpo_entropy", args.max_completion_length + 1024) as model_dir:
        runs = harness.run_repeats(args, meta, runs, lambda repeat, order: run_repeat(args, model_dir, repeat, order))
    if args.micro_iters > 0 and "glowrl" in args.variants:
        meta["micro"] = micro_benchmark(args)
    summary = harness.summarize(runs, args.variants, KEYS, args.warmup_steps, pool_steps=True)
    summary["checks"] = harness.max_log_diffs(runs, "glowrl", "trl", LOGGED[:4])
    glowrl = [s for r in runs if r["variant"] == "glowrl" for s in r["steps"][args.warmup_steps :]]
    if glowrl and "glowrl_own_by_method_s" in glowrl[0]:
        summary["variants"]["glowrl"]["glowrl_own_by_method_s"] = {
            label: statistics.median(s["glowrl_own_by_method_s"].get(label, 0.0) for s in glowrl)
            for label, _ in GLOWRL_OWN
        }
    harness.finish(args, meta, summary, runs, markdown(args, meta, summary))


if __name__ == "__main__":
    main()
