"""One validated, immutable value for the options every residual block shares.

``BlockOptions`` holds the 13 block options of ``residual_block`` / ``plain_block`` /
``dense_residual_block`` / ``ResNet``. It is checked once, when it is made, and then passed down
unchanged from a model to each of its blocks, so a bad value gets one answer (the type and
message shape of :mod:`keras_resnet.checks`) wherever it was passed.

Keras names are resolved by Keras itself (``keras.initializers.get``, ``keras.activations.get``,
``keras.regularizers.get``): any identifier Keras accepts works (``"he_normal"``, ``"HeNormal"``,
a config dict, an object), and Keras' own failure is turned into a message that names the
argument, the value and what is accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import keras

from keras_resnet import checks, constants

_INITIALIZER_RULE = ("a Keras initializer: a name such as 'he_normal' or 'HeNormal', a config "
                     "dict, or a keras.initializers.Initializer")
_ACTIVATION_RULE = "a Keras activation: a name such as 'relu' or 'leaky_relu', or a callable"
_REGULARIZER_RULE = ("a Keras regularizer: a name such as 'l2', a config dict, or a "
                     "keras.regularizers.Regularizer")


def resolve_initializer(value: str | dict | Callable,
                        argument: str = "kernel_initializer") -> Callable:
    """Returns the Keras initializer ``value`` names (a new object for names and configs).

    The one resolver of initializer names: Keras' own lookup (``keras.initializers.get``), its
    error turned into one that names the argument.

    Args:
        value: a name (``"he_normal"``, ``"HeNormal"``), a config dict or an initializer.
        argument: the argument's name in the caller's API (for the message).

    Returns:
        The ``keras.initializers.Initializer`` (or callable).

    Raises:
        TypeError: ``value`` is not a str, dict or callable.
        ValueError: Keras does not know the name or config.
    """
    if not isinstance(value, (str, dict)) and not callable(value):
        raise TypeError(f"{argument} must be {_INITIALIZER_RULE}; got {value!r}")
    try:
        return keras.initializers.get(value)
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"{argument} must be {_INITIALIZER_RULE}; got {value!r}") from None


def resolve_activation(value: str | dict | Callable | None, argument: str = "activation", *,
                       allow_none: bool = False) -> str | dict | Callable | None:
    """Checks that Keras knows the activation ``value``; returns ``value`` itself.

    Args:
        value: a name, a serialized activation or a callable (``None`` with ``allow_none``).
        argument: the argument's name in the caller's API.
        allow_none: accept ``None`` (a linear output, e.g. logits).

    Raises:
        TypeError: ``value`` is not a str, dict or callable.
        ValueError: Keras does not know the name.
    """
    if value is None and allow_none:
        return None
    rule = _ACTIVATION_RULE + (" or None" if allow_none else "")
    if not isinstance(value, (str, dict)) and not callable(value):
        raise TypeError(f"{argument} must be {rule}; got {value!r}")
    try:
        keras.activations.get(value)
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"{argument} must be {rule}; got {value!r}") from None
    return value


def resolve_regularizer(value: str | dict | Callable | None,
                        argument: str = "kernel_regularizer") -> Callable | None:
    """Returns the Keras regularizer ``value`` names, or ``None``.

    Raises:
        TypeError: ``value`` is not None, a str, dict or callable.
        ValueError: Keras does not know the name or config.
    """
    if value is None or isinstance(value, keras.regularizers.Regularizer):
        return value
    if not isinstance(value, (str, dict)) and not callable(value):
        raise TypeError(f"{argument} must be {_REGULARIZER_RULE}; got {value!r}")
    try:
        return keras.regularizers.get(value)
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"{argument} must be {_REGULARIZER_RULE}; got {value!r}") from None


def _serialize(value):
    """A JSON-friendly form of a Keras object (names, numbers and None stay as they are)."""
    if value is None or isinstance(value, (str, bool, int, float, dict)):
        return value
    return keras.saving.serialize_keras_object(value)


@dataclasses.dataclass(frozen=True)
class BlockOptions:
    """The options shared by every residual block, validated when the value is made.

    Attributes (see ``keras_resnet.residual_block`` for what each one does):
        bottleneck: 1x1 -> 3x3 -> 1x1 branches instead of 3x3 -> 3x3.
        preact: pre-activation order (BN-ReLU-conv, He et al. 2016).
        shortcut: one of ``constants.SHORTCUTS``.
        stride_on: one of ``constants.STRIDE_ON``.
        expansion: bottleneck output multiplier.
        kernel_initializer: any Keras initializer identifier or object.
        kernel_regularizer: any Keras regularizer identifier or object (not with
            ``weight_decay``).
        weight_decay: SGD-style weight decay, ``L2(weight_decay / 2)`` on every kernel.
        activation: any Keras activation name or callable.
        zero_init_residual: the block starts as the identity.
        momentum: BatchNormalization momentum, in ``[0, 1)``.
        epsilon: BatchNormalization epsilon, > 0.
        use_bias: a bias in every convolution.

    Raises:
        TypeError: an option of the wrong type.
        ValueError: an option out of range, or both ``kernel_regularizer`` and ``weight_decay``.
    """

    bottleneck: bool = False
    preact: bool = False
    shortcut: str = "auto"
    stride_on: str = "3x3"
    expansion: int = 4
    kernel_initializer: Any = "he_normal"
    kernel_regularizer: Any = None
    weight_decay: float | None = None
    activation: Any = "relu"
    zero_init_residual: bool = False
    momentum: float = 0.9
    epsilon: float = 1e-5
    use_bias: bool = False

    def __post_init__(self):
        for argument in ("bottleneck", "preact", "zero_init_residual", "use_bias"):
            checks.boolean(getattr(self, argument), argument)
        checks.one_of(self.shortcut, "shortcut", constants.SHORTCUTS)
        checks.one_of(self.stride_on, "stride_on", constants.STRIDE_ON)
        self._set("expansion", checks.positive_int(self.expansion, "expansion"))
        self._set("momentum", checks.fraction(self.momentum, "momentum"))
        self._set("epsilon", checks.positive_number(self.epsilon, "epsilon", example="1e-5"))
        resolve_initializer(self.kernel_initializer)
        resolve_activation(self.activation)
        if self.weight_decay is not None:
            if self.kernel_regularizer is not None:
                raise ValueError(
                    "pass either kernel_regularizer or weight_decay, not both; got "
                    f"kernel_regularizer={self.kernel_regularizer!r}, "
                    f"weight_decay={self.weight_decay!r}")
            self._set("weight_decay",
                      checks.non_negative(self.weight_decay, "weight_decay", example="1e-4"))
            # SGD weight decay wd adds wd * w to the gradient: a loss term (wd / 2) * ||w||^2.
            regularizer = keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay \
                else None
        else:
            regularizer = resolve_regularizer(self.kernel_regularizer)
        object.__setattr__(self, "_regularizer", regularizer)

    def _set(self, argument, value):
        object.__setattr__(self, argument, value)

    def initializer(self) -> Callable:
        """A new kernel initializer for one layer.

        Each layer gets its own object: an unseeded Keras initializer draws its seed when it is
        made, so one object shared by many layers would give equal-shaped kernels equal values.
        """
        value = self.kernel_initializer
        if isinstance(value, keras.initializers.Initializer):
            return type(value).from_config(value.get_config())
        return resolve_initializer(value)

    @property
    def regularizer(self) -> Callable | None:
        """The kernel regularizer (``weight_decay`` already turned into ``L2``), or None."""
        return self._regularizer

    def replace(self, **changes) -> BlockOptions:
        """A copy with some options changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_config(self) -> dict:
        """The options as keyword arguments; Keras objects as their serialized configs."""
        return {field.name: _serialize(getattr(self, field.name))
                for field in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: dict) -> BlockOptions:
        """The inverse of :meth:`to_config`."""
        return cls(**config)


