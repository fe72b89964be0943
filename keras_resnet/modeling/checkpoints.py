"""A model built from a torchvision / timm checkpoint, and the input normalization layers
pretrained weights expect (torchvision's mean/std, keras.applications' caffe mode)."""

from __future__ import annotations

from collections.abc import Callable

import os

import keras
import numpy as np

from keras_resnet.constants import PREPROCESSINGS
from keras_resnet.modeling.models import ResNet
from keras_resnet.modeling.state_dict import read_state_dict
from keras_resnet.modeling.torch_architecture import infer_architecture
from keras_resnet.modeling.torch_weights import load_state_dict

# torchvision / timm ImageNet normalization, on 0..1 RGB.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
# keras.applications' "caffe" mode: BGR channel order, ImageNet BGR means subtracted.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
PREPROCESSING_LAYER = "torch_preprocessing"


def torch_preprocessing(name: str = PREPROCESSING_LAYER) -> keras.layers.Layer:
    """A layer mapping raw 0..255 RGB pixels to torchvision's input: ``(x / 255 - mean) / std``.

    Args:
        name: the layer name.

    Returns:
        A ``keras.layers.Normalization`` with fixed statistics (saved with the model).
    """
    return keras.layers.Normalization(
        mean=[255.0 * m for m in TORCH_MEAN], variance=[(255.0 * s) ** 2 for s in TORCH_STD],
        name=name)


def caffe_preprocessing(name: str = "caffe_preprocessing") -> keras.layers.Layer:
    """A layer doing keras.applications' ``preprocess_input`` (caffe mode) on raw RGB pixels.

    RGB -> BGR and the ImageNet BGR means subtracted, for keras.applications' ResNet weights
    (``compat="keras.applications"``). It is a frozen 1x1 convolution (a channel permutation
    plus a bias), so a saved model needs no custom layer to load.

    Args:
        name: the layer name.

    Returns:
        A non-trainable ``keras.layers.Conv2D``, already built for 3 channels.
    """
    layer = keras.layers.Conv2D(3, 1, use_bias=True, trainable=False, name=name,
                                dtype="float32")
    layer.build((None, None, None, 3))
    permutation = [[[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]]]
    layer.set_weights([np.asarray(permutation, "float32"),
                       -np.asarray(CAFFE_MEAN_BGR, "float32")])
    return layer


def _check_arguments(input_shape, classes, preprocessing):
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)
                                or classes < 1):
        raise ValueError(f"classes must be None (the checkpoint's) or an int >= 1; "
                         f"got {classes!r}")
    if preprocessing not in PREPROCESSINGS:
        raise ValueError(f"preprocessing must be one of {PREPROCESSINGS}; got {preprocessing!r}")
    if input_shape is not None and (not isinstance(input_shape, (tuple, list))
                                    or len(input_shape) != 3):
        raise ValueError(f"input_shape must be (height, width, channels); got {input_shape!r}")


def from_torch_checkpoint(path: str | os.PathLike, *,
                          input_shape: tuple[int, int, int] | None = None,
                          classes: int | None = None,
                          classifier_activation: str | Callable | None = "softmax",
                          preprocessing: str | None = None,
                          name: str | None = None) -> keras.Model:
    """Builds the keras_resnet model a torchvision / timm ResNet checkpoint describes, loaded.

    Stage depths, block kind, widths, bottleneck expansion, stem (timm's deep stem ->
    ``stem="deep"``), avg-down projections (-> ``shortcut="D"``) and classes are read from the
    checkpoint's keys and shapes; the model uses torchvision's conventions (``stride_on="3x3"``,
    BN ``epsilon=1e-5``).

    Args:
        path: a ``.safetensors`` file, or ``.pth`` / ``.pt`` / ``.bin`` (needs torch).
        input_shape: ``(height, width, channels)``; default (224, 224, C) with a head,
            (None, None, C) without.
        classes: head size; None keeps the checkpoint's. Another number loads everything but
            ``fc`` (a new head for fine-tuning); a checkpoint without ``fc`` and no ``classes``
            gives a headless model with average pooling.
        classifier_activation: activation of the head; None returns logits.
        preprocessing: None (the model takes what the checkpoint's network took) or
            ``"torch"`` (a first layer normalizes raw 0..255 RGB pixels with torchvision's
            ImageNet mean and std, so training, evaluation and export feed raw pixels).
        name: model name (default ``resnet``).

    Returns:
        A ``keras.Model``; ``model.pretrained_load`` holds the ``LoadResult``.

    Raises:
        ValueError: for a bad argument, a bad file or a checkpoint keras_resnet cannot build.
        ImportError: for a torch pickle without torch installed.
    """
    _check_arguments(input_shape, classes, preprocessing)
    state = read_state_dict(path)
    architecture = infer_architecture(state)
    classes = classes if classes is not None else architecture.classes
    include_top = classes is not None
    if input_shape is None:
        size = 224 if include_top else None
        input_shape = (size, size, architecture.channels)
    if preprocessing == "torch" and input_shape[-1] != 3:
        raise ValueError(f"preprocessing='torch' normalizes RGB images; input_shape {input_shape}"
                         " has another number of channels")
    tensor = None
    if preprocessing == "torch":
        inputs = keras.Input(shape=tuple(input_shape), name="pixels")
        tensor = torch_preprocessing()(inputs)
    model = ResNet(include_top=include_top, input_tensor=tensor,
                   input_shape=None if tensor is not None else tuple(input_shape),
                   pooling=None if include_top else "avg", classes=classes or 1,
                   classifier_activation=classifier_activation, name=name,
                   **architecture.resnet_options())
    result = load_state_dict(model, state, os.fspath(path))
    model.pretrained_load = result
    return model
