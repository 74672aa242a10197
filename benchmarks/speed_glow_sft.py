"""Step time and peak memory of GLOW SFT against plain TRL SFT and the published GLOW loss, at a large vocabulary.

Three variants train the same model (one saved init, loaded by every run) on the same data with the same settings:

- `trl`: plain `trl.SFTTrainer` (`loss_type="nll"`): TRL's fused LM head, which never builds the `(B, T, V)` logits.
- `glow`: `glowrl.GLOWTrainer` with GLOW active on every step: `glow_warmup_epochs=0` and the loss history pre-filled
  with finite values before `train()` (`trainer._glow_history`), so each measured step computes and applies real
  weights (the logged `glow/weight_mean` of every step is checked to be a weighted one, not the default 1).
- `published`: the published code's loss (Eureka-Maggie/GLOW, LLaMA-Factory `CustomSeq2SeqTrainer.compute_loss`) as a
  small `SFTTrainer` subclass: full fp32 logits `model(input_ids, attention_mask).logits.float()`, shift,
  `F.cross_entropy(reduction="none")`, mask -100, per-sample mean, times detached weights from a dict loss history
  (pre-filled with the same values), mean over samples.

Each (repeat, variant) runs in its own process (`--variant X --json-out f`), because on CPU the only memory measure is
the process RSS: the peak increase over the RSS measured after model load and trainer init is sampled by a
background thread (`/proc/self/statm`, every 2 ms) and cross-checked against `ru_maxrss`. On CUDA the allocator peak
(`torch.cuda.max_memory_allocated`) over `memory_allocated()` at the same point is used. Step time is the wall time
(and the process CPU time) from `on_step_begin` to `on_step_end` (forward, backward, clipping, optimizer step) of the
steps after the warm-up ones, median per run, then median over repeats. Repeats are interleaved and rotated
(trl glow published, glow published trl, ...).

At the default shape a CPU step takes 20-100 s (TRL's CPU fallback of its fused LM head runs about ten elementwise
passes over each 4,096 x 32,768 fp32 logit tile), so by default one invocation measures one step of each variant
(about 2 minutes on an idle 2-core machine); `--append` adds the repeats of further invocations to the same
`--output`. Two diagnostics help where the machine is too noisy for a few-percent target: `--glow-breakdown` times
GLOWTrainer's own code paths net of the TRL code they wrap, and `--ab-steps K` alternates forward+backward passes of
`trl` and `glow` in one process.

    python benchmarks/bench_glow_sft.py --output results.json            # default shape: vocab 151,936, 2 x 2,048
    python benchmarks/bench_glow_sft.py --repeats 2 --append --output results.json   # two more repeats, merged
    python benchmarks/bench_glow_sft.py --smoke                          # vocab 1,024, 64 tokens, 2 steps (< 30 s)
    python benchmarks/bench_glow_sft.py --variants glow --glow-breakdown --output breakdown.json
    python benchmarks/bench_glow_sft.py --ab-steps 6 --output ab.json
    python benchmarks/bench_glow_sft.py --device cuda --bf16 --hidden-size 1024 --num-layers 4 --warmup-steps 1 \
        --steps 5 --repeats 3
"""

import argparse
import gc
import json
import math
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from machine import machine_info  # benchmarks/machine.py (this folder is on sys.path)


