"""Where a very deep model's build time goes, from cProfile.

Builds CIFAR ResNet-<depth> under cProfile and splits the time two ways: by the package whose
functions spent it (TensorFlow, Keras, keras_resnet, Python itself: disjoint, adds up to the
total), and by what it was spent inside (TensorFlow creating resource variables and, inside that,
the initializers drawing the initial values; Keras' attribute tracking). It explains the
`keras-resnet bench resnet1202` build row. cProfile slows Python down, so the total is longer
than the benchmark's; the shares are what matters.

    .venv/bin/python benchmarks/profile_build.py            # ResNet-1202 (about a minute)
    .venv/bin/python benchmarks/profile_build.py --depth 110
"""

import argparse
import cProfile
import os
import pstats
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_resnet import CifarResNet  # noqa: E402

# (label, file suffix, function name): cumulative time of these functions (they overlap)
_PARTS = (
    ("TensorFlow resource variable creation", "ops/resource_variable_ops.py", "_init_from_args"),
    ("  of which initializers drawing values", "backend/tensorflow/core.py", "<lambda>"),
    ("Keras attribute tracking (Layer.__setattr__)", "keras/src/layers/layer.py", "__setattr__"),
)


def _package(path, function):
    """Which package a profiled function's own time belongs to."""
    if path == "~":  # a C function: "<built-in method tensorflow.python._pywrap_tfe.X>"
        module = function.split("method ", 1)[-1].split(".", 1)[0]
    elif "/site-packages/" in path:
        module = path.split("/site-packages/", 1)[1].split("/", 1)[0]
    else:
        module = "keras_resnet" if "/keras_resnet/" in path else ""
    if module in ("keras_resnet", "tensorflow", "keras"):
        return module
    return "Python itself (built-ins, standard library)"


def _cumulative(stats, suffix, function):
    return sum(ct for (path, _, name), (_, _, _, ct, _) in stats.stats.items()
               if path.endswith(suffix) and name == function)


def _per_call(fn, n=200):
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=1202, help="CIFAR ResNet depth, 6n+2")
    args = parser.parse_args(argv)
    CifarResNet(8)  # imports and first-call costs out of the way
    start = time.perf_counter()
    CifarResNet(args.depth)
    plain = time.perf_counter() - start
    profiler = cProfile.Profile()
    profiler.enable()
    model = CifarResNet(args.depth)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    print(f"CIFAR ResNet-{args.depth}: {len(model.weights)} variables, build {plain:.1f} s "
          f"({total:.1f} s under cProfile)\n")
    own = {}
    for (path, _, function), (_, _, tottime, _, _) in stats.stats.items():
        package = _package(path, function)
        own[package] = own.get(package, 0.0) + tottime
    print("| own time of the functions in | seconds (cProfile) | share |")
    print("|---|---:|---:|")
    for package, seconds in sorted(own.items(), key=lambda item: -item[1]):
        print(f"| {package} | {seconds:.1f} | {100 * seconds / total:.0f}% |")
    print("\n| spent inside (cumulative, overlapping) | seconds (cProfile) | share |")
    print("|---|---:|---:|")
    for label, suffix, function in _PARTS:
        seconds = _cumulative(stats, suffix, function)
        print(f"| {label} | {seconds:.1f} | {100 * seconds / total:.0f}% |")
    print("\nPer-variable costs measured alone on this machine (no profiler):\n")
    print("| operation | microseconds |")
    print("|---|---:|")
    print(f"| tf.Variable(tf.zeros([64])) | "
          f"{1e6 * _per_call(lambda: tf.Variable(tf.zeros([64]))):.0f} |")
    print(f"| keras.Variable(initializer='zeros', shape=(64,)) | "
          f"{1e6 * _per_call(lambda: keras.Variable(initializer='zeros', shape=(64,))):.0f} |")
    print(f"| keras.Variable(initializer='he_normal', shape=(3, 3, 64, 64)) | "
          f"{1e6 * _per_call(lambda: keras.Variable(initializer='he_normal', shape=(3, 3, 64, 64)), 50):.0f} |")


if __name__ == "__main__":
    main()
