"""Shared harness of the speed scripts in this folder (`speed_glow_sft.py`, `speed_grpo_entropy.py`).

What the scripts share and no variant depends on: the common flags, the local Qwen2 model every run loads, the step
timer (wall, process CPU, system and GC time, CUDA sync), the memory meter (sampled CPU RSS, or the CUDA allocator's
peak), GC settling, the method timers of the diagnoses, interleaved and rotated repeats (a child process per run where
a script asks), the ratio summary (medians, paired ratios, bootstrap 95 % interval), the machine description and the
JSON + markdown output. It is not a benchmark and builds no trainer: the variants, their checks and how their steps
pair up stay in the scripts, which run it as `python benchmarks/<script>.py` (this folder is then on `sys.path`).
"""

import argparse
import contextlib
import json
import math
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from meters import (  # noqa: F401 - re-exported: the scripts call them as harness.<name>
    MIB,
    CallRecorder,
    MemoryMeter,
    call_sums,
    current_rss,
    device_sync,
    log,
    own_time,
    ru_maxrss,
    settle_gc,
    step_timer,
)

from glowrl.io import write_json, write_text_atomic


# Model shape: `Qwen2Config` fields, also the arguments of `build_tiny_model`.
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
SHAPE_KEYS += ("num_key_value_heads",)
# `--shape` presets from the Qwen2.5 configs. The model built here always ties its LM head to the embeddings, as
# Qwen2.5-0.5B does; Qwen2.5-7B does not, so that shape has one vocab x hidden matrix fewer than the real model.
SHAPES = {
    "qwen2.5-0.5b": dict(zip(SHAPE_KEYS, (151_936, 896, 4_864, 24, 14, 2), strict=True)),
    "qwen2.5-7b": dict(zip(SHAPE_KEYS, (152_064, 3_584, 18_944, 28, 28, 4), strict=True)),
}
TINY = dict(zip(SHAPE_KEYS[1:], (64, 256, 2, 4, 2), strict=True))  # `--smoke`'s, whatever the other flags say
INTERNAL_KEYS = {"variant", "json_out", "repeat_index", "argv"}
FREE_KEYS = {"output", "append", "repeats", "model_dir", *INTERNAL_KEYS}  # may differ between runs merged by --append


