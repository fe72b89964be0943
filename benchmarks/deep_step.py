"""One very deep CIFAR ResNet's build, first step and later steps, measured in its own process.

Run by ``bench.py resnet1202`` and ``bench.py loop`` in a fresh process, so the peak resident
memory is this model's alone; prints one JSON line.

    python benchmarks/deep_step.py DEPTH BATCH [SIZE] [--loop] [--recompute]
"""

import json
import os
import resource
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_resnet import CifarResNet  # noqa: E402


def _numbers(argv):
    """DEPTH, BATCH and SIZE (default 32) from the command line."""
    numbers = [int(value) for value in argv if not value.startswith("--")]
    return (*numbers[:2], numbers[2] if len(numbers) > 2 else 32)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    loop = "--loop" in argv
    options = {"recompute_grad": True} if "--recompute" in argv else {}
    depth, batch, size = _numbers(argv)
    start = time.perf_counter()
    model = CifarResNet(depth, input_shape=(size, size, 3), loop_stages=loop, **options)
    build = time.perf_counter() - start
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype("float32")
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


if __name__ == "__main__":
    main()
