"""Residual, plain and dense blocks: shapes, shortcut choice, the identity property, errors."""

import dataclasses
import itertools
import json

import keras
import numpy as np
import pytest

from keras_resnet import BlockOptions, dense_residual_block, plain_block, residual_block
from keras_resnet.modeling.blocks import ZeroPadShortcut

# (input channels, filters, stride) for the three blocks of the lecture: standard,
# channel-changing, channel-changing + downsampling.
KINDS = {"standard": (64, 64, 1), "channels": (32, 64, 1), "downsample": (32, 64, 2)}


def _block_model(in_channels, filters, stride, size=8, **options):
    x = keras.Input((size, size, in_channels))
    return keras.Model(x, residual_block(x, filters, stride, name="b", **options))


def _names(model):
    return {layer.name for layer in model.layers}


@pytest.mark.parametrize(
    "kind,bottleneck,preact,shortcut",
    list(itertools.product(KINDS, (False, True), (False, True), ("auto", "A", "B", "C", "D"))))
def test_block_shapes_and_shortcut_choice(kind, bottleneck, preact, shortcut):
    in_channels, filters, stride = KINDS[kind]
    if bottleneck:
        filters //= 4  # output = 4 * filters, so the channel relations stay those of `kind`
    model = _block_model(in_channels, filters, stride, bottleneck=bottleneck, preact=preact,
                         shortcut=shortcut)
    out_channels = filters * 4 if bottleneck else filters
    assert model.output.shape == (None, 8 // stride, 8 // stride, out_channels)
    names = _names(model)
    changes = kind != "standard"
    projected = (shortcut == "C") or (changes and shortcut in ("auto", "B", "D"))
    assert ("b_0_conv" in names) == projected
    assert ("b_0_pad" in names) == (changes and shortcut == "A")
    assert ("b_0_pool" in names) == (kind == "downsample" and shortcut == "D")
    assert ("b_0_bn" in names) == (projected and not preact)
    assert ("b_add" in names) == (not preact) and ("b_out" in names)
    convs = [n for n in names if n.endswith("_conv") and n != "b_0_conv"]
    assert len(convs) == (3 if bottleneck else 2)
    y = model(np.random.default_rng(0).normal(size=(2, 8, 8, in_channels)).astype("float32"))
    assert y.shape == (2, 8 // stride, 8 // stride, out_channels)


@pytest.mark.parametrize("bottleneck", [False, True])
def test_zero_weights_give_the_identity_on_nonnegative_inputs(bottleneck):
    # W = b = 0 makes F(X) = 0, so Y = relu(X + 0) = X for X >= 0 (the lecture's argument).
    model = _block_model(16, 4 if bottleneck else 16, 1, bottleneck=bottleneck, use_bias=True)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    x = np.abs(np.random.default_rng(1).normal(size=(3, 8, 8, 16))).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), x)
    # ... but not on negative inputs: the ReLU after the add clips them.
    assert np.all(np.asarray(model(-x, training=False)) == 0)


def test_plain_block_with_zero_weights_is_not_the_identity():
    x = keras.Input((8, 8, 16))
    model = keras.Model(x, plain_block(x, 16, name="p"))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    data = np.abs(np.random.default_rng(2).normal(size=(2, 8, 8, 16))).astype("float32") + 0.1
    assert np.all(np.asarray(model(data, training=False)) == 0)
    assert not any(layer.name.startswith("p_0") for layer in model.layers)


@pytest.mark.parametrize("preact", [False, True])
def test_zero_init_residual_starts_as_identity(preact):
    model = _block_model(16, 16, 1, preact=preact, zero_init_residual=True)
    x = np.abs(np.random.default_rng(3).normal(size=(2, 8, 8, 16))).astype("float32")
    np.testing.assert_allclose(model(x, training=False), x, atol=1e-6)
    # Without the switch the same block is far from the identity.
    other = _block_model(16, 16, 1, preact=preact)
    assert np.abs(np.asarray(other(x, training=False)) - x).max() > 0.1


def test_one_by_one_projection_changes_192_channels_to_32():
    x = keras.Input((28, 28, 192))
    model = keras.Model(x, residual_block(x, 32, name="p"))
    assert model.output.shape == (None, 28, 28, 32)
    assert model.get_layer("p_0_conv").kernel.shape == (1, 1, 192, 32)


