"""Benchmarks measured side by side: ours against the reference in the same process.

Each benchmark warms both sides up, then alternates them and takes the median of the samples;
a sample repeats a fast call until it lasts ``Config.min_sample`` and the order reverses every
round, so a noisy machine slows both sides equally. A row's ratio is
ours / reference for throughputs and reference / ours for times: higher is better either way.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

BENCHMARKS = ("roofline", "resnet50", "precision", "cifar56", "resnet1202", "serving",
              "accuracy")


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


def _interleaved(functions, config):
    """Median seconds per call of each function, warmed up and run alternately.

    A sample repeats a fast call until it lasts ``config.min_sample``; the order of the
    functions reverses every round (A B, B A, ...), so a drift in the machine's speed hits
    every side alike.
    """
    calls = {}
    for name, fn in functions.items():
        for _ in range(config.warmup):
            fn()  # the first call also traces
        start = time.perf_counter()
        fn()
        once = time.perf_counter() - start
        calls[name] = max(1, min(50, round(config.min_sample / max(once, 1e-6))))
    times = {name: [] for name in functions}
    order = list(functions)
    for _ in range(config.repeats):
        for name in order:
            fn = functions[name]
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            times[name].append((time.perf_counter() - start) / calls[name])
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


def _images(batch, size, channels=3, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, size, size, channels)) \
        .astype("float32")


# ----------------------------------------------------------------------------- benchmarks


_GEMM_SIZES = {True: (1024, 2048), False: (1024, 2048, 3072)}


def _gemm_fn(n):
    """A function running one n x n float32 matrix multiply; returns (function, FLOPs)."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.reduce_sum(tf.linalg.matmul(a, b)))
    return lambda: matmul().numpy(), 2 * n ** 3


def gemm_flops(config):
    """Measured float32 matrix-multiply FLOP/s: the roofline the models are compared with.

    The best median over a few sizes: small GEMMs do not reach the machine's peak.
    """
    best = 0.0
    for n in _GEMM_SIZES[config.quick]:
        fn, flops = _gemm_fn(n)
        best = max(best, flops / _interleaved({"gemm": fn}, config)["gemm"])
    return best


def bench_roofline(config, state):
    flops = gemm_flops(config)
    state["gemm_flops"] = flops
    return [Row("roofline", "float32 GEMM, best of n = "
                + "/".join(map(str, _GEMM_SIZES[config.quick])), flops / 1e9, flops / 1e9,
                "GFLOP/s", reference_name="itself")]


