"""Test helpers: our models written out in torchvision / timm state_dict layout.

The layout is written here independently of ``keras_resnet.modeling`` (stem, blocks and head
spelled out), so a round trip checks the converter against torchvision's names, not against
itself.
"""

import re

import keras
import numpy as np


from keras_resnet.modeling.stats import leaf_layers


def torch_name(layer_name, avg_down):
    stem = {"conv1_conv": "conv1", "conv1_bn": "bn1", "conv1_1_conv": "conv1.0",
            "conv1_1_bn": "conv1.1", "conv1_2_conv": "conv1.3", "conv1_2_bn": "conv1.4",
            "conv1_3_conv": "conv1.6", "conv1_3_bn": "bn1", "predictions": "fc"}
    if layer_name in stem:
        return stem[layer_name]
    stage, block, index, kind = re.fullmatch(r"conv(\d)_block(\d+)_(\d)_(conv|bn)",
                                             layer_name).groups()
    prefix = f"layer{int(stage) - 1}.{int(block) - 1}"
    if index == "0":
        downsample = {("conv", False): 0, ("bn", False): 1, ("conv", True): 1, ("bn", True): 2}
        return f"{prefix}.downsample.{downsample[kind, avg_down]}"
    return f"{prefix}.{kind}{index}"


def randomize_batch_norm(model, seed=0):
    """Random gamma, beta and moving statistics, so that a conversion ignoring them shows."""
    rng = np.random.default_rng(seed)
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))


def torch_state_dict(model, avg_down=False):
    """{torchvision key: array} for a post-activation keras_resnet ResNet."""
    state = {}
    for layer in leaf_layers(model):
        if not layer.weights:
            continue
        name = torch_name(layer.name, avg_down)
        if isinstance(layer, keras.layers.BatchNormalization):
            for key, variable in (("weight", layer.gamma), ("bias", layer.beta),
                                  ("running_mean", layer.moving_mean),
                                  ("running_var", layer.moving_variance)):
                state[f"{name}.{key}"] = np.asarray(variable.numpy())
            state[f"{name}.num_batches_tracked"] = np.array(100, dtype=np.int64)
        elif isinstance(layer, keras.layers.Conv2D):
            state[f"{name}.weight"] = np.ascontiguousarray(
                np.transpose(layer.kernel.numpy(), (3, 2, 0, 1)))
        else:
            state[f"{name}.weight"] = np.ascontiguousarray(layer.kernel.numpy().T)
            state[f"{name}.bias"] = layer.bias.numpy()
    return state


def stripes(n, angles, seed, size=32, noise=1.0):
    """Noisy coloured stripes; the label is the index of the orientation in ``angles``."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(angles), n)
    yy, xx = np.mgrid[0:size, 0:size].astype("float32")
    theta = np.deg2rad(np.asarray(angles)[labels] + rng.uniform(-8, 8, n))[:, None, None]
    frequency = rng.uniform(0.8, 1.4, n)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None, None]
    wave = np.sin(frequency * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    colour = rng.uniform(0.3, 1.0, (n, 1, 1, 3))
    images = wave[..., None] * colour + rng.normal(0, noise, (n, size, size, 3))
    return images.astype("float32"), labels.astype("int32")