VARIANTS = ("trl", "glow", "published")
MIB = 1024**2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--vocab-size", type=int, default=151_936, help="model vocabulary (Qwen2's 151,936 by default)")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--intermediate-size", type=int, default=None, help="MLP width (default 4 x hidden size)")
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sample; also max_length")
    p.add_argument("--prompt-len", type=int, default=4, help="leading prompt tokens (no loss); the rest is completion")
    p.add_argument("--batch-size", type=int, default=2, help="per_device_train_batch_size")
    # At the default shape one CPU step is 20-100 s (TRL's CPU fallback of the fused LM head does ~10 elementwise
    # passes over every 4,096 x 32,768 logit tile), so one invocation measures one step per variant; spread more
    # repeats over several invocations with --append.
    p.add_argument("--warmup-steps", type=int, default=None, help="optimizer steps before the measured ones (0)")
    p.add_argument("--steps", type=int, default=None, help="measured optimizer steps per run (1)")
    p.add_argument("--repeats", type=int, default=None, help="interleaved repetitions of the set of variants (1)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (CUDA only)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--sample-interval-ms", type=float, default=2.0, help="RSS sampling period on CPU (ms)")
    p.add_argument("--output", default="results.json", help="JSON file with the raw runs and the summary")
    p.add_argument(
        "--append",
        action="store_true",
        help="add this invocation's repeats to the runs already in --output (same shape required) and summarise all "
        "of them, so that repeats can be spread over several short invocations",
    )
    p.add_argument("--model-dir", default=None, help="reuse a model built by a previous run instead of building one")
    p.add_argument("--smoke", action="store_true", help="vocab 1,024, hidden 64, 64 tokens, 2 steps, in one process")
    p.add_argument(
        "--in-process",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run every variant in this process (default: only with --smoke). Step times stay valid, but on CPU the "
        "memory figures are then only indicative, since freed memory need not go back to the OS",
    )
    p.add_argument(
        "--glow-breakdown",
        action="store_true",
        help="also time GLOWTrainer's own code paths (collator wrapper, get_batch_samples, _glow_visit, the rescale, "
        "log metrics, history sync) with wrappers; adds a few microseconds per call, so use it for diagnosis",
    )
    p.add_argument(
        "--ab-steps",
        type=int,
        default=0,
        help="diagnosis instead of the benchmark: alternate K forward+backward passes of trl and glow in one process "
        "(ABBA order, same batch) and report the paired glow/trl ratio; no memory figures",
    )
    # Internal: one child run.
    p.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    p.add_argument("--json-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeat-index", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.vocab_size, args.hidden_size, args.num_layers, args.seq_len = 1024, 64, 2, 64
        if args.in_process is None:
            args.in_process = True
    for name, default in (("warmup_steps", 1 if args.smoke else 0), ("steps", 1), ("repeats", 1)):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.in_process = bool(args.in_process)
    if args.intermediate_size is None:
        args.intermediate_size = 4 * args.hidden_size
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose among {list(VARIANTS)}")
    if args.bf16 and args.device != "cuda":
        p.error("--bf16 is for --device cuda (the CPU comparison runs in fp32)")
    if args.steps < 1 or args.warmup_steps < 0 or args.repeats < 1:
        p.error("need --steps >= 1, --warmup-steps >= 0, --repeats >= 1")
    if not 0 <= args.prompt_len < args.seq_len:
        p.error("--prompt-len must be in [0, seq_len)")
    return args


def log(msg):
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------------------------------
# Memory measurement
# --------------------------------------------------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def current_rss() -> int:
    """Resident set size of this process in bytes (`/proc/self/statm`, else psutil)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def ru_maxrss() -> int:
    """Peak RSS of this process so far, in bytes (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class RssSampler(threading.Thread):
    """Samples the RSS every `interval` seconds; keeps the overall peak and the peak of the current window."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = self.window_peak = current_rss()
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            rss = current_rss()
            self.samples += 1
            self.peak = max(self.peak, rss)
            self.window_peak = max(self.window_peak, rss)
            self._stop_event.wait(self.interval)

    def reset_window(self):
        self.window_peak = current_rss()

    def stop(self):
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, current_rss())


class MemoryMeter:
    """Peak memory over a baseline: process RSS on CPU, the CUDA caching allocator's peak on CUDA."""

    def __init__(self, device: str, interval: float):
        import torch

        self.torch, self.device, self.interval = torch, device, interval
        self.sampler = None
        self.step_peaks: list[int] = []
        self._cuda_peak = 0

    def start(self):
        settle_gc()
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            self.baseline = self.torch.cuda.memory_allocated()
            self.torch.cuda.reset_peak_memory_stats()
        else:
            self.baseline = current_rss()
            self.ru_maxrss_before = ru_maxrss()
            self.sampler = RssSampler(self.interval)
            self.sampler.start()

    def step_begin(self):
        if self.device == "cuda":
            self._cuda_peak = max(self._cuda_peak, self.torch.cuda.max_memory_allocated())
            self.torch.cuda.reset_peak_memory_stats()
        else:
            self.sampler.reset_window()

    def step_end(self):
        if self.device == "cuda":
            peak = self.torch.cuda.max_memory_allocated()
            self._cuda_peak = max(self._cuda_peak, peak)
        else:
            peak = self.sampler.window_peak
        self.step_peaks.append(peak - self.baseline)

    def stop(self) -> dict:
        if self.device == "cuda":
            self.torch.cuda.synchronize()
            peak = max(self._cuda_peak, self.torch.cuda.max_memory_allocated())
            return {
                "memory_kind": "cuda max_memory_allocated",
                "baseline_mib": self.baseline / MIB,
                "peak_over_baseline_mib": (peak - self.baseline) / MIB,
                "step_peaks_over_baseline_mib": [x / MIB for x in self.step_peaks],
            }
        self.sampler.stop()
        ru_after = ru_maxrss()
        return {
            "memory_kind": "process RSS (sampled)",
            "baseline_mib": self.baseline / MIB,
            "peak_over_baseline_mib": (self.sampler.peak - self.baseline) / MIB,
            "step_peaks_over_baseline_mib": [x / MIB for x in self.step_peaks],
            "rss_samples": self.sampler.samples,
            # Cross-check that does not depend on sampling: valid when the training peak exceeds every earlier peak
            # of the process (ru_maxrss_before is then below it), which it is at the default shape.
            "ru_maxrss_over_baseline_mib": (ru_after - self.baseline) / MIB,
            "ru_maxrss_before_train_mib": self.ru_maxrss_before / MIB,
        }


class GcTimer:
    """CPU time the interpreter spends in garbage collection (`gc.callbacks`), to tell GC pauses from step work."""

    def __init__(self):
        self.total = 0.0
        self._start = None
        gc.callbacks.append(self._callback)

    def _callback(self, phase, info):
        if phase == "start":
            self._start = time.process_time()
        elif self._start is not None:
            self.total += time.process_time() - self._start
            self._start = None

    def close(self):
        gc.callbacks.remove(self._callback)


def settle_gc():
    """Collect, then move every object built so far (libraries, model, dataset) out of the collector's reach.

    Without this, automatic full collections over the large setup heap take ~0.3 s each on this machine and land at
    random points inside some steps of some variants; frozen, they only scan what training allocates.
    """
    gc.collect()
    gc.freeze()


# --------------------------------------------------------------------------------------------------------------------
# One run of one variant
# --------------------------------------------------------------------------------------------------------------------


def build_model(args, output_dir: Path) -> Path:
    from glowrl.tiny_model import build_tiny_model

    corpus = [
        f"{a} + {b} = {a + b}. The quick brown fox jumps over the lazy dog." for a in range(64) for b in range(8)
    ]
    return build_tiny_model(
        output_dir,
        corpus,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        intermediate_size=args.intermediate_size,
        max_position_embeddings=max(args.seq_len, 2048),
        seed=args.seed,
    )


def make_dataset(args, num_samples: int):
    """Pre-tokenized prompt-completion rows of random token ids: `prompt_len` prompt tokens, the rest completion."""
    import torch
    from datasets import Dataset

    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, args.vocab_size, (num_samples, args.seq_len), generator=g)
    mask = [[0] * args.prompt_len + [1] * (args.seq_len - args.prompt_len)] * num_samples
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "completion_mask": mask, "sample_id": list(range(num_samples))}
    )