def test_option_a_subsamples_and_zero_pads():
    x = np.random.default_rng(4).normal(size=(2, 8, 8, 16)).astype("float32")
    y = np.asarray(ZeroPadShortcut(32, 2)(x))
    assert y.shape == (2, 4, 4, 32)
    np.testing.assert_array_equal(y[..., :16], x[:, ::2, ::2, :])
    assert not y[..., 16:].any()
    model = _block_model(16, 32, 2, shortcut="A")
    assert model.count_params() == _block_model(16, 32, 2, shortcut="auto").count_params() \
        - (16 * 32 + 4 * 32)  # no W_s and no shortcut BN


def test_stride_on_selects_the_strided_bottleneck_conv():
    on_3x3 = _block_model(64, 16, 2, bottleneck=True, stride_on="3x3")
    on_1x1 = _block_model(64, 16, 2, bottleneck=True, stride_on="1x1")
    assert on_3x3.get_layer("b_2_conv").strides == (2, 2)
    assert on_3x3.get_layer("b_1_conv").strides == (1, 1)
    assert on_1x1.get_layer("b_1_conv").strides == (2, 2)
    assert on_1x1.get_layer("b_2_conv").strides == (1, 1)


def test_stable_layer_names():
    names = _names(_block_model(32, 64, 2))
    assert {"b_0_conv", "b_0_bn", "b_1_pad", "b_1_conv", "b_1_bn", "b_1_relu", "b_2_conv",
            "b_2_bn", "b_add", "b_out"} <= names


def test_options_reach_the_layers():
    model = _block_model(16, 16, 1, kernel_initializer="orthogonal", weight_decay=1e-4,
                         activation="leaky_relu", momentum=0.8, epsilon=1e-3, use_bias=True)
    conv = model.get_layer("b_1_conv")
    assert isinstance(conv.kernel_initializer, keras.initializers.Orthogonal)
    assert conv.kernel_regularizer.l2 == pytest.approx(5e-5)  # SGD weight decay wd = L2(wd / 2)
    assert conv.use_bias
    bn = model.get_layer("b_1_bn")
    assert (bn.momentum, bn.epsilon) == (0.8, 1e-3)
    assert model.get_layer("b_out").activation is keras.activations.leaky_relu


def test_dense_block_projects_128_to_256():
    x = keras.Input((128,))
    model = keras.Model(x, dense_residual_block(x, 256, name="d"))
    assert model.output.shape == (None, 256)
    assert model.get_layer("d_0_dense").kernel.shape == (128, 256)
    same = keras.Input((256,))
    identity = keras.Model(same, dense_residual_block(same, 256, name="e"))
    assert "e_0_dense" not in _names(identity)


def test_dense_block_with_zero_weights_is_the_identity():
    x = keras.Input((64,))
    model = keras.Model(x, dense_residual_block(x, 64, name="d"))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    data = np.abs(np.random.default_rng(5).normal(size=(4, 64))).astype("float32")
    np.testing.assert_array_equal(model(data, training=False), data)


