"""Stages whose repeated blocks run in a loop: a graph of one block body per stage at any depth.

Inside a stage every block after the first has the same shapes and options. ``RepeatedBlocks``
holds those blocks' weights stacked along a leading block axis and applies them one after the
other in a ``tf.while_loop``, so building and tracing cost one block whatever the depth. It
computes exactly the function of the unrolled blocks (``residual_block`` / ``plain_block`` with
stride 1 and an identity shortcut): the same convolutions, the same fused BatchNormalization with
per-block moving statistics, updated as the unrolled layers would update them.

``ResNet(..., loop_stages=True)`` builds it; ``transfer_weights`` copies weights between a looped
model and its unrolled twin (built with the same arguments), either way.
"""

from __future__ import annotations

import keras
from keras import layers

from keras_resnet import checks
from keras_resnet.options import BlockOptions


def branch_plan(filters: int, options: BlockOptions):
    """The branch's convolutions of a stride-1 block: ``[(kernel size, in, out), ...]``."""
    out = filters * options.expansion if options.bottleneck else filters
    if options.bottleneck:
        return [(1, out, filters), (3, filters, filters), (1, filters, out)]
    return [(3, out, filters), (3, filters, out)]


def bn_names(plan, options: BlockOptions):
    """Suffixes of a block's BN layers in the unrolled model, with their channels, in order."""
    if options.preact:
        return [("preact_bn", plan[0][1])] + [(f"{i}_bn", plan[i - 1][2])
                                             for i in range(1, len(plan))]
    return [(f"{i}_bn", plan[i - 1][2]) for i in range(1, len(plan) + 1)]


def _stacked_initializer(options: BlockOptions, count):
    """Draws each block's slice with its own initializer (fans are those of one block)."""
    def initialize(shape, dtype=None):
        return keras.ops.stack([options.initializer()(tuple(shape[1:]), dtype=dtype)
                                for _ in range(count)])
    return initialize


