"""Looped and unrolled twins of a ResNet: weight transfer and conversion, either way.

``transfer_weights`` copies every weight between a model with ``RepeatedBlocks`` stages and its
unrolled twin (slice ``k`` of a stacked variable is block ``k + 2`` of the stage);
``convert_stages`` builds the twin.
"""

from __future__ import annotations

import keras

from keras_resnet import checks
from keras_resnet.modeling.looped_stages import RepeatedBlocks
from keras_resnet.modeling.block_options import BlockOptions
from keras_resnet.modeling.stats import leaf_layers


def _flat_weights(model):
    """``{(unrolled layer name, position): array}``, looped stages expanded block by block."""
    flat = {}
    for layer in leaf_layers(model):
        if isinstance(layer, RepeatedBlocks):
            for suffix, position, variable in layer.block_weights():
                values = keras.ops.convert_to_numpy(variable)
                for k in range(layer.count):
                    flat[(f"{layer.stage}_block{k + 2}_{suffix}", position)] = values[k]
        else:
            for position, values in enumerate(layer.get_weights()):
                flat[(layer.name, position)] = values
    return flat


def transfer_weights(source: keras.Model, target: keras.Model) -> keras.Model:
    """Copies every weight of ``source`` into ``target``, looped or unrolled either way.

    The two must be the same network built with the same arguments, one with
    ``loop_stages=True`` and one without (or both alike).

    Returns:
        ``target``.

    Raises:
        ValueError: when a weight of ``target`` has no counterpart in ``source``.
    """
    import numpy as np

    flat = _flat_weights(source)

    def get(key):
        if key not in flat:
            raise ValueError(f"source model {source.name!r} has no weight {key[1]} of layer "
                             f"{key[0]!r}; build both models with the same arguments")
        return flat[key]

    for layer in leaf_layers(target):
        if isinstance(layer, RepeatedBlocks):
            for suffix, position, variable in layer.block_weights():
                variable.assign(np.stack([get((f"{layer.stage}_block{k + 2}_{suffix}", position))
                                          for k in range(layer.count)]))
        elif layer.weights:
            layer.set_weights([get((layer.name, p)) for p in range(len(layer.weights))])
    return target


# ----------------------------------------------------------------------------- conversion


def _unroll(layer: RepeatedBlocks, x):
    from keras_resnet.modeling.blocks import plain_block, residual_block

    block = plain_block if layer.plain else residual_block
    for k in range(layer.count):
        x = block(x, layer.filters, 1, name=f"{layer.stage}_block{k + 2}", options=layer.options)
    return x


def _stage_blocks(model):
    """``{stage: number of blocks}`` of an unrolled model, from its stable layer names."""
    blocks = {}
    for layer in model.layers:
        stage, _, rest = layer.name.partition("_block")
        if rest and rest.split("_", 1)[0].isdigit() and stage.startswith("conv"):
            blocks[stage] = max(blocks.get(stage, 0), int(rest.split("_", 1)[0]))
    return blocks


def _options_of_block(model, names, prefix):
    """The ``BlockOptions``, width and plainness of the unrolled block ``prefix``."""
    bottleneck = f"{prefix}_3_conv" in names
    first = model.get_layer(f"{prefix}_1_conv")
    last = model.get_layer(f"{prefix}_{3 if bottleneck else 2}_conv")
    bn = model.get_layer(f"{prefix}_1_bn")
    relu = model.get_layer(f"{prefix}_1_relu")
    if f"{prefix}_0_conv" in names:
        raise ValueError(f"block {prefix!r} projects its shortcut (shortcut='C'): loop_stages "
                         "needs blocks that repeat unchanged")
    options = BlockOptions(
        bottleneck=bottleneck, preact=f"{prefix}_preact_bn" in names,
        expansion=last.filters // first.filters if bottleneck else 4,
        kernel_initializer=keras.initializers.serialize(first.kernel_initializer),
        kernel_regularizer=keras.regularizers.serialize(first.kernel_regularizer)
        if first.kernel_regularizer is not None else None,
        activation=keras.activations.serialize(relu.activation), momentum=float(bn.momentum),
        epsilon=float(bn.epsilon), use_bias=bool(first.use_bias))
    # Post-activation residual blocks add in `_add`, pre-activation ones in `_out`; plain
    # blocks have no addition (post-activation: `_out` is the activation).
    plain = f"{prefix}_add" not in names and not (options.preact and f"{prefix}_out" in names)
    return options, first.filters, plain


def _last_layer_name(names, prefix):
    if f"{prefix}_out" in names:
        return f"{prefix}_out"
    return f"{prefix}_{3 if f'{prefix}_3_conv' in names else 2}_conv"


def _loop_call(model):
    """A ``call_function`` for ``clone_model`` that replaces blocks 2..n of each stage."""
    names = {layer.name for layer in model.layers}
    counts = {stage: n for stage, n in _stage_blocks(model).items() if n > 1}
    specs = {stage: _options_of_block(model, names, f"{stage}_block2") for stage in counts}
    ends = {stage: _last_layer_name(names, f"{stage}_block{n}") for stage, n in counts.items()}
    stage_inputs = {}

    def call(layer, *args, **kwargs):
        stage, _, rest = layer.name.partition("_block")
        number = rest.split("_", 1)[0] if rest else ""
        if stage not in counts or not number.isdigit():
            return layer(*args, **kwargs)
        if int(number) == 1:
            outputs = layer(*args, **kwargs)
            stage_inputs[stage] = outputs  # the last layer of block 1 comes last
            return outputs
        if layer.name == ends[stage]:
            options, filters, plain = specs[stage]
            return RepeatedBlocks(counts[stage] - 1, filters, options, plain,
                                  name=f"{stage}_blocks")(stage_inputs[stage])
        first = args[0]  # a layer inside blocks 2..n: left out of the new model
        return first[0] if isinstance(first, (list, tuple)) else first

    return call


def convert_stages(model: keras.Model, loop: bool = True) -> keras.Model:
    """The twin of a ResNet with its stages looped (``loop=True``) or unrolled, same weights.

    Args:
        model: a model built by ``keras_resnet.ResNet`` / ``CifarResNet`` (stable layer names).
        loop: ``True``: blocks 2..n of each stage become one ``RepeatedBlocks`` layer;
            ``False``: every ``RepeatedBlocks`` layer becomes its unrolled blocks.

    Returns:
        A new ``keras.Model`` computing the same function with the same weights; ``model`` is not
        changed.

    Raises:
        TypeError: ``model`` is not a functional Keras model.
        ValueError: a stage's blocks do not repeat unchanged (``shortcut="C"``).
    """
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", True) \
            or not model.inputs:
        raise TypeError(f"model must be a functional keras.Model; got {model!r}")
    checks.boolean(loop, "loop")

    def clone(layer):
        if isinstance(layer, RepeatedBlocks):
            return layer
        if isinstance(layer, keras.Model):
            return convert_stages(layer, loop)
        return layer.__class__.from_config(layer.get_config())

    if loop:
        call = _loop_call(model)
    else:
        def call(layer, *args, **kwargs):
            if isinstance(layer, RepeatedBlocks):
                return _unroll(layer, args[0])
            return layer(*args, **kwargs)
    twin = keras.models.clone_model(model, clone_function=clone, call_function=call)
    return transfer_weights(model, twin)
