"""A residual block with a zero residual branch is exactly the identity; a plain block is not.

1. One block ``Y = relu(X + F(X))`` whose branch weights are all zero: ``F(X) = 0`` and
   ``Y = relu(X) = X`` for non-negative ``X`` (the block's input comes out of a ReLU). The plain
   block ``Y = relu(F(X))`` with the same weights outputs 0.
2. ``CifarResNet(1202, zero_init_residual=True)``: the last BatchNorm of every branch starts with
   gamma = 0, so every one of the 600 blocks starts as the identity (the two option-A blocks that
   halve the resolution start as their shortcut: subsample + zero channels). Checked block by
   block on one forward pass. The plain twin with the same switch outputs zeros from its first
   block on.

Run:  python examples/identity.py [--quick] [--depth 1202] [--out DIR]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_resnet import CifarResNet, plain_block, residual_block  # noqa: E402
from keras_resnet.modeling import presets
from keras_resnet.diagnostics import block_identity_errors  # noqa: E402


def zero_block(kind, shape=(8, 8, 16)):
    """One block whose branch kernels are all zero."""
    inputs = keras.Input(shape)
    builder = residual_block if kind == "residual" else plain_block
    return keras.Model(inputs, builder(inputs, shape[-1], kernel_initializer="zeros", name=kind))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1202,
                        help="CIFAR ResNet depth, 6n+2 (default 1202: 600 blocks)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer test images (the network is still the full ResNet-1202)")
    parser.add_argument("--out", default=None, help="directory for identity.json")
    args = parser.parse_args(argv)
    try:
        presets.cifar_blocks_per_stage(args.depth)
    except ValueError as error:
        parser.error(f"--{error}")
    rng = np.random.default_rng(0)
    result = {}

    x = rng.random((4, 8, 8, 16), dtype="float32")  # non-negative, like any ReLU output
    print("One block with all branch kernels zero, on a non-negative X:")
    for kind in ("residual", "plain"):
        y = np.asarray(zero_block(kind)(x, training=False))
        error = float(np.max(np.abs(y - x)))
        result[f"{kind}_block_max_abs_error"] = error
        print(f"  {kind:8} block: max |Y - X| = {error:.6g}  (max |X| = {x.max():.3f}, "
              f"max |Y| = {np.abs(y).max():.3f})")

    images = rng.random((2 if args.quick else 8, 32, 32, 3), dtype="float32")
    start = time.perf_counter()
    keras.utils.set_random_seed(0)
    model = CifarResNet(args.depth, zero_init_residual=True)
    built = time.perf_counter() - start
    rows = block_identity_errors(model, images)
    checked = time.perf_counter() - start - built
    identity = [r for r in rows if r["max_abs_error"] == 0.0 and r["max_abs_branch"] == 0.0]
    worst = max(r["max_abs_error"] for r in rows)
    print(f"\nResNet-{args.depth}, zero_init_residual=True ({model.count_params():,} parameters, "
          f"built in {built:.1f} s, {len(rows)} blocks checked in {checked:.1f} s):")
    for r in rows[:2] + [r for r in rows if r["shortcut"] != "identity"] + rows[-1:]:
        print(f"  {r['unit']:18} shortcut {r['shortcut']:20} max |F(X)| = "
              f"{r['max_abs_branch']:.3g}   max |Y - shortcut(X)| = {r['max_abs_error']:.3g}")
    print(f"  ... {len(identity)} of {len(rows)} blocks start as the identity "
          f"(largest error {worst:.3g})")
    result.update({"depth": args.depth, "blocks": len(rows), "identity_blocks": len(identity),
                   "max_abs_error": worst,
                   "shortcuts": {kind: sum(r["shortcut"] == kind for r in rows)
                                 for kind in sorted({r["shortcut"] for r in rows})}})

    keras.utils.set_random_seed(0)
    plain = CifarResNet(20, plain=True, zero_init_residual=True)
    first = keras.Model(plain.inputs[0], plain.get_layer("conv2_block1_out").output)
    out = np.asarray(first(images, training=False))
    result["plain_first_block_max_abs_output"] = float(np.abs(out).max())
    print(f"\nPlain-20 with the same switch: the first block outputs max |Y| = "
          f"{np.abs(out).max():.3g} -- the signal is gone, not passed on.")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "identity.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
