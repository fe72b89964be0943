"""What ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`` (set by ``keras-resnet serve``) gains, per batch size.

TensorFlow reads the variable once per process, so the two sides cannot share one: each side is
a fresh child process, the children alternate (on, off, on, off, ...) and each side keeps its
median. A child times ResNet-50 224x224 inference as export serves it (``fold_batch_norm(...,
weights_in_compute_dtype=True)`` inside one ``tf.function``), float32 and mixed_bfloat16, at
batch 1 and 32.

    .venv/bin/python benchmarks/frozen_weights.py --json benchmarks/results-frozen-weights.json
    .venv/bin/python benchmarks/frozen_weights.py --quick      # 64x64, one round
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time

from benchlib import Row, format_table

PRECISIONS = ("float32", "mixed_bfloat16")
BATCHES = (1, 32)


def child(size, seconds):
    """Prints ``{"precision/batch": images per second}`` as one JSON line."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_resnet import ResNet50, fold_batch_norm

    result = {}
    for precision in PRECISIONS:
        keras.config.set_dtype_policy(precision)
        try:
            model = fold_batch_norm(ResNet50(input_shape=(size, size, 3)),
                                    weights_in_compute_dtype=True)
        finally:
            keras.config.set_dtype_policy("float32")
        call = tf.function(lambda x, model=model: model(x, training=False))
        for batch in BATCHES:
            images = tf.constant(np.random.default_rng(0).uniform(
                0, 1, (batch, size, size, 3)).astype("float32"))
            call(images).numpy()
            call(images).numpy()
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds or calls < 2:
                call(images).numpy()
                calls += 1
            result[f"{precision}/{batch}"] = batch * calls / (time.perf_counter() - started)
    print(json.dumps(result), flush=True)


def run(quick=False, rounds=None):
    """Alternates frozen and default child processes; returns the rows."""
    size, seconds = (64, 0.5) if quick else (224, 4.0)
    rounds = rounds or (1 if quick else 3)
    samples = {"on": [], "off": []}
    script = os.path.abspath(__file__)
    for _ in range(rounds):
        for side in ("on", "off"):
            env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"}
            env.update(TF_CPP_MIN_LOG_LEVEL="3", **({"TF_ONEDNN_ASSUME_FROZEN_WEIGHTS": "1"}
                                                    if side == "on" else {}))
            out = subprocess.run([sys.executable, script, "--child", str(size), str(seconds)],
                                 capture_output=True, text=True, check=True, env=env)
            samples[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for key in samples["on"][0]:
        precision, batch = key.split("/")
        on = statistics.median(s[key] for s in samples["on"])
        off = statistics.median(s[key] for s in samples["off"])
        rows.append(Row("frozen-weights", f"ResNet-50 {precision} inference batch {batch}, "
                        f"{size}x{size}", on, off, "img/s", reference_name="weights reordered "
                        "per call", note="ours = TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1, BN folded"))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64x64 images, one round")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows here")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(int(args.child[0]), float(args.child[1]))
        return 0
    from benchlib import machine

    rows = run(quick=args.quick)
    print(format_table(rows))
    where = machine()
    print(f"\nMeasured on {where}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"machine": where, "quick": args.quick,
                       "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows]},
                      handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
