"""The checks of ``HyperResNet``'s search space: every value a user fixes or narrows."""

from __future__ import annotations

import keras

from keras_resnet import checks
from keras_resnet.constants import STEMS
from keras_resnet.modeling import presets

CIFAR_SHORTCUTS = ("A", "B")          # the paper's options: zero padding, projection
BOTTLENECK_SHORTCUTS = ("B", "C", "D")  # projections only: zero padding wastes 3/4 of a bottleneck
STEM_STRIDE = {"imagenet": 4, "deep": 4, "cifar": 1}


def check_choices(choices, family, input_shape):
    """Checks every value of a ``HyperResNet``'s choices (``keras_resnet.checks``' messages).

    Args:
        choices: ``{hyperparameter: tuple of values}``.
        family: ``"cifar"`` or ``"imagenet"``.
        input_shape: ``(height, width, channels)`` of the images.

    Raises:
        TypeError: a value of the wrong type.
        ValueError: a value out of range or unknown to Keras, or a network that downsamples
            more than the input allows.
    """
    from keras_resnet.modeling.block_options import resolve_initializer

    c = choices
    for name in ("zero_init_residual", "bottleneck", "preact"):
        for value in c[name]:
            checks.boolean(value, name)
    for value in c["initializer"]:
        if not isinstance(value, str):  # a search space holds names
            raise TypeError(f"initializer must be a Keras initializer name (a str); got "
                            f"{value!r}")
        resolve_initializer(value, "initializer")
    for value in c["activation"]:
        _check_activation(value)
    if c["shortcut"] is not None:
        for value in c["shortcut"]:
            checks.one_of(value, "shortcut", CIFAR_SHORTCUTS + BOTTLENECK_SHORTCUTS)
    for name in ("width_multiplier", "learning_rate", "weight_decay"):
        for value in c[name]:
            checks.positive_number(value, name)
    for value in c["batch_size"]:
        checks.positive_int(value, "batch_size")
    if family == "cifar":
        for value in c["depth"]:
            _check_cifar_depth(value)
    else:
        _check_imagenet_choices(choices, input_shape)

def _check_imagenet_choices(choices, input_shape):
    c = choices
    for value in c["stem"]:
        checks.one_of(value, "stem", STEMS)
    for value in c["stages"]:
        checks.positive_int(value, "stages", maximum=4)
    for i in range(1, 5):
        for value in c[f"stage{i}_depth"]:
            checks.positive_int(value, f"stage{i}_depth", maximum=64)
    side = min(input_shape[:2])
    for stem in c["stem"]:
        for stages in c["stages"]:
            stride = STEM_STRIDE[stem] * 2 ** (stages - 1)
            if stride > side:
                raise ValueError(
                    f"stages={stages} with stem={stem!r} downsamples by {stride}, more than "
                    f"the {side}-pixel input; narrow stages or stem (e.g. stages=[2, 3], "
                    "stem='cifar')")


def _check_activation(value):
    if not isinstance(value, str):  # a search space holds names
        raise TypeError(f"activation must be a Keras activation name (a str); got {value!r}")
    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        raise ValueError(f"activation must be a Keras activation name (relu, leaky_relu, gelu, "
                         f"...); got {value!r}") from None


def _check_cifar_depth(value):
    accepted = ("6n+2 (8, 14, 20, 32, 44, 56, 110, ...) for the CIFAR family; the block count "
                "per stage n is reused for bottlenecks (9n+2 layers)")
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"depth must be {accepted}; got {value!r}")
    try:
        presets.cifar_blocks_per_stage(value)
    except ValueError:
        raise ValueError(f"depth must be {accepted}; got {value!r}") from None
