"""Model statistics counted from the model's own layers: parameters, multiply-adds, layers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import math

import keras

from keras_resnet.modeling.looped_stages import RepeatedBlocks


def leaf_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Yields the model's layers, looking into nested sub-models (the stages of deep nets)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


def multiply_adds(model: keras.Model) -> int:
    """Counts the multiply-adds of one forward pass over one image (batch 1).

    Convolutions count ``H_out * W_out * C_out * k_h * k_w * C_in / groups`` and Dense layers
    ``units * inputs``, read from the layers' own shapes; BN, activations, pooling and additions
    are not multiply-adds (He et al. 2015 count the same way).

    Args:
        model: a built ``keras.Model`` with a fully defined input size.

    Returns:
        The number of multiply-adds as an int.

    Raises:
        ValueError: when the model's spatial input size is unknown (None).
    """
    total = 0
    for layer in leaf_layers(model):
        if isinstance(layer, keras.layers.Conv2D) and not isinstance(
                layer, keras.layers.Conv2DTranspose):
            out_shape = layer.output.shape
            if any(d is None for d in out_shape[1:]):
                raise ValueError(f"multiply_adds needs a fixed input size; layer {layer.name!r} "
                                 f"has output shape {out_shape}")
            kernel = layer.kernel.shape  # (k_h, k_w, C_in / groups, C_out)
            total += math.prod(out_shape[1:]) * math.prod(kernel[:3])
        elif isinstance(layer, keras.layers.Dense):
            total += math.prod(layer.kernel.shape)
        elif isinstance(layer, RepeatedBlocks):  # stride 1: every conv keeps the input size
            height, width = layer.output.shape[1:3]
            if height is None or width is None:
                raise ValueError(f"multiply_adds needs a fixed input size; layer {layer.name!r} "
                                 f"has output shape {layer.output.shape}")
            total += layer.count * height * width * sum(
                conv.kernel_size ** 2 * conv.in_channels * conv.filters for conv in layer.plan)
    return total


def layer_count(model: keras.Model) -> int:
    """Counts the leaf layers (sub-models are looked into; the input layers are not counted).

    A looped stage (``RepeatedBlocks``) counts as one layer: it is one layer of the graph.
    """
    return sum(1 for layer in leaf_layers(model)
               if not isinstance(layer, keras.layers.InputLayer))


def weighted_layer_count(model: keras.Model) -> int:
    """Counts the convolution and Dense layers off the shortcuts: the "depth" of the papers."""
    return sum(layer.count * len(layer.plan) if isinstance(layer, RepeatedBlocks) else 1
               for layer in leaf_layers(model)
               if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense, RepeatedBlocks))
               and not layer.name.endswith(("_0_conv", "_0_dense")))


def model_stats(model: keras.Model) -> dict[str, Any]:
    """Summarises a model: parameters, multiply-adds, layers and depth.

    Args:
        model: a built ``keras.Model``.

    Returns:
        A dict with ``name``, ``depth`` (weighted layers, shortcut projections not counted),
        ``trainable_params``, ``total_params``, ``multiply_adds`` (None if the input size is not
        fixed) and ``layers``.
    """
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    try:
        macs = multiply_adds(model)
    except ValueError:
        macs = None
    return {
        "name": model.name,
        "depth": weighted_layer_count(model),
        "trainable_params": int(trainable),
        "total_params": int(model.count_params()),
        "multiply_adds": macs,
        "layers": layer_count(model),
    }
