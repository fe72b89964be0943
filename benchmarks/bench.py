"""Benchmarks measured side by side: ours against the reference in the same process.

A development tool, not part of the installed package: run it from a source checkout.

    python benchmarks/bench.py --quick                 # every benchmark, small sizes
    python benchmarks/bench.py resnet50 --json out.json

How the timing works is in ``benchlib.py``; the README's "Benchmarks" section has the measured
table and what it means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchlib import (Config, Row, format_table, inference_step, interleaved, machine,
                      train_step)
from benchlib import images as make_images
from keras_resnet.constants import BENCHMARKS  # one list for `keras-resnet bench` and here

HERE = os.path.dirname(os.path.abspath(__file__))


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
        best = max(best, flops / interleaved({"gemm": fn}, config)["gemm"])
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
    builds = interleaved({
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
        images = make_images(batch, size)
        # The GEMM runs interleaved too, so the roofline sees the same machine state.
        seconds = interleaved({"ours": inference_step(ours, images),
                                "reference": inference_step(reference, images),
                                "gemm": gemm}, config)
        state["gemm_flops"] = max(state.get("gemm_flops", 0.0), gemm_ops / seconds["gemm"])
        rows.append(Row("resnet50", f"inference batch {batch}", batch / seconds["ours"],
                        batch / seconds["reference"], "img/s", reference_name=reference_name))
        best = max(best, batch / seconds["ours"])
    # BN folding: the same outputs with the BN statistics frozen into the kernels.
    folded = fold_batch_norm(ours)
    images = make_images(4 if config.quick else 32, size)
    seconds = interleaved({"ours": inference_step(folded, images),
                            "reference": inference_step(ours, images)}, config)
    rows.append(Row("resnet50", f"inference batch {len(images)}, BN folded",
                    len(images) / seconds["ours"], len(images) / seconds["reference"], "img/s",
                    reference_name="ours, BN not folded"))
    best = max(best, len(images) / seconds["ours"])
    batch = 4 if config.quick else 32
    images, labels = make_images(batch, size), np.arange(batch) % 1000
    seconds = interleaved({"ours": train_step(ours, images, labels),
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
    # Full size trains at batch 8: where the CPU emulates bfloat16, a batch-32 step takes too
    # long (the README's Benchmarks section has the measured times).
    size, batch, train_batch = (64, 4, 4) if config.quick else (224, 32, 8)
    fp32, bf16 = _resnet50_pair((size, size, 3))
    images = make_images(batch, size)
    infer = interleaved({"ours": inference_step(bf16, images),
                          "reference": inference_step(fp32, images)}, config)
    images, labels = make_images(train_batch, size), np.arange(train_batch) % 1000
    train = interleaved({"ours": train_step(bf16, images, labels),
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


def _resnet50_pair(shape):
    """Our ResNet-50 in float32 and in mixed_bfloat16, with the same weights."""
    import keras

    from keras_resnet import ResNet50

    keras.config.set_dtype_policy("float32")
    fp32 = ResNet50(input_shape=shape)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        bf16 = ResNet50(input_shape=shape)
    finally:
        keras.config.set_dtype_policy("float32")
    bf16.set_weights(fp32.get_weights())
    return fp32, bf16


def bench_bf16(config, state):
    """mixed_bfloat16 against float32: training at batch 32, inference with BN folded.

    ``precision`` trains at batch 8. At inference TensorFlow's remapper folds each
    FusedBatchNormV3 into the convolution before it only in float32 (not bfloat16), so the
    inference rows run the models as ``export_saved_model`` serves them: through
    ``fold_batch_norm(..., weights_in_compute_dtype=True)`` (bfloat16 weights: no weight casts
    per call). The third row is what that gains over the bfloat16 model itself.
    """
    from keras_resnet import fold_batch_norm

    size, batch = (64, 4) if config.quick else (224, 32)
    fp32, bf16 = _resnet50_pair((size, size, 3))
    images, labels = make_images(batch, size), np.arange(batch) % 1000
    served = fold_batch_norm(bf16, weights_in_compute_dtype=True)  # what export serves
    infer = interleaved({"ours": inference_step(served, images),
                         "reference": inference_step(fold_batch_norm(fp32), images),
                         "unfolded": inference_step(bf16, images)}, config)
    train = interleaved({"ours": train_step(bf16, images, labels),
                          "reference": train_step(fp32, images, labels)},
                         Config(repeats=min(config.repeats, 3), warmup=1))
    return [Row("bf16", f"ResNet-50 training batch {batch}", batch / train["ours"],
                batch / train["reference"], "img/s", reference_name="float32",
                note="ours = mixed_bfloat16"),
            Row("bf16", f"ResNet-50 inference batch {batch}", batch / infer["ours"],
                batch / infer["reference"], "img/s", reference_name="float32",
                note="ours = mixed_bfloat16; both BN folded"),
            Row("bf16", f"ResNet-50 inference batch {batch}, bfloat16", batch / infer["ours"],
                batch / infer["unfolded"], "img/s", reference_name="BN not folded",
                note="ours = BN folded")]


def bench_torchvision(config, state):
    """Ours against torchvision's ResNet-50: float32/bfloat16, NCHW/channels-last, both modes."""
    import torch_peer

    reason = torch_peer.unavailable()
    if reason:
        return [Row("torchvision", "ResNet-50", 0.0, 0.0, "img/s", reference_name="torchvision",
                    note=reason)]
    from keras_resnet import fold_batch_norm

    size, batch = (64, 4) if config.quick else (224, 32)
    fp32, bf16 = _resnet50_pair((size, size, 3))
    images, labels = make_images(batch, size), np.arange(batch) % 1000
    rows = []
    for train in (False, True):
        mode = "training" if train else "inference"
        # Inference runs the models as export_saved_model serves them (BN folded).
        models = (fp32, bf16) if train else (
            fold_batch_norm(fp32), fold_batch_norm(bf16, weights_in_compute_dtype=True))
        for precision, model in zip(("float32", "bfloat16"), models):
            ours = train_step(model, images, labels) if train else inference_step(model, images)
            functions = {"ours": ours}
            for layout in torch_peer.LAYOUTS:
                functions[layout] = torch_peer.step(precision, layout, batch, size, train)
            times = interleaved(functions, config)
            rows.extend(Row("torchvision", f"ResNet-50 {mode} batch {batch} {precision}",
                            batch / times["ours"], batch / times[layout], "img/s",
                            reference_name=f"torchvision {layout}",
                            note="" if train else "ours BN folded")
                        for layout in torch_peer.LAYOUTS)
    return rows


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
    images, labels = make_images(batch, 32), np.arange(batch) % 10
    train = interleaved({"ours": train_step(bf16, images, labels),
                          "reference": train_step(fp32, images, labels)}, config)
    return [Row("cifar56", f"ResNet-{depth} training batch {batch}", batch / train["ours"],
                batch / train["reference"], "img/s", reference_name="float32",
                note="ours = mixed_bfloat16")]


