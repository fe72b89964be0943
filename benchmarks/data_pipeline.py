"""The streamed input pipeline, measured: memory of one epoch at two data set sizes, images/s of
the training pipeline per core, and `prepare`'s speed and shard size.

    PYTHONPATH=. .venv/bin/python benchmarks/data_pipeline.py --small 1000 --large 10000

Generates two folders of 224x224 JPEGs (smooth colour fields plus noise, ~photo-sized files),
prepares each into TFRecord shards, then runs one training epoch (read + decode + random-resized
crop + flip + batch at 224x224) over each in a fresh process and reports that process's peak RSS.
Prints one JSON object. Each measurement runs in its own process so peak RSS belongs to it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def make_folder(root, count, classes=10, size=224, seed=0):
    """``count`` JPEGs of ``size`` x ``size`` in ``classes`` class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size, dtype=np.float32)
    for i in range(count):
        folder = os.path.join(root, f"class_{i % classes}")
        os.makedirs(folder, exist_ok=True)
        base = rng.uniform(0, 255, 3) * ramp[:, None, None] + rng.uniform(0, 255, 3) * \
            ramp[None, :, None]
        pixels = np.clip(base / 2 + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:06d}.jpg"), quality=90)


def folder_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def child(path, batch_size, image_size):
    """One training epoch over ``path``; prints images/s and peak RSS (MiB) as JSON.

    A folder streams (``cache_mb=0``: its bytes are not kept) and is not decoded up front.
    """
    import tensorflow as tf  # noqa: F401 (start-up memory counts as the baseline)

    from keras_resnet.data import load_dataset

    ds = load_dataset(path, batch_size=batch_size, image_size=image_size, cache_mb=0,
                      check_images=False, test_split=0.1, validation_split=0.0)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    iterator = iter(ds.train)
    next(iterator)  # warm-up: threads started, first files open
    start, images = time.perf_counter(), 0
    for x, _ in iterator:
        images += int(x.shape[0])
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": images, "seconds": seconds, "images_per_s": images / seconds,
                      "peak_rss_mib": peak, "rss_after_load_mib": baseline,
                      "train_size": ds.train_size}))


def run_child(path, batch_size, image_size):
    output = subprocess.run(
        [sys.executable, __file__, "--child", path, "--batch-size", str(batch_size),
         "--image-size", str(image_size)], check=True, capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout
    return json.loads(output.strip().splitlines()[-1])


def measure(count, workdir, args):
    from keras_resnet.data import shards

    source = os.path.join(workdir, f"folder-{count}")
    start = time.perf_counter()
    make_folder(source, count)
    generated = time.perf_counter() - start
    report = shards.prepare(source, os.path.join(workdir, f"shards-{count}"),
                            shards=max(2, count // 500), workers=args.workers)
    epoch = run_child(report.dest, args.batch_size, args.image_size)
    folder_epoch = run_child(source, args.batch_size, args.image_size)
    return {"images": count, "generate_seconds": generated,
            "prepare_images_per_s": count / report.seconds,
            "source_mib": folder_bytes(source) / 2**20, "shard_mib": report.shard_bytes / 2**20,
            "epoch": epoch, "folder_epoch": folder_epoch}


def resnet50_step(batch_size, image_size, steps):
    """Images/s of ResNet-50 training steps (SGD, float32) on random data, after one warm-up."""
    import keras

    from keras_resnet import ResNet50

    model = ResNet50(input_shape=(image_size, image_size, 3), classes=10)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    y = rng.integers(0, 10, batch_size)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return batch_size * steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=2, help="prepare's threads")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    parser.add_argument("--resnet50-steps", type=int, default=3,
                        help="ResNet-50 training steps timed (0: skip)")
    parser.add_argument("--step-batch-size", type=int, default=16,
                        help="batch of the ResNet-50 steps (default 16: CPU memory)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child, args.batch_size, args.image_size)
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        small, large = (measure(n, workdir, args) for n in (args.small, args.large))
    step = resnet50_step(args.step_batch_size, args.image_size, args.resnet50_steps) \
        if args.resnet50_steps else None
    print(json.dumps({
        "cores": cores, "small": small, "large": large, "resnet50_step_images_per_s": step,
        "pipeline_to_step_ratio": step and large["epoch"]["images_per_s"] / step,
        "folder_peak_rss_difference_mib": large["folder_epoch"]["peak_rss_mib"]
        - small["folder_epoch"]["peak_rss_mib"],
        "peak_rss_difference_mib": large["epoch"]["peak_rss_mib"]
        - small["epoch"]["peak_rss_mib"],
        "pipeline_images_per_s_per_core": large["epoch"]["images_per_s"] / cores,
    }, indent=1))


if __name__ == "__main__":
    main()
