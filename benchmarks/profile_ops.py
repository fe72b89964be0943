"""Op-type profiles behind the benchmark ratios, from the TensorFlow profiler.

Prints, per comparison, milliseconds per call by TensorFlow op type, side by side:
ResNet-50 inference and training (ours against keras.applications.ResNet50) and
float32 against mixed_bfloat16 (ours). It explains the `benchmarks/bench.py` rows: where ours
wins (fused BatchNorm: the fused convolution absorbs the BN and ReLU) and where bfloat16 loses.

    .venv/bin/python benchmarks/profile_ops.py            # 224x224, batch 32 (a few minutes)
    .venv/bin/python benchmarks/profile_ops.py --quick    # 64x64, batch 4
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_resnet import ResNet50  # noqa: E402
from benchlib import inference_step, train_step  # noqa: E402
from op_profiler import compare  # noqa: E402


def _resnet50(policy, shape):
    keras.config.set_dtype_policy(policy)
    try:
        return ResNet50(stride_on="1x1", input_shape=shape)
    finally:
        keras.config.set_dtype_policy("float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64x64 images, batch 4")
    parser.add_argument("--repeats", type=int, default=2, help="profiled calls per function")
    args = parser.parse_args(argv)
    size, batch = (64, 4) if args.quick else (224, 32)
    shape = (size, size, 3)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (batch,) + shape).astype("float32")
    labels = np.arange(batch) % 1000
    ours = _resnet50("float32", shape)
    reference = keras.applications.ResNet50(weights=None, input_shape=shape)
    bf16 = _resnet50("mixed_bfloat16", shape)
    sections = [
        (f"ResNet-50 inference, batch {batch}, {size}x{size}",
         {"ours": inference_step(ours, images), "keras.applications": inference_step(reference, images)}),
        (f"ResNet-50 training step, batch {batch}, {size}x{size}",
         {"ours": train_step(ours, images, labels),
          "keras.applications": train_step(reference, images, labels)}),
        (f"ResNet-50 (ours) inference, batch {batch}: float32 against mixed_bfloat16",
         {"float32": inference_step(ours, images), "mixed_bfloat16": inference_step(bf16, images)}),
        (f"ResNet-50 (ours) training step, batch {batch}: float32 against mixed_bfloat16",
         {"float32": train_step(ours, images, labels),
          "mixed_bfloat16": train_step(bf16, images, labels)}),
    ]
    for title, functions in sections:
        print(f"\n### {title}\n")
        print(compare(functions, repeats=args.repeats), flush=True)


if __name__ == "__main__":
    main()
