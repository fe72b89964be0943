"""Stages whose repeated blocks run in a loop: a graph of one block body per stage at any depth.

Inside a stage every block after the first has the same shapes and options. ``RepeatedBlocks``
holds those blocks' weights stacked along a leading block axis and applies them one after the
other in a ``tf.while_loop`` (on the other Keras backends, ``keras.ops.scan``: ``lax.scan`` on
JAX, a Python loop on PyTorch), so building and tracing cost one block whatever the depth. It
computes exactly the function of the unrolled blocks (``residual_block`` / ``plain_block`` with
stride 1 and an identity shortcut): the same convolutions, the same fused BatchNormalization with
per-block moving statistics, updated as the unrolled layers would update them.

``ResNet(..., loop_stages=True)`` builds it; ``transfer_weights`` copies weights between a looped
model and its unrolled twin (built with the same arguments), either way, and ``convert_stages``
turns one into the other (both in ``stage_conversion.py``).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from keras_resnet import checks
from keras_resnet.modeling.block_options import (BlockOptions, BranchConv, branch_plan,
                                                 output_filters)


def bn_names(plan: tuple[BranchConv, ...], options: BlockOptions) -> list[tuple[str, int]]:
    """Suffixes of a block's BN layers in the unrolled model, with their channels, in order."""
    if options.preact:
        return [("preact_bn", plan[0].in_channels)] + [(f"{i}_bn", plan[i - 1].filters)
                                                      for i in range(1, len(plan))]
    return [(f"{i}_bn", plan[i - 1].filters) for i in range(1, len(plan) + 1)]


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
            block's activations there (``tf.recompute_grad``; ``keras.remat`` on the other
            backends; gradient checkpointing): less memory, one more forward pass per training
            step; the same gradients.
        **kwargs: ``keras.layers.Layer`` arguments (``name``, ``dtype``).

    Raises:
        ValueError: for ``shortcut="C"`` (every block projects: nothing repeats unchanged).
    """

    def __init__(self, count: int, filters: int, options: BlockOptions | dict | None = None,
                 plain: bool = False, recompute_grad: bool = False, **kwargs) -> None:
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
        # A repeated block keeps its shape: stride 1, its input as wide as its output.
        channels = output_filters(self.filters, options)
        self.plan = branch_plan(channels, self.filters, 1, options)
        self.bns = bn_names(self.plan, options)

    def build(self, input_shape: tuple) -> None:
        opts, count = self.options, self.count
        channels = self.plan[0].in_channels
        if input_shape[-1] != channels:
            raise ValueError(f"RepeatedBlocks {self.name!r} maps {channels} channels to "
                             f"{channels}; got an input with {input_shape[-1]}")
        self.kernels, self.biases = [], []
        for i, (size, cin, cout, _) in enumerate(self.plan, start=1):
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

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count": self.count, "filters": self.filters,
                "options": self.options.to_config(), "plain": self.plain,
                "recompute_grad": self.recompute_grad}

    # ------------------------------------------------------------------------- the loop

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        training = bool(training) and self.trainable
        if keras.backend.backend() != "tensorflow":
            return self._scan(inputs, training)
        import tensorflow as tf

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
            self._update_statistics([s.stack() for s in carried[n_arrays:]])
        return outputs

    def _scan(self, inputs, training):
        """``call`` on JAX and PyTorch: ``keras.ops.scan`` over the stacked weights."""
        variables = [keras.ops.convert_to_tensor(v.value) for v in self._stacked(training)]

        def block(x, *weights):
            y, moments = self._block(x, self._unflatten(list(weights)), training)
            return (y, *moments)

        if self.recompute_grad and training:
            block = keras.remat(block)  # jax.checkpoint, torch.utils.checkpoint

        def step(x, weights):
            y, *moments = block(x, *weights)
            return y, list(moments)

        outputs, stats = keras.ops.scan(step, inputs, variables)
        if training:
            self._update_statistics(stats)
        return outputs

    def _update_statistics(self, stats):
        """Each BN's moving mean and variance from its ``[count, width]`` batch moments."""
        momentum = self.options.momentum
        for j, (_, _, mean, variance) in enumerate(self.bn_weights):
            mean.assign(mean * momentum + stats[2 * j] * (1.0 - momentum))
            variance.assign(variance * momentum + stats[2 * j + 1] * (1.0 - momentum))

    def _stacked(self, training):
        """The stacked variables a block reads: kernels, biases, then each BN's parameters."""
        norms = [w[:2] if training else w for w in self.bn_weights]  # training: batch statistics
        return [*self.kernels, *self.biases, *(w for bn in norms for w in bn)]

    def _unflatten(self, values):
        """``_stacked``'s order back to ``(kernels, biases, [(gamma, beta, mean?, var?)])``."""
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
        if keras.backend.backend() != "tensorflow":  # what keras.layers.Conv2D computes
            y = keras.ops.conv(x, keras.ops.cast(kernel, self.compute_dtype), strides=1,
                               padding="same")
            return y if bias is None else y + keras.ops.cast(bias, self.compute_dtype)
        import tensorflow as tf

        y = tf.nn.conv2d(x, tf.cast(kernel, self.compute_dtype), strides=1, padding="SAME")
        if bias is not None:
            y = tf.nn.bias_add(y, tf.cast(bias, self.compute_dtype))
        return y

    def _norm(self, x, weights, moments, training):
        """``FusedBatchNormalization`` with one block's BN weights (see ``fused_batch_norm.py``)."""
        if keras.backend.backend() != "tensorflow":
            return self._keras_norm(x, weights, moments, training)
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

    def _keras_norm(self, x, weights, moments, training):
        """What ``keras.layers.BatchNormalization`` computes (float32 statistics)."""
        ops = keras.ops
        x = ops.cast(x, keras.backend.result_type(x.dtype, "float32"))
        if training:
            gamma, beta = weights
            mean, variance = ops.moments(x, axes=[0, 1, 2])
            moments += [mean, variance]
        else:
            gamma, beta, mean, variance = weights
        y = ops.batch_normalization(x, mean, variance, axis=-1, offset=beta, scale=gamma,
                                    epsilon=self.options.epsilon)
        return ops.cast(y, self.compute_dtype)

    # ------------------------------------------------------------------------- per-block view

    def block_weights(self) -> list[tuple[str, int, keras.Variable]]:
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
    def stage(self) -> str:
        """The stage prefix, e.g. ``conv3`` for the layer ``conv3_blocks``."""
        return self.name[: -len("_blocks")] if self.name.endswith("_blocks") else self.name