def parse_args(doc, name, variants, argv, add_flags, defaults: dict, smoke: dict) -> argparse.Namespace:
    """The flags every script has, plus its own (`add_flags(parser.add_argument)`). A flag left unset takes `smoke`'s
    value under --smoke (`TINY` first), else the --shape preset's, else `defaults`'s."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    a = p.add_argument
    a("--output", help="JSON file of the runs and the summary (default: <tmp>/<script>.json); the table goes to .md")
    a("--append", action="store_true", help="add this invocation's repeats to those in --output (same settings)")
    a("--variants", default=",".join(variants), help="comma-separated subset of " + ",".join(variants))
    a("--repeats", type=int, help="interleaved repeats; the order of the variants rotates by one every repeat")
    a("--warmup-steps", type=int, help="optimizer steps before the measured ones")
    a("--steps", type=int, help="measured optimizer steps per run")
    a("--smoke", action="store_true", help="a tiny model and a step or two: checks that the script runs")
    a("--device", choices=("cpu", "cuda"), default="cpu")
    a("--bf16", action="store_true", help="bf16 mixed precision (CUDA only: the CPU comparison runs in fp32)")
    a("--seed", type=int, default=42)
    a("--shape", choices=("tiny", *SHAPES), default="tiny", help="model shape preset; the flags below override it")
    a("--vocab-size", type=int)
    a("--hidden-size", type=int)
    a("--intermediate-size", type=int, help="MLP width (tiny: 4 x hidden size)")
    a("--num-hidden-layers", "--num-layers", type=int)
    a("--num-attention-heads", "--num-heads", type=int, help="(tiny: 4)")
    a("--num-key-value-heads", "--num-kv-heads", type=int, help="(tiny: 2)")
    a("--batch-size", type=int, help="per_device_train_batch_size")
    a("--model-dir", help="reuse the model a previous run built instead of building one")
    a("--sample-interval-ms", type=float, default=2.0, help="RSS sampling period on CPU")
    a("--variant", choices=variants, help=argparse.SUPPRESS)  # child process: one run, its result to --json-out
    a("--json-out", help=argparse.SUPPRESS)
    a("--repeat-index", type=int, default=0, help=argparse.SUPPRESS)
    add_flags(a)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    filled = {"num_attention_heads": 4, "num_key_value_heads": 2, **defaults, **SHAPES.get(args.shape, {})}
    for key, value in (filled | ({**TINY, **smoke} if args.smoke else {})).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.intermediate_size = args.intermediate_size or 4 * args.hidden_size
    args.output = args.output or os.path.join(tempfile.gettempdir(), f"{name}.json")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or len(set(args.variants)) != len(args.variants) or set(args.variants) - set(variants):
        p.error(f"--variants: give distinct names among {list(variants)}")
    if args.bf16 and args.device != "cuda":
        p.error("--bf16 is for --device cuda (the CPU comparison runs in fp32)")
    if args.steps < 1 or args.warmup_steps < 0 or args.repeats < 1:
        p.error("need --steps >= 1, --warmup-steps >= 0, --repeats >= 1")
    if args.hidden_size % args.num_attention_heads or args.num_attention_heads % args.num_key_value_heads:
        p.error("--hidden-size must be a multiple of --num-attention-heads, and that of --num-key-value-heads")
    return args


def machine_info(device: str) -> dict:
    """The CPU, cores, memory, load, package versions and GPU a result was measured on."""
    import accelerate
    import torch
    import transformers
    import trl

    import glowrl

    info = {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    info["cpus_usable"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info |= {"platform": platform.platform(), "python": platform.python_version()}
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        info["ram_gib"] = round(next(int(line.split()[1]) for line in lines if line.startswith("MemTotal")) / MIB, 1)
    info["load_avg_at_start"] = os.getloadavg()
    info["versions"] = {m.__name__: m.__version__ for m in (torch, trl, transformers, accelerate, glowrl)}
    info["torch_threads"] = torch.get_num_threads()
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def quiet_libraries():
    import datasets
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


@contextlib.contextmanager
def saved_model(args, name: str, max_positions: int = 2048):
    """The saved random init every run loads: `--model-dir`, else one built in a folder removed afterwards."""
    if args.model_dir:
        yield Path(args.model_dir)
        return
    from glowrl.toy.arithmetic import tokenizer_corpus
    from glowrl.toy.tiny_model import build_tiny_model

    workdir, t = Path(tempfile.mkdtemp(prefix=f"{name}_")), time.perf_counter()
    try:
        shape = {key: getattr(args, key) for key in SHAPE_KEYS} | {"max_position_embeddings": max(max_positions, 2048)}
        path = build_tiny_model(workdir / "model", tokenizer_corpus(args.seed), **shape, seed=args.seed)
        log(f"built model ({shape_text(args)}) in {time.perf_counter() - t:.1f} s")
        yield path
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def load_model(model_dir: Path, seed: int):
    """A fresh fp32 copy of the saved init (`--bf16` is mixed precision on top of it) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(model_dir)


def trainer_kwargs(args, tag: str, total_steps: int) -> dict:
    """The `TrainingArguments` every variant of every script shares: one epoch of `total_steps` optimizer steps of
    `--batch-size`, no gradient checkpointing (TRL's configs default to it), no saving, no reporting."""
    kwargs = {"output_dir": tempfile.mkdtemp(prefix=f"speed_{tag}_"), "use_cpu": args.device == "cpu"}
    kwargs |= {"bf16": args.bf16, "activation_checkpointing": False, "per_device_train_batch_size": args.batch_size}
    kwargs |= {"gradient_accumulation_steps": 1, "max_steps": total_steps, "logging_steps": 1, "report_to": "none"}
    kwargs |= {"save_strategy": "no", "disable_tqdm": True, "seed": args.seed, "data_seed": args.seed}
    return kwargs | {"dataloader_num_workers": 0}


def prepare_trainer(trainer, timer=None):
    """Drop the console callbacks and add `timer` last, after the trainer's own callbacks."""
    from transformers import PrinterCallback, ProgressCallback

    for callback in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(callback)
    if timer is not None:
        trainer.add_callback(timer)
    assert not trainer.args.gradient_checkpointing
    return trainer


