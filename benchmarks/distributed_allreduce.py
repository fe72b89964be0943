"""Multi-worker cost on loopback: training steps/s of 1 and 2 workers
(``MultiWorkerMirroredStrategy``, ``keras_resnet.distribute.fit``) for CIFAR ResNet-56 and
ResNet-50 at a small input, and the time of one all-reduce of ResNet-50's 25.6 M float32
gradients between 2 workers, as seconds and as a fraction of a ResNet-50 step.

Every worker is a process on 127.0.0.1 with its own ``TF_CONFIG``; the per-worker batch is
fixed, so 2 workers train twice the global batch per step. On one machine the workers share
its cores, so the figures show what the all-reduce costs and that the plumbing works, not the
speed-up of real machines (where each worker has its own GPUs, and a 25.6 M x 4-byte = 102 MB
all-reduce must cross the network every step).

    .venv/bin/python benchmarks/distributed_allreduce.py                 # ~5 minutes on 2 cores
    .venv/bin/python benchmarks/distributed_allreduce.py --steps 3 --json out.json
"""

import argparse
import json
import os
import time

import loopback  # benchmarks/ is the script's directory, first on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = {  # name: (builder arguments, input shape, per-worker batch)
    "cifar-resnet56": ({"name": "cifar_resnet56"}, (32, 32, 3), 32),
    "resnet50": ({"name": "resnet50"}, (64, 64, 3), 8),
}


def _build(model):
    from keras_resnet.modeling.models import CifarResNet, ResNet

    _, shape, _ = MODELS[model]
    if model == "cifar-resnet56":
        return CifarResNet(56, input_shape=shape, classes=10)
    return ResNet(50, input_shape=shape, classes=1000)


def steps_per_second(strategy, workers, model_name, steps):
    """Steps/s of the second epoch (the first traces) of ``distribute.fit``."""
    import numpy as np
    import tensorflow as tf

    from keras_resnet.distribute import fit
    from keras_resnet.modeling.recipe import compile_model

    _, shape, batch = MODELS[model_name]
    classes = 10 if model_name == "cifar-resnet56" else 1000
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch * workers * 2, *shape)).astype("float32")
    labels = rng.integers(0, classes, batch * workers * 2).astype("int32")

    with strategy.scope():
        model = compile_model(_build(model_name), learning_rate=0.01, jit_compile=False)

    def train_fn(context):
        data = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
        data = data.shard(context.num_input_pipelines, context.input_pipeline_id)
        return data.batch(context.get_per_replica_batch_size(batch * workers))

    timer = loopback.epoch_timer()
    fit(model, strategy, train_fn, epochs=2, steps_per_epoch=steps, callbacks=[timer],
        verbose=0)
    return {"steps_per_second": round(steps / timer.seconds, 3),
            "step_seconds": round(timer.seconds / steps, 4),
            "global_batch": batch * workers, "params": int(model.count_params())}


def allreduce_seconds(strategy, repeats):
    """Mean seconds of one SUM all-reduce of tensors shaped like ResNet-50's trainable
    weights (25.6 M float32), inside ``strategy.run``; the first call traces and warms up."""
    import tensorflow as tf

    shapes = [tuple(w.shape) for w in _build("resnet50").trainable_weights]

    @tf.function
    def step():
        def replica_fn():
            gradients = [tf.ones(shape) for shape in shapes]
            context = tf.distribute.get_replica_context()
            reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
            return tf.add_n([tf.reduce_sum(r[..., :1]) for r in reduced])

        return strategy.run(replica_fn)

    step()
    started = time.perf_counter()
    for _ in range(repeats):
        total = strategy.experimental_local_results(step())[0]
    seconds = (time.perf_counter() - started) / repeats
    return {"allreduce_seconds": round(seconds, 4),
            "allreduce_floats": sum(int(tf.TensorShape(s).num_elements()) for s in shapes),
            "check_sum": float(total)}


def child(args):
    from keras_resnet.distribute import make_strategy

    strategy, description = make_strategy("multi-worker")
    workers = description["workers"]
    result = {"workers": workers, "is_chief": description["is_chief"]}
    for model in args.models:
        result[model] = steps_per_second(strategy, workers, model, args.steps)
    if workers > 1:
        result.update(allreduce_seconds(strategy, args.repeats))
    print(json.dumps(result))


def run_workers(workers, args):
    return loopback.run_workers(__file__, ["--steps", str(args.steps), "--repeats",
                                           str(args.repeats), "--models", *args.models],
                                workers=workers, timeout=1800)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="all-reduces timed")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS),
                        default=["cifar-resnet56", "resnet50"])
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    one, two = run_workers(1, args), run_workers(2, args)
    report = {"one_worker": one, "two_workers": two}
    for model in args.models:
        print(f"{model:<15} 1 worker {one[model]['steps_per_second']:>7.3f} steps/s (batch "
              f"{one[model]['global_batch']}); 2 workers {two[model]['steps_per_second']:>7.3f} "
              f"steps/s (global batch {two[model]['global_batch']})")
    seconds = two["allreduce_seconds"]
    report["allreduce_fraction_of_resnet50_step"] = round(
        seconds / two["resnet50"]["step_seconds"], 3) if "resnet50" in two else None
    print(f"all-reduce of {two['allreduce_floats'] / 1e6:.1f} M float32 between 2 workers: "
          f"{seconds * 1000:.0f} ms" + (
              f" = {report['allreduce_fraction_of_resnet50_step']:.0%} of a 2-worker ResNet-50 "
              "step" if "resnet50" in two else ""))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=2)


if __name__ == "__main__":
    main()
