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

import keras
from keras import layers, ops

from keras_resnet.batch_norm import FusedBatchNormalization

SHORTCUTS = ("auto", "identity", "A", "B", "C", "D")
STRIDE_ON = ("3x3", "1x1")
INITIALIZER_NAMES = (
    "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "identity", "lecun_normal",
    "lecun_uniform", "ones", "orthogonal", "random_normal", "random_uniform", "truncated_normal",
    "variance_scaling", "zeros",
)


@keras.saving.register_keras_serializable(package="keras_resnet")
class ZeroPadShortcut(layers.Layer):
    """The paper's option-A shortcut: spatial subsampling plus zero channels, no parameters."""

    def __init__(self, filters, stride=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.stride = int(stride)

    def call(self, inputs):
        x = inputs[:, :: self.stride, :: self.stride, :] if self.stride > 1 else inputs
        extra = self.filters - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape):
        def sub(n):
            return None if n is None else -(-n // self.stride)

        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride}


# ----------------------------------------------------------------------------- validation


def _positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{argument} must be a positive int; got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{argument} must be a positive int (1, 2, 64, ...); got {value}")
    return value


def _initializer(value, argument="kernel_initializer"):
    if isinstance(value, str):
        if value not in INITIALIZER_NAMES:
            raise ValueError(
                f"{argument} {value!r} is not a Keras initializer; valid names: "
                f"{', '.join(INITIALIZER_NAMES)} (or pass a keras.initializers.Initializer)")
        return keras.initializers.get(value)
    if isinstance(value, dict):
        return keras.initializers.deserialize(value)
    if isinstance(value, keras.initializers.Initializer) or callable(value):
        return value
    raise TypeError(f"{argument} must be an initializer name or object; got {value!r}")


def _activation(value):
    if callable(value) and not isinstance(value, str):
        return value
    if isinstance(value, str):
        try:
            keras.activations.get(value)
        except (ValueError, TypeError):
            names = sorted(n for n in dir(keras.activations)
                           if n.islower() and not n.startswith("_")
                           and n not in ("get", "serialize", "deserialize"))
            raise ValueError(f"activation {value!r} is not a Keras activation; valid names: "
                             f"{', '.join(names)}") from None
        return value
    raise TypeError(f"activation must be a name or a callable; got {value!r}")


def _regularizer(kernel_regularizer, weight_decay):
    if kernel_regularizer is not None and weight_decay is not None:
        raise ValueError("pass either kernel_regularizer or weight_decay, not both; got "
                         f"kernel_regularizer={kernel_regularizer!r}, weight_decay={weight_decay!r}")
    if weight_decay is not None:
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
                or weight_decay < 0:
            raise ValueError(f"weight_decay must be a float >= 0 (e.g. 1e-4); got {weight_decay!r}")
        # SGD weight decay wd adds wd * w to the gradient, i.e. a loss term (wd / 2) * ||w||^2.
        return keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    if kernel_regularizer is None or isinstance(kernel_regularizer, keras.regularizers.Regularizer):
        return kernel_regularizer
    try:
        return keras.regularizers.get(kernel_regularizer)
    except (ValueError, TypeError):
        raise ValueError(f"kernel_regularizer {kernel_regularizer!r} is not a Keras regularizer; "
                         "use 'l2', 'l1', 'l1_l2' or a keras.regularizers.Regularizer") from None


def _options(*, kernel_initializer="he_normal", kernel_regularizer=None, weight_decay=None,
             activation="relu", zero_init_residual=False, momentum=0.9, epsilon=1e-5,
             use_bias=False):
    """Validates the options shared by every block and returns them resolved."""
    for argument, value, low, high in (("momentum", momentum, 0.0, 1.0),
                                       ("epsilon", epsilon, 0.0, float("inf"))):
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not low <= value < high or (argument == "epsilon" and value == 0):
            accepted = "a float in [0, 1)" if argument == "momentum" else "a float > 0"
            raise ValueError(f"{argument} must be {accepted}; got {value!r}")
    for argument, value in (("zero_init_residual", zero_init_residual), ("use_bias", use_bias)):
        if not isinstance(value, bool):
            raise TypeError(f"{argument} must be True or False; got {value!r}")
    return {
        "initializer": _initializer(kernel_initializer),
        "regularizer": _regularizer(kernel_regularizer, weight_decay),
        "activation": _activation(activation),
        "zero_init_residual": zero_init_residual,
        "momentum": float(momentum),
        "epsilon": float(epsilon),
        "use_bias": use_bias,
    }


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


# ----------------------------------------------------------------------------- layers