def _deep_step(depth, batch, size=32, loop=False, recompute=False):
    """Build, first-step and step times of CIFAR ResNet-``depth`` in a fresh process."""
    argv = [str(depth), str(batch), str(size), *(["--loop"] if loop else []),
            *(["--recompute"] if recompute else [])]
    result = subprocess.run([sys.executable, os.path.join(HERE, "deep_step.py"), *argv],
                            capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode:
        raise RuntimeError(f"ResNet-{depth} benchmark failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_resnet1202(config, state):
    """Very deep build and training step, in a fresh process so peak memory is its own."""
    depth = 20 if config.quick else 1202
    numbers = _deep_step(depth, 32)
    name = f"resnet{depth}"
    return [
        Row(name, "build", numbers["build"], 10.0, "s", higher_is_better=False,
            reference_name="target 10 s"),
        Row(name, "training step batch 32", numbers["step"], numbers["first_step"], "s",
            higher_is_better=False, reference_name="first step (tracing)"),
        Row(name, "peak resident memory", numbers["peak_rss"] / 2 ** 30, 8.0, "GiB",
            higher_is_better=False, reference_name="target 8 GiB"),
    ]


def bench_loop(config, state):
    """loop_stages=True: build and first step of a deep over a shallow net, and against unrolled.

    8x8 images at batch 2, so the step's arithmetic does not hide the fixed costs that grow with
    the depth of the graph; the later steps also at CIFAR's 32x32, batch 32, on ResNet-110, and
    the trade of ``recompute_grad=True`` (memory against step time) there. Each model is measured
    in its own fresh process.
    """
    shallow, deep = (20, 56) if config.quick else (110, 1202)
    looped = {depth: _deep_step(depth, 2, 8, loop=True) for depth in (shallow, deep)}
    unrolled = {depth: _deep_step(depth, 2, 8) for depth in (shallow, deep)}
    rows = []
    for key, label in (("build", "build"), ("first_step", "first training step")):
        rows.append(Row("loop", f"ResNet-{deep} over ResNet-{shallow}, {label}, looped",
                        looped[deep][key], looped[shallow][key], "s", higher_is_better=False,
                        reference_name=f"ResNet-{shallow}",
                        note="ratio = shallow / deep; target > 0.67 (deep < 1.5x shallow)"))
        rows.append(Row("loop", f"ResNet-{deep} {label}, looped vs unrolled", looped[deep][key],
                        unrolled[deep][key], "s", higher_is_better=False,
                        reference_name="unrolled"))
    rows.append(Row("loop", f"ResNet-{deep} later steps, looped vs unrolled",
                    looped[deep]["step"], unrolled[deep]["step"], "s", higher_is_better=False,
                    reference_name="unrolled", note="goal: ratio >= 0.91 (no slower than 1.1x)"))
    rows.append(Row("loop", f"ResNet-{deep} peak resident memory, looped vs unrolled",
                    looped[deep]["peak_rss"] / 2 ** 30, unrolled[deep]["peak_rss"] / 2 ** 30,
                    "GiB", higher_is_better=False, reference_name="unrolled"))
    return rows + _loop_at_cifar_size(shallow)


def _loop_at_cifar_size(depth):
    """Later steps at 32x32, batch 32: looped vs unrolled, and with recompute_grad=True."""
    looped, unrolled = _deep_step(depth, 32, 32, loop=True), _deep_step(depth, 32, 32)
    recomputed = _deep_step(depth, 32, 32, loop=True, recompute=True)
    name = f"ResNet-{depth} 32x32 batch 32"
    return [
        Row("loop", f"{name} later steps, looped vs unrolled", looped["step"], unrolled["step"],
            "s", higher_is_better=False, reference_name="unrolled",
            note="goal: ratio >= 0.91 (no slower than 1.1x)"),
        Row("loop", f"{name} later steps, recompute_grad vs looped", recomputed["step"],
            looped["step"], "s", higher_is_better=False, reference_name="looped"),
        Row("loop", f"{name} peak resident memory, recompute_grad vs looped",
            recomputed["peak_rss"] / 2 ** 30, looped["peak_rss"] / 2 ** 30, "GiB",
            higher_is_better=False, reference_name="looped"),
        Row("loop", f"{name} peak resident memory, looped vs unrolled",
            looped["peak_rss"] / 2 ** 30, unrolled["peak_rss"] / 2 ** 30, "GiB",
            higher_is_better=False, reference_name="unrolled"),
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
    "accuracy": bench_accuracy, "loop": bench_loop, "bf16": bench_bf16,
    "torchvision": bench_torchvision,
}


# ----------------------------------------------------------------------------- running


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
    if "torchvision" in names:
        import torch_peer

        torch_peer.unavailable()  # torch must be imported before TensorFlow (see there)
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


def main(argv=None):
    """Parses the command line, runs the benchmarks; returns the exit status (2: bad input)."""
    parser = argparse.ArgumentParser(
        prog="bench.py", description="Runs each benchmark with warm-up and interleaved repeats "
        "and prints a table whose last column is the ratio (higher is better).")
    parser.add_argument("benchmarks", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and few repeats; every benchmark still runs")
    parser.add_argument("--json", default=None, metavar="PATH",
                        help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    try:
        run(args.benchmarks or None, quick=args.quick, json_path=args.json)
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
