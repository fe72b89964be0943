"""Tests for keras_resnet.diagnostics: gradient norms, branch ratios, identity checks, callbacks."""

import csv
import glob
import os

import keras
import matplotlib
import numpy as np
import pytest
import tensorflow as tf

matplotlib.use("Agg")

from keras_resnet import CifarResNet, dense_residual_block, residual_block  # noqa: E402
from keras_resnet import diagnostics  # noqa: E402
from keras_resnet.modeling.stats import leaf_layers  # noqa: E402

SHAPE = (8, 8, 1)


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n,) + SHAPE, dtype="float32"), np.arange(n) % 10


def _small(**options):
    return CifarResNet(8, input_shape=SHAPE, classes=10, **options)  # 3 blocks


def test_gradient_norms_match_a_hand_written_tape():
    model = _small()
    x, y = _batch()
    norms = diagnostics.gradient_norms(model, x, y)
    assert list(norms) == ["conv2_block1", "conv3_block1", "conv4_block1"]
    # The same gradient by hand: training-mode forward, mean cross-entropy.
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    moving = [v.numpy().copy() for v in model.non_trainable_variables]
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    kernels = [model.get_layer(f"conv3_block1_{i}_conv").kernel for i in (1, 2)]
    grads = tape.gradient(loss, kernels)
    expected = float(np.sqrt(sum(np.sum(np.square(g.numpy())) for g in grads)))
    for v, old in zip(model.non_trainable_variables, moving):  # undo the hand-written pass
        v.assign(old)
    assert norms["conv3_block1"] == pytest.approx(expected, rel=1e-4)
    assert all(n > 0 for n in norms.values())


def test_measurements_leave_the_model_untouched():
    model = _small()
    x, y = _batch()
    before = [v.numpy().copy() for v in model.variables]
    diagnostics.gradient_flow(model, x, y)
    diagnostics.block_identity_errors(model, x, training=True)
    for v, old in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), old)


def test_layers_units_give_one_norm_per_kernel_layer():
    model = _small()
    x, y = _batch()
    norms = diagnostics.gradient_norms(model, x, y, units="layers")
    # stem + 3 blocks x 2 convs + head; option-A shortcuts have no kernel.
    assert list(norms)[:2] == ["conv1_conv", "conv2_block1_1_conv"]
    assert list(norms)[-1] == "predictions" and len(norms) == 8


def test_branch_ratio_by_hand_on_one_block():
    inputs = keras.Input((4, 4, 8))
    outputs = residual_block(inputs, 8, name="b")
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(1).random((4, 4, 4, 8), dtype="float32")
    ratios = diagnostics.branch_ratios(model, x)
    branch = keras.Model(inputs, model.get_layer("b_2_bn").output)(x, training=True)
    assert ratios == {"b": pytest.approx(float(np.linalg.norm(branch) / np.linalg.norm(x)),
                                         rel=1e-5)}


def test_zero_init_residual_gives_zero_ratios_and_identity_blocks():
    model = _small(zero_init_residual=True)
    x, y = _batch()
    rows = diagnostics.gradient_flow(model, x, y)
    assert [r["branch_ratio"] for r in rows] == [0.0, 0.0, 0.0]
    for training in (False, True):
        checks = diagnostics.block_identity_errors(model, x, training=training)
        assert [c["shortcut"] for c in checks] == ["identity", "zero-pad (option A)",
                                                   "zero-pad (option A)"]
        assert all(c["max_abs_error"] == 0.0 and c["max_abs_branch"] == 0.0 for c in checks)
    default = diagnostics.block_identity_errors(_small(), x)
    assert all(c["max_abs_branch"] > 0 and c["max_abs_error"] > 0 for c in default)


def test_nested_stage_models_give_the_same_numbers_as_flat_ones():
    flat = _small()
    nested = _small(stage_models=True)
    assert any(isinstance(layer, keras.Model) for layer in nested.layers)
    for layer in leaf_layers(flat):
        if layer.weights:
            nested_layer = next(l for l in leaf_layers(nested) if l.name == layer.name)
            nested_layer.set_weights(layer.get_weights())
    x, y = _batch()
    for a, b in zip(diagnostics.gradient_flow(flat, x, y), diagnostics.gradient_flow(nested, x, y)):
        assert a["unit"] == b["unit"]
        assert a["gradient_norm"] == pytest.approx(b["gradient_norm"], rel=1e-5)
        assert a["branch_ratio"] == pytest.approx(b["branch_ratio"], rel=1e-5)


def test_plain_networks_have_no_ratios_and_no_identity_check():
    model = _small(plain=True)
    x, y = _batch()
    rows = diagnostics.gradient_flow(model, x, y)
    assert len(rows) == 3 and all(r["branch_ratio"] is None for r in rows)
    with pytest.raises(ValueError, match="no residual blocks"):
        diagnostics.block_identity_errors(model, x)