def _conv(x, filters, kernel_size, stride, name, opts, kernel_initializer=None):
    """Conv2D with torchvision-exact padding: explicit symmetric zero padding when strided."""
    padding = "same"
    if stride > 1 and kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=name.replace("_conv", "_pad"))(x)
        padding = "valid"
    return layers.Conv2D(filters, kernel_size, strides=stride, padding=padding,
                         use_bias=opts["use_bias"],
                         kernel_initializer=kernel_initializer or opts["initializer"],
                         kernel_regularizer=opts["regularizer"], name=name)(x)


def _bn(x, name, opts, zero_gamma=False):
    return FusedBatchNormalization(axis=-1, momentum=opts["momentum"], epsilon=opts["epsilon"],
                                   gamma_initializer="zeros" if zero_gamma else "ones",
                                   name=name)(x)


def _act(x, name, opts):
    return layers.Activation(opts["activation"], name=name)(x)


def _branch(x, filters, stride, *, bottleneck, preact, stride_on, expansion, name, opts):
    """The residual function F: returns its output tensor (pre-activation: no final BN)."""
    out_filters = filters * expansion if bottleneck else filters
    zero_last = opts["zero_init_residual"]
    if bottleneck:
        plan = [(filters, 1, stride if stride_on == "1x1" else 1),
                (filters, 3, stride if stride_on == "3x3" else 1),
                (out_filters, 1, 1)]
    else:
        plan = [(filters, 3, stride), (out_filters, 3, 1)]
    for i, (width, kernel, conv_stride) in enumerate(plan, start=1):
        last = i == len(plan)
        if preact:
            if i > 1:  # the block's input BN-ReLU is shared with the shortcut (see caller)
                x = _bn(x, f"{name}_{i - 1}_bn", opts)
                x = _act(x, f"{name}_{i - 1}_relu", opts)
            # Pre-activation branches have no BN after the last conv: zero its kernel instead.
            init = "zeros" if (last and zero_last) else None
            x = _conv(x, width, kernel, conv_stride, f"{name}_{i}_conv", opts, init)
        else:
            x = _conv(x, width, kernel, conv_stride, f"{name}_{i}_conv", opts)
            x = _bn(x, f"{name}_{i}_bn", opts, zero_gamma=last and zero_last)
            if not last:
                x = _act(x, f"{name}_{i}_relu", opts)
    return x


def _shortcut(x, preactivated, out_filters, stride, shortcut, name, opts):
    """Returns the shortcut tensor chosen by the option and the shapes."""
    in_filters = x.shape[-1]
    needs_change = stride != 1 or in_filters != out_filters
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
    s = layers.Conv2D(out_filters, 1, strides=conv_stride, use_bias=opts["use_bias"],
                      kernel_initializer=opts["initializer"],
                      kernel_regularizer=opts["regularizer"], name=f"{name}_0_conv")(source)
    return s if preactivated is not x else _bn(s, f"{name}_0_bn", opts)


def _check_block_args(x, filters, stride, shortcut, stride_on, expansion):
    shape = _check_input(x)
    _positive_int(filters, "filters")
    _positive_int(stride, "stride")
    _positive_int(expansion, "expansion")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}; got {shortcut!r}")
    if stride_on not in STRIDE_ON:
        raise ValueError(f"stride_on must be '3x3' (torchvision) or '1x1' (the paper, "
                         f"keras.applications); got {stride_on!r}")
    for axis, size in zip(("height", "width"), shape[1:3]):
        if size is not None and size < stride:
            raise ValueError(f"input {axis} {size} is smaller than stride {stride}; "
                             "the input is too small for this block")
    return shape


# ----------------------------------------------------------------------------- public blocks


