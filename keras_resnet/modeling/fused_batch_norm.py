"""BatchNormalization that runs as TensorFlow's fused kernel.

Keras 3 computes batch normalization from separate ops on every backend: ``moments`` (two
reductions) in training, then ``x * inv + (beta - mean * inv)``. TensorFlow has one fused kernel,
``FusedBatchNormV3``, for both directions of training and for inference, and TensorFlow's graph
optimizer (grappler's remapper) fuses ``Conv2D -> FusedBatchNorm -> Relu`` into one convolution
at inference. tf.keras used that kernel by default (``fused=True``); Keras 3 does not. What that
gains is measured in the README's "Benchmarks" section (``keras-resnet bench resnet50``,
``benchmarks/profile_ops.py``).

The layer is a drop-in subclass: same arguments, same weights (names and order), same results
within float32 rounding, same moving-statistics update. Whatever the kernel cannot do (another
backend, masks, renorm, synchronized BN, non-4D or channels-first inputs, no beta or gamma) goes
through Keras' own implementation.
"""

from __future__ import annotations

from typing import Any

import keras

_FUSABLE_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="keras_resnet")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's ``FusedBatchNormV3``."""

    def _fusable(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None
                and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.center
                and self.scale and not self.renorm and not self.synchronized
                and keras.backend.standardize_dtype(inputs.dtype) in _FUSABLE_DTYPES)

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        # The kernel takes float16/bfloat16 activations with float32 statistics, so mixed
        # precision needs no casts of the activations (Keras upcasts them to float32).
        gamma = tf.cast(self.gamma, "float32")
        beta = tf.cast(self.beta, "float32")
        if training and self.trainable:
            outputs, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, data_format="NHWC", is_training=True)
            # The kernel returns the unbiased (n - 1) batch variance; Keras' moving average,
            # which this layer must reproduce, uses the biased one.
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], "float32")
            variance = variance * ((count - 1.0) / tf.maximum(count, 1.0))
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum
                                    + tf.cast(mean, self.moving_mean.dtype) * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum
                + tf.cast(variance, self.moving_variance.dtype) * (1.0 - momentum))
        else:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta,
                mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"),
                epsilon=self.epsilon, data_format="NHWC", is_training=False)
        return tf.cast(outputs, self.compute_dtype)
