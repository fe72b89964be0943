"""FusedBatchNormalization computes what keras.layers.BatchNormalization computes, fused."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import ResNet50
from keras_resnet.modeling.fused_batch_norm import FusedBatchNormalization


def _pair(**kwargs):
    """The stock and the fused layer with the same, non-trivial weights."""
    rng = np.random.default_rng(0)
    stock = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    stock.build((None, 5, 5, 6))
    fused.build((None, 5, 5, 6))
    weights = [rng.normal(size=6).astype("float32"), rng.normal(size=6).astype("float32"),
               rng.normal(size=6).astype("float32"), rng.uniform(0.5, 2, 6).astype("float32")]
    stock.set_weights(weights)
    fused.set_weights(weights)
    return stock, fused


def _ops(layer, x, training):
    graph = tf.function(lambda t: layer(t, training=training)).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)).graph
    return {op.type for op in graph.get_operations()}


def test_inference_matches_keras_and_uses_the_fused_kernel():
    stock, fused = _pair(momentum=0.9, epsilon=1e-5)
    x = np.random.default_rng(1).normal(2, 3, (4, 5, 5, 6)).astype("float32")
    np.testing.assert_allclose(fused(x, training=False), stock(x, training=False),
                               rtol=1e-5, atol=1e-5)
    assert "FusedBatchNormV3" in _ops(fused, x, False)
    assert "FusedBatchNormV3" not in _ops(stock, x, False)


def test_training_matches_keras_outputs_moving_statistics_and_gradients():
    stock, fused = _pair(momentum=0.8, epsilon=1e-3)
    x = tf.constant(np.random.default_rng(2).normal(1, 2, (8, 5, 5, 6)).astype("float32"))
    results = []
    for layer in (stock, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(6, dtype="float32"))
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append((y, layer.moving_mean.numpy(), layer.moving_variance.numpy(), grads))
    (y0, mean0, var0, g0), (y1, mean1, var1, g1) = results
    np.testing.assert_allclose(y1, y0, rtol=1e-4, atol=1e-4)
    # The moving variance takes Keras' biased batch variance, not the kernel's unbiased one.
    np.testing.assert_allclose(mean1, mean0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var1, var0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g1, g0):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_frozen_layer_uses_moving_statistics_even_when_training():
    stock, fused = _pair()
    stock.trainable = fused.trainable = False
    x = np.random.default_rng(3).normal(size=(4, 5, 5, 6)).astype("float32")
    before = fused.moving_mean.numpy()
    np.testing.assert_allclose(fused(x, training=True), stock(x, training=True), atol=1e-5)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)


def test_mixed_bfloat16_keeps_bfloat16_activations_and_float32_statistics():
    keras.config.set_dtype_policy("mixed_bfloat16")
    stock, fused = _pair()
    x = np.random.default_rng(4).normal(size=(4, 5, 5, 6)).astype("float32")
    for training in (False, True):
        y = fused(x, training=training)
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        np.testing.assert_allclose(np.asarray(y, "float32"),
                                   np.asarray(stock(x, training=training), "float32"),
                                   rtol=0.05, atol=0.05)
    assert fused.moving_mean.dtype == "float32"


@pytest.mark.parametrize("kwargs, shape", [
    ({"axis": 1}, (2, 6, 5, 5)),       # channels first
    ({}, (2, 6)),                      # Dense features
    ({"center": False}, (2, 5, 5, 6)),  # no beta
    ({"synchronized": True}, (2, 5, 5, 6)),
])
def test_what_the_kernel_cannot_do_goes_through_keras(kwargs, shape):
    stock = keras.layers.BatchNormalization(**kwargs)
    fused = FusedBatchNormalization(**kwargs)
    x = np.random.default_rng(5).normal(size=shape).astype("float32")
    stock.build(shape)
    fused.build(shape)
    fused.set_weights(stock.get_weights())
    for training in (False, True):
        np.testing.assert_allclose(fused(x, training=training), stock(x, training=training),
                                   rtol=1e-5, atol=1e-5)
    assert "FusedBatchNormV3" not in _ops(fused, x, False)


def test_serialization_round_trip(tmp_path):
    inputs = keras.Input((5, 5, 6))
    model = keras.Model(inputs, FusedBatchNormalization(momentum=0.7, name="bn")(inputs))
    path = str(tmp_path / "bn.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    assert loaded.get_layer("bn").momentum == 0.7


def test_resnet50_inference_graph_fuses_every_batch_norm():
    model = ResNet50(weights=None, input_shape=(64, 64, 3))
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 53 and all(isinstance(b, FusedBatchNormalization) for b in bns)
    x = np.zeros((1, 64, 64, 3), "float32")
    graph = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("FusedBatchNormV3") == 53
    assert "Rsqrt" not in types  # no unfused BN arithmetic left
