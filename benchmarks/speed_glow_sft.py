#!/usr/bin/env python
"""Step time and peak memory of GLOW SFT against plain TRL SFT and the published GLOW loss, at a large vocabulary.

Three variants train the same saved init on the same data (random token ids: `--prompt-len` prompt tokens, the rest
completion) with the same settings:

- `trl`: plain `trl.SFTTrainer` (`loss_type="nll"`): TRL's fused LM head, which never builds the `(B, T, V)` logits.
- `glow`: `glowrl.GLOWTrainer` with GLOW on every step: `glow_warmup_epochs=0` and `trainer._glow_history` pre-filled
  with finite losses, and every step's logged `glow/weight_mean` is checked to be a weighted one.
- `published`: the published code's loss (Eureka-Maggie/GLOW, LLaMA-Factory `CustomSeq2SeqTrainer.compute_loss`) as
  an `SFTTrainer` subclass: full fp32 logits, per-token cross-entropy, per-sample mean, times detached weights.

Each (repeat, variant) runs in a process of its own, so that its CPU memory figure is its own (`--in-process`, the
default with `--smoke`, keeps every run in this one). This file holds the variants and two diagnoses:
`--glow-breakdown` times GLOWTrainer's own code paths net of the TRL code they wrap, and `--ab-steps K` alternates
forward+backward passes of `trl` and `glow` in one process (ABBA). Flags, timers, memory meters, repeats, summary and
output are `harness.py`'s; what is measured and how is in README.md.

    python benchmarks/speed_glow_sft.py --output results.json            # vocab 151,936, 2 x 2,048, 1 step each
    python benchmarks/speed_glow_sft.py --repeats 2 --append --output results.json   # two more repeats, merged
    python benchmarks/speed_glow_sft.py --smoke                          # vocab 1,024, 64 tokens, 1 + 1 steps
    python benchmarks/speed_glow_sft.py --variants glow --glow-breakdown --warmup-steps 1 --output breakdown.json
    python benchmarks/speed_glow_sft.py --ab-steps 6 --output ab.json
    python benchmarks/speed_glow_sft.py --device cuda --bf16 --shape qwen2.5-0.5b --warmup-steps 1 --steps 5
"""

import argparse
import functools
import importlib
import math
import os
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path

import harness
from harness import log

from glowrl.io import write_json


VARIANTS = ("trl", "glow", "published")
# --glow-breakdown: GLOWTrainer's code paths and the TRL code inside them, `(module, class, method, label)`; GLOW's
# collator wrapper is found on the trainer.
BREAKDOWN = (
    ("glowrl.glow.trainer", "GLOWTrainer", "get_batch_samples", "get_batch_samples: GLOW override"),
    ("trl", "SFTTrainer", "get_batch_samples", "get_batch_samples: Trainer"),
    ("glowrl.glow.trainer", "GLOWTrainer", "_glow_visit", "_glow_visit"),
    ("glowrl.glow.trainer", "_GLOWForward", "__call__", "_GLOWForward"),
    ("glowrl.glow.trainer", "GLOWTrainer", "_glow_window_metrics", "_glow_window_metrics (log)"),
    ("glowrl.glow.trainer", "GLOWTrainer", "_sync_glow_history", "_sync_glow_history"),
)
# GLOW's own time: each path minus the TRL code it wraps (TRL's collator and the model forward: timed per trainer).
GLOW_OWN = (
    ("collator: GLOW wrapper", "collator: TRL"),
    ("get_batch_samples: GLOW override", "get_batch_samples: Trainer"),
    ("_GLOWForward", "model forward"),
    ("_glow_window_metrics (log)", None),
    ("_sync_glow_history", None),
)
# --ab-steps: the summary's columns, `(key, header, scale, format, with a × trl column)`.
AB_COLUMNS = [
    ("step_s", "pass, wall (s)", 1, ".2f", True),
    ("cpu_step_s", "pass, CPU (s)", 1, ".2f", True),
    ("user_step_s", "pass, user (s)", 1, ".2f", True),
    ("sys_step_s", "pass, system (s)", 1, ".2f", True),
]
AB_KEYS = tuple(column[0] for column in AB_COLUMNS)


