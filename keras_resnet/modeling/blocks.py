"""Residual blocks for the Keras functional API.

Three residual blocks (He et al. 2015), chosen from the shapes unless the caller forces one:

* standard: identity shortcut, ``Y = act(X + F(X))``;
* channel-changing: a 1x1 projection ``W_s`` (+ BN) on the shortcut;
* channel-changing + downsampling: the same projection with a stride.

Each comes in basic (3x3, 3x3) and bottleneck (1x1, 3x3, 1x1) form, post-activation (2015) and
pre-activation (He et al. 2016). ``plain_block`` is the same branch without a shortcut and
``dense_residual_block`` the fully connected version. Only channels-last tensors are supported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers, ops

from keras_resnet import checks, constants
from keras_resnet.modeling.fused_batch_norm import FusedBatchNormalization
from keras_resnet.modeling.block_options import (BlockOptions, branch_plan, options_from,
                                                 output_filters)


@keras.saving.register_keras_serializable(package="keras_resnet")
class ZeroPadShortcut(layers.Layer):
    """The paper's option-A shortcut: spatial subsampling plus zero channels, no parameters."""

    def __init__(self, filters: int, stride: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.stride = int(stride)

    def call(self, inputs: Any) -> Any:
        x = inputs[:, :: self.stride, :: self.stride, :] if self.stride > 1 else inputs
        extra = self.filters - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def sub(n):
            return None if n is None else -(-n // self.stride)

        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), self.filters)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}


# ----------------------------------------------------------------------------- checks


def _check_input(x, argument="x", rank=4):
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != rank:
        kind = "(batch, height, width, channels)" if rank == 4 else "(batch, features)"
        raise ValueError(f"{argument} must be a Keras tensor of shape {kind}; got shape {shape}")
    if shape[-1] is None:
        raise ValueError(f"{argument} must have a known last dimension; got shape {shape}")
    return shape


def _block_name(name, prefix):
    if name is None:
        return f"{prefix}_{keras.backend.get_uid(prefix)}"
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str; got {name!r}")
    return name


def _check_block_args(x, filters, stride):
    shape = _check_input(x)
    checks.positive_int(filters, "filters")
    checks.positive_int(stride, "stride")
    for axis, size in zip(("height", "width"), shape[1:3]):
        if size is not None and size < stride:
            raise ValueError(f"input {axis} {size} is smaller than stride {stride}; "
                             "the input is too small for this block")
    return shape


# ----------------------------------------------------------------------------- layers


def _conv(x, filters, kernel_size, stride, name, opts: BlockOptions, kernel_initializer=None):
    """Conv2D with torchvision-exact padding: explicit symmetric zero padding when strided."""
    padding = "same"
    if stride > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=name.replace("_conv", "_pad"))(x)
        padding = "valid"
    return layers.Conv2D(filters, kernel_size, strides=stride, padding=padding,
                         use_bias=opts.use_bias,
                         kernel_initializer=kernel_initializer or opts.initializer(),
                         kernel_regularizer=opts.regularizer, name=name)(x)


def _bn(x, name, opts: BlockOptions, zero_gamma=False):
    return FusedBatchNormalization(axis=-1, momentum=opts.momentum, epsilon=opts.epsilon,
                                   gamma_initializer="zeros" if zero_gamma else "ones",
                                   name=name)(x)


def _act(x, name, opts: BlockOptions):
    return layers.Activation(opts.activation, name=name)(x)


