"""loop_stages=True: the repeated blocks of a stage as one looped layer, the same function."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import CifarResNet, ResNet, model_stats
from keras_resnet import convert_stages
from keras_resnet.modeling.looped_stages import RepeatedBlocks
from keras_resnet.modeling.stage_conversion import transfer_weights
from keras_resnet.modeling.stats import leaf_layers

SHAPE = (8, 8, 3)
CASES = {
    "basic, option A": dict(depth=14),
    "basic, option B, zero-init": dict(depth=14, shortcut="B", zero_init_residual=True),
    "bottleneck, pre-activation": dict(depth=20, bottleneck=True, preact=True),
    "bottleneck, post-activation, biases": dict(depth=20, bottleneck=True, use_bias=True),
    "pre-activation basic, zero-init": dict(depth=14, preact=True, zero_init_residual=True),
    "plain": dict(depth=14, plain=True),
    "plain, pre-activation": dict(depth=14, plain=True, preact=True),
}


def _randomize_batch_norms(model, rng):
    # Non-trivial statistics and gammas, so a BN applied in the wrong place would show.
    for layer in model.layers:
        if isinstance(layer, RepeatedBlocks):
            for gamma, beta, mean, variance in layer.bn_weights:
                for variable, values in ((gamma, rng.uniform(0.5, 1.5, gamma.shape)),
                                         (beta, rng.normal(0, 0.1, beta.shape)),
                                         (mean, rng.normal(0, 0.1, mean.shape)),
                                         (variance, rng.uniform(0.5, 1.5, variance.shape))):
                    variable.assign(values.astype("float32"))
        elif isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, variance.shape)])


def _twins(options, source_looped=True):
    """A looped model with non-trivial weights and its unrolled twin with the same weights."""
    looped = CifarResNet(input_shape=SHAPE, classes=5, loop_stages=True, **options)
    unrolled = CifarResNet(input_shape=SHAPE, classes=5, **options)
    rng = np.random.default_rng(0)
    source, target = (looped, unrolled) if source_looped else (unrolled, looped)
    _randomize_batch_norms(source, rng)
    transfer_weights(source, target)
    return looped, unrolled


def _images(n=4, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n,) + SHAPE).astype("float32")


@pytest.mark.parametrize("case", list(CASES))
def test_looped_stages_compute_the_unrolled_function(case):
    looped, unrolled = _twins(CASES[case])
    assert any(isinstance(layer, RepeatedBlocks) for layer in looped.layers)
    assert looped.count_params() == unrolled.count_params()
    x = _images()
    for training in (False, True):
        np.testing.assert_allclose(looped(x, training=training), unrolled(x, training=training),
                                   rtol=1e-5, atol=1e-5)
    # The moving statistics after those training calls: block by block as the unrolled BNs.
    layer = next(layer for layer in looped.layers if isinstance(layer, RepeatedBlocks))
    for suffix, position, variable in layer.block_weights():
        if position >= 2 and suffix.endswith("bn"):
            for k in range(layer.count):
                expected = unrolled.get_layer(f"{layer.stage}_block{k + 2}_{suffix}") \
                    .get_weights()[position]
                np.testing.assert_allclose(np.asarray(variable)[k], expected, rtol=1e-5,
                                           atol=1e-6)


@pytest.mark.parametrize("case", ["basic, option A", "bottleneck, pre-activation", "plain"])
def test_gradients_agree_block_by_block(case):
    looped, unrolled = _twins(CASES[case], source_looped=False)
    x, y = _images(), np.arange(4) % 5
    loss = keras.losses.SparseCategoricalCrossentropy()
    grads = {}
    for name, model in (("looped", looped), ("unrolled", unrolled)):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        grads[name] = dict(zip([v.path for v in model.trainable_variables],
                               tape.gradient(value, model.trainable_variables)))
    layer = next(layer for layer in looped.layers if isinstance(layer, RepeatedBlocks))
    checked = 0
    for suffix, position, variable in layer.block_weights():
        if not variable.trainable:
            continue
        stacked = np.asarray(tf.convert_to_tensor(grads["looped"][variable.path]))
        for k in range(layer.count):
            twin = unrolled.get_layer(f"{layer.stage}_block{k + 2}_{suffix}")
            expected = grads["unrolled"][twin.trainable_weights[position].path]
            np.testing.assert_allclose(stacked[k], expected, rtol=1e-4, atol=1e-5)
            checked += 1
    assert checked >= 4
    stem = looped.get_layer("conv1_conv").kernel.path
    np.testing.assert_allclose(grads["looped"][stem], grads["unrolled"][stem], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("case", ["basic, option A", "bottleneck, pre-activation"])
def test_recompute_grad_gives_the_same_gradients_and_statistics(case):
    plain = CifarResNet(input_shape=SHAPE, classes=5, loop_stages=True, **CASES[case])
    _randomize_batch_norms(plain, np.random.default_rng(0))
    recomputed = CifarResNet(input_shape=SHAPE, classes=5, loop_stages=True,
                             recompute_grad=True, **CASES[case])
    transfer_weights(plain, recomputed)
    assert recomputed.get_layer("conv2_blocks").recompute_grad
    x, y = _images(), np.arange(4) % 5
    loss = keras.losses.SparseCategoricalCrossentropy()
    results = []
    for model in (plain, recomputed):
        with tf.GradientTape() as tape:
            outputs = model(x, training=True)
            value = loss(y, outputs)
        grads = tape.gradient(value, model.trainable_variables)
        results.append((outputs, grads, [np.asarray(v) for v in model.non_trainable_variables]))
    (out_a, grads_a, stats_a), (out_b, grads_b, stats_b) = results
    np.testing.assert_allclose(out_b, out_a, rtol=1e-5, atol=1e-6)
    assert len(grads_a) == len(grads_b) > 10
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(tf.convert_to_tensor(b), tf.convert_to_tensor(a), rtol=1e-5,
                                   atol=1e-6)
    for a, b in zip(stats_a, stats_b):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    restored = RepeatedBlocks.from_config(recomputed.get_layer("conv3_blocks").get_config())
    assert restored.recompute_grad


def test_the_graph_holds_one_block_per_stage_whatever_the_depth():
    shallow = CifarResNet(20, input_shape=SHAPE, loop_stages=True)
    deep = CifarResNet(56, input_shape=SHAPE, loop_stages=True)
    assert len(deep.layers) == len(shallow.layers)
    assert deep.get_layer("conv2_blocks").count == 8
    stats, unrolled = model_stats(deep), model_stats(CifarResNet(56, input_shape=SHAPE))
    for key in ("depth", "trainable_params", "total_params", "multiply_adds"):
        assert stats[key] == unrolled[key], key
    assert stats["depth"] == 56


def test_each_block_gets_its_own_initial_weights():
    layer = CifarResNet(14, input_shape=SHAPE, loop_stages=True).get_layer("conv2_blocks")
    kernel = np.asarray(layer.kernels[0])
    assert kernel.shape == (1, 3, 3, 16, 16)
    deeper = CifarResNet(20, input_shape=SHAPE, loop_stages=True).get_layer("conv2_blocks")
    first, second = np.asarray(deeper.kernels[0])
    assert not np.array_equal(first, second)
    # He normal over one block's fan-in (3 * 3 * 16), not over the stack.
    assert np.std(first) == pytest.approx(np.sqrt(2 / (3 * 3 * 16)), rel=0.25)


def test_save_and_load_round_trip(tmp_path):
    model = CifarResNet(14, input_shape=SHAPE, loop_stages=True, preact=True)
    path = tmp_path / "looped.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.get_layer("conv3_blocks"), RepeatedBlocks)
    x = _images()
    np.testing.assert_allclose(restored(x, training=False), model(x, training=False), rtol=1e-6,
                               atol=1e-7)


@pytest.mark.slow
def test_training_with_fit_updates_the_looped_model():
    model = CifarResNet(14, input_shape=SHAPE, classes=5, loop_stages=True)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    before = np.asarray(model.get_layer("conv2_blocks").kernels[0]).copy()
    history = model.fit(_images(16), np.arange(16) % 5, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.array_equal(np.asarray(model.get_layer("conv2_blocks").kernels[0]), before)


def test_stages_of_one_block_have_nothing_to_loop():
    model = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=SHAPE,
                   loop_stages=True)
    assert not any(isinstance(layer, RepeatedBlocks) for layer in model.layers)


@pytest.mark.parametrize("call,error,message", [
    (lambda: CifarResNet(14, shortcut="C", loop_stages=True), ValueError,
     "loop_stages=True needs blocks that repeat unchanged, but shortcut='C' projects in every "
     "block"),
    (lambda: ResNet(50, compat="keras.applications", loop_stages=True), ValueError,
     "loop_stages=True cannot reproduce compat='keras.applications'"),
    (lambda: CifarResNet(14, loop_stages="yes"), TypeError,
     "loop_stages must be True or False; got 'yes'"),
    (lambda: CifarResNet(14, recompute_grad=True), ValueError,
     "recompute_grad=True recomputes the looped blocks; it needs loop_stages=True; got "
     "loop_stages=False"),
    (lambda: CifarResNet(14, loop_stages=True, recompute_grad=1), TypeError,
     "recompute_grad must be True or False; got 1"),
])
def test_bad_loop_arguments(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_transfer_between_different_networks_is_an_error():
    with pytest.raises(ValueError, match="has no weight 0 of layer 'conv2_block3_1_conv'"):
        transfer_weights(CifarResNet(14, input_shape=SHAPE),
                         CifarResNet(20, input_shape=SHAPE, loop_stages=True))


@pytest.mark.parametrize("case", ["basic, option A", "bottleneck, pre-activation", "plain",
                                  "plain, pre-activation", "bottleneck, post-activation, biases"])
def test_convert_stages_both_ways_keeps_function_names_and_weights(case):
    unrolled = CifarResNet(input_shape=SHAPE, classes=5, **CASES[case])
    _randomize_batch_norms(unrolled, np.random.default_rng(3))
    looped = convert_stages(unrolled, loop=True)
    assert [layer.name for layer in looped.layers if isinstance(layer, RepeatedBlocks)] == \
        ["conv2_blocks", "conv3_blocks", "conv4_blocks"]
    back = convert_stages(looped, loop=False)
    assert [layer.name for layer in back.layers[1:]] == [layer.name for layer in unrolled.layers[1:]]
    x = _images()
    expected = np.asarray(unrolled(x, training=False))
    np.testing.assert_allclose(looped(x, training=False), expected, rtol=1e-5, atol=1e-5)
    for a, b in zip(back.get_weights(), unrolled.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The options read back from the unrolled layers are those the looped model is built with
    # (the shortcut of a repeated block is the identity whatever it was called).
    def options(layer):
        config = layer.options.to_config()
        return {k: v for k, v in config.items() if k not in ("shortcut", "kernel_initializer")}

    built = CifarResNet(input_shape=SHAPE, loop_stages=True, **CASES[case])
    assert options(looped.get_layer("conv3_blocks")) == options(built.get_layer("conv3_blocks"))
    assert isinstance(looped.get_layer("conv3_blocks").options.initializer(),
                      keras.initializers.HeNormal)


def test_convert_stages_looks_into_stage_sub_models():
    nested = CifarResNet(14, input_shape=SHAPE, stage_models=True)
    looped = convert_stages(nested)
    assert sum(isinstance(layer, RepeatedBlocks) for layer in leaf_layers(looped)) == 3
    x = _images()
    np.testing.assert_allclose(looped(x, training=False), nested(x, training=False), rtol=1e-5,
                               atol=1e-5)


def test_convert_stages_rejects_what_cannot_loop():
    with pytest.raises(TypeError, match="model must be a functional keras.Model"):
        convert_stages(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="block 'conv2_block2' projects its shortcut"):
        convert_stages(CifarResNet(14, input_shape=SHAPE, shortcut="C"))


@pytest.mark.slow
def test_the_exported_saved_model_serves_the_looped_model(tmp_path):
    from keras_resnet import export_saved_model

    model = CifarResNet(20, input_shape=SHAPE, classes=5, loop_stages=True)
    path = export_saved_model(model, str(tmp_path), name="looped", warmup_batch_sizes=(1,),
                              input_dtype="float32")
    served = tf.saved_model.load(path).signatures["serving_default"]
    x = _images()
    probabilities = served(images=tf.constant(x))["probabilities"]
    np.testing.assert_allclose(probabilities, model(x, training=False), rtol=1e-5, atol=1e-6)


def test_mixed_precision_runs_the_loop_in_bfloat16():
    keras.config.set_dtype_policy("mixed_bfloat16")
    looped = CifarResNet(14, input_shape=SHAPE, classes=5, loop_stages=True)
    unrolled = transfer_weights(looped, CifarResNet(14, input_shape=SHAPE, classes=5))
    assert looped.get_layer("conv2_blocks").compute_dtype == "bfloat16"
    x = _images()
    for training in (False, True):
        y = looped(x, training=training)
        assert y.dtype == "float32"
        np.testing.assert_allclose(y, unrolled(x, training=training), rtol=0.05, atol=0.02)