def parse_args(argv=None):
    def flags(a):
        a("--seq-len", type=int, help="tokens per sample, also max_length (2,048)")
        a("--prompt-len", type=int, default=4, help="leading prompt tokens (no loss); the rest is completion")
        a(
            "--in-process",
            action=argparse.BooleanOptionalAction,
            help="run every variant in this process (default: only with --smoke); step times stay valid, but on CPU "
            "the memory figures are then only indicative, since freed memory need not go back to the OS",
        )
        a("--glow-breakdown", action="store_true", help="also time GLOWTrainer's own code paths (diagnosis)")
        a(
            "--ab-steps",
            type=int,
            default=0,
            help="diagnosis instead of the benchmark: K forward+backward passes of trl and glow, alternated (ABBA) in "
            "one process on the same batch; no memory figures",
        )

    defaults = {"vocab_size": 151_936, "hidden_size": 64, "num_hidden_layers": 2, "seq_len": 2048, "batch_size": 2}
    defaults |= {"warmup_steps": 0, "steps": 1, "repeats": 1}
    smoke = {"vocab_size": 1024, "seq_len": 64, "warmup_steps": 1}
    args = harness.parse_args(__doc__, "speed_glow_sft", VARIANTS, argv, flags, defaults, smoke)
    args.in_process = args.smoke if args.in_process is None else args.in_process
    if not 0 <= args.prompt_len < args.seq_len:
        raise SystemExit("--prompt-len must be in [0, --seq-len)")
    return args


def make_dataset(args, num_samples: int):
    """Pre-tokenized prompt-completion rows of random token ids, with a `sample_id`."""
    import torch
    from datasets import Dataset

    ids = torch.randint(
        0, args.vocab_size, (num_samples, args.seq_len), generator=torch.Generator().manual_seed(args.seed)
    )
    mask = [[0] * args.prompt_len + [1] * (args.seq_len - args.prompt_len)] * num_samples
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "completion_mask": mask, "sample_id": list(range(num_samples))}
    )


def prefilled_history(args, num_samples: int) -> list[float]:
    """Finite 'previous losses' around a random init's loss (ln V), so that gains and weights vary across samples."""
    import torch

    noise = torch.rand(num_samples, generator=torch.Generator().manual_seed(args.seed + 1)) - 0.5
    return (math.log(args.vocab_size) + 0.2 * noise).tolist()