def _branch(x, filters, stride, name, opts: BlockOptions):
    """The residual function F: returns its output tensor (pre-activation: no final BN)."""
    plan = branch_plan(x.shape[-1], filters, stride, opts)
    for i, (kernel, _, width, conv_stride) in enumerate(plan, start=1):
        last = i == len(plan)
        if opts.preact:
            if i > 1:  # the block's input BN-ReLU is shared with the shortcut (see caller)
                x = _bn(x, f"{name}_{i - 1}_bn", opts)
                x = _act(x, f"{name}_{i - 1}_relu", opts)
            # Pre-activation branches have no BN after the last conv: zero its kernel instead.
            init = "zeros" if (last and opts.zero_init_residual) else None
            x = _conv(x, width, kernel, conv_stride, f"{name}_{i}_conv", opts, init)
        else:
            x = _conv(x, width, kernel, conv_stride, f"{name}_{i}_conv", opts)
            x = _bn(x, f"{name}_{i}_bn", opts, zero_gamma=last and opts.zero_init_residual)
            if not last:
                x = _act(x, f"{name}_{i}_relu", opts)
    return x


def _shortcut(x, preactivated, out_filters, stride, name, opts: BlockOptions):
    """Returns the shortcut tensor chosen by the option and the shapes."""
    in_filters = x.shape[-1]
    needs_change = stride != 1 or in_filters != out_filters
    shortcut = opts.shortcut
    if shortcut == "identity":
        if needs_change:
            raise ValueError(
                f"shortcut='identity' needs matching shapes, but the block maps {in_filters} "
                f"channels to {out_filters} with stride {stride}; use shortcut='auto', 'A', 'B', "
                "'C' or 'D'")
        return x
    if shortcut == "A" and in_filters > out_filters:
        raise ValueError(f"shortcut='A' zero-pads channels, it cannot reduce {in_filters} "
                         f"channels to {out_filters}; use shortcut='auto' (projection)")
    if not needs_change and shortcut != "C":
        return x
    if shortcut == "A":
        return ZeroPadShortcut(out_filters, stride, name=f"{name}_0_pad")(x)
    source = preactivated
    conv_stride = stride
    if shortcut == "D" and stride > 1:
        # ResNet-D: average-pool first so the projection sees every input position.
        source = layers.AveragePooling2D(stride, strides=stride, padding="same",
                                         name=f"{name}_0_pool")(source)
        conv_stride = 1
    # The projection W_s: a 1x1 convolution (no padding needed, even when strided).
    s = layers.Conv2D(out_filters, 1, strides=conv_stride, use_bias=opts.use_bias,
                      kernel_initializer=opts.initializer(),
                      kernel_regularizer=opts.regularizer, name=f"{name}_0_conv")(source)
    return s if preactivated is not x else _bn(s, f"{name}_0_bn", opts)


# ----------------------------------------------------------------------------- public blocks


