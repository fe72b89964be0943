"""ResNet models stacked from the blocks: a generic data-driven builder and the named networks.

``ResNet`` assembles any stem + stages + head from data (``presets.py``); ``ResNet18`` ...
``ResNet152`` and ``CifarResNet`` are keras.applications-style constructors on top of it.
Very deep networks are built with one sub-model per stage so that Keras never walks a graph of
thousands of layers recursively (a flat ResNet-1202 overflows Python's recursion limit).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import keras
from keras import layers

from keras_resnet import checks, constants
from keras_resnet.modeling import presets
from keras_resnet.modeling.fused_batch_norm import FusedBatchNormalization
from keras_resnet.modeling.blocks import plain_block, residual_block
from keras_resnet.modeling.looped_stages import RepeatedBlocks
from keras_resnet.modeling.block_options import BlockOptions, resolve_activation
from keras_resnet.modeling.applications_weights import check_weights, load_weights

# Above this many blocks the stages become sub-models (see the module docstring).
_FLAT_BLOCK_LIMIT = 120


# ----------------------------------------------------------------------------- argument checks


def _architecture(depth, stage_depths, widths, bottleneck):
    """Returns ``(stage_depths, widths, bottleneck)`` from a known depth or explicit stages."""
    if depth is not None and stage_depths is not None:
        raise ValueError(f"pass depth or stage_depths, not both; got depth={depth!r}, "
                         f"stage_depths={stage_depths!r}")
    if depth is not None:
        checks.positive_int(depth, "depth")
        if depth not in presets.IMAGENET_STAGES:
            raise ValueError(f"depth must be a known ImageNet depth "
                             f"{tuple(presets.IMAGENET_STAGES)}; got {depth!r} (or pass "
                             "stage_depths=(...))")
        stage_depths = presets.IMAGENET_STAGES[depth]["stage_depths"]
        if bottleneck is None:
            bottleneck = presets.IMAGENET_STAGES[depth]["bottleneck"]
    if stage_depths is None:
        raise ValueError("pass depth=18|34|50|101|152|200 or stage_depths=(...); got neither")
    if not isinstance(stage_depths, (tuple, list)) or not stage_depths:
        raise ValueError(f"stage_depths must be a non-empty tuple of ints; got {stage_depths!r}")
    stage_depths = tuple(checks.positive_int(value, f"stage_depths[{i}]")
                         for i, value in enumerate(stage_depths))
    if not isinstance(widths, (tuple, list)) or len(widths) != len(stage_depths):
        raise ValueError(f"widths must give one width per stage ({len(stage_depths)}); "
                         f"got {widths!r}")
    widths = tuple(checks.positive_int(value, f"widths[{i}]") for i, value in enumerate(widths))
    return stage_depths, widths, False if bottleneck is None else bottleneck


def _compat_options(compat, options, plain, stem):
    """The options that reproduce keras.applications' ResNet50/101/152 (or ``options``)."""
    checks.one_of(compat, "compat", constants.COMPATS)
    if compat is None:
        return options
    if not options.bottleneck or options.preact or plain or stem != "imagenet" \
            or options.shortcut != "auto":
        raise ValueError("compat='keras.applications' reproduces keras.applications' "
                         "ResNet50/101/152 (post-activation bottlenecks, imagenet stem, "
                         "shortcut='auto'); got an incompatible combination of options")
    return options.replace(use_bias=True, stride_on="1x1", epsilon=1.001e-5, momentum=0.99)


def _check_loop(loop_stages, opts, plain, compat, recompute_grad=False):
    if checks.boolean(recompute_grad, "recompute_grad") and not loop_stages:
        raise ValueError("recompute_grad=True recomputes the looped blocks; it needs "
                         "loop_stages=True; got loop_stages=False")
    if not checks.boolean(loop_stages, "loop_stages"):
        return
    if compat is not None:
        raise ValueError("loop_stages=True cannot reproduce compat='keras.applications': its "
                         "weight files name every block's layers; pass loop_stages=False")
    if opts.shortcut == "C" and not plain:
        raise ValueError("loop_stages=True needs blocks that repeat unchanged, but shortcut='C' "
                         "projects in every block; use shortcut='auto', 'A', 'B' or 'D'")


