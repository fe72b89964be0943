"""A 1x1 convolution shrinks the channels: 28x28x192 -> 28x28x32, against a 3x3 convolution.

A 1x1 convolution is a fully connected layer applied at every pixel: each of its 32 filters takes
the 192 numbers of a pixel, forms one weighted sum (+ bias) and applies ReLU. On one channel it
just scales the image, which is the first thing this script shows.

Run:  python examples/one_by_one.py [--quick] [--out DIR]
"""

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_resnet import multiply_adds  # noqa: E402


def conv_stats(kernel_size, in_shape=(28, 28, 192), filters=32):
    """Builds one ReLU convolution and returns its output shape, parameters and multiply-adds."""
    inputs = keras.Input(in_shape)
    outputs = keras.layers.Conv2D(filters, kernel_size, padding="same", activation="relu")(inputs)
    model = keras.Model(inputs, outputs)
    y = model(np.random.default_rng(0).random((1,) + in_shape, dtype="float32"))
    return {"output_shape": list(y.shape[1:]), "params": model.count_params(),
            "multiply_adds": multiply_adds(model)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry (already fast)")
    parser.add_argument("--out", default=None, help="directory for one_by_one.json")
    args = parser.parse_args(argv)

    # On one channel a 1x1 convolution with weight 2 is "just a scaled version" of the image.
    image = np.arange(1, 17, dtype="float32").reshape(1, 4, 4, 1)
    scale = keras.layers.Conv2D(1, 1, use_bias=False,
                                kernel_initializer=keras.initializers.Constant(2.0))
    print("4x4 image * [2] (1x1 convolution, one channel):")
    print(np.asarray(scale(image))[0, :, :, 0].astype(int))

    one, three = conv_stats(1), conv_stats(3)
    print("\n28x28x192 -> Conv2D(32, 1x1, relu) -> 28x28x32")
    print(f"{'':16}{'1x1 conv':>14}{'3x3 conv':>14}")
    print(f"{'output shape':16}{'x'.join(map(str, one['output_shape'])):>14}"
          f"{'x'.join(map(str, three['output_shape'])):>14}")
    print(f"{'parameters':16}{one['params']:>14,}{three['params']:>14,}")
    print(f"{'multiply-adds':16}{one['multiply_adds']:>14,}{three['multiply_adds']:>14,}")
    print(f"\n1x1: parameters 192*32 + 32 = {192 * 32 + 32:,}; "
          f"multiply-adds 28*28*192*32 = {28 * 28 * 192 * 32:,}")
    print(f"3x3: parameters 3*3*192*32 + 32 = {9 * 192 * 32 + 32:,}; "
          f"multiply-adds {three['multiply_adds'] // one['multiply_adds']}x the 1x1's")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "one_by_one.json"), "w") as f:
            json.dump({"1x1": one, "3x3": three}, f, indent=2)
    return {"1x1": one, "3x3": three}


if __name__ == "__main__":
    main()
