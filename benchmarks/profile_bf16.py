"""Where mixed_bfloat16 goes: op counts and dtypes of one traced training step.

Traces one SGD training step (forward, ``tf.GradientTape`` backward, update) of our ResNet under
``mixed_bfloat16`` with ``tf.function`` and counts, in the concrete function's graph and again
after grappler's default CPU passes (the remapper's fusions): Cast ops in the forward and
backward halves, casts of variable reads (weight casts, per variable per step), and the dtype
``T`` of every FusedBatchNormV3/Grad, fused op and Conv2D/Backprop op. The oneDNN layout pass
that runs after grappler renames kernels but adds no casts. Structure, not time: the counts do
not depend on how busy the machine is (``profile_ops.py`` has the time per op type).

    .venv/bin/python benchmarks/profile_bf16.py                 # ResNet-18, 64x64, batch 2
    .venv/bin/python benchmarks/profile_bf16.py --depth 50 --float32
    .venv/bin/python benchmarks/profile_bf16.py --inference
    .venv/bin/python benchmarks/profile_bf16.py --runtime      # op types run, after oneDNN
"""

from __future__ import annotations

import argparse
import collections
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_resnet import ResNet  # noqa: E402

_WATCHED = ("FusedBatchNormV3", "FusedBatchNormGradV3", "Conv2D", "Conv2DBackpropInput",
            "Conv2DBackpropFilter", "MatMul", "Relu", "ReluGrad", "AddV2", "Mean", "Mul")


def traced_step(depth, policy, train=True, size=64, batch=2):
    """The graph of one traced training step (or inference call) of ResNet-``depth``."""
    keras.config.set_dtype_policy(policy)
    try:
        model = ResNet(depth, input_shape=(size, size, 3))
    finally:
        keras.config.set_dtype_policy("float32")
    optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(x, y):
        if not train:
            return model(x, training=False)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    spec = (tf.TensorSpec((batch, size, size, 3), "float32"), tf.TensorSpec((batch,), "int64"))
    return step.get_concrete_function(*spec).graph, len(model.trainable_variables)


def optimized_nodes(graph):
    """The graph's nodes after grappler's default CPU passes (remapper fusions included)."""
    from tensorflow.core.protobuf import config_pb2
    from tensorflow.python.grappler import tf_optimizer

    meta = tf.compat.v1.train.export_meta_graph(graph_def=graph.as_graph_def(), graph=graph)
    fetch = meta.collection_def["train_op"].node_list.value
    fetch.extend([t.name for t in graph.outputs] + [op.name for op in graph.control_outputs])
    optimized = tf_optimizer.OptimizeGraph(config_pb2.ConfigProto(), meta)
    return list(optimized.node) + [n for f in optimized.library.function for n in f.node_def]


def _dtype(node, attr="T"):
    return tf.as_dtype(node.attr[attr].type).name if attr in node.attr else "-"


def count_ops(nodes):
    """``{(op type, half, dtype): count}`` of NodeDefs, plus the casts of variable reads."""
    types = {node.name: node.op for node in nodes}
    counts = collections.Counter()
    weight_casts = 0
    for node in nodes:
        half = "backward" if node.name.startswith("gradient_tape/") else "forward"
        if node.op == "Cast":
            counts[("Cast", half, f"{_dtype(node, 'SrcT')}->{_dtype(node, 'DstT')}")] += 1
            source = node.input[0].split(":")[0].lstrip("^")
            weight_casts += types.get(source) == "ReadVariableOp"
        elif node.op in _WATCHED or node.op.startswith("_Fused"):
            counts[(node.op, half, _dtype(node))] += 1
    return counts, weight_casts


def format_counts(before, after, variables):
    """A Markdown table: each counted op, in the traced graph and after grappler."""
    (counts, casts), (optimized, optimized_casts) = before, after
    lines = ["| op | half | dtype | traced | after grappler |", "|---|---|---|---:|---:|"]
    for key in sorted(set(counts) | set(optimized)):
        lines.append(f"| {' | '.join(key)} | {counts[key]} | {optimized[key]} |")
    lines.append(f"| Cast of ReadVariableOp (weight casts) | forward | - | {casts} | "
                 f"{optimized_casts} |")
    lines.append(f"| trainable variables | - | - | {variables} | {variables} |")
    return "\n".join(lines)


def runtime_op_types(policy, train, fold=False, size=32, batch=2):
    """The op types TensorFlow ran (after grappler and oneDNN) for a small CIFAR ResNet-8.

    ``fold`` runs the inference of ``fold_batch_norm(model)`` instead of the model.
    """
    import numpy as np

    from keras_resnet import CifarResNet, fold_batch_norm
    from op_profiler import op_times

    keras.config.set_dtype_policy(policy)
    try:
        model = CifarResNet(8)
    finally:
        keras.config.set_dtype_policy("float32")
    images = np.random.default_rng(0).uniform(0, 1, (batch, size, size, 3)).astype("float32")
    if train:
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        return sorted(op_times(lambda: model.train_on_batch(images, np.arange(batch)), repeats=1))
    if fold:
        model = fold_batch_norm(model)
    call = tf.function(lambda x: model(x, training=False))
    tensor = tf.constant(images)
    return sorted(op_times(lambda: call(tensor).numpy(), repeats=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=18, help="ResNet depth (18 is cheap)")
    parser.add_argument("--float32", action="store_true", help="also count the float32 step")
    parser.add_argument("--inference", action="store_true",
                        help="count an inference call instead of a training step")
    parser.add_argument("--runtime", action="store_true",
                        help="list the op types a CIFAR ResNet-8 ran (TensorFlow profiler)")
    args = parser.parse_args(argv)
    if args.runtime:
        for policy in ("float32", "mixed_bfloat16"):
            for train in (False, True):
                ops = runtime_op_types(policy, train)
                print(f"{policy} {'training' if train else 'inference'} ran: {', '.join(ops)}")
        ops = runtime_op_types("mixed_bfloat16", False, fold=True)
        print(f"mixed_bfloat16 inference, BN folded, ran: {', '.join(ops)}")
        return
    what = "inference call" if args.inference else "training step"
    for policy in ["mixed_bfloat16"] + (["float32"] if args.float32 else []):
        graph, variables = traced_step(args.depth, policy, train=not args.inference)
        before = count_ops(list(graph.as_graph_def().node))
        after = count_ops(optimized_nodes(graph))
        print(f"\n### ResNet-{args.depth} {what}, {policy}\n")
        print(format_counts(before, after, variables), flush=True)


if __name__ == "__main__":
    main()
