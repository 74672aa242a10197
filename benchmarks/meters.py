"""Meters of the speed scripts: the step timer, the memory meter, GC accounting and the method timers.

Part of the shared harness (`harness.py` re-exports every name): wall, process-CPU, system and GC time per step (with a
CUDA sync on GPU), peak memory (sampled CPU RSS cross-checked with `ru_maxrss`, or the CUDA allocator's peak), and
per-method timers for the diagnoses. Nothing here builds a model or a trainer.
"""

import functools
import gc
import math
import os
import resource
import sys
import threading
import time


MIB = 1024**2


def log(msg):
    print(msg, flush=True)


def device_sync(device: str):
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def settle_gc():
    """Collect, then freeze all objects built so far (libraries, models, data) out of the collector's reach. Else the
    automatic full collections of that large heap (~0.3 s each on a 2-core CPU) land inside random steps."""
    gc.collect()
    gc.freeze()


GC_SECONDS = [0.0, 0.0]  # CPU seconds this process spent in garbage collection; start of the current collection


def _gc_clock(phase, info):
    if phase == "start":
        GC_SECONDS[1] = time.process_time()
    else:
        GC_SECONDS[0] += time.process_time() - GC_SECONDS[1]


gc.callbacks.append(_gc_clock)


def current_rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def ru_maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


class MemoryMeter:
    """Peak memory over the baseline taken at `start()`: on CPU the process RSS, sampled every `interval_ms` by a
    thread; on CUDA `max_memory_allocated`. `step_begin`/`step_end` give each step's own peak, so steps must not
    overlap (one trainer steps at a time)."""

    def __init__(self, device: str, interval_ms: float):
        import torch

        self.cuda = torch.cuda if device == "cuda" else None
        self.interval, self.peak, self.samples, self.done = interval_ms / 1e3, 0, 0, threading.Event()
        self.lock = threading.Lock()  # a window reset must not be undone by a sample taken before it

    def start(self):
        settle_gc()
        if self.cuda:
            self.cuda.synchronize()
            self.baseline = self.cuda.memory_allocated()
            return self.cuda.reset_peak_memory_stats()
        self.baseline = self.peak = self.window_peak = current_rss()
        self.ru_before, self.thread = ru_maxrss(), threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self):
        while not self.done.is_set():
            with self.lock:
                rss, self.samples = current_rss(), self.samples + 1
                self.peak, self.window_peak = max(self.peak, rss), max(self.window_peak, rss)
            self.done.wait(self.interval)

    def step_begin(self):
        if self.cuda:
            self.peak = max(self.peak, self.cuda.max_memory_allocated())  # the peaks between steps count too
            self.cuda.reset_peak_memory_stats()
        else:
            with self.lock:
                self.window_peak = current_rss()

    def step_end(self) -> float:
        peak = self.cuda.max_memory_allocated() if self.cuda else self.window_peak
        self.peak = max(self.peak, peak)
        return (peak - self.baseline) / MIB

    def stop(self) -> dict:
        gc.unfreeze()  # so that a later run in this process can collect this one's objects
        if self.cuda:
            self.cuda.synchronize()
            peak = max(self.peak, self.cuda.max_memory_allocated())
            return {"memory": "cuda max_memory_allocated", "peak_mib": (peak - self.baseline) / MIB}
        self.done.set()
        self.thread.join()
        return {
            "memory": "process RSS, sampled",
            "peak_mib": (max(self.peak, current_rss()) - self.baseline) / MIB,
            "rss_samples": self.samples,
            # Needs no sampling; valid when training raises the process's all-time peak (ru_maxrss_before_mib).
            "ru_maxrss_mib": (ru_maxrss() - self.baseline) / MIB,
            "ru_maxrss_before_mib": self.ru_before / MIB,
        }


def step_timer(tag: str, warmup: int, total: int, device: str, meter=None, before_step=None):
    """A `TrainerCallback` timing each optimizer step, `on_step_begin` to `on_step_end` (forward, backward, optimizer,
    and the `on_step_end` work of the callbacks added before it): wall, process CPU, system and GC seconds, and the
    step's memory peak over the meter's baseline. `before_step(state)` runs first, untimed."""
    from transformers import TrainerCallback

    sync = device_sync(device)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_step_begin(self, args, state, control, **kwargs):
            self._enter = time.perf_counter()
            if before_step is not None:
                before_step(state)
            sync()
            if meter is not None:
                meter.step_begin()
            self._os, self._gc = os.times(), GC_SECONDS[0]
            self._cpu, self._t = time.process_time(), time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            t, cpu, system = time.perf_counter(), time.process_time(), os.times().system - self._os.system
            row = {"step_s": t - self._t, "cpu_step_s": cpu - self._cpu, "sys_step_s": system}
            row |= {"gc_step_s": GC_SECONDS[0] - self._gc, "t_enter": self._enter, "t_begin": self._t, "t_end": t}
            if meter is not None:
                row["peak_mib"] = meter.step_end()
            self.steps.append(row)
            kind, peak = "warm-up" if len(self.steps) <= warmup else "measured", row.get("peak_mib", math.nan)
            log(
                f"{tag} step {state.global_step}/{total} ({kind}): {row['step_s']:.3f} s wall, {cpu - self._cpu:.3f} "
                f"s CPU ({system:.2f} s system, {row['gc_step_s']:.2f} s GC), step peak +{peak:.0f} MiB"
            )

    return StepTimer()


class CallRecorder:
    """Times the calls of wrapped methods while `calls` is a list (diagnosis only), as rows `(label, thread id, wall
    start, CPU start, wall end, CPU end)`. The wrappers stay for the process; when off they cost an attribute read."""

    calls: list | None = None
    sync = staticmethod(lambda: None)

    @classmethod
    def wrap(cls, owner, name: str, label: str):
        """Time `owner.name`: a class's method, or an instance's callable attribute (a model's `forward`)."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*a, **kw):
            if cls.calls is None:
                return original(*a, **kw)
            cls.sync()
            t, c = time.perf_counter(), time.process_time()
            try:
                return original(*a, **kw)
            finally:
                cls.sync()
                cls.calls.append((label, threading.get_ident(), t, c, time.perf_counter(), time.process_time()))

        setattr(owner, name, timed)


def call_sums(calls, thread=None, start=-math.inf, end=math.inf, cpu=False) -> dict[str, float]:
    """Seconds (wall, or CPU) per label of the recorded calls of `thread` (any) that began in [start, end)."""
    sums = {}
    for label, tid, t0, c0, t1, c1 in calls:
        if thread in (None, tid) and start <= t0 < end:
            sums[label] = sums.get(label, 0.0) + (c1 - c0 if cpu else t1 - t0)
    return sums


def own_time(sums: dict[str, float], paths) -> dict[str, float]:
    """The own seconds of each `(label, inner label or None)` path: its time minus that of the code it wraps."""
    return {label: sums[label] - sums.get(inner, 0.0) for label, inner in paths if label in sums}