def options_from(options: BlockOptions | None, function: Callable, given: dict) -> BlockOptions:
    """The options a block builder uses: ``options`` if given, else ``BlockOptions(**given)``.

    Args:
        options: a ``BlockOptions`` or None.
        function: the public builder, whose keyword defaults tell which options were passed.
        given: the builder's option keywords as it received them.

    Raises:
        TypeError: ``options`` is not a ``BlockOptions``, or it comes with other options.
    """
    given = {key: value for key, value in given.items() if key in BlockOptions.__annotations__}
    if options is None:
        return BlockOptions(**given)
    if not isinstance(options, BlockOptions):
        raise TypeError(f"options must be a keras_resnet.BlockOptions or None; got {options!r}")
    defaults = function.__kwdefaults__
    changed = [key for key, value in given.items()
               if value is not defaults[key] and value != defaults[key]]
    if changed:
        raise TypeError(f"pass options or the block options it holds, not both; got options and "
                        f"{changed[0]}={given[changed[0]]!r}")
    return options


class BranchConv(NamedTuple):
    """One convolution of a residual branch, in the branch's order."""

    kernel_size: int
    in_channels: int
    filters: int
    stride: int


def output_filters(filters: int, options: BlockOptions) -> int:
    """A block's output channels: ``filters``, times ``expansion`` for a bottleneck."""
    return filters * options.expansion if options.bottleneck else filters


def branch_plan(in_channels: int, filters: int, stride: int,
                options: BlockOptions) -> tuple[BranchConv, ...]:
    """The convolutions of a block's residual branch F, for every block builder.

    ``residual_block`` / ``plain_block`` build their layers from it and ``RepeatedBlocks`` its
    stacked weights (with ``stride=1`` and ``in_channels`` equal to the output channels), so
    the looped and the unrolled blocks cannot drift apart.

    Args:
        in_channels: channels of the branch's input.
        filters: the block's width.
        stride: the block's stride, carried by the first conv (basic) or the one ``stride_on``
            names (bottleneck).
        options: the block's ``BlockOptions``.

    Returns:
        Basic: ``(3x3, 3x3)``; bottleneck: ``(1x1, 3x3, 1x1)``, the last one expanding to
        :func:`output_filters` channels.
    """
    out = output_filters(filters, options)
    if not options.bottleneck:
        return (BranchConv(3, in_channels, filters, stride), BranchConv(3, filters, out, 1))
    first, middle = (stride, 1) if options.stride_on == "1x1" else (1, stride)
    return (BranchConv(1, in_channels, filters, first), BranchConv(3, filters, filters, middle),
            BranchConv(1, filters, out, 1))