def bench_resnet50(config, state):
    """Our ResNet-50 against keras.applications.ResNet50, the same multiply-adds.

    Ours puts the stride in the first 1x1 as keras.applications does (3.86 G multiply-adds)
    but, like torchvision, has no convolution biases in front of BN (they are redundant there).
    """
    import keras

    from keras_resnet import ResNet50, fold_batch_norm, multiply_adds

    size = 64 if config.quick else 224
    shape = (size, size, 3)
    rows = []
    reference_name = "keras.applications.ResNet50"
    builds = _interleaved({
        "ours": lambda: ResNet50(stride_on="1x1", input_shape=shape),
        "reference": lambda: keras.applications.ResNet50(weights=None, input_shape=shape),
    }, Config(repeats=3 if config.quick else 5, warmup=1))
    rows.append(Row("resnet50", "build", builds["ours"], builds["reference"], "s",
                    higher_is_better=False, reference_name=reference_name))
    ours = ResNet50(stride_on="1x1", input_shape=shape)
    reference = keras.applications.ResNet50(weights=None, input_shape=shape)
    macs = multiply_adds(ours)
    state["resnet50_macs"] = macs
    best = 0.0
    gemm, gemm_ops = _gemm_fn(2048)
    for batch in ((1, 4) if config.quick else (1, 32)):
        images = _images(batch, size)
        # The GEMM runs interleaved too, so the roofline sees the same machine state.
        seconds = _interleaved({"ours": inference_step(ours, images),
                                "reference": inference_step(reference, images),
                                "gemm": gemm}, config)
        state["gemm_flops"] = max(state.get("gemm_flops", 0.0), gemm_ops / seconds["gemm"])
        rows.append(Row("resnet50", f"inference batch {batch}", batch / seconds["ours"],
                        batch / seconds["reference"], "img/s", reference_name=reference_name))
        best = max(best, batch / seconds["ours"])
    # BN folding: the same outputs with the BN statistics frozen into the kernels.
    folded = fold_batch_norm(ours)
    images = _images(4 if config.quick else 32, size)
    seconds = _interleaved({"ours": inference_step(folded, images),
                            "reference": inference_step(ours, images)}, config)
    rows.append(Row("resnet50", f"inference batch {len(images)}, BN folded",
                    len(images) / seconds["ours"], len(images) / seconds["reference"], "img/s",
                    reference_name="ours, BN not folded"))
    best = max(best, len(images) / seconds["ours"])
    batch = 4 if config.quick else 32
    images, labels = _images(batch, size), np.arange(batch) % 1000
    seconds = _interleaved({"ours": train_step(ours, images, labels),
                            "reference": train_step(reference, images, labels)}, config)
    rows.append(Row("resnet50", f"training batch {batch}", batch / seconds["ours"],
                    batch / seconds["reference"], "img/s", reference_name=reference_name))
    if "gemm_flops" in state:
        rows.append(Row("resnet50", "inference FLOP/s vs GEMM roofline", 2 * macs * best / 1e9,
                        state["gemm_flops"] / 1e9, "GFLOP/s", reference_name="float32 GEMM",
                        note="ratio = fraction of the roofline"))
    return rows


def bench_precision(config, state):
    """float32 against mixed_bfloat16, the same network built twice."""
    import keras

    from keras_resnet import ResNet50

    # Full size trains at batch 8: emulated bfloat16 takes ~40 s per batch-32 step here.
    size, batch, train_batch = (64, 4, 4) if config.quick else (224, 32, 8)
    shape = (size, size, 3)
    keras.config.set_dtype_policy("float32")
    fp32 = ResNet50(input_shape=shape)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = ResNet50(input_shape=shape)
    finally:
        keras.config.set_dtype_policy("float32")
    bf16.set_weights(fp32.get_weights())
    images = _images(batch, size)
    infer = _interleaved({"ours": inference_step(bf16, images),
                          "reference": inference_step(fp32, images)}, config)
    images, labels = _images(train_batch, size), np.arange(train_batch) % 1000
    train = _interleaved({"ours": train_step(bf16, images, labels),
                          "reference": train_step(fp32, images, labels)},
                         Config(repeats=min(config.repeats, 3), warmup=1))
    return [
        Row("precision", f"ResNet-50 inference batch {batch}", batch / infer["ours"],
            batch / infer["reference"], "img/s", reference_name="float32",
            note="ours = mixed_bfloat16"),
        Row("precision", f"ResNet-50 training batch {train_batch}", train_batch / train["ours"],
            train_batch / train["reference"], "img/s", reference_name="float32",
            note="ours = mixed_bfloat16"),
    ]


def bench_cifar56(config, state):
    """CIFAR ResNet-56 training throughput at batch 128, float32 and mixed_bfloat16."""
    import keras

    from keras_resnet import CifarResNet

    depth, batch = (20, 16) if config.quick else (56, 128)
    keras.config.set_dtype_policy("float32")
    fp32 = CifarResNet(depth)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = CifarResNet(depth)
    finally:
        keras.config.set_dtype_policy("float32")
    images, labels = _images(batch, 32), np.arange(batch) % 10
    train = _interleaved({"ours": train_step(bf16, images, labels),
                          "reference": train_step(fp32, images, labels)}, config)
    return [Row("cifar56", f"ResNet-{depth} training batch {batch}", batch / train["ours"],
                batch / train["reference"], "img/s", reference_name="float32",
                note="ours = mixed_bfloat16")]


