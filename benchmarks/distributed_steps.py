"""Training steps/s of a tiny CIFAR ResNet-8 (8x8x1 images, global batch 64) on one device,
on 2 logical CPU replicas (MirroredStrategy, Keras ``fit``) and on 2 worker processes on
127.0.0.1 (MultiWorkerMirroredStrategy, ``keras_resnet.distribute.fit``).

On one CPU these numbers only prove the plumbing: logical CPU devices and loopback workers
share the same cores, so more replicas cannot be faster; on GPUs or machines they would be.

    .venv/bin/python benchmarks/distributed_steps.py            # all three, ~1-2 minutes
    .venv/bin/python benchmarks/distributed_steps.py --steps 5  # quicker
"""

import argparse
import json
import os
import subprocess
import sys

import loopback  # benchmarks/ is the script's directory, first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def measure(strategy_name, replicas, steps, batch):
    """Steps/s of the second epoch (the first one traces and warms up)."""
    import tensorflow as tf

    if strategy_name != "multi-worker" and replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    from keras_resnet.distribute import fit, make_strategy

    devices = None if strategy_name == "multi-worker" else [
        f"/cpu:{i}" for i in range(replicas)]
    strategy, description = make_strategy(strategy_name, devices=devices)
    import numpy as np

    from keras_resnet.modeling.models import CifarResNet
    from keras_resnet.modeling.recipe import compile_model

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch * 4, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 10, batch * 4).astype("int32")

    with strategy.scope():
        model = compile_model(CifarResNet(8, input_shape=(8, 8, 1), classes=10),
                              learning_rate=0.01, jit_compile=False)
    timer = loopback.epoch_timer()
    if strategy_name == "multi-worker":
        def train_fn(context):
            data = tf.data.Dataset.from_tensor_slices((images, labels))
            data = data.shard(context.num_input_pipelines, context.input_pipeline_id)
            return data.batch(context.get_per_replica_batch_size(batch))

        fit(model, strategy, train_fn, epochs=2, steps_per_epoch=steps, callbacks=[timer],
            verbose=0)
    else:
        data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).repeat()
        model.fit(data, epochs=2, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return {"setup": f"{strategy_name} x{description['replicas']}",
            "workers": description["workers"], "is_chief": description["is_chief"],
            "steps_per_second": round(steps / timer.seconds, 2), "global_batch": batch}


def run_workers(steps, batch, workers=2):
    return loopback.run_workers(__file__, ["multi-worker", "--steps", str(steps), "--batch",
                                           str(batch)], workers=workers, timeout=600)


def run_child(setup, steps, batch):
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    out = subprocess.run([sys.executable, __file__, "--child", *setup, "--steps", str(steps),
                          "--batch", str(batch)], env=env, capture_output=True, text=True,
                         check=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--child", nargs="+")
    args = parser.parse_args()
    if args.child:
        replicas = int(args.child[1]) if len(args.child) > 1 else 2
        print(json.dumps(measure(args.child[0], replicas, args.steps, args.batch)))
        return
    rows = [run_child(["one-device", "1"], args.steps, args.batch),
            run_child(["mirrored", "2"], args.steps, args.batch),
            run_workers(args.steps, args.batch)]
    for row in rows:
        print(f"{row['setup']:<16} workers={row['workers']}  {row['steps_per_second']:>7.2f} "
              f"steps/s  (global batch {row['global_batch']})")


if __name__ == "__main__":
    main()