@keras.saving.register_keras_serializable(package="keras_resnet")
class RepeatedBlocks(layers.Layer):
    """``count`` stride-1 residual (or plain) blocks of one stage, applied in a loop.

    Args:
        count: number of blocks.
        filters: the blocks' width (a bottleneck outputs ``filters * expansion`` channels).
        options: the blocks' ``BlockOptions`` (or its config).
        plain: plain blocks (no shortcut).
        recompute_grad: keep only each block's input for the backward pass and recompute the
            block's activations there (``tf.recompute_grad``, gradient checkpointing): less memory,
            one more forward pass per training step; the same gradients.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Raises:
        ValueError: for ``shortcut="C"`` (every block projects: nothing repeats unchanged).
    """

    def __init__(self, count, filters, options=None, plain=False, recompute_grad=False,
                 **kwargs):
        # Variables are read in float32 (the BN statistics must stay float32, as in Keras' own
        # BatchNormalization); the kernels are cast to the compute dtype where they are used.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.count = checks.positive_int(count, "count")
        self.filters = checks.positive_int(filters, "filters")
        if not isinstance(options, BlockOptions):
            options = BlockOptions.from_config(options or {})
        self.options = options
        self.plain = checks.boolean(plain, "plain")
        self.recompute_grad = checks.boolean(recompute_grad, "recompute_grad")
        if options.shortcut == "C" and not plain:
            raise ValueError("loop_stages=True needs blocks that repeat unchanged, but "
                             "shortcut='C' projects in every block; use shortcut='auto', 'A', "
                             "'B' or 'D'")
        self.plan = branch_plan(self.filters, options)
        self.bns = bn_names(self.plan, options)

    def build(self, input_shape):
        opts, count = self.options, self.count
        channels = self.plan[0][1]
        if input_shape[-1] != channels:
            raise ValueError(f"RepeatedBlocks {self.name!r} maps {channels} channels to "
                             f"{channels}; got an input with {input_shape[-1]}")
        self.kernels, self.biases = [], []
        for i, (size, cin, cout) in enumerate(self.plan, start=1):
            last = i == len(self.plan)
            zero = opts.preact and last and opts.zero_init_residual
            init = "zeros" if zero else _stacked_initializer(opts, count)
            self.kernels.append(self.add_weight(
                name=f"{i}_conv_kernel", shape=(count, size, size, cin, cout), initializer=init,
                regularizer=opts.regularizer))
            if opts.use_bias:
                self.biases.append(self.add_weight(name=f"{i}_conv_bias", shape=(count, cout),
                                                   initializer="zeros"))
        self.bn_weights = []
        for suffix, width in self.bns:
            last = suffix == f"{len(self.plan)}_bn"
            gamma_init = "zeros" if last and opts.zero_init_residual else "ones"
            self.bn_weights.append(tuple(
                self.add_weight(name=f"{suffix}_{part}", shape=(count, width), initializer=init,
                                trainable=part in ("gamma", "beta"))
                for part, init in (("gamma", gamma_init), ("beta", "zeros"),
                                   ("moving_mean", "zeros"), ("moving_variance", "ones"))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "count": self.count, "filters": self.filters,
                "options": self.options.to_config(), "plain": self.plain,
                "recompute_grad": self.recompute_grad}

    # ------------------------------------------------------------------------- the loop

    def call(self, inputs, training=None):
        import tensorflow as tf

        training = bool(training) and self.trainable
        # Each stacked variable enters the loop as a TensorArray (one op whatever the depth) and
        # block i reads its slice with `read(i)`: the gradient writes slice i of a gradient array
        # (O(1) per block), where a `tf.gather` of the stacked variable would make every block's
        # backward step add a dense gradient of the whole stack (O(count) per block).
        variables = self._stacked(training)
        arrays = [tf.TensorArray(v.dtype, size=self.count, element_shape=v.shape[1:],
                                 infer_shape=False).unstack(v.value) for v in variables]
        # Training: one batch-statistics array per BN moment, filled block by block.
        stats = [tf.TensorArray("float32", size=self.count, element_shape=(width,))
                 for _, width in self.bns for _ in range(2)] if training else []
        n_arrays = len(arrays)

        def block(x, *weights):
            y, moments = self._block(x, self._unflatten(list(weights)), training)
            return (y, *moments)

        if self.recompute_grad and training:
            block = tf.recompute_grad(block)

        def body(i, x, *carried):
            arrays, stats = carried[:n_arrays], list(carried[n_arrays:])
            y, *moments = block(x, *(a.read(i) for a in arrays))
            stats = [s.write(i, m) for s, m in zip(stats, moments)]
            return (i + 1, y, *arrays, *stats)

        _, outputs, *carried = tf.while_loop(
            lambda i, *_: i < self.count, body, (tf.constant(0), inputs, *arrays, *stats))
        if training:
            momentum = self.options.momentum
            stats = [s.stack() for s in carried[n_arrays:]]
            for j, (_, _, mean, variance) in enumerate(self.bn_weights):
                mean.assign(mean * momentum + stats[2 * j] * (1.0 - momentum))
                variance.assign(variance * momentum + stats[2 * j + 1] * (1.0 - momentum))
        return outputs

    def _stacked(self, training):
        """The stacked variables a block reads: kernels, biases, then each BN's parameters."""
        norms = [w[:2] if training else w for w in self.bn_weights]  # training: batch statistics
        return [*self.kernels, *self.biases, *(w for bn in norms for w in bn)]

    def _unflatten(self, values):
        """``_stacked``'s order back to ``(kernels, biases, [(gamma, beta, mean?, var?), ...])``."""
        n, m = len(self.kernels), len(self.biases)
        per_bn = (len(values) - n - m) // len(self.bn_weights)
        norms = values[n + m:]
        return (values[:n], values[n:n + m],
                [tuple(norms[j * per_bn:(j + 1) * per_bn]) for j in range(len(self.bn_weights))])

    def _block(self, x, weights, training):
        """One block from its weights: the unrolled block's layers, in the same order.

        Returns:
            ``(output, [mean, variance of each BN's batch])``, the list empty out of training.
        """
        kernels, biases, norms = weights
        act = keras.activations.get(self.options.activation)
        last = len(self.plan) - 1
        moments = []

        def conv(h, k):
            return self._conv(h, kernels[k], biases[k] if biases else None)

        def norm(h, j):
            return self._norm(h, norms[j], moments, training)

        h = x
        if self.options.preact:
            h = act(norm(h, 0))
            for k in range(len(self.plan)):
                if k > 0:
                    h = act(norm(h, k))
                h = conv(h, k)
            return (h if self.plain else x + h), moments
        for k in range(len(self.plan)):
            h = norm(conv(h, k), k)
            if k < last:
                h = act(h)
        return act(h if self.plain else x + h), moments

    def _conv(self, x, kernel, bias):
        import tensorflow as tf

        y = tf.nn.conv2d(x, tf.cast(kernel, self.compute_dtype), strides=1, padding="SAME")
        if bias is not None:
            y = tf.nn.bias_add(y, tf.cast(bias, self.compute_dtype))
        return y

    def _norm(self, x, weights, moments, training):
        """``FusedBatchNormalization`` with one block's BN weights (see ``batch_norm.py``)."""
        import tensorflow as tf

        if not training:
            gamma, beta, mean, variance = weights
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=gamma, offset=beta, mean=mean, variance=variance,
                epsilon=self.options.epsilon, data_format="NHWC", is_training=False)
            return tf.cast(y, self.compute_dtype)
        gamma, beta = weights
        y, batch_mean, batch_variance, *_ = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
            epsilon=self.options.epsilon, data_format="NHWC", is_training=True)
        # The kernel returns the unbiased batch variance; the moving average takes the biased one.
        count = tf.cast(tf.size(x) // tf.shape(x)[-1], "float32")
        moments += [batch_mean, batch_variance * ((count - 1.0) / tf.maximum(count, 1.0))]
        return tf.cast(y, self.compute_dtype)

    # ------------------------------------------------------------------------- per-block view

    def block_weights(self):
        """``[(unrolled layer suffix, weight position, stacked variable), ...]``.

        Block ``k`` of the stack (``k = 0 ... count - 1``) is the unrolled model's
        ``{stage}_block{k + 2}``; its layer ``{stage}_block{k + 2}_{suffix}`` holds slice ``k``
        of the variable at ``get_weights()`` position ``position``.
        """
        entries = []
        for i, kernel in enumerate(self.kernels, start=1):
            entries.append((f"{i}_conv", 0, kernel))
            if self.biases:
                entries.append((f"{i}_conv", 1, self.biases[i - 1]))
        for (suffix, _), weights in zip(self.bns, self.bn_weights):
            entries.extend((suffix, position, w) for position, w in enumerate(weights))
        return entries

    @property
    def stage(self):
        """The stage prefix, e.g. ``conv3`` for the layer ``conv3_blocks``."""
        return self.name[: -len("_blocks")] if self.name.endswith("_blocks") else self.name


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _flat_weights(model):
    """``{(unrolled layer name, position): array}``, looped stages expanded block by block."""
    flat = {}
    for layer in _leaf_layers(model):
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

    for layer in _leaf_layers(target):
        if isinstance(layer, RepeatedBlocks):
            for suffix, position, variable in layer.block_weights():
                variable.assign(np.stack([get((f"{layer.stage}_block{k + 2}_{suffix}", position))
                                          for k in range(layer.count)]))
        elif layer.weights:
            layer.set_weights([get((layer.name, p)) for p in range(len(layer.weights))])
    return target


# ----------------------------------------------------------------------------- conversion


def _unroll(layer: RepeatedBlocks, x):
    from keras_resnet.blocks import plain_block, residual_block

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