def residual_block(x, filters, stride=1, *, bottleneck=False, preact=False, shortcut="auto",
                   stride_on="3x3", expansion=4, kernel_initializer="he_normal",
                   kernel_regularizer=None, weight_decay=None, activation="relu",
                   zero_init_residual=False, momentum=0.9, epsilon=1e-5, use_bias=False,
                   name=None):
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
        kernel_initializer: Keras initializer name or object for every kernel.
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

    Returns:
        The block's output tensor.

    Raises:
        ValueError: for a bad option or a shortcut that cannot work on these shapes.
        TypeError: for an option of the wrong type.
    """
    _check_block_args(x, filters, stride, shortcut, stride_on, expansion)
    opts = _options(kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer,
                    weight_decay=weight_decay, activation=activation,
                    zero_init_residual=zero_init_residual, momentum=momentum, epsilon=epsilon,
                    use_bias=use_bias)
    name = _block_name(name, "residual_block")
    out_filters = filters * expansion if bottleneck else filters
    if preact:
        preactivated = _act(_bn(x, f"{name}_preact_bn", opts), f"{name}_preact_relu", opts)
        branch_in = preactivated
    else:
        preactivated = branch_in = x
    # The shortcut is built first so that shape errors come before any branch layer exists.
    short = _shortcut(x, preactivated, out_filters, stride, shortcut, name, opts)
    residual = _branch(branch_in, filters, stride, bottleneck=bottleneck, preact=preact,
                       stride_on=stride_on, expansion=expansion, name=name, opts=opts)
    if preact:
        return layers.Add(name=f"{name}_out")([short, residual])
    y = layers.Add(name=f"{name}_add")([short, residual])
    return _act(y, f"{name}_out", opts)


def plain_block(x, filters, stride=1, *, bottleneck=False, preact=False, stride_on="3x3",
                expansion=4, kernel_initializer="he_normal", kernel_regularizer=None,
                weight_decay=None, activation="relu", zero_init_residual=False, momentum=0.9,
                epsilon=1e-5, use_bias=False, name=None):
    """Builds the residual block's branch without a shortcut: ``Y = relu(F(X))``.

    This is the paper's "plain" network block, for comparisons. Arguments are those of
    ``residual_block`` (there is no ``shortcut``).

    Returns:
        The block's output tensor.

    Raises:
        ValueError: for a bad option.
        TypeError: for an option of the wrong type.
    """
    _check_block_args(x, filters, stride, "auto", stride_on, expansion)
    opts = _options(kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer,
                    weight_decay=weight_decay, activation=activation,
                    zero_init_residual=zero_init_residual, momentum=momentum, epsilon=epsilon,
                    use_bias=use_bias)
    name = _block_name(name, "plain_block")
    if preact:
        x = _act(_bn(x, f"{name}_preact_bn", opts), f"{name}_preact_relu", opts)
    y = _branch(x, filters, stride, bottleneck=bottleneck, preact=preact, stride_on=stride_on,
                expansion=expansion, name=name, opts=opts)
    return y if preact else _act(y, f"{name}_out", opts)


def dense_residual_block(x, units, *, shortcut="auto", batch_norm=True, preact=False,
                         kernel_initializer="he_normal", kernel_regularizer=None,
                         weight_decay=None, activation="relu", zero_init_residual=False,
                         momentum=0.9, epsilon=1e-5, use_bias=True, name=None):
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
        kernel_initializer, kernel_regularizer, weight_decay, activation, zero_init_residual,
        momentum, epsilon, use_bias, name: as in ``residual_block``.

    Returns:
        The block's output tensor ``(batch, units)``.

    Raises:
        ValueError: for a bad option or a forced identity between different widths.
        TypeError: for an option of the wrong type.
    """
    in_units = _check_input(x, rank=2)[-1]
    _positive_int(units, "units")
    if shortcut not in ("auto", "identity", "C"):
        raise ValueError(f"shortcut must be 'auto', 'identity' or 'C' for a dense block; "
                         f"got {shortcut!r}")
    if not isinstance(batch_norm, bool):
        raise TypeError(f"batch_norm must be True or False; got {batch_norm!r}")
    opts = _options(kernel_initializer=kernel_initializer, kernel_regularizer=kernel_regularizer,
                    weight_decay=weight_decay, activation=activation,
                    zero_init_residual=zero_init_residual, momentum=momentum, epsilon=epsilon,
                    use_bias=use_bias)
    name = _block_name(name, "dense_residual_block")
    if shortcut == "identity" and in_units != units:
        raise ValueError(f"shortcut='identity' needs matching widths, but the block maps "
                         f"{in_units} units to {units}; use shortcut='auto' (a {in_units}x{units}"
                         " projection W_s)")

    def dense(t, i, zero=False):
        return layers.Dense(units, use_bias=opts["use_bias"],
                            kernel_initializer="zeros" if zero else opts["initializer"],
                            kernel_regularizer=opts["regularizer"], name=f"{name}_{i}_dense")(t)

    source = x
    if preact:
        if batch_norm:
            source = _bn(source, f"{name}_preact_bn", opts)
        source = _act(source, f"{name}_preact_relu", opts)
    h = source
    for i in (1, 2):
        if preact and i == 2:
            if batch_norm:
                h = _bn(h, f"{name}_1_bn", opts)
            h = _act(h, f"{name}_1_relu", opts)
        zero_kernel = (preact or not batch_norm) and i == 2 and opts["zero_init_residual"]
        h = dense(h, i, zero=zero_kernel)
        if not preact:
            if batch_norm:
                h = _bn(h, f"{name}_{i}_bn", opts, zero_gamma=i == 2 and opts["zero_init_residual"])
            if i == 1:
                h = _act(h, f"{name}_1_relu", opts)
    if shortcut == "C" or in_units != units:
        short = layers.Dense(units, use_bias=False, kernel_initializer=opts["initializer"],
                             kernel_regularizer=opts["regularizer"],
                             name=f"{name}_0_dense")(source if preact else x)
    else:
        short = x
    if preact:
        return layers.Add(name=f"{name}_out")([short, h])
    return _act(layers.Add(name=f"{name}_add")([short, h]), f"{name}_out", opts)
