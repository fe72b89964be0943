"""Vanishing and exploding gradients: the linear chain, then 50-layer plain and residual stacks.

1. The chain ``Y = W_50 ... W_1 X`` with every ``W = alpha * I`` is ``Y = alpha^50 X``: 0.5^50 is
   8.88e-16 (vanishing), 1.5^50 is 637621500.214 (exploding). Built from 50 Keras Dense layers.
2. The loss gradient at the first layer of 50-layer ReLU stacks (width 64), plain
   ``x <- relu(W x)`` and residual ``x <- relu(x + W2 relu(W1 x))`` (25 blocks of 2 layers), each
   with and without BatchNorm, under he_normal, glorot_uniform, orthogonal and alpha*I. The loss
   is a fixed random linear read-out of the output, so the gradient measures only how the signal
   travels back through the layers. Residual connections stop the gradient from vanishing (each
   block's Jacobian is I + dF/dx); BatchNorm keeps its size in check under every initializer.

Run:  python examples/vanishing_exploding.py [--quick] [--out DIR]
writes vanishing_exploding.png (gradient norm against depth) and vanishing_exploding.json.
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from keras_resnet import dense_residual_block  # noqa: E402
from keras_resnet.diagnostics import gradient_norms, plot_by_depth  # noqa: E402

DEPTH, WIDTH, BATCH = 50, 64, 64
INITIALIZERS = {
    "he_normal": "he_normal",
    "glorot_uniform": "glorot_uniform",
    "orthogonal": "orthogonal",
    "0.5*I": keras.initializers.Identity(gain=0.5),
    "1.5*I": keras.initializers.Identity(gain=1.5),
}
STACKS = ("plain", "residual", "plain+BN", "residual+BN")


def linear_chain(alpha, depth=DEPTH):
    """Y / X of ``depth`` linear Dense layers initialised to ``alpha * I`` (float64)."""
    inputs = keras.Input((1,), dtype="float64")
    y = inputs
    for i in range(depth):
        y = keras.layers.Dense(1, use_bias=False, dtype="float64", name=f"W{i + 1}",
                               kernel_initializer=keras.initializers.Identity(gain=alpha))(y)
    return float(keras.Model(inputs, y)(np.ones((1, 1)))[0, 0])


def stack(kind, initializer, depth=DEPTH, width=WIDTH):
    """A ``depth``-layer ReLU stack; layers are named as blocks of two (block{i}_1_dense, ...)."""
    batch_norm = kind.endswith("+BN")
    x = inputs = keras.Input((width,))
    for i in range(1, depth // 2 + 1):
        name = f"block{i}"
        if kind.startswith("residual"):
            x = dense_residual_block(x, width, batch_norm=batch_norm, use_bias=False,
                                     kernel_initializer=initializer, name=name)
            continue
        for j in (1, 2):
            x = keras.layers.Dense(width, use_bias=False, kernel_initializer=initializer,
                                   name=f"{name}_{j}_dense")(x)
            if batch_norm:
                x = keras.layers.BatchNormalization(name=f"{name}_{j}_bn")(x)
            x = keras.layers.Activation("relu", name=f"{name}_{j}_relu")(x)
    return keras.Model(inputs, x, name=f"{kind}{depth}")


def readout(y_true, y_pred):
    """A fixed linear read-out: dL/dY is y_true whatever the size of Y."""
    return ops.sum(y_true * y_pred, axis=-1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="skip the BatchNorm stacks (half the models)")
    parser.add_argument("--out", default=".", help="directory for the plot and the JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    stacks = STACKS[:2] if args.quick else STACKS

    print(f"Linear chain Y = W_{DEPTH} ... W_1 X with W = alpha*I ({DEPTH} Keras Dense layers):")
    chain = {}
    for alpha, word in ((0.5, "vanishing"), (1.5, "exploding")):
        measured = linear_chain(alpha)
        chain[str(alpha)] = measured
        text = f"{measured:.2e}" if alpha < 1 else f"{measured:.3f}"
        print(f"  {alpha}^{DEPTH} = {text}   ({word})")

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((BATCH, WIDTH)).astype("float32")
    direction = rng.standard_normal(WIDTH).astype("float32")
    y = np.tile(direction / np.linalg.norm(direction), (BATCH, 1))
    table, curves = {}, {kind: {} for kind in stacks}
    for label, initializer in INITIALIZERS.items():
        table[label] = {}
        for kind in stacks:
            keras.utils.set_random_seed(args.seed)
            norms = list(gradient_norms(stack(kind, initializer), x, y, readout,
                                        units="layers").values())
            table[label][kind] = norms[0]
            curves[kind][label] = norms

    print(f"\nGradient norm at the first layer of {DEPTH}-layer stacks "
          f"(width {WIDTH}, batch {BATCH}, random read-out):")
    print(f"{'initializer':16}" + "".join(f"{kind:>14}" for kind in stacks))
    for label, row in table.items():
        print(f"{label:16}" + "".join(f"{row[kind]:>14.3e}" for kind in stacks))

    os.makedirs(args.out, exist_ok=True)
    fig, axes = plt.subplots(1, len(stacks), figsize=(4.2 * len(stacks), 3.8), dpi=80,
                             sharey=True)
    for ax, kind in zip(axes, stacks):
        plot_by_depth(curves[kind], ax=ax, title=kind, xlabel="layer",
                      ylabel="gradient norm" if kind == stacks[0] else "")
    fig.suptitle(f"Loss gradient norm per layer at initialization, {DEPTH}-layer stacks")
    fig.tight_layout()
    plot = os.path.join(args.out, "vanishing_exploding.png")
    fig.savefig(plot)
    plt.close(fig)
    result = {"chain": chain, "first_layer_gradient_norm": table, "depth": DEPTH,
              "width": WIDTH, "batch": BATCH, "seed": args.seed}
    with open(os.path.join(args.out, "vanishing_exploding.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwrote {plot} and {os.path.join(args.out, 'vanishing_exploding.json')}")
    return result


if __name__ == "__main__":
    main()