def residual_block(x: keras.KerasTensor, filters: int, stride: int = 1, *,
                   bottleneck: bool = False, preact: bool = False, shortcut: str = "auto",
                   stride_on: str = "3x3", expansion: int = 4,
                   kernel_initializer: str | dict | Callable = "he_normal",
                   kernel_regularizer: str | dict | Callable | None = None,
                   weight_decay: float | None = None, activation: str | Callable = "relu",
                   zero_init_residual: bool = False, momentum: float = 0.9, epsilon: float = 1e-5,
                   use_bias: bool = False, name: str | None = None,
                   options: BlockOptions | None = None) -> keras.KerasTensor:
    """Builds one residual block and returns its output tensor.

    The shortcut follows the shapes: identity when ``stride == 1`` and the channels match
    (``Y = relu(X + F(X))``, the activation after the add), else a 1x1 projection ``W_s`` with BN,
    strided when ``stride > 1``.

    Args:
        x: channels-last Keras tensor ``(batch, height, width, channels)``.
        filters: width of the block; the output has ``filters`` channels (basic) or
            ``filters * expansion`` (bottleneck).
        stride: spatial stride of the block (2 halves height and width).
        bottleneck: 1x1 -> 3x3 -> 1x1 instead of 3x3 -> 3x3.
        preact: pre-activation order BN-ReLU-conv (He et al. 2016); no activation after the add.
        shortcut: ``"auto"`` (= ``"B"``: projection only when shapes change), ``"identity"``
            (forced; an error when the shapes differ), ``"A"`` (parameter-free: subsample and
            zero-pad the extra channels), ``"C"`` (always project), ``"D"`` (average pool, then
            a stride-1 projection, as in ResNet-D).
        stride_on: in a bottleneck, the conv that carries the stride: ``"3x3"`` (torchvision)
            or ``"1x1"`` (the paper and keras.applications).
        expansion: bottleneck output multiplier.
        kernel_initializer: any Keras initializer name (``"he_normal"``, ``"HeNormal"``),
            config or object; every kernel gets its own initializer object.
        kernel_regularizer: Keras regularizer for every kernel.
        weight_decay: SGD-style weight decay; adds ``L2(weight_decay / 2)`` to every kernel.
        activation: activation name or callable (``"relu"``, ``"leaky_relu"``, ...).
        zero_init_residual: start the branch's last BN gamma (pre-activation: the last kernel) at
            zero, so the block starts as the identity (up to the final activation).
        momentum: BatchNormalization momentum.
        epsilon: BatchNormalization epsilon.
        use_bias: give every convolution a bias.
        name: prefix of the block's layer names (``{name}_1_conv``, ``{name}_1_bn``, ...,
            ``{name}_add``, ``{name}_out``).
        options: a ``keras_resnet.BlockOptions`` holding all the options above, already
            validated (then leave the individual options at their defaults).

    Returns:
        The block's output tensor.

    Raises:
        ValueError: for a bad option or a shortcut that cannot work on these shapes.
        TypeError: for an option of the wrong type.
    """
    opts = options_from(options, residual_block, locals())
    _check_block_args(x, filters, stride)
    name = _block_name(name, "residual_block")
    out_filters = output_filters(filters, opts)
    if opts.preact:
        preactivated = _act(_bn(x, f"{name}_preact_bn", opts), f"{name}_preact_relu", opts)
        branch_in = preactivated
    else:
        preactivated = branch_in = x
    # The shortcut is built first so that shape errors come before any branch layer exists.
    short = _shortcut(x, preactivated, out_filters, stride, name, opts)
    residual = _branch(branch_in, filters, stride, name, opts)
    if opts.preact:
        return layers.Add(name=f"{name}_out")([short, residual])
    y = layers.Add(name=f"{name}_add")([short, residual])
    return _act(y, f"{name}_out", opts)


def plain_block(x: keras.KerasTensor, filters: int, stride: int = 1, *, bottleneck: bool = False,
                preact: bool = False, stride_on: str = "3x3", expansion: int = 4,
                kernel_initializer: str | dict | Callable = "he_normal",
                kernel_regularizer: str | dict | Callable | None = None,
                weight_decay: float | None = None, activation: str | Callable = "relu",
                zero_init_residual: bool = False, momentum: float = 0.9, epsilon: float = 1e-5,
                use_bias: bool = False, name: str | None = None,
                options: BlockOptions | None = None) -> keras.KerasTensor:
    """Builds the residual block's branch without a shortcut: ``Y = relu(F(X))``.

    This is the paper's "plain" network block, for comparisons. Arguments are those of
    ``residual_block`` (there is no ``shortcut``; one in ``options`` is ignored).

    Returns:
        The block's output tensor.

    Raises:
        ValueError: for a bad option.
        TypeError: for an option of the wrong type.
    """
    opts = options_from(options, plain_block, locals())
    _check_block_args(x, filters, stride)
    name = _block_name(name, "plain_block")
    if opts.preact:
        x = _act(_bn(x, f"{name}_preact_bn", opts), f"{name}_preact_relu", opts)
    y = _branch(x, filters, stride, name, opts)
    return y if opts.preact else _act(y, f"{name}_out", opts)