def run_child(args, variant: str, repeat: int, model_dir: Path) -> dict:
    """One run of `variant` in a fresh process of the calling script, so that its memory figure is its own."""
    with tempfile.TemporaryDirectory(prefix="speed_child_") as tmp:
        json_out = Path(tmp) / "run.json"
        internal = ["--variant", variant, "--repeat-index", str(repeat), "--json-out", str(json_out)]
        argv = [sys.executable, os.path.abspath(sys.argv[0]), *args.argv, *internal, "--model-dir", str(model_dir)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        tail = []
        for line in proc.stdout:
            tail = [*tail[-39:], line.rstrip("\n")]
            if line.startswith(f"[{variant} r"):
                log("  " + tail[-1])
        if proc.wait() != 0:
            raise RuntimeError(f"{variant} run {repeat} failed (exit {proc.returncode}):\n" + "\n".join(tail))
        return json.loads(json_out.read_text())


def start(args, name: str) -> tuple[dict, list]:
    """Log the command and the machine; with `--append`, the earlier runs of `--output` (same settings only)."""
    command = shlex.join(["python", os.path.relpath(os.path.abspath(sys.argv[0])), *args.argv])
    log(f"{name}: {command}")
    kept, machine = {k: v for k, v in vars(args).items() if k not in INTERNAL_KEYS}, machine_info(args.device)
    this = {"command": command, "repeats": [], "started": time.time(), "load_avg_at_start": os.getloadavg()}
    meta, runs = {"command": command, "machine": machine, "args": kept, "invocations": [this]}, []
    if args.append and Path(args.output).is_file():
        previous = json.loads(Path(args.output).read_text())
        old = previous["meta"]["args"]
        mismatched = sorted(k for k in {*old, *kept} - FREE_KEYS if old.get(k) != kept.get(k))
        if mismatched:
            sys.exit(f"--append: {args.output} was run with other {', '.join(mismatched)}; use another --output")
        meta["invocations"], runs = [*previous["meta"]["invocations"], this], previous["runs"]
    load = ", ".join(f"{x:.1f}" for x in this["load_avg_at_start"])
    log(f"machine: {machine['cpu']}, {machine['cpus_usable']} cores, {machine['versions']}, load average {load}")
    return meta, runs


def rotations(variants: list[str], first: int, repeats: int):
    """`(repeat, order)`: each repeat runs every variant, the order rotated by one each time (ABBA for two)."""
    for repeat in range(first, first + repeats):
        yield repeat, variants[repeat % len(variants) :] + variants[: repeat % len(variants)]


def run_repeats(args, meta: dict, runs: list, run_repeat) -> list:
    """`runs` plus the runs of `run_repeat(repeat, order)` for this invocation's repeats (numbered on from them)."""
    first = 1 + max((r["repeat"] for r in runs), default=-1)
    for repeat, order in rotations(args.variants, first, args.repeats):
        log(f"repeat {repeat + 1 - first}/{args.repeats} (#{repeat}): {', '.join(order)}")
        runs = runs + run_repeat(repeat, order)
        meta["invocations"][-1]["repeats"].append(repeat)
    return runs


def bootstrap_median_ci(values: list[float], iters: int = 2000, seed: int = 0) -> list[float]:
    """Percentile-bootstrap 95 % interval of the median."""
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(iters))
    return [medians[int(0.025 * iters)], medians[int(0.975 * iters) - 1]]


def measured(run: dict, key: str, warmup: int) -> list[float]:
    """A run's measured values of `key`: its run-level figure if it has one, else one per step after the warm-up."""
    return [run[key]] if key in run else [s[key] for s in run["steps"][warmup:] if s.get(key) is not None]


def summarize(runs, variants, keys, warmup: int, pool_steps: bool, baseline: str = "trl") -> dict:
    """Per variant and key: the median (over all measured steps if `pool_steps`, else of the per-run medians) and the
    range of all measured values. Per other variant, its ratios to `baseline`: of the medians, and the medians of the
    paired ratios (same repeat and step; same repeat), with a bootstrap 95 % interval of the per-step one."""
    by = {v: [r for r in runs if r["variant"] == v] for v in variants}
    out = {v: {"runs": len(rs)} for v, rs in by.items()}
    for v, rs in by.items():
        for key in keys:
            per_run = [xs for xs in (measured(r, key, warmup) for r in rs) if xs]
            pooled = [x for xs in per_run for x in xs]
            if pooled:
                out[v][key] = statistics.median(pooled if pool_steps else [statistics.median(xs) for xs in per_run])
                out[v][f"{key}_min"], out[v][f"{key}_max"] = min(pooled), max(pooled)
    ratios, base = {}, {r["repeat"]: r for r in by.get(baseline, [])}
    for v, rs in by.items():
        for key in keys if v != baseline else ():
            steps, repeats = [], []
            for a, b in ((r, base[r["repeat"]]) for r in rs if r["repeat"] in base):
                xs, ys = measured(a, key, warmup), measured(b, key, warmup)
                steps += [x / y for x, y in zip(xs, ys, strict=False) if y > 0]
                if xs and ys and statistics.median(ys) > 0:
                    repeats.append(statistics.median(xs) / statistics.median(ys))
            if steps and repeats:
                ratios.setdefault(f"{v}/{baseline}", {})[key] = {
                    "paired_step_median": statistics.median(steps),
                    "paired_step_ci95": bootstrap_median_ci(steps),
                    "paired_repeat_median": statistics.median(repeats),
                    "of_medians": out[v][key] / out[baseline][key] if out[baseline].get(key) else math.nan,
                }
    return {"variants": out, "ratios": ratios}