@pytest.mark.parametrize("call,error,message", [
    (lambda x: residual_block(x, 0), ValueError,
     "filters must be a positive int (1, 2, 64, ...); got 0"),
    (lambda x: residual_block(x, -8), ValueError, "got -8"),
    (lambda x: residual_block(x, 8.0), TypeError,
     "filters must be a positive int (1, 2, 64, ...); got 8.0"),
    (lambda x: residual_block(x, 8, stride=0), ValueError, "stride must be a positive int"),
    (lambda x: residual_block(x, 8, shortcut="E"), ValueError,
     "shortcut must be one of 'auto', 'identity', 'A', 'B', 'C', 'D'; got 'E'"),
    (lambda x: residual_block(x, 32, shortcut="identity"), ValueError,
     "shortcut='identity' needs matching shapes, but the block maps 16 channels to 32"),
    (lambda x: residual_block(x, 16, 2, shortcut="identity"), ValueError, "with stride 2"),
    (lambda x: residual_block(x, 8, shortcut="A"), ValueError,
     "cannot reduce 16 channels to 8"),
    (lambda x: residual_block(x, 16, kernel_initializer="he_norm"), ValueError,
     "kernel_initializer must be a Keras initializer: a name such as 'he_normal' or 'HeNormal', "
     "a config dict, or a keras.initializers.Initializer; got 'he_norm'"),
    (lambda x: residual_block(x, 16, kernel_initializer=3), TypeError,
     "kernel_initializer must be a Keras initializer: a name such as 'he_normal'"),
    (lambda x: residual_block(x, 16, activation="relux"), ValueError,
     "activation must be a Keras activation: a name such as 'relu' or 'leaky_relu', or a "
     "callable; got 'relux'"),
    (lambda x: residual_block(x, 16, kernel_regularizer="l3"), ValueError,
     "kernel_regularizer must be a Keras regularizer: a name such as 'l2'"),
    (lambda x: residual_block(x, 16, weight_decay=-1.0), ValueError,
     "weight_decay must be a number >= 0 (e.g. 1e-4); got -1.0"),
    (lambda x: residual_block(x, 16, weight_decay=1e-4, kernel_regularizer="l2"), ValueError,
     "either kernel_regularizer or weight_decay"),
    (lambda x: residual_block(x, 16, momentum=1.5), ValueError,
     "momentum must be a number in [0, 1); got 1.5"),
    (lambda x: residual_block(x, 16, momentum="0.9"), TypeError,
     "momentum must be a number in [0, 1); got '0.9'"),
    (lambda x: residual_block(x, 16, epsilon=0), ValueError,
     "epsilon must be a number > 0 (e.g. 1e-5); got 0"),
    (lambda x: residual_block(x, 16, stride_on="5x5"), ValueError,
     "stride_on must be one of '3x3', '1x1'; got '5x5'"),
    (lambda x: residual_block(x, 16, zero_init_residual="yes"), TypeError,
     "zero_init_residual must be True or False; got 'yes'"),
    (lambda x: residual_block(x, 16, expansion=2.0), TypeError,
     "expansion must be a positive int (1, 2, 64, ...); got 2.0"),
    (lambda x: residual_block(x, 16, stride=16), ValueError, "smaller than stride 16"),
    (lambda x: residual_block(keras.Input((16,)), 16), ValueError,
     "(batch, height, width, channels)"),
    (lambda x: dense_residual_block(keras.Input((16,)), 32, shortcut="identity"), ValueError,
     "maps 16 units to 32"),
    (lambda x: dense_residual_block(keras.Input((16,)), 32, shortcut="A"), ValueError,
     "shortcut must be one of 'auto', 'identity', 'C'; got 'A'"),
    (lambda x: dense_residual_block(keras.Input((16,)), 32, batch_norm=1), TypeError,
     "batch_norm must be True or False; got 1"),
    (lambda x: dense_residual_block(x, 32), ValueError, "(batch, features)"),
    (lambda x: residual_block(x, 16, name=""), TypeError, "name must be a non-empty str"),
    (lambda x: residual_block(x, 16, options={"preact": True}), TypeError,
     "options must be a keras_resnet.BlockOptions or None; got {'preact': True}"),
    (lambda x: residual_block(x, 16, preact=True, options=BlockOptions()), TypeError,
     "pass options or the block options it holds, not both; got options and preact=True"),
])
def test_bad_block_arguments(call, error, message):
    with pytest.raises(error) as info:
        call(keras.Input((8, 8, 16)))
    assert message in str(info.value)


@pytest.mark.parametrize("identifier,expected", [
    ("he_normal", keras.initializers.HeNormal), ("HeNormal", keras.initializers.HeNormal),
    ("Orthogonal", keras.initializers.Orthogonal),
    ({"class_name": "HeUniform", "config": {}}, keras.initializers.HeUniform),
    (keras.initializers.GlorotNormal(), keras.initializers.GlorotNormal),
])
def test_any_keras_initializer_identifier_is_accepted(identifier, expected):
    model = _block_model(16, 16, 1, kernel_initializer=identifier)
    assert isinstance(model.get_layer("b_1_conv").kernel_initializer, expected)


def test_every_kernel_gets_its_own_initial_values():
    # One unseeded initializer object shared by every layer would give equal-shaped kernels
    # equal values; each layer gets its own.
    x = keras.Input((8, 8, 16))
    y = residual_block(x, 16, name="a", kernel_initializer=keras.initializers.HeNormal())
    model = keras.Model(x, residual_block(y, 16, name="b"))
    kernels = [np.asarray(model.get_layer(f"{block}_{i}_conv").kernel)
               for block in "ab" for i in (1, 2)]
    for i, first in enumerate(kernels):
        for second in kernels[i + 1:]:
            assert not np.array_equal(first, second)


