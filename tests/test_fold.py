"""BN folding gives the same outputs with no BatchNormalization left."""

import keras
import numpy as np
import pytest

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