def dense_residual_block(x: keras.KerasTensor, units: int, *, shortcut: str = "auto",
                         batch_norm: bool = True, preact: bool = False,
                         kernel_initializer: str | dict | Callable = "he_normal",
                         kernel_regularizer: str | dict | Callable | None = None,
                         weight_decay: float | None = None, activation: str | Callable = "relu",
                         zero_init_residual: bool = False, momentum: float = 0.9, epsilon: float = 1e-5,
                         use_bias: bool = True, name: str | None = None,
                         options: BlockOptions | None = None) -> keras.KerasTensor:
    """Builds a fully connected residual block: ``Y = relu(W_s X + F(X))``.

    ``F`` is Dense -> (BN) -> ReLU -> Dense -> (BN). When the input width differs from
    ``units`` the shortcut is a bias-free Dense projection ``W_s`` (a 128-vector into a 256-wide
    block gets a 128x256 kernel); otherwise it is the identity.

    Args:
        x: Keras tensor ``(batch, features)``.
        units: width of the block and of its output.
        shortcut: ``"auto"``, ``"identity"`` (forced) or ``"C"`` (always project).
        batch_norm: put BatchNormalization after each Dense.
        preact: pre-activation order (BN-ReLU-Dense); no activation after the add.
        kernel_initializer, kernel_regularizer, weight_decay, activation: as in
            ``residual_block``.
        zero_init_residual, momentum, epsilon, use_bias, name, options: as in
            ``residual_block`` (``bottleneck``, ``stride_on`` and ``expansion`` of ``options``
            do not apply).

    Returns:
        The block's output tensor ``(batch, units)``.

    Raises:
        ValueError: for a bad option or a forced identity between different widths.
        TypeError: for an option of the wrong type.
    """
    opts = options_from(options, dense_residual_block, locals())
    in_units = _check_input(x, rank=2)[-1]
    checks.positive_int(units, "units")
    checks.one_of(opts.shortcut, "shortcut", constants.DENSE_SHORTCUTS)
    checks.boolean(batch_norm, "batch_norm")
    name = _block_name(name, "dense_residual_block")
    if opts.shortcut == "identity" and in_units != units:
        raise ValueError(f"shortcut='identity' needs matching widths, but the block maps "
                         f"{in_units} units to {units}; use shortcut='auto' (a {in_units}x{units}"
                         " projection W_s)")
    source = x
    if opts.preact:
        if batch_norm:
            source = _bn(source, f"{name}_preact_bn", opts)
        source = _act(source, f"{name}_preact_relu", opts)
    h = _dense_branch(source, units, batch_norm, name, opts)
    if opts.shortcut == "C" or in_units != units:
        short = layers.Dense(units, use_bias=False, kernel_initializer=opts.initializer(),
                             kernel_regularizer=opts.regularizer,
                             name=f"{name}_0_dense")(source if opts.preact else x)
    else:
        short = x
    if opts.preact:
        return layers.Add(name=f"{name}_out")([short, h])
    return _act(layers.Add(name=f"{name}_add")([short, h]), f"{name}_out", opts)


def _dense_branch(h, units, batch_norm, name, opts: BlockOptions):
    """Dense -> (BN) -> act -> Dense -> (BN), or its pre-activation order."""
    zero_last = opts.zero_init_residual
    for i in (1, 2):
        if opts.preact and i == 2:
            if batch_norm:
                h = _bn(h, f"{name}_1_bn", opts)
            h = _act(h, f"{name}_1_relu", opts)
        # Without a BN after it, the last Dense starts the block as the identity by a zero kernel.
        zero_kernel = (opts.preact or not batch_norm) and i == 2 and zero_last
        h = layers.Dense(units, use_bias=opts.use_bias,
                         kernel_initializer="zeros" if zero_kernel else opts.initializer(),
                         kernel_regularizer=opts.regularizer, name=f"{name}_{i}_dense")(h)
        if not opts.preact:
            if batch_norm:
                h = _bn(h, f"{name}_{i}_bn", opts, zero_gamma=i == 2 and zero_last)
            if i == 1:
                h = _act(h, f"{name}_1_relu", opts)
    return h