def max_log_diffs(runs, a: str, b: str, keys) -> dict:
    """Largest |a - b| of each logged value over the same-repeat, same-step `step_logs` of two variants."""
    logs = {(r["variant"], r["repeat"]): r["step_logs"] for r in runs}
    pairs = []
    for (v, repeat), a_logs in logs.items():
        if v == a and (b, repeat) in logs:
            pairs += zip(a_logs, logs[b, repeat], strict=False)
    diffs = {key: [abs(x[key] - y[key]) for x, y in pairs if None not in (x.get(key), y.get(key))] for key in keys}
    return {f"max_abs_diff_{key}": max(d) if d else None for key, d in diffs.items()}


def table(summary: dict, columns, headline: str, baseline: str = "trl") -> list[str]:
    """A markdown table, a row per variant; `columns`: `(key, header, scale, format, with a × baseline column)`;
    `headline`: the ratio shown there (`of_medians` or `paired_step_median`). Then a line per ratio."""
    head = ["variant"] + [h for _, header, *_, r in columns for h in ([header, f"× {baseline}"] if r else [header])]
    lines, notes = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)], []
    for v, s in summary["variants"].items():
        row, ratios = [f"`{v}`"], summary["ratios"].get(f"{v}/{baseline}", {})
        for key, header, scale, fmt, with_ratio in columns:
            lo, hi = (s.get(f"{key}_{end}", math.nan) * scale for end in ("min", "max"))
            row.append(f"{s[key] * scale:{fmt}} ({lo:{fmt}}–{hi:{fmt}})" if key in s else "–")
            r = ratios.get(key) if with_ratio else None
            if with_ratio:
                row.append("1" if v == baseline else f"**{r[headline]:.3f}**" if r else "–")
            if r:
                lo, hi = r["paired_step_ci95"]
                notes.append(
                    f"{v}/{baseline}, {header}: paired median {r['paired_step_median']:.4f} (95 % bootstrap interval "
                    f"{lo:.4f}–{hi:.4f}; median of per-repeat ratios {r['paired_repeat_median']:.4f}; ratio of "
                    f"medians {r['of_medians']:.4f})."
                )
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, "", *notes]


def shape_text(args) -> str:
    heads, dtype = f"{args.num_attention_heads} heads ({args.num_key_value_heads} kv)", "bf16" if args.bf16 else "fp32"
    layers = f"{args.num_hidden_layers} layers, MLP {args.intermediate_size}"
    return f"Qwen2 vocab {args.vocab_size:,}, hidden {args.hidden_size}, {layers}, {heads}; {args.device} {dtype}"


def context_lines(meta: dict, shape: str) -> list[str]:
    """The shape, machine, software and command lines under a table."""
    m, gpu = meta["machine"], f", {meta['machine']['gpu']}" if "gpu" in meta["machine"] else ""
    versions = ", ".join(f"{k} {m['versions'][k]}" for k in ("torch", "trl", "transformers", "accelerate"))
    lines = [f"Shape: {shape}.", f"Machine: {m['cpu']}, {m['cpus_usable']} usable cores{gpu}; {versions}."]
    for inv in meta["invocations"]:
        minutes, load = inv.get("elapsed_s", time.time() - inv["started"]) / 60, inv["load_avg_at_start"][0]
        runs = f"repeats {inv['repeats']}, {minutes:.1f} min, load average {load:.1f} at start"
        lines.append(f"Command: `{inv['command']}` ({runs}).")
    return lines


def finish(args, meta: dict, summary: dict, runs: list, lines: list[str]):
    """Print the markdown; write it to `<output>.md`, and the meta, summary and runs to the JSON `<output>`."""
    text, this = "\n".join(lines), meta["invocations"][-1]
    this["elapsed_s"] = time.time() - this["started"]
    log("\n" + text + "\n")
    write_json({"meta": meta, "summary": summary, "markdown": text, "runs": runs}, args.output)
    markdown = write_text_atomic(Path(args.output).with_suffix(".md"), text + "\n")
    log(f"wrote {args.output} and {markdown}")
