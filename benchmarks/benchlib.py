"""The measuring half of the benchmark suite: rows, interleaved timing, steps and the table.

Each benchmark warms both sides up, then alternates them and takes the median of the samples.
``timeit.Timer.autorange`` measures how long one call takes; a sample then repeats a fast call
until it lasts ``Config.min_sample``, and the order reverses every round, so a noisy machine slows
both sides equally. A row's ratio is ours / reference for throughputs and reference / ours for
times: higher is better either way.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import timeit

import numpy as np


@dataclasses.dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    metric: str
    ours: float
    reference: float
    unit: str
    higher_is_better: bool = True
    reference_name: str = ""
    note: str = ""

    @property
    def ratio(self):
        if not self.reference or not self.ours:
            return float("nan")
        return self.ours / self.reference if self.higher_is_better else self.reference / self.ours


@dataclasses.dataclass
class Config:
    """Sizes of one run: ``quick`` keeps every benchmark, small."""

    quick: bool = False
    repeats: int = 7
    warmup: int = 1
    min_sample: float = 0.5  # seconds: fast calls are repeated within one sample

    @classmethod
    def make(cls, quick):
        return cls(quick=True, repeats=3, warmup=1, min_sample=0.1) if quick else cls()


def calls_per_sample(fn, min_sample, timer=timeit.default_timer):
    """How many calls of ``fn`` make one sample of at least ``min_sample`` seconds.

    ``timeit.Timer.autorange`` times 1, 2, 5, 10, 20, ... calls until they take 0.2 s; the
    per-call time it gives sizes the sample (at most 50 calls, at least one).
    """
    number, seconds = timeit.Timer(fn, timer=timer).autorange()
    once = seconds / number
    return max(1, min(50, round(min_sample / max(once, 1e-6))))


def interleaved(functions, config, timer=timeit.default_timer):
    """Median seconds per call of each function, warmed up and run alternately.

    Args:
        functions: ``{name: function of no arguments}``.
        config: a ``Config`` (repeats, warm-up calls, sample length).
        timer: the clock (``timeit``'s default: ``time.perf_counter``).

    Returns:
        ``{name: median seconds per call}``.
    """
    timers = {}
    calls = {}
    for name, fn in functions.items():
        for _ in range(config.warmup):
            fn()  # the first call also traces
        timers[name] = timeit.Timer(fn, timer=timer)
        calls[name] = calls_per_sample(fn, config.min_sample, timer)
    times = {name: [] for name in functions}
    order = list(functions)
    for _ in range(config.repeats):
        for name in order:
            times[name].append(timers[name].timeit(calls[name]) / calls[name])
        order.reverse()
    return {name: statistics.median(values) for name, values in times.items()}


def inference_step(model, images):
    """A function of no arguments: one compiled inference call of ``model`` on ``images``."""
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    tensor = tf.constant(images)
    return lambda: call(tensor).numpy()


def train_step(model, images, labels):
    """A function of no arguments: one SGD training step of ``model`` (compiled here)."""
    import keras

    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    return lambda: model.train_on_batch(images, labels)


def images(batch, size, channels=3, seed=0):
    """Uniform random float32 images ``(batch, size, size, channels)``."""
    return np.random.default_rng(seed).uniform(0, 1, (batch, size, size, channels)) \
        .astype("float32")


def format_table(rows):
    """Returns the results as a Markdown table whose last column is the ratio."""
    lines = ["| benchmark | metric | ours | reference | unit | ratio |",
             "|---|---|---:|---:|---|---:|"]
    for row in rows:
        reference = f"{row.reference:.4g} ({row.reference_name})" if row.reference_name \
            else f"{row.reference:.4g}"
        metric = f"{row.metric} [{row.note}]" if row.note else row.metric
        lines.append(f"| {row.benchmark} | {metric} | {row.ours:.4g} | {reference} | "
                     f"{row.unit} | {_ratio(row)} |")
    return "\n".join(lines)


def _ratio(row):
    """The ratio column: ``-`` for a row without numbers (an unavailable peer)."""
    return "-" if row.ratio != row.ratio else f"{row.ratio:.2f}x"


def machine():
    """A one-line description of the machine and the versions the numbers were measured with.

    The CPU's model, cores and bfloat16-relevant flags (AVX-512, AVX512-BF16, AMX: without
    AVX512-BF16 TensorFlow emulates bfloat16), TensorFlow's and Keras' versions, and torch's and
    torchvision's where this process imported them (the torchvision peer).
    """
    import sys

    import keras
    import tensorflow as tf

    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if "model name" in line)
        flags = set(next(line.split(":", 1)[1].split() for line in lines
                         if line.startswith("flags")))
    except (OSError, StopIteration):
        pass
    shown = [flag for flag in ("avx512f", "avx512_bf16", "amx_bf16") if flag in flags]
    text = (f"{cpu}, {os.cpu_count()} cores ({', '.join(shown) or 'no AVX-512'}), "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}")
    for name in ("torch", "torchvision"):
        if name in sys.modules:
            text += f", {name} {sys.modules[name].__version__}"
    return text