def prefilled_history(args, num_samples: int) -> list[float]:
    """Finite 'previous losses' around the loss of a random init (ln V), so gains and weights vary across samples."""
    import torch

    g = torch.Generator().manual_seed(args.seed + 1)
    return (math.log(args.vocab_size) + 0.2 * (torch.rand(num_samples, generator=g) - 0.5)).tolist()


def published_trainer_class():
    """The published GLOW loss as an `SFTTrainer` subclass (full fp32 logits, per-token CE, per-sample mean)."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    from glowrl import glow_weights

    class KeepSampleIdCollator:
        def __init__(self, collator):
            self.collator = collator

        def __call__(self, examples):
            ids = torch.tensor([e["sample_id"] for e in examples], dtype=torch.long)
            batch = self.collator([{k: v for k, v in e.items() if k != "sample_id"} for e in examples])
            batch["sample_id"] = ids
            return batch

    class PublishedGLOWTrainer(SFTTrainer):
        """`compute_loss` of the published code, minus its diagnostics (JSONL, barrier, per-step all_gather_object).

        Differences kept out on purpose: the published code also passes `labels` to the model, which then computes
        (and discards) its own loss on the same logits, so this re-implementation is a lower bound on its cost. The
        first-epoch `w = 1` rule is left out (like `glow_warmup_epochs=0`) so that weights apply on every step.
        """

        def __init__(self, *a, alpha=1.0, beta=20.0, **kw):
            super().__init__(*a, **kw)
            self.alpha, self.beta = alpha, beta
            self.loss_history: dict[int, float] = {}
            self.weight_log: list[list[float]] = []
            self.data_collator = KeepSampleIdCollator(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "sample_id" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "sample_id"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            sample_ids = inputs.pop("sample_id", None)
            labels = inputs["labels"]
            outputs = model(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False
            )
            logits = outputs.logits.float()  # (B, T, V) in fp32
            shift_logits = logits[..., :-1, :].contiguous()
            shift_labels = labels[..., 1:].contiguous()
            per_token = F.cross_entropy(
                shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1), reduction="none"
            ).view(shift_labels.shape)
            label_mask = shift_labels != -100
            sample_loss = (per_token * label_mask).sum(1) / label_mask.sum(1).clamp(min=1)
            if sample_ids is None or not self.is_in_train:
                loss = sample_loss.mean()
                return (loss, outputs) if return_outputs else loss
            default = sample_loss.mean().item()
            prev = torch.tensor(
                [self.loss_history.get(sid.item(), default) for sid in sample_ids], device=sample_loss.device
            )
            weights = glow_weights(prev - sample_loss.detach(), self.alpha, self.beta)
            loss = (sample_loss * weights.detach()).mean()
            for sid, value in zip(sample_ids.tolist(), sample_loss.detach().cpu().tolist(), strict=True):
                self.loss_history[sid] = value
            self.weight_log.append(weights.tolist())
            return (loss, outputs) if return_outputs else loss

    return PublishedGLOWTrainer


class GlowBreakdown:
    """Times GLOWTrainer's own code paths, net of the TRL code they wrap (diagnosis only; `--glow-breakdown`).

    Each wrapper adds about a microsecond per call; the model forward is timed with module hooks so that it can be
    subtracted from `_GLOWForward`, and TRL's collator and `get_batch_samples` from GLOW's wrappers of them.
    """

    _instance = None

    def __init__(self):
        self.totals: dict[str, list[float]] = {}

    @classmethod
    def for_this_process(cls) -> "GlowBreakdown":
        """The class-level patches go in once per process; each run starts from zeroed totals."""
        if cls._instance is None:
            cls._instance = cls()
            cls._instance.install()
        for values in cls._instance.totals.values():
            values.clear()
        return cls._instance

    def timed(self, label, fn):
        import functools

        totals = self.totals.setdefault(label, [])

        @functools.wraps(fn)
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                totals.append(time.perf_counter() - t)

        return wrapper

    def install(self):
        from trl import SFTTrainer

        from glowrl import glow_trainer as gt

        patches = [
            (gt._SampleIdCollator, "__call__", "collator: GLOW wrapper (gross)"),
            (gt.GLOWTrainer, "get_batch_samples", "get_batch_samples: GLOW override (gross)"),
            (SFTTrainer, "get_batch_samples", "get_batch_samples: Trainer (inner)"),
            (gt.GLOWTrainer, "_glow_visit", "_glow_visit"),
            (gt._GLOWForward, "__call__", "_GLOWForward (gross)"),
            (gt.GLOWTrainer, "_glow_window_metrics", "_glow_window_metrics (log)"),
            (gt.GLOWTrainer, "_sync_glow_history", "_sync_glow_history"),
        ]
        for owner, name, label in patches:
            setattr(owner, name, self.timed(label, getattr(owner, name)))

    def attach(self, trainer):
        """Per-instance timers: TRL's collator inside GLOW's wrapper, and the model forward (module hooks)."""
        collator = trainer.data_collator
        collator.collator = self.timed("collator: TRL (inner)", collator.collator)
        forwards = self.totals.setdefault("model forward (inner)", [])
        start = {}

        def pre_hook(module, args, kwargs):
            start["t"] = time.perf_counter()

        def hook(module, args, kwargs, output):
            forwards.append(time.perf_counter() - start.pop("t"))

        trainer.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
        trainer.model.register_forward_hook(hook, with_kwargs=True)

    def summary(self, steps: int) -> dict:
        """Totals per step of each path, and GLOW's own time per step (gross wrappers minus the TRL code inside)."""
        per_step = {k: 1e3 * sum(v) / steps for k, v in self.totals.items()}
        own = (
            per_step.get("collator: GLOW wrapper (gross)", 0.0)
            - per_step.get("collator: TRL (inner)", 0.0)
            + per_step.get("get_batch_samples: GLOW override (gross)", 0.0)
            - per_step.get("get_batch_samples: Trainer (inner)", 0.0)
            + per_step.get("_GLOWForward (gross)", 0.0)
            - per_step.get("model forward (inner)", 0.0)
            + per_step.get("_glow_window_metrics (log)", 0.0)
            + per_step.get("_sync_glow_history", 0.0)
        )
        return {
            "ms_per_step": per_step,
            "calls": {k: len(v) for k, v in self.totals.items()},
            "glow_own_ms_per_step": own,
        }