def test_options_value_equals_the_keywords():
    options = BlockOptions(bottleneck=True, preact=True, shortcut="C", weight_decay=1e-4,
                           activation="leaky_relu", momentum=0.8)
    from_value = _block_model(64, 16, 2, options=options)
    from_keywords = _block_model(64, 16, 2, bottleneck=True, preact=True, shortcut="C",
                                 weight_decay=1e-4, activation="leaky_relu", momentum=0.8)
    assert [(layer.name, [w.shape for w in layer.weights]) for layer in from_value.layers[1:]] \
        == [(layer.name, [w.shape for w in layer.weights]) for layer in from_keywords.layers[1:]]
    assert from_value.get_layer("b_1_conv").kernel_regularizer.l2 == pytest.approx(5e-5)
    assert from_value.get_layer("b_0_conv").kernel_regularizer.l2 == pytest.approx(5e-5)


def test_options_are_immutable_and_validated_on_replace():
    options = BlockOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.momentum = 0.5
    assert options.replace(momentum=0.5).momentum == 0.5
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\); got 2"):
        options.replace(momentum=2)


@pytest.mark.parametrize("options", [
    BlockOptions(),
    BlockOptions(bottleneck=True, shortcut="D", stride_on="1x1", expansion=2,
                 kernel_initializer="Orthogonal", weight_decay=1e-4, activation="leaky_relu",
                 zero_init_residual=True, momentum=0.99, epsilon=1e-3, use_bias=True),
    BlockOptions(kernel_initializer=keras.initializers.HeUniform(seed=3),
                 kernel_regularizer=keras.regularizers.L1(0.01), activation=keras.activations.elu),
])
def test_options_config_round_trips_through_json(options):
    config = json.loads(json.dumps(options.to_config()))
    restored = BlockOptions.from_config(config)
    assert restored.to_config() == options.to_config()
    x = keras.Input((8, 8, 16))
    first = keras.Model(x, residual_block(x, 16, name="b", options=options), name="m")
    second = keras.Model(x, residual_block(x, 16, name="b", options=restored), name="m")
    assert first.get_config() == second.get_config()


def test_block_layers_round_trip_through_get_config():
    model = _block_model(16, 32, 2, shortcut="A", preact=True)
    restored = keras.Model.from_config(model.get_config())
    assert restored.get_config() == model.get_config()
    restored.set_weights(model.get_weights())
    x = np.random.default_rng(6).normal(size=(2, 8, 8, 16)).astype("float32")
    np.testing.assert_array_equal(restored(x, training=False), model(x, training=False))
    layer = ZeroPadShortcut(32, 2, name="pad")
    assert ZeroPadShortcut.from_config(layer.get_config()).get_config() == layer.get_config()


@pytest.mark.parametrize("bottleneck, stride_on, expected", [
    (False, "3x3", ((3, 8, 4, 2), (3, 4, 4, 1))),
    (True, "3x3", ((1, 8, 4, 1), (3, 4, 4, 2), (1, 4, 16, 1))),
    (True, "1x1", ((1, 8, 4, 2), (3, 4, 4, 1), (1, 4, 16, 1))),
])
def test_one_branch_plan_builds_the_block_and_the_looped_stage(bottleneck, stride_on, expected):
    from keras_resnet.modeling.block_options import branch_plan
    from keras_resnet.modeling.looped_stages import RepeatedBlocks

    opts = BlockOptions(bottleneck=bottleneck, stride_on=stride_on)
    assert branch_plan(8, 4, 2, opts) == expected
    x = keras.Input((8, 8, 8))
    model = keras.Model(x, residual_block(x, 4, 2, name="b", options=opts))
    convs = [(layer.kernel_size[0], layer.kernel.shape[2], layer.filters, layer.strides[0])
             for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and not layer.name.endswith("_0_conv")]
    assert tuple(convs) == expected
    looped = RepeatedBlocks(2, 4, opts)
    assert looped.plan == branch_plan(expected[-1][2], 4, 1, opts)