def test_any_model_without_blocks_is_measured_per_layer():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(5, name="first")(inputs)
    h = dense_residual_block(h, 5, name="res")
    outputs = keras.layers.Dense(3, name="last")(h)
    model = keras.Model(inputs, outputs)
    x = np.ones((4, 6), "float32")
    rows = diagnostics.gradient_flow(model, x, np.zeros((4, 3), "float32"), "mean_squared_error")
    assert [r["unit"] for r in rows] == ["res"]  # named blocks take precedence
    bare = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="a"),
                             keras.layers.Dense(2, name="b")])
    norms = diagnostics.gradient_norms(bare, x, np.zeros((4, 2)), "mean_squared_error")
    assert list(norms) == ["a", "b"]


@pytest.mark.parametrize("call, match", [
    (lambda m, x, y: diagnostics.gradient_norms(m, x[:, :4], y), "x must be a batch of shape"),
    (lambda m, x, y: diagnostics.gradient_norms(m, x, y[:3]), "one target per example"),
    (lambda m, x, y: diagnostics.gradient_norms(m, x, y, "hinge_loss_x"), "not a Keras loss"),
    (lambda m, x, y: diagnostics.gradient_norms(m, x, y, units="stages"),
     "units must be one of 'blocks', 'layers'; got 'stages'"),
    (lambda m, x, y: diagnostics.GradientFlowLogger(x, y, every_n_batches=0),
     "every_n_batches must be a positive int"),
    (lambda m, x, y: diagnostics.plot_by_depth({}, "x.png"), "non-empty dict"),
    (lambda m, x, y: diagnostics.plot_by_depth({"a": [1.0]}), "needs path"),
])
def test_bad_input_is_a_clear_error(call, match):
    model = _small()
    x, y = _batch()
    with pytest.raises(ValueError, match=match):
        call(model, x, y)


def test_type_errors():
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        diagnostics.gradient_norms("resnet20", *_batch())
    with pytest.raises(TypeError, match="tf.data.Dataset or"):
        diagnostics.TrainingError([1, 2, 3])


def test_gradient_flow_logger_writes_csv_and_tensorboard(tmp_path):
    model = _small()
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = _batch(32)
    logger = diagnostics.GradientFlowLogger(x[:8], y[:8], csv_path=tmp_path / "flow.csv",
                                            log_dir=tmp_path / "tb", every_n_batches=2)
    errors = diagnostics.TrainingError((x, y), batch_size=16)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[logger, errors])
    # 4 batches per epoch: measurements after batches 2 and 4 of each epoch (the epoch end
    # coincides with batch 4), 3 blocks each.
    assert [step for step, _ in logger.history] == [2, 4, 6, 8]
    with open(tmp_path / "flow.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 3
    assert rows[0]["unit"] == "conv2_block1" and rows[0]["step"] == "2"
    assert rows[-1]["epoch"] == "1" and float(rows[-1]["gradient_norm"]) > 0
    assert float(rows[-1]["gradient_norm"]) == pytest.approx(
        logger.history[-1][1][-1]["gradient_norm"], rel=1e-5)
    events = glob.glob(os.path.join(tmp_path, "tb", "events.out.tfevents.*"))
    assert len(events) == 1
    tags = {value.tag for event in tf.compat.v1.train.summary_iterator(events[0])
            for value in event.summary.value}
    assert {"gradient_norm/conv2_block1", "branch_ratio/conv4_block1"} <= tags
    # TrainingError: the inference-mode error of the final weights on the training set.
    predicted = model.predict(x, verbose=0).argmax(-1)
    assert errors.errors[-1] == pytest.approx(float(np.mean(predicted != y)))
    assert history.history["train_error"] == errors.errors


def test_plot_by_depth_writes_an_image(tmp_path):
    model = _small()
    rows = diagnostics.gradient_flow(model, *_batch())
    path = diagnostics.plot_by_depth({"resnet-8": rows, "other": [1.0, 0.1, 0.01]},
                                     tmp_path / "norms.png", title="t")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_looped_stages_are_measured_block_by_block():
    from keras_resnet import convert_stages

    looped = CifarResNet(14, input_shape=SHAPE, classes=10, loop_stages=True)
    unrolled = convert_stages(looped, loop=False)
    x, y = _batch()
    rows = diagnostics.gradient_flow(looped, x, y)
    assert [r["unit"] for r in rows] == [f"conv{s}_block{b}" for s in (2, 3, 4) for b in (1, 2)]
    for a, b in zip(rows, diagnostics.gradient_flow(unrolled, x, y)):
        assert a["gradient_norm"] == pytest.approx(b["gradient_norm"], rel=1e-5)
        assert a["branch_ratio"] == pytest.approx(b["branch_ratio"], rel=1e-5)
    # After a weight change the next measurement sees the new weights.
    gamma = looped.get_layer("conv3_blocks").bn_weights[-1][0]  # the branch's last BN gamma
    gamma.assign(gamma * 2.0)
    again = {r["unit"]: r["branch_ratio"] for r in diagnostics.gradient_flow(looped, x, y)}
    assert again["conv3_block2"] == pytest.approx(2 * rows[3]["branch_ratio"], rel=1e-4)
    assert again["conv3_block1"] == pytest.approx(rows[2]["branch_ratio"], rel=1e-5)
    zero = CifarResNet(14, input_shape=SHAPE, loop_stages=True, zero_init_residual=True)
    checks = diagnostics.block_identity_errors(zero, x)
    assert len(checks) == 6 and all(c["max_abs_error"] == 0.0 for c in checks)