def quiet_libraries():
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def make_trainer(args, variant: str, model_dir: Path, total_steps: int):
    """The trainer of `variant` on a fresh copy of the saved init, with `total_steps` steps of data (one epoch)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, ProgressCallback
    from trl import SFTConfig, SFTTrainer

    from glowrl import GLOWConfig, GLOWTrainer

    num_samples = args.batch_size * total_steps  # one epoch of exactly `total_steps` optimizer steps
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dataset = make_dataset(args, num_samples)
    history = prefilled_history(args, num_samples)
    output_dir = tempfile.mkdtemp(prefix=f"bench_glow_{variant}_")
    common = {
        "output_dir": output_dir,
        "use_cpu": args.device == "cpu",
        "bf16": args.bf16,
        # SFTConfig turns gradient checkpointing on by default; `activation_checkpointing` is its transformers-5.23
        # name (`gradient_checkpointing=False` works too, with a deprecation warning).
        "activation_checkpointing": False,
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": total_steps,
        "max_length": args.seq_len,
        "loss_type": "nll",
        "completion_only_loss": True,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "seed": args.seed,
        "data_seed": args.seed,
        "dataloader_num_workers": 0,
    }
    if variant == "trl":
        trainer = SFTTrainer(
            model,
            args=SFTConfig(**common),
            train_dataset=dataset.remove_columns("sample_id"),
            processing_class=tokenizer,
        )
    elif variant == "glow":
        config = GLOWConfig(**common, glow=True, glow_warmup_epochs=0, glow_alpha=1.0, glow_beta=20.0)
        trainer = GLOWTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
        # Pre-filled loss history: every sample has a finite previous loss, so with glow_warmup_epochs=0 the weights
        # are computed and applied on every step (not the default weight 1 of a first visit).
        trainer._glow_history.copy_(torch.tensor(history, dtype=torch.float32))
    else:
        trainer = published_trainer_class()(
            model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer, alpha=1.0, beta=20.0
        )
        trainer.loss_history.update(enumerate(history))
    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    assert not trainer.args.gradient_checkpointing and trainer.args.bf16 == args.bf16
    return trainer, output_dir


def run_variant(args, variant: str, model_dir: Path, repeat: int) -> dict:
    import torch
    from transformers import TrainerCallback

    quiet_libraries()
    t_start = time.perf_counter()
    breakdown = None
    if args.glow_breakdown and variant == "glow":
        breakdown = GlowBreakdown.for_this_process()
    total_steps = args.warmup_steps + args.steps
    trainer, output_dir = make_trainer(args, variant, model_dir, total_steps)
    if breakdown is not None:
        breakdown.attach(trainer)

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    meter = MemoryMeter(args.device, args.sample_interval_ms / 1e3)
    tag = f"[{variant} r{repeat}]"

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.durations, self.cpu, self.sys, self.gc, self.ends = [], [], [], [], []

        def on_step_begin(self, a, state, control, **kw):
            sync()
            meter.step_begin()
            self._c = time.process_time()
            self._s = os.times().system
            self._g = gc_timer.total
            self._t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            sync()
            t = time.perf_counter()
            self.cpu.append(time.process_time() - self._c)
            self.sys.append(os.times().system - self._s)
            self.gc.append(gc_timer.total - self._g)
            self.durations.append(t - self._t)
            self.ends.append(t)
            meter.step_end()
            kind = "warm-up" if len(self.durations) <= args.warmup_steps else "measured"
            log(
                f"{tag} step {state.global_step}/{total_steps} ({kind}): {self.durations[-1]:.2f} s wall, "
                f"{self.cpu[-1]:.2f} s CPU ({self.sys[-1]:.2f} s system, {self.gc[-1]:.2f} s GC), step peak "
                f"+{meter.step_peaks[-1] / MIB:.0f} MiB, load {os.getloadavg()[0]:.1f}"
            )

    gc_timer = GcTimer()
    timer = StepTimer()
    trainer.add_callback(timer)
    init_s = time.perf_counter() - t_start
    meter.start()
    log(
        f"{tag} model + trainer ready in {init_s:.1f} s; baseline {meter.baseline / MIB:.0f} MiB; training "
        f"{total_steps} steps ({args.warmup_steps} warm-up)"
    )
    t_train = time.perf_counter()
    train_output = trainer.train()
    train_s = time.perf_counter() - t_train
    memory = meter.stop()
    gc_timer.close()
    gc.unfreeze()  # let the next in-process run collect this run's objects

    logs = [row for row in trainer.state.log_history if "loss" in row and "step" in row]
    losses = [row["loss"] for row in logs]
    if variant == "glow":
        weight_means = [row.get("glow/weight_mean") for row in logs]
        # A weighted visit gives weight in [0.5, 1) with the prefilled gains; exactly 1.0 for every sample of a
        # step would mean the default (unweighted) path was taken.
        weights_applied = all(w is not None and w != 1.0 for w in weight_means)
    elif variant == "published":
        weight_means = [statistics.fmean(w) for w in trainer.weight_log]
        weights_applied = len(weight_means) == total_steps
    else:
        weight_means, weights_applied = None, None
    measured = timer.durations[args.warmup_steps :]
    cycles = [b - a for a, b in zip(timer.ends, timer.ends[1:], strict=False)][max(args.warmup_steps - 1, 0) :]
    result = {
        "variant": variant,
        "repeat": repeat,
        "step_times_s": timer.durations,
        "measured_step_times_s": measured,
        "median_step_s": statistics.median(measured) if measured else None,
        "step_cpu_s": timer.cpu,
        # System time is mostly page faults of the large, freshly mmapped logit tiles; it varies with machine load.
        "step_sys_s": timer.sys,
        "step_gc_s": timer.gc,
        "median_step_cpu_s": statistics.median(timer.cpu[args.warmup_steps :]) if measured else None,
        "cycle_times_s": cycles,
        "median_cycle_s": statistics.median(cycles) if cycles else None,
        "init_s": init_s,
        "train_s": train_s,
        "train_loss": train_output.training_loss,
        "step_losses": losses,
        "step_weight_means": weight_means,
        "weights_applied": weights_applied,
        **memory,
    }
    if breakdown is not None:
        result["glow_breakdown"] = breakdown.summary(len(timer.durations))
        result["glow_breakdown"]["glow_own_share_of_step"] = (
            result["glow_breakdown"]["glow_own_ms_per_step"] / 1e3 / statistics.fmean(timer.durations)
        )
    log(
        f"{tag} done: median step {result['median_step_s']:.3f} s, peak +{memory['peak_over_baseline_mib']:.0f} MiB"
        + (
            f" (ru_maxrss +{memory['ru_maxrss_over_baseline_mib']:.0f} MiB)"
            if "ru_maxrss_over_baseline_mib" in memory
            else ""
        )
    )
    del trainer
    gc.collect()
    shutil.rmtree(output_dir, ignore_errors=True)
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return result


def run_ab(args, model_dir: Path) -> dict:
    """Diagnosis (`--ab-steps K`): forward + backward of `trl` and `glow` alternated K times in ONE process.

    Both trainers live side by side (one model copy each) and replay their first batch through `training_step` in
    ABBA order, so that both see the same machine load, allocator state and data; no optimizer step, gradients are
    dropped after each pass. This resolves differences of a few percent that process-level noise hides.
    """
    import torch

    quiet_libraries()
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    # Built and first run in the order of --variants (`--variants glow,trl` swaps it, to check for order effects).
    names = [v for v in args.variants if v in ("trl", "glow")]
    if len(names) != 2:
        raise SystemExit("--ab-steps compares trl and glow: keep both in --variants")
    setups = {}
    for v in names:
        trainer, output_dir = make_trainer(args, v, model_dir, total_steps=1)
        trainer.current_gradient_accumulation_steps = 1
        samples, num_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, trainer.args.device)
        setups[v] = (trainer, samples[0], num_items, output_dir)
    times = {v: {"wall_s": [], "cpu_s": [], "user_s": [], "sys_s": []} for v in names}
    settle_gc()
    for k in range(args.ab_steps):
        for v in names if k % 2 == 0 else names[::-1]:
            trainer, inputs, num_items, _ = setups[v]
            sync()
            c, t, os_t = time.process_time(), time.perf_counter(), os.times()
            trainer.training_step(trainer.model, dict(inputs), num_items)
            sync()
            wall, cpu, os_t2 = time.perf_counter() - t, time.process_time() - c, os.times()
            trainer.model.zero_grad(set_to_none=True)
            times[v]["wall_s"].append(wall)
            times[v]["cpu_s"].append(cpu)
            times[v]["user_s"].append(os_t2.user - os_t.user)
            times[v]["sys_s"].append(os_t2.system - os_t.system)
            load = os.getloadavg()[0]
            log(
                f"[ab {v}] pass {k + 1}/{args.ab_steps}: {wall:.2f} s wall, {cpu:.2f} s CPU (user "
                f"{times[v]['user_s'][-1]:.2f} s, system {times[v]['sys_s'][-1]:.2f} s), load {load:.1f}"
            )
    for *_, output_dir in setups.values():
        shutil.rmtree(output_dir, ignore_errors=True)
    result = {"passes": args.ab_steps, "times": times}
    for kind in ("wall_s", "cpu_s", "user_s", "sys_s"):
        glow, trl = times["glow"][kind], times["trl"][kind]
        ratios = [g / t if t > 0 else math.nan for g, t in zip(glow, trl, strict=True)]
        finite = [r for r in ratios if math.isfinite(r)]
        result[f"glow/trl_{kind}_paired"] = ratios
        result[f"glow/trl_{kind}_median"] = statistics.median(finite) if finite else math.nan
        trl_median = statistics.median(trl)
        result[f"glow/trl_{kind}_of_medians"] = statistics.median(glow) / trl_median if trl_median > 0 else math.nan
    return result


# --------------------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------------------


def child_argv(args, variant: str, repeat: int, model_dir: Path, json_out: Path) -> list[str]:
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--variant",
        variant,
        "--json-out",
        str(json_out),
        "--repeat-index",
        str(repeat),
        "--model-dir",
        str(model_dir),
        "--vocab-size",
        str(args.vocab_size),
        "--hidden-size",
        str(args.hidden_size),
        "--intermediate-size",
        str(args.intermediate_size),
        "--num-layers",
        str(args.num_layers),
        "--seq-len",
        str(args.seq_len),
        "--prompt-len",
        str(args.prompt_len),
        "--batch-size",
        str(args.batch_size),
        "--warmup-steps",
        str(args.warmup_steps),
        "--steps",
        str(args.steps),
        "--device",
        args.device,
        "--seed",
        str(args.seed),
        "--sample-interval-ms",
        str(args.sample_interval_ms),
    ]
    if args.bf16:
        argv.append("--bf16")
    if args.glow_breakdown:
        argv.append("--glow-breakdown")
    return argv


def run_child(args, variant, repeat, model_dir, workdir: Path) -> dict:
    json_out = workdir / f"{variant}_r{repeat}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        child_argv(args, variant, repeat, model_dir, json_out),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    tail = []
    for line in proc.stdout:
        line = line.rstrip("\n")
        tail = (tail + [line])[-40:]
        if line.startswith(f"[{variant} r"):
            log("  " + line)
    if proc.wait() != 0:
        raise RuntimeError(f"{variant} run {repeat} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return json.loads(json_out.read_text())


def summarize(args, runs: list[dict]) -> dict:
    """Medians per variant (of the per-run medians; min/max over all measured steps) and ratios to `trl`."""
    by_variant = {v: [r for r in runs if r["variant"] == v] for v in args.variants}
    summary = {}
    for v, rs in by_variant.items():
        pooled = [t for r in rs for t in r["measured_step_times_s"]]
        cycles = [t for r in rs for t in r["cycle_times_s"]]
        summary[v] = {
            "runs": len(rs),
            "step_s": statistics.median(r["median_step_s"] for r in rs),
            "step_s_min": min(pooled),
            "step_s_max": max(pooled),
            "step_cpu_s": statistics.median(r["median_step_cpu_s"] for r in rs),
            "cycle_s": statistics.median(cycles) if cycles else None,
            "peak_mib": statistics.median(r["peak_over_baseline_mib"] for r in rs),
            "peak_mib_min": min(r["peak_over_baseline_mib"] for r in rs),
            "peak_mib_max": max(r["peak_over_baseline_mib"] for r in rs),
            "weights_applied": None if v == "trl" else all(r["weights_applied"] for r in rs),
            "train_loss": statistics.median(r["train_loss"] for r in rs),
        }
        if "ru_maxrss_over_baseline_mib" in rs[0]:
            summary[v]["ru_maxrss_peak_mib"] = statistics.median(r["ru_maxrss_over_baseline_mib"] for r in rs)
    ratios = {}
    if "trl" in summary:
        base = summary["trl"]
        trl_by_repeat = {r["repeat"]: r for r in by_variant["trl"]}
        for v in summary:
            if v == "trl":
                continue
            # Same-repeat pairs ran back to back, so they share most of the machine's background load.
            pairs = [(a, trl_by_repeat[a["repeat"]]) for a in by_variant[v] if a["repeat"] in trl_by_repeat]
            ratios[f"{v}/trl"] = {
                "step_time": summary[v]["step_s"] / base["step_s"],
                "step_time_paired_median": statistics.median(a["median_step_s"] / b["median_step_s"] for a, b in pairs)
                if pairs
                else None,
                "step_cpu_time": summary[v]["step_cpu_s"] / base["step_cpu_s"],
                "peak_memory": summary[v]["peak_mib"] / base["peak_mib"] if base["peak_mib"] > 0 else None,
            }
    checks = {}
    if "glow" in by_variant and "published" in by_variant:
        # Same init, data and weights: the two GLOW implementations must train on the same weighted loss.
        published = {r["repeat"]: r for r in by_variant["published"]}
        diffs = [
            abs(a - b)
            for g in by_variant["glow"]
            if g["repeat"] in published
            for a, b in zip(g["step_losses"], published[g["repeat"]]["step_losses"], strict=False)
        ]
        checks["glow_vs_published_max_step_loss_diff"] = max(diffs) if diffs else None
    return {"variants": summary, "ratios": ratios, "checks": checks}


def markdown(args, summary: dict, meta: dict) -> str:
    mem = "peak GPU memory over baseline (MiB)" if args.device == "cuda" else "peak RSS over baseline (MiB)"
    lines = [
        f"| variant | step time (s) | × trl | step CPU time (s) | × trl | {mem} | × trl |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, s in summary["variants"].items():
        r = summary["ratios"].get(f"{v}/trl")

        def ratio(key, r=r, v=v):
            return "1" if v == "trl" else (f"{r[key]:.3f}" if r and r.get(key) else "–")

        lines.append(
            f"| `{v}` | {s['step_s']:.2f} ({s['step_s_min']:.2f}–{s['step_s_max']:.2f}) | {ratio('step_time')} | "
            f"{s['step_cpu_s']:.2f} | {ratio('step_cpu_time')} | "
            f"{s['peak_mib']:.0f} ({s['peak_mib_min']:.0f}–{s['peak_mib_max']:.0f}) | {ratio('peak_memory')} |"
        )
    shape = (
        f"vocab {args.vocab_size:,}, hidden {args.hidden_size}, {args.num_layers} layers, batch {args.batch_size} × "
        f"{args.seq_len} tokens ({args.seq_len - args.prompt_len} completion tokens each), "
        f"{args.warmup_steps} warm-up + {args.steps} measured step(s) per run, {args.repeats} interleaved "
        f"repeat(s), {args.device} {'bf16' if args.bf16 else 'fp32'}"
    )
    machine, v = meta["machine"], meta["machine"]["versions"]
    lines += [
        "",
        "Medians over the runs (of each run's median measured step); parentheses: min–max over all measured steps or "
        + "runs.",
        f"Shape: {shape}.",
        f"Machine: {machine['cpu']}, {machine['cpus_usable']} usable cores"
        + (f", {machine['gpu']}" if "gpu" in machine else "")
        + f"; torch {v['torch']}, trl {v['trl']}, transformers {v['transformers']}.",
    ]
    for inv in meta["invocations"]:
        load = inv.get("load_avg_at_start")
        lines.append(
            f"Command: `{inv['command']}` (repeats {inv['repeats']}, {inv['elapsed_s'] / 60:.1f} min"
            + (f", load average {load[0]:.1f} at start" if load else "")
            + ")"
        )
    for name, r in summary["ratios"].items():
        if r["step_time_paired_median"] is not None:
            lines.append(f"Same-repeat step-time ratio {name}: {r['step_time_paired_median']:.3f} (median).")
    check = summary["checks"].get("glow_vs_published_max_step_loss_diff")
    if check is not None:
        lines.append(f"Max |step loss glow − published| over all steps: {check:.2e} (the same weighted objective).")
    return "\n".join(lines)


# Arguments that must match for runs of several invocations to be merged with --append.
SHAPE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_layers",
    "seq_len",
    "prompt_len",
    "batch_size",
    "warmup_steps",
    "steps",
    "device",
    "bf16",
    "seed",
    "in_process",
)


def main(argv=None):
    args = parse_args(argv)
    if args.variant is not None:  # child: one run, result to --json-out
        result = run_variant(args, args.variant, Path(args.model_dir), args.repeat_index)
        Path(args.json_out).write_text(json.dumps(result, indent=1))
        return

    command = shlex.join(["python", os.path.relpath(os.path.abspath(__file__)), *sys.argv[1:]])
    log(f"bench_glow_sft: {command}")
    previous = None
    if args.append and Path(args.output).is_file():
        previous = json.loads(Path(args.output).read_text())
        old = previous["meta"]["args"]
        mismatched = [k for k in SHAPE_KEYS if old.get(k) != getattr(args, k)]
        if mismatched or old.get("variants") != args.variants:
            sys.exit(
                f"--append: {args.output} was run with other settings ({mismatched or 'variants'}); "
                "use another --output"
            )
    workdir = Path(tempfile.mkdtemp(prefix="bench_glow_sft_"))
    meta = {
        "command": command,
        "machine": machine_info(args.device),
        "args": {k: v for k, v in vars(args).items() if k not in ("variant", "json_out", "repeat_index")},
    }
    log(
        f"machine: {meta['machine']['cpu']}, {meta['machine']['cpus_usable']} cores, versions "
        f"{meta['machine']['versions']}, load average {meta['machine'].get('load_avg_at_start')}"
    )
    try:
        if args.model_dir is None:
            quiet_libraries()
            t = time.perf_counter()
            model_dir = build_model(args, workdir / "model")
            log(
                f"built model (vocab {args.vocab_size:,}, hidden {args.hidden_size}, {args.num_layers} layers) in "
                f"{time.perf_counter() - t:.1f} s"
            )
        else:
            model_dir = Path(args.model_dir)
        if args.ab_steps:
            t0 = time.perf_counter()
            ab = run_ab(args, model_dir)
            meta["elapsed_s"] = time.perf_counter() - t0
            log(
                f"\nA/B in one process, {ab['passes']} passes each (forward + backward, ABBA order): glow/trl "
                f"wall {ab['glow/trl_wall_s_median']:.3f} (paired median; {ab['glow/trl_wall_s_of_medians']:.3f} of "
                f"medians), CPU {ab['glow/trl_cpu_s_median']:.3f} (paired median; "
                f"{ab['glow/trl_cpu_s_of_medians']:.3f} of medians); user {ab['glow/trl_user_s_median']:.3f}, system "
                f"{ab['glow/trl_sys_s_median']:.3f} (paired medians)"
            )
            Path(args.output).write_text(json.dumps({"meta": meta, "ab": ab}, indent=1))
            log(f"wrote {args.output} ({meta['elapsed_s']:.0f} s)")
            return

        runs = list(previous["runs"]) if previous else []
        first = 1 + max((r["repeat"] for r in runs), default=-1)
        t0 = time.perf_counter()
        for repeat in range(first, first + args.repeats):
            # Interleaved, and rotated by one per repeat so that every variant takes every position in turn.
            k = repeat % len(args.variants)
            for variant in args.variants[k:] + args.variants[:k]:
                log(
                    f"repeat {repeat + 1 - first}/{args.repeats} (#{repeat}), variant {variant} "
                    f"({'in process' if args.in_process else 'subprocess'}; {time.perf_counter() - t0:.0f} s elapsed)"
                )
                if args.in_process:
                    runs.append(run_variant(args, variant, model_dir, repeat))
                else:
                    runs.append(run_child(args, variant, repeat, model_dir, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    meta["elapsed_s"] = time.perf_counter() - t0
    meta["memory_isolated"] = args.device == "cuda" or not args.in_process
    this = {
        "command": command,
        "repeats": list(range(first, first + args.repeats)),
        "elapsed_s": meta["elapsed_s"],
        "load_avg_at_start": meta["machine"].get("load_avg_at_start"),
    }
    meta["invocations"] = (previous["meta"]["invocations"] if previous else []) + [this]
    args.repeats = 1 + max(r["repeat"] for r in runs)
    summary = summarize(args, runs)
    table = markdown(args, summary, meta)
    log("\n" + table + "\n")
    if not meta["memory_isolated"]:
        log("note: --in-process on CPU: the memory column is indicative only (RSS is shared by the runs).")
    for v, s in summary["variants"].items():
        if s["weights_applied"] is False:
            log(f"WARNING: {v}: GLOW weights were not applied on every step")
    breakdowns = [r for r in runs if "glow_breakdown" in r]
    for r in breakdowns:
        b = r["glow_breakdown"]
        log(f"GLOW code paths, run #{r['repeat']} (ms per optimizer step, over all {len(r['step_times_s'])} steps):")
        for k, ms in b["ms_per_step"].items():
            log(f"  {k}: {ms:.3f} ms ({b['calls'][k]} calls)")
        log(
            f"  => GLOW's own code: {b['glow_own_ms_per_step']:.2f} ms per step, "
            f"{100 * b['glow_own_share_of_step']:.3f}% of the mean step time"
        )
    out = {"meta": meta, "summary": summary, "markdown": table, "runs": runs}
    Path(args.output).write_text(json.dumps(out, indent=1))
    log(f"wrote {args.output} ({meta['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
