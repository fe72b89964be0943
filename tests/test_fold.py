"""BN folding gives the same outputs with no BatchNormalization left."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import CifarResNet, ResNet, fold_batch_norm


def _randomize_bn(model, rng):
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


@pytest.mark.parametrize("builder", [
    lambda: CifarResNet(14, stage_models=True, input_shape=(8, 8, 3), classifier_activation=None),
    lambda: ResNet(stage_depths=(1, 1), widths=(8, 16), bottleneck=True, stem="deep",
                   shortcut="D", input_shape=(32, 32, 3), classifier_activation=None),
])
def test_folded_model_matches_and_has_no_batch_norm(builder):
    rng = np.random.default_rng(0)
    model = builder()
    _randomize_bn(model, rng)
    folded = fold_batch_norm(model)
    images = rng.uniform(0, 255, (4,) + model.input_shape[1:]).astype("float32")
    expected = np.asarray(model(images, training=False))
    np.testing.assert_allclose(folded(images, training=False), expected,
                               rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    remaining = [layer for layer in folded._flatten_layers(include_self=False)
                 if isinstance(layer, keras.layers.BatchNormalization)]
    assert remaining == []
    bn_params = sum(4 * layer.gamma.shape[0] for layer in model._flatten_layers(include_self=False)
                    if isinstance(layer, keras.layers.BatchNormalization))
    convs = [layer for layer in model._flatten_layers(include_self=False)
             if isinstance(layer, keras.layers.Conv2D)]
    assert folded.count_params() == model.count_params() - bn_params + sum(
        layer.filters for layer in convs)  # every conv gains the folded bias


def test_fold_rejects_a_non_model():
    with pytest.raises(TypeError, match="model must be a functional keras.Model"):
        fold_batch_norm(keras.layers.Dense(3))


def test_weights_in_compute_dtype_gives_the_same_outputs_with_no_weight_casts():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = ResNet(stage_depths=(1, 1), widths=(8, 16), bottleneck=True,
                       input_shape=(16, 16, 3), classes=5)
    finally:
        keras.config.set_dtype_policy("float32")
    _randomize_bn(model, np.random.default_rng(1))
    casting = fold_batch_norm(model)
    stored = fold_batch_norm(model, weights_in_compute_dtype=True)
    assert {w.dtype for w in casting.weights} == {"float32"}
    head = stored.get_layer("predictions")  # the float32 head keeps float32 weights
    assert {w.dtype for w in head.weights} == {"float32"}
    assert {w.dtype for w in stored.weights if w.path.split("/")[0] != head.name} == {"bfloat16"}
    assert sum(np.asarray(w).nbytes for w in stored.weights) < 0.55 * sum(
        np.asarray(w).nbytes for w in casting.weights)
    images = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    # Inside one graph both run the same bfloat16 kernels on the same bfloat16 weights.
    run_casting = tf.function(lambda x: casting(x, training=False))
    run_stored = tf.function(lambda x: stored(x, training=False))
    np.testing.assert_array_equal(np.asarray(run_stored(images)), np.asarray(run_casting(images)))
    def weight_casts(function):
        graph = function.get_concrete_function(tf.TensorSpec((3, 16, 16, 3))).graph
        return [op for op in graph.get_operations()
                if op.type == "Cast" and op.inputs[0].op.type == "ReadVariableOp"]

    assert len(weight_casts(run_casting)) == 2 * 9  # kernel and folded bias of 9 convolutions
    assert weight_casts(run_stored) == []
    with pytest.raises(TypeError, match="weights_in_compute_dtype must be True or False; got 1"):
        fold_batch_norm(model, weights_in_compute_dtype=1)
