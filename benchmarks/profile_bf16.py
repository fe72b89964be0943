"""Where mixed_bfloat16 goes: op counts and dtypes of one traced training step.

Traces one SGD training step (forward, ``tf.GradientTape`` backward, update) of our ResNet under
``mixed_bfloat16`` with ``tf.function`` and counts, in the concrete function's graph (before
grappler and before the oneDNN layout pass, which rename but do not add casts): Cast ops in the
forward and backward halves, casts of variable reads (weight casts, per variable per step), and
the dtype ``T`` of every FusedBatchNormV3/Grad and Conv2D/Backprop op. Structure, not time: the
counts do not depend on how busy the machine is.

    .venv/bin/python benchmarks/profile_bf16.py                 # ResNet-18, 64x64, batch 2
    .venv/bin/python benchmarks/profile_bf16.py --depth 50 --float32
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


def traced_step(depth, policy, size=64, batch=2):
    """The graph of one traced training step of ResNet-``depth`` under ``policy``."""
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
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    spec = (tf.TensorSpec((batch, size, size, 3), "float32"), tf.TensorSpec((batch,), "int64"))
    return step.get_concrete_function(*spec).graph, len(model.trainable_variables)


def _half(op):
    return "backward" if op.name.startswith("gradient_tape/") else "forward"


def _dtype(op):
    try:
        return op.get_attr("T").name
    except ValueError:
        return "-"


def count_ops(graph):
    """``{(op type, half, dtype): count}`` plus the number of casts of variable reads."""
    counts = collections.Counter()
    weight_casts = 0
    for op in graph.get_operations():
        if op.type == "Cast":
            source, target = op.get_attr("SrcT").name, op.get_attr("DstT").name
            counts[("Cast", _half(op), f"{source}->{target}")] += 1
            if op.inputs[0].op.type == "ReadVariableOp":
                weight_casts += 1
        elif op.type in _WATCHED:
            counts[(op.type, _half(op), _dtype(op))] += 1
    return counts, weight_casts


def format_counts(counts, weight_casts, variables):
    lines = ["| op | half | dtype | count |", "|---|---|---|---:|"]
    for (kind, half, dtype), n in sorted(counts.items()):
        lines.append(f"| {kind} | {half} | {dtype} | {n} |")
    lines.append(f"| Cast of ReadVariableOp (weight casts) | forward | - | {weight_casts} |")
    lines.append(f"| trainable variables | - | - | {variables} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=18, help="ResNet depth (18 is cheap)")
    parser.add_argument("--float32", action="store_true", help="also count the float32 step")
    args = parser.parse_args(argv)
    policies = ["mixed_bfloat16"] + (["float32"] if args.float32 else [])
    for policy in policies:
        graph, variables = traced_step(args.depth, policy)
        counts, weight_casts = count_ops(graph)
        print(f"\n### ResNet-{args.depth} training step, {policy} "
              f"({len(graph.get_operations())} ops)\n")
        print(format_counts(counts, weight_casts, variables), flush=True)


if __name__ == "__main__":
    main()
