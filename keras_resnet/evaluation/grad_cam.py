"""Grad-CAM for the networks this package builds, on every Keras backend, without autodiff.

A ResNet ends in ``GlobalAveragePooling2D -> Dense`` (softmax or none). The class score before
the softmax is ``z_c = sum_k W[k, c] * mean_ij A[i, j, k] + b_c``, so its gradient with respect
to the last feature map is ``W[k, c] / (H * W)`` at every position: Grad-CAM's channel weights
are the Dense kernel's column divided by the map's area, exactly. Only a forward pass to the
feature map is needed (`FeatureHead.features`), and that runs on any backend.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np


@dataclasses.dataclass(frozen=True)
class FeatureHead:
    """A model split at its global average pooling.

    Attributes:
        features: a ``keras.Model`` from the model's input to the last feature map [n, h, w, k].
        kernel: the Dense head's kernel [k, classes].
        bias: its bias [classes] (zeros without one).
        activation: the head's activation name (``"softmax"``, ``"linear"``, ...).
    """

    features: keras.Model
    kernel: np.ndarray
    bias: np.ndarray
    activation: str

    def cam(self, images, classes) -> np.ndarray:
        """Grad-CAM maps [n, h, w] in [0, 1] for ``classes`` [n] (ReLU, then each map / its max).
        """
        maps = np.asarray(keras.ops.convert_to_numpy(
            self.features(np.asarray(images, np.float32), training=False)), np.float64)
        area = maps.shape[1] * maps.shape[2]
        weights = self.kernel[:, np.asarray(classes)].T / area  # [n, k]
        cam = np.maximum(np.einsum("nhwk,nk->nhw", maps, weights), 0.0)
        peak = cam.reshape(len(cam), -1).max(axis=1)[:, None, None]
        return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


def split_head(model: keras.Model) -> FeatureHead:
    """Splits ``model`` (a ResNet, possibly wrapped: normalisation in front, nested or Sequential)
    into its feature extractor and its ``GlobalAveragePooling2D -> Dense`` head.

    Raises:
        ValueError: the model does not end in global average pooling and a Dense layer.
    """
    features, dense = _split(model)
    kernel = np.asarray(keras.ops.convert_to_numpy(dense.kernel), np.float64)
    bias = (np.asarray(keras.ops.convert_to_numpy(dense.bias), np.float64) if dense.use_bias
            else np.zeros(kernel.shape[1]))
    activation = keras.activations.serialize(dense.activation)
    if isinstance(activation, dict):
        activation = activation.get("config", {}).get("name", str(activation))
    return FeatureHead(features, kernel, bias, str(activation))


def _split(model):
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if len(layers) >= 2 and isinstance(layers[-1], keras.layers.Dense) and isinstance(
            layers[-2], keras.layers.GlobalAveragePooling2D):
        pool, dense = layers[-2], layers[-1]
        inputs = keras.Input(model.inputs[0].shape[1:])
        # the pooling layer's input in this model's graph; a Sequential has no graph before a call
        feature_model = keras.Model(model.inputs[0], pool.input) if _is_functional(model) else \
            keras.Sequential(layers[:-2])
        return _as_model(inputs, feature_model), dense
    if layers and isinstance(layers[-1], keras.Model):
        inner_features, dense = _split(layers[-1])
        inputs = keras.Input(model.inputs[0].shape[1:])
        x = inputs
        if len(layers) > 1:
            prefix = keras.Model(model.inputs[0], layers[-2].output) if _is_functional(model) \
                else keras.Sequential(layers[:-1])
            x = prefix(x)
        return keras.Model(inputs, inner_features(x)), dense
    raise ValueError(f"Grad-CAM needs a model ending in GlobalAveragePooling2D and Dense (as "
                     f"every keras_resnet network with include_top=True); got {model.name!r} "
                     f"ending in {type(layers[-1]).__name__ if layers else 'nothing'}")


def _is_functional(model):
    return not isinstance(model, keras.Sequential) and hasattr(model, "inputs")


def _as_model(inputs, model):
    return keras.Model(inputs, model(inputs))


def probabilities_from(outputs, activation: str) -> np.ndarray:
    """The model's outputs as probabilities: softmax applied where the head gives logits."""
    outputs = np.asarray(outputs, np.float64)
    if activation == "softmax":
        return outputs
    shifted = outputs - outputs.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)