def _check_head(include_top, pooling, classes, classifier_activation):
    checks.boolean(include_top, "include_top")
    checks.one_of(pooling, "pooling", constants.POOLINGS)
    if include_top:
        checks.positive_int(classes, "classes")
        resolve_activation(classifier_activation, "classifier_activation", allow_none=True)


def _check_input_shape(input_shape, default, total_stride, input_tensor):
    if input_tensor is not None:
        if not hasattr(input_tensor, "shape") or len(input_tensor.shape) != 4:
            raise ValueError("input_tensor must be a 4-D channels-last tensor (batch, height, "
                             f"width, channels); got {getattr(input_tensor, 'shape', input_tensor)}")
        shape = tuple(input_tensor.shape[1:])
    elif input_shape is None:
        shape = tuple(default)
    else:
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ValueError("input_shape must be (height, width, channels); got "
                             f"{input_shape!r}")
        shape = tuple(input_shape)
    height, width, channels = shape
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"input_shape channels must be an int >= 1 (channels-last); got {shape}")
    for axis, size in (("height", height), ("width", width)):
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < total_stride:
            raise ValueError(
                f"input_shape {shape}: {axis} {size} is too small; this network downsamples "
                f"by {total_stride}, so height and width must be >= {total_stride} (or None)")
    return shape


# ----------------------------------------------------------------------------- the network


def _inputs(input_tensor, shape):
    """Returns ``(model inputs, image tensor)``."""
    if input_tensor is None:
        inputs = keras.Input(shape=shape)
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=shape)
        return inputs, inputs
    return keras.utils.get_source_inputs(input_tensor), input_tensor


def _bn_act(x, prefix, opts: BlockOptions):
    x = FusedBatchNormalization(momentum=opts.momentum, epsilon=opts.epsilon,
                                name=f"{prefix}_bn")(x)
    return layers.Activation(opts.activation, name=f"{prefix}_relu")(x)