_DEEP_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    import keras
    from keras_resnet import CifarResNet
    depth, batch = int(sys.argv[1]), int(sys.argv[2])
    start = time.perf_counter()
    model = CifarResNet(depth)
    build = time.perf_counter() - start
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 1, (batch, 32, 32, 3)).astype("float32")
    y = np.arange(batch) % 10
    start = time.perf_counter()
    model.train_on_batch(x, y)
    first = time.perf_counter() - start
    steps = []
    for _ in range(3):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        steps.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"build": build, "first_step": first, "step": sorted(steps)[1],
                      "peak_rss": peak}))
""")


def bench_resnet1202(config, state):
    """Very deep build and training step, in a fresh process so peak memory is its own."""
    depth = 20 if config.quick else 1202
    result = subprocess.run([sys.executable, "-c", _DEEP_CHILD, str(depth), "32"],
                            capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode:
        raise RuntimeError(f"ResNet-{depth} benchmark failed:\n{result.stderr[-2000:]}")
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    name = f"resnet{depth}"
    return [
        Row(name, "build", numbers["build"], 10.0, "s", higher_is_better=False,
            reference_name="target 10 s"),
        Row(name, "training step batch 32", numbers["step"], numbers["first_step"], "s",
            higher_is_better=False, reference_name="first step (tracing)"),
        Row(name, "peak resident memory", numbers["peak_rss"] / 2 ** 30, 8.0, "GiB",
            higher_is_better=False, reference_name="target 8 GiB"),
    ]


def bench_serving(config, state):
    """The exported SavedModel against the in-process Keras call (compiled with tf.function)."""
    import tensorflow as tf

    from keras_resnet import CifarResNet, export_saved_model

    model = CifarResNet(20)
    rows = []
    with tempfile.TemporaryDirectory() as base:
        paths = {dtype: export_saved_model(model, base, name=f"bench_{dtype}", input_dtype=dtype,
                                           warmup_batch_sizes=(1,))
                 for dtype in ("uint8", "float32")}
        loaded = {dtype: tf.saved_model.load(path).signatures["serving_default"]
                  for dtype, path in paths.items()}
        repeats = 20 if config.quick else 300
        for batch in (1, 32):
            pixels = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3))
            as_uint8 = tf.constant(pixels.astype("uint8"))
            as_float = tf.constant(pixels.astype("float32"))
            keras_call = inference_step(model, pixels.astype("float32"))
            calls = {
                "saved uint8": lambda: loaded["uint8"](images=as_uint8)["probabilities"].numpy(),
                "saved float32": lambda: loaded["float32"](images=as_float)["probabilities"]
                .numpy(),
                "keras": keras_call,
            }
            samples = {name: [] for name in calls}
            for fn in calls.values():
                for _ in range(5):
                    fn()
            for _ in range(repeats):
                for name, fn in calls.items():
                    start = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - start)
            p50 = {name: float(np.percentile(v, 50)) for name, v in samples.items()}
            p99 = {name: float(np.percentile(v, 99)) for name, v in samples.items()}
            if batch == 1:
                rows.append(Row("serving", "batch 1 latency p50", p50["saved uint8"] * 1e3,
                                p50["keras"] * 1e3, "ms", higher_is_better=False,
                                reference_name="in-process Keras"))
                rows.append(Row("serving", "batch 1 latency p99", p99["saved uint8"] * 1e3,
                                p99["keras"] * 1e3, "ms", higher_is_better=False,
                                reference_name="in-process Keras"))
            else:
                rows.append(Row("serving", "batch 32 throughput", 32 / p50["saved uint8"],
                                32 / p50["keras"], "img/s", reference_name="in-process Keras"))
                rows.append(Row("serving", "batch 32 uint8 vs float32 input",
                                32 / p50["saved uint8"], 32 / p50["saved float32"], "img/s",
                                reference_name="float32 input"))
    return rows


def bench_accuracy(config, state):
    """Test accuracy on digits after the same epochs, float32 against mixed_bfloat16."""
    from keras_resnet import training

    epochs = 1 if config.quick else None
    accuracy = {}
    seconds = {}
    with tempfile.TemporaryDirectory() as out:
        for precision in ("float32", "mixed_bfloat16"):
            kwargs = {"epochs": epochs} if epochs else {}
            start = time.perf_counter()
            result = training.train(data="digits", precision=precision, out_dir=out,
                                    export_dir=None, name=f"bench_{precision}", verbose=0,
                                    **kwargs)
            seconds[precision] = time.perf_counter() - start
            accuracy[precision] = result.metrics["test_accuracy"]
    return [Row("accuracy", "digits test accuracy (%)", 100 * accuracy["mixed_bfloat16"],
                100 * accuracy["float32"], "%", reference_name="float32",
                note="ours = mixed_bfloat16"),
            Row("accuracy", "digits training run", seconds["mixed_bfloat16"],
                seconds["float32"], "s", higher_is_better=False, reference_name="float32",
                note="ours = mixed_bfloat16")]


RUNNERS = {
    "roofline": bench_roofline, "resnet50": bench_resnet50, "precision": bench_precision,
    "cifar56": bench_cifar56, "resnet1202": bench_resnet1202, "serving": bench_serving,
    "accuracy": bench_accuracy,
}


# ----------------------------------------------------------------------------- reporting


def format_table(rows):
    """Returns the results as a Markdown table whose last column is the ratio."""
    lines = ["| benchmark | metric | ours | reference | unit | ratio |",
             "|---|---|---:|---:|---|---:|"]
    for row in rows:
        reference = f"{row.reference:.4g} ({row.reference_name})" if row.reference_name \
            else f"{row.reference:.4g}"
        metric = f"{row.metric} [{row.note}]" if row.note else row.metric
        lines.append(f"| {row.benchmark} | {metric} | {row.ours:.4g} | {reference} | "
                     f"{row.unit} | {row.ratio:.2f}x |")
    return "\n".join(lines)


def machine():
    """A one-line description of the machine the numbers were measured on."""
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, TensorFlow {tf.__version__}"


def run(names=None, *, quick=False, json_path=None, stream=sys.stdout):
    """Runs benchmarks and prints the table.

    Args:
        names: benchmarks to run (default: all of ``BENCHMARKS``).
        quick: small sizes and fewer repeats (every benchmark still runs).
        json_path: also write the rows, the machine and the mode to this JSON file.
        stream: where to print.

    Returns:
        The list of ``Row``.

    Raises:
        ValueError: for an unknown benchmark name.
    """
    names = list(names or BENCHMARKS)
    unknown = [n for n in names if n not in RUNNERS]
    if unknown:
        raise ValueError(f"unknown benchmark {unknown[0]!r}; valid names: {', '.join(BENCHMARKS)}")
    if json_path is not None and os.path.isdir(json_path):
        raise ValueError(f"json_path must be a file path; {json_path!r} is a directory")
    config = Config.make(quick)
    state = {}
    rows = []
    if "resnet50" in names and "roofline" not in names:
        names.insert(0, "roofline")
    for name in names:
        start = time.perf_counter()
        new = RUNNERS[name](config, state)
        rows.extend(new)
        print(f"[{name}: {time.perf_counter() - start:.0f} s]", file=stream, flush=True)
        print(format_table(new).split("\n", 2)[2], file=stream, flush=True)
    print(f"\nMeasured on {machine()} ({'quick' if quick else 'full'} mode):\n", file=stream)
    print(format_table(rows), file=stream, flush=True)
    if json_path:
        payload = {"machine": machine(), "quick": quick,
                   "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                   "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows]}
        with open(json_path, "w") as f:
            json.dump(payload, f, indent=2)
    return rows