def published_trainer_class():
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    from glowrl import glow_weights

    class KeepSampleIdCollator:
        def __init__(self, collator):
            self.collator = collator

        def __call__(self, examples):
            batch = self.collator([{k: v for k, v in e.items() if k != "sample_id"} for e in examples])
            return batch | {"sample_id": torch.tensor([e["sample_id"] for e in examples], dtype=torch.long)}

    class PublishedGLOWTrainer(SFTTrainer):
        """The published `compute_loss`, minus its diagnostics (JSONL, barrier, per-step `all_gather_object`).

        The published code also passes `labels` to the model, which then computes (and discards) its own loss on the
        same logits, so this is a lower bound on its cost. Its first-epoch `w = 1` rule is left out (like
        `glow_warmup_epochs=0`) so that weights apply on every step.
        """

        def __init__(self, *args, alpha=1.0, beta=20.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.alpha, self.beta, self.loss_history, self.weight_log = alpha, beta, {}, []
            self.data_collator = KeepSampleIdCollator(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if "sample_id" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "sample_id"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            sample_ids, labels = inputs.pop("sample_id", None), inputs["labels"]
            outputs = model(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), use_cache=False
            )
            logits = outputs.logits.float()  # (B, T, V)
            shift_logits, shift_labels = logits[..., :-1, :].contiguous(), labels[..., 1:].contiguous()
            per_token = F.cross_entropy(
                shift_logits.view(-1, shift_logits.size(-1)), shift_labels.view(-1), reduction="none"
            ).view(shift_labels.shape)
            label_mask = shift_labels != -100
            sample_loss = (per_token * label_mask).sum(1) / label_mask.sum(1).clamp(min=1)
            if sample_ids is None or not self.is_in_train:
                loss = sample_loss.mean()
                return (loss, outputs) if return_outputs else loss
            default = sample_loss.mean().item()
            prev = [self.loss_history.get(sid.item(), default) for sid in sample_ids]
            weights = glow_weights(
                torch.tensor(prev, device=sample_loss.device) - sample_loss.detach(), self.alpha, self.beta
            )
            loss = (sample_loss * weights.detach()).mean()
            self.loss_history.update(zip(sample_ids.tolist(), sample_loss.detach().cpu().tolist(), strict=True))
            self.weight_log.append(weights.tolist())
            return (loss, outputs) if return_outputs else loss

    return PublishedGLOWTrainer


def make_trainer(args, variant: str, model_dir: Path, total_steps: int):
    """The trainer of `variant` on a fresh copy of the saved init, with one epoch of `total_steps` steps of data."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from glowrl import GLOWConfig, GLOWTrainer

    num_samples = args.batch_size * total_steps
    model, tokenizer = harness.load_model(model_dir, args.seed)
    dataset, history = make_dataset(args, num_samples), prefilled_history(args, num_samples)
    common = harness.trainer_kwargs(args, f"sft_{variant}", total_steps)
    common |= {"max_length": args.seq_len, "loss_type": "nll", "completion_only_loss": True}
    if variant == "trl":
        dataset = dataset.remove_columns("sample_id")
        return SFTTrainer(model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer)
    if variant == "glow":
        config = GLOWConfig(**common, glow=True, glow_warmup_epochs=0, glow_alpha=1.0, glow_beta=20.0)
        trainer = GLOWTrainer(model, args=config, train_dataset=dataset, processing_class=tokenizer)
        # Every sample has a finite previous loss: weights are computed and applied on every step (not the weight 1
        # of a first visit).
        trainer._glow_history.copy_(torch.tensor(history, dtype=torch.float32))
        return trainer
    trainer = published_trainer_class()(
        model, args=SFTConfig(**common), train_dataset=dataset, processing_class=tokenizer
    )
    trainer.loss_history.update(enumerate(history))
    return trainer


@functools.cache
def install_breakdown(device: str, collator_class: type):
    """Wrap GLOWTrainer's code paths with timers, once per process."""
    harness.CallRecorder.sync = staticmethod(harness.device_sync(device))
    harness.CallRecorder.wrap(collator_class, "__call__", "collator: GLOW wrapper")
    for module, owner, name, label in BREAKDOWN:
        harness.CallRecorder.wrap(getattr(importlib.import_module(module), owner), name, label)


def breakdown_summary(calls: list, steps: list[dict]) -> dict:
    """Milliseconds per optimizer step of each timed path, and GLOW's own (net of the TRL code inside)."""
    sums, n = harness.call_sums(calls), len(steps)
    own_ms = 1e3 * sum(harness.own_time(sums, GLOW_OWN).values()) / n
    return {
        "ms_per_step": {label: 1e3 * seconds / n for label, seconds in sums.items()},
        "calls": Counter(call[0] for call in calls),
        "glow_own_ms_per_step": own_ms,
        "glow_own_share_of_step": own_ms / 1e3 / statistics.fmean(s["step_s"] for s in steps),
    }


def run_variant(args, variant: str, model_dir: Path, repeat: int) -> dict:
    """One run: a fresh trainer, `--warmup-steps` + `--steps` timed optimizer steps, the memory peak over the RSS (or
    CUDA allocation) after model load and trainer init."""
    t0, total, tag = time.perf_counter(), args.warmup_steps + args.steps, f"[{variant} r{repeat}]"
    breakdown = args.glow_breakdown and variant == "glow"
    meter = harness.MemoryMeter(args.device, args.sample_interval_ms)
    timer = harness.step_timer(tag, args.warmup_steps, total, args.device, meter)
    trainer = harness.prepare_trainer(make_trainer(args, variant, model_dir, total), timer)
    assert trainer.args.bf16 == args.bf16
    if breakdown:
        install_breakdown(args.device, type(trainer.data_collator))
        harness.CallRecorder.wrap(trainer.data_collator, "collator", "collator: TRL")
        harness.CallRecorder.wrap(trainer.model, "forward", "model forward")
    meter.start()
    log(
        f"{tag} model + trainer ready in {time.perf_counter() - t0:.1f} s; {total} steps ({args.warmup_steps} warm-up)"
    )
    harness.CallRecorder.calls = calls = [] if breakdown else None
    try:
        output = trainer.train()
    finally:
        harness.CallRecorder.calls = None
    memory = meter.stop()
    logs = [row for row in trainer.state.log_history if "loss" in row and "step" in row]
    weights = applied = None
    if variant == "glow":
        # With the pre-filled gains a weighted visit has weight in [0.5, 1); 1.0 would mean the unweighted path.
        weights = [row.get("glow/weight_mean") for row in logs]
        applied = all(w is not None and w != 1.0 for w in weights)
    elif variant == "published":
        weights = [statistics.fmean(w) for w in trainer.weight_log]
        applied = len(weights) == total
    result = {"variant": variant, "repeat": repeat, "steps": timer.steps, "train_loss": output.training_loss}
    result |= {"step_logs": [{"loss": row["loss"]} for row in logs], "step_weight_means": weights}
    result |= {"weights_applied": applied, **memory}
    if breakdown:
        result["glow_breakdown"] = breakdown_summary(calls, timer.steps)
    median = statistics.median(s["step_s"] for s in timer.steps[args.warmup_steps :])
    log(f"{tag} done: median step {median:.3f} s, peak +{memory['peak_mib']:.0f} MiB")
    shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    return result


def run_ab(args, meta: dict, runs: list[dict], model_dir: Path) -> list[dict]:
    """`--ab-steps K`: forward + backward of `trl` and `glow`, alternated K times in ABBA order in this process.

    Both trainers live side by side and replay their first batch through `training_step` (no optimizer step, the
    gradients dropped after each pass), so both see the same machine load, allocator state and data. Each pass is a
    one-step run whose repeat is the pass index (numbered on from `runs`), for the harness's paired summary.
    """
    names = [v for v in args.variants if v in ("trl", "glow")]  # the build order: `--variants glow,trl` swaps it
    if len(names) != 2:
        raise SystemExit("--ab-steps compares trl and glow: keep both in --variants")
    setups, sync, first = {}, harness.device_sync(args.device), 1 + max((r["repeat"] for r in runs), default=-1)
    for v in names:
        trainer = harness.prepare_trainer(make_trainer(args, v, model_dir, total_steps=1))
        trainer.current_gradient_accumulation_steps = 1
        batches, num_items = trainer.get_batch_samples(iter(trainer.get_train_dataloader()), 1, trainer.args.device)
        setups[v] = (trainer, batches[0], num_items)
    harness.settle_gc()
    for k, order in harness.rotations(names, first, args.ab_steps):
        for v in order:
            trainer, inputs, num_items = setups[v]
            sync()
            before, cpu, t = os.times(), time.process_time(), time.perf_counter()
            trainer.training_step(trainer.model, dict(inputs), num_items)
            sync()
            wall, cpu, after = time.perf_counter() - t, time.process_time() - cpu, os.times()
            trainer.model.zero_grad(set_to_none=True)
            row = dict(zip(AB_KEYS, (wall, cpu, after.user - before.user, after.system - before.system), strict=True))
            runs = [*runs, {"variant": v, "repeat": k, "steps": [row]}]
            log(f"[ab {v}] pass {k + 1 - first}/{args.ab_steps}: {wall:.2f} s wall, {cpu:.2f} s CPU")
        meta["invocations"][-1]["repeats"].append(k)
    for trainer, *_ in setups.values():
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    return runs


def markdown(args, meta: dict, summary: dict, runs: list[dict]) -> list[str]:
    completion = args.seq_len - args.prompt_len
    shape = (
        f"{harness.shape_text(args)}; batch {args.batch_size} × {args.seq_len} tokens ({completion} completion each)"
    )
    if args.ab_steps:
        intro = f"One process, {args.ab_steps} forward+backward passes each (ABBA); medians over the passes; × trl:"
        lines = [f"{intro} median of the same-pass ratios.", *harness.table(summary, AB_COLUMNS, "paired_step_median")]
        return [*lines, *harness.context_lines(meta, shape)]
    memory = "peak GPU memory over baseline (MiB)" if args.device == "cuda" else "peak RSS over baseline (MiB)"
    columns = [("step_s", "step time (s)", 1, ".2f", True), ("cpu_step_s", "step CPU time (s)", 1, ".2f", True)]
    repeats = 1 + max(r["repeat"] for r in runs)
    shape += f"; {args.warmup_steps} warm-up + {args.steps} measured step(s) per run, {repeats} interleaved repeat(s)"
    lines = ["Medians of the per-run medians (range: all measured steps or runs); × trl: ratio of the medians."]
    lines += [*harness.table(summary, [*columns, ("peak_mib", memory, 1, ".0f", True)], "of_medians")]
    lines += harness.context_lines(meta, shape)
    if summary["checks"]["max_abs_diff_loss"] is not None:
        diff = summary["checks"]["max_abs_diff_loss"]
        lines.append(f"Max |step loss glow − published| over all steps: {diff:.2e} (the same weighted objective).")
    if args.device == "cpu" and args.in_process:
        lines.append("Every run in one process (--in-process): the RSS figures are only indicative.")
    for v in args.variants:
        if any(r["weights_applied"] is False for r in runs if r["variant"] == v):
            lines.append(f"WARNING: {v}: the GLOW weights were not applied on every step.")
    for r in (r for r in runs if "glow_breakdown" in r):
        b = r["glow_breakdown"]
        lines.append(f"GLOW code paths, run #{r['repeat']} (ms per optimizer step, over all {len(r['steps'])} steps):")
        lines += [f"- {k}: {ms:.3f} ms ({b['calls'][k]} calls)" for k, ms in b["ms_per_step"].items()]
        share = 100 * b["glow_own_share_of_step"]
        lines.append(f"- GLOW's own code: {b['glow_own_ms_per_step']:.2f} ms per step, {share:.3f} % of the mean step")
    return lines


def main(argv=None):
    args = parse_args(argv)
    harness.quiet_libraries()
    if args.variant is not None:  # a child process of harness.run_child
        write_json(run_variant(args, args.variant, Path(args.model_dir), args.repeat_index), args.json_out)
        return
    meta, runs = harness.start(args, "speed_glow_sft")

    def run_repeat(repeat, order):
        if args.in_process:
            return [run_variant(args, v, model_dir, repeat) for v in order]
        return [harness.run_child(args, v, repeat, model_dir) for v in order]

    with harness.saved_model(args, "speed_glow_sft", max_positions=args.seq_len) as model_dir:
        runs = (
            run_ab(args, meta, runs, model_dir) if args.ab_steps else harness.run_repeats(args, meta, runs, run_repeat)
        )
    if args.ab_steps:
        summary = harness.summarize(runs, ["trl", "glow"], AB_KEYS, warmup=0, pool_steps=True)
    else:
        keys = ("step_s", "cpu_step_s", "sys_step_s", "gc_step_s", "peak_mib", "ru_maxrss_mib")
        summary = harness.summarize(runs, args.variants, keys, args.warmup_steps, pool_steps=False)
        summary["checks"] = harness.max_log_diffs(runs, "glow", "published", ["loss"])
    harness.finish(args, meta, summary, runs, markdown(args, meta, summary, runs))


if __name__ == "__main__":
    main()