def _stem(x, stem, width, opts: BlockOptions):
    def conv(t, filters, kernel, stride, padding, name):
        return layers.Conv2D(filters, kernel, strides=stride, padding=padding,
                             use_bias=opts.use_bias, kernel_initializer=opts.initializer(),
                             kernel_regularizer=opts.regularizer, name=name)(t)

    if stem == "cifar":
        x = conv(x, width, 3, 1, "same", "conv1_conv")
        return x if opts.preact else _bn_act(x, "conv1", opts)
    if stem == "imagenet":
        x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
        x = conv(x, width, 7, 2, "valid", "conv1_conv")
        if not opts.preact:
            x = _bn_act(x, "conv1", opts)
    else:  # "deep": ResNet-C, three 3x3 convolutions instead of the 7x7
        for i, (filters, stride) in enumerate(((width // 2, 2), (width // 2, 1), (width, 1)), 1):
            if stride > 1:
                x = layers.ZeroPadding2D(1, name=f"conv1_{i}_pad")(x)
            x = conv(x, filters, 3, stride, "valid" if stride > 1 else "same", f"conv1_{i}_conv")
            if not (opts.preact and i == 3):
                x = _bn_act(x, f"conv1_{i}", opts)
    # Zero padding is exact for max pooling here: the inputs are post-ReLU (or the
    # pre-activation stem, where keras.applications pads with zeros too).
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)


def _stage(x, index, blocks, width, stride, opts: BlockOptions, plain, as_model, loop=False,
           recompute_grad=False):
    """Stacks one stage; as a sub-model named ``conv{index}`` when ``as_model``.

    With ``loop``, the blocks after the first (same shapes, same options) are one
    ``RepeatedBlocks`` layer named ``conv{index}_blocks``.
    """
    inputs = keras.Input(shape=x.shape[1:], name=f"conv{index}_input") if as_model else x
    block = plain_block if plain else residual_block
    y = block(inputs, width, stride, name=f"conv{index}_block1", options=opts)
    if loop and blocks > 1:
        y = RepeatedBlocks(blocks - 1, width, opts, plain, recompute_grad,
                           name=f"conv{index}_blocks")(y)
    else:
        for i in range(2, blocks + 1):
            y = block(y, width, 1, name=f"conv{index}_block{i}", options=opts)
    if not as_model:
        return y
    return keras.Model(inputs, y, name=f"conv{index}")(x)


def _head(x, opts: BlockOptions, include_top, pooling, classes, classifier_activation):
    if opts.preact:
        x = _bn_act(x, "post", opts)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # float32 head: probabilities stay float32 under mixed precision.
        return layers.Dense(classes, activation=classifier_activation, name="predictions",
                            kernel_initializer="glorot_uniform", dtype="float32")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def ResNet(depth: int | None = None, include_top: bool = True,
           weights: str | os.PathLike | None = None,
           input_tensor: keras.KerasTensor | None = None,
           input_shape: tuple[int | None, int | None, int] | None = None,
           pooling: str | None = None, classes: int = 1000,
           classifier_activation: str | Callable | None = "softmax", name: str | None = None, *,
           stage_depths: Sequence[int] | None = None,
           widths: Sequence[int] = presets.IMAGENET_WIDTHS, bottleneck: bool | None = None,
           stem: str = "imagenet", plain: bool = False, preact: bool = False,
           shortcut: str = "auto", stride_on: str = "3x3", expansion: int = 4,
           kernel_initializer: str | dict | Callable = "he_normal",
           kernel_regularizer: str | dict | Callable | None = None,
           weight_decay: float | None = None, activation: str | Callable = "relu",
           zero_init_residual: bool = False, momentum: float = 0.9, epsilon: float = 1e-5,
           use_bias: bool = False, compat: str | None = None, stage_models: bool | None = None,
           loop_stages: bool = False, recompute_grad: bool = False) -> keras.Model:
    """Builds a residual network from data: a stem, stages of blocks and a classifier head.

    Args:
        depth: a known ImageNet depth (18, 34, 50, 101, 152, 200); or give ``stage_depths``.
        include_top: end with global average pooling and a ``classes``-way Dense layer.
        weights: None (random), a path to a weights file (a torchvision / timm checkpoint
            ``.safetensors`` / ``.pth``, ``.keras``, ``.weights.h5``, or a legacy ``.h5`` such
            as keras.applications' published files; ``keras_resnet.modeling.weight_files.load_weights``)
            or ``"imagenet"`` (only with
            ``compat="keras.applications"``; downloads keras.applications' file and checks its
            MD5 digest).
        input_tensor: optional Keras tensor to use as the input.
        input_shape: ``(height, width, channels)``; defaults to (224, 224, 3) with the top,
            (None, None, 3) without.
        pooling: ``None``, ``"avg"`` or ``"max"`` when ``include_top=False``.
        classes: number of classes of the head.
        classifier_activation: activation of the head; None returns logits.
        name: model name.
        stage_depths: blocks per stage, e.g. (3, 4, 6, 3).
        widths: block width per stage.
        bottleneck: bottleneck blocks (default: from ``depth``, else False).
        stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool), ``"deep"`` (three 3x3 convs,
            ResNet-C) or ``"cifar"`` (one 3x3 conv, no pooling).
        plain: build the plain twin (the same blocks without shortcuts).
        preact: pre-activation blocks (He et al. 2016) and a final BN-ReLU.
        shortcut, stride_on, expansion, kernel_initializer, kernel_regularizer: block options,
            as the next entry.
        weight_decay, activation, zero_init_residual, momentum, epsilon, use_bias: block
            options, see ``keras_resnet.residual_block``; they are validated once, as one
            ``keras_resnet.BlockOptions``, and passed to every block.
        compat: ``"keras.applications"`` reproduces keras.applications' ResNet50/101/152
            exactly (conv biases, stride in the first 1x1, BN epsilon 1.001e-5, same names).
        stage_models: build each stage as a sub-model (default: only for very deep networks).
        loop_stages: in each stage, apply the blocks after the first as one
            ``keras_resnet.modeling.looped_stages.RepeatedBlocks`` layer (their weights stacked, run in a loop):
            the same function, a graph of one block per stage whatever the depth. A no-op for
            stages of one block; not with ``shortcut="C"`` or ``compat``.
        recompute_grad: with ``loop_stages``, recompute each looped block's activations in the
            backward pass (gradient checkpointing): less memory, a longer training step.

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: for a bad argument, before any layer is built.
        TypeError: for an argument of the wrong type.
    """
    stage_depths, widths, bottleneck = _architecture(depth, stage_depths, widths, bottleneck)
    checks.one_of(stem, "stem", constants.STEMS)
    checks.boolean(plain, "plain")
    opts = BlockOptions(
        bottleneck=bottleneck, preact=preact, shortcut=shortcut, stride_on=stride_on,
        expansion=expansion, kernel_initializer=kernel_initializer,
        kernel_regularizer=kernel_regularizer, weight_decay=weight_decay, activation=activation,
        zero_init_residual=zero_init_residual, momentum=momentum, epsilon=epsilon,
        use_bias=use_bias)
    opts = _compat_options(compat, opts, plain, stem)
    check_weights(weights, depth, compat, include_top, classes)
    _check_head(include_top, pooling, classes, classifier_activation)
    total_stride = (1 if stem == "cifar" else 4) * 2 ** (len(stage_depths) - 1)
    default_shape = (presets.IMAGENET_INPUT_SHAPE if stem != "cifar"
                     else presets.CIFAR_INPUT_SHAPE) if include_top else (None, None, 3)
    shape = _check_input_shape(input_shape, default_shape, total_stride, input_tensor)
    _check_loop(loop_stages, opts, plain, compat, recompute_grad)
    if compat is not None or loop_stages:
        stage_models = False  # keras.applications' flat layer list; a loop is small anyway
    elif stage_models is None:
        stage_models = sum(stage_depths) > _FLAT_BLOCK_LIMIT

    inputs, x = _inputs(input_tensor, shape)
    x = _stem(x, stem, widths[0] if stem == "cifar" else 64, opts)
    for s, (blocks, width) in enumerate(zip(stage_depths, widths)):
        x = _stage(x, s + 2, blocks, width, 1 if s == 0 else 2, opts, plain, stage_models,
                   loop_stages, recompute_grad)
    x = _head(x, opts, include_top, pooling, classes, classifier_activation)
    if name is None:
        kind = "plain" if plain else ("preact_resnet" if preact else "resnet")
        name = f"{kind}{depth}" if depth else kind
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        load_weights(model, weights, depth, include_top)
    return model


# ----------------------------------------------------------------------------- named networks


def _imagenet(depth):
    def constructor(include_top: bool = True, weights: str | os.PathLike | None = None,
                    input_tensor: keras.KerasTensor | None = None,
                    input_shape: tuple[int | None, int | None, int] | None = None,
                    pooling: str | None = None, classes: int = 1000,
                    classifier_activation: str | Callable | None = "softmax",
                    name: str | None = None, **options) -> keras.Model:
        return ResNet(depth, include_top, weights, input_tensor, input_shape, pooling, classes,
                      classifier_activation, name, **options)

    constructor.__name__ = constructor.__qualname__ = f"ResNet{depth}"
    constructor.__doc__ = (
        f"ResNet-{depth} (He et al. 2015) with keras.applications' signature.\n\n"
        "    Args:\n        include_top, weights, input_tensor, input_shape, pooling, classes,\n"
        "        classifier_activation, name: as in keras.applications.\n"
        "        **options: keyword-only options of ``keras_resnet.ResNet`` (``preact``,\n"
        "            ``plain``, ``shortcut``, ``compat``, ``kernel_initializer``, ...).\n\n"
        "    Returns:\n        A ``keras.Model``.\n")
    return constructor


ResNet18 = _imagenet(18)
ResNet34 = _imagenet(34)
ResNet50 = _imagenet(50)
ResNet101 = _imagenet(101)
ResNet152 = _imagenet(152)


def CifarResNet(depth: int = 20, include_top: bool = True,
                weights: str | os.PathLike | None = None,
                input_tensor: keras.KerasTensor | None = None,
                input_shape: tuple[int | None, int | None, int] | None = None,
                pooling: str | None = None, classes: int = presets.CIFAR_CLASSES,
                classifier_activation: str | Callable | None = "softmax",
                name: str | None = None, *, bottleneck: bool = False, preact: bool = False,
                plain: bool = False, shortcut: str | None = None,
                widths: Sequence[int] = presets.CIFAR_WIDTHS, **options) -> keras.Model:
    """The CIFAR ResNets of He et al.: 6n+2 layers (basic blocks) or 9n+2 (bottlenecks).

    A 3x3 stem with 16 filters, three stages of 16/32/64 filters (bottleneck outputs 64/128/256)
    at 32x32, 16x16 and 8x8, global average pooling and a ``classes``-way head. ResNet-20/32/44/
    56/110/1202 use option-A shortcuts; ResNet-164 and ResNet-1001 are the pre-activation
    bottleneck networks of He et al. 2016 (``preact=True, bottleneck=True``).

    Args:
        depth: 6n+2 for basic blocks (20, 32, 44, 56, 110, 1202, ...), 9n+2 with
            ``bottleneck=True`` (164, 1001, ...).
        include_top, weights, input_tensor, input_shape: as in keras.applications;
            ``input_shape`` defaults to (32, 32, 3).
        pooling, classes, classifier_activation, name: as in keras.applications; ``classes``
            defaults to 10.
        bottleneck: bottleneck blocks (9n+2 layers).
        preact: pre-activation blocks.
        plain: the plain twin (no shortcuts).
        shortcut: default ``"A"`` (the paper's zero padding) for basic blocks and ``"auto"``
            (projection) for bottlenecks.
        widths: the three stage widths.
        **options: other keyword-only options of ``keras_resnet.ResNet``.

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: for a depth outside the family or another bad argument.
        TypeError: for an argument of the wrong type.
    """
    n = presets.cifar_blocks_per_stage(depth, bottleneck)
    if shortcut is None:
        shortcut = "auto" if bottleneck else "A"
    if name is None:
        kind = "plain" if plain else ("preact_resnet" if preact else "resnet")
        name = f"cifar_{kind}{depth}"
    return ResNet(None, include_top, weights, input_tensor, input_shape, pooling, classes,
                  classifier_activation, name, stage_depths=(n, n, n), widths=widths,
                  bottleneck=bottleneck, stem="cifar", preact=preact, plain=plain,
                  shortcut=shortcut, **options)


def build(model_name: str, **kwargs) -> keras.Model:
    """Builds a named network (``"resnet50"``, ``"cifar-resnet20"``, ``"cifar-plain56"``, ...).

    Args:
        model_name: a key of ``keras_resnet.modeling.presets.MODEL_PRESETS``.
        **kwargs: passed to the constructor (``input_shape``, ``classes``, options, ...).

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones).
        TypeError: for a name that is not a str.
    """
    presets.check_model_name(model_name, "model_name")
    family, preset = presets.MODEL_PRESETS[model_name]
    arguments = {**preset, **kwargs}
    if family == "cifar":
        return CifarResNet(**arguments)
    return ResNet(**arguments)
