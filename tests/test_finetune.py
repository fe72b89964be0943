"""Two-phase fine-tuning: what is frozen, BN in inference mode, and a measured transfer effect."""

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_resnet
from keras_resnet.modeling import from_torch_checkpoint
from keras_resnet.training.fine_tuning import fine_tune
from keras_resnet.training.fine_tuning import model_stages
from pretrained_helpers import stripes, torch_state_dict

TINY = dict(stage_depths=(1, 1), widths=(16, 32), input_shape=(32, 32, 3))
ORIENTATIONS = (0, 45, 90, 135)


def _bn_statistics(model):
    return {layer.name: (layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
            for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)}


def _kernel(model, name):
    return model.get_layer(name).kernel.numpy().copy()


@pytest.mark.slow
def test_phases_freeze_the_backbone_and_keep_bn_in_inference_mode():
    model = keras_resnet.ResNet(stage_depths=(1, 1, 1), widths=(8, 16, 16),
                                input_shape=(32, 32, 3), classes=2)
    x, y = stripes(32, (0, 90), seed=0)
    statistics = _bn_statistics(model)
    before = {name: _kernel(model, name) for name in
              ("conv1_conv", "conv3_block1_1_conv", "conv4_block1_2_conv", "predictions")}
    result = fine_tune(model, (x, y), (x, y), head_epochs=2, fine_tune_from="conv4",
                       fine_tune_epochs=1, batch_size=8)
    assert len(result.head.history["val_accuracy"]) == 2
    assert result.fine_tune.epoch == [2]  # phase 2 continues phase 1's epoch numbers
    for name, (mean, variance) in statistics.items():
        after = model.get_layer(name)
        np.testing.assert_array_equal(after.moving_mean.numpy(), mean, err_msg=name)
        np.testing.assert_array_equal(after.moving_variance.numpy(), variance, err_msg=name)
    np.testing.assert_array_equal(_kernel(model, "conv1_conv"), before["conv1_conv"])
    np.testing.assert_array_equal(_kernel(model, "conv3_block1_1_conv"),
                                  before["conv3_block1_1_conv"])
    assert not np.array_equal(_kernel(model, "conv4_block1_2_conv"),
                              before["conv4_block1_2_conv"])
    assert not np.array_equal(_kernel(model, "predictions"), before["predictions"])
    assert {layer.name for layer in model.layers if layer.trainable and layer.weights} == \
        {"conv4_block1_0_conv", "conv4_block1_1_conv", "conv4_block1_2_conv", "predictions"}


def test_train_batch_norm_lets_the_top_statistics_move():
    model = keras_resnet.ResNet(stage_depths=(1, 1), widths=(8, 16), input_shape=(32, 32, 3),
                                classes=2)
    x, y = stripes(16, (0, 90), seed=0)
    statistics = _bn_statistics(model)
    fine_tune(model, (x, y), head_epochs=1, fine_tune_from=3, fine_tune_epochs=1,
              train_batch_norm=True, batch_size=8)
    moved = {name for name, (mean, _) in statistics.items()
             if not np.array_equal(model.get_layer(name).moving_mean.numpy(), mean)}
    assert moved == {"conv3_block1_0_bn", "conv3_block1_1_bn", "conv3_block1_2_bn"}


def test_a_resumed_run_skips_the_finished_head_phase():
    model = keras_resnet.ResNet(stage_depths=(1, 1), widths=(8, 16), input_shape=(32, 32, 3),
                                classes=2)
    x, y = stripes(16, (0, 90), seed=0)
    head = _kernel(model, "predictions")
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    result = fine_tune(model, batches, batches, head_epochs=2, fine_tune_from="conv3",
                       fine_tune_epochs=2, initial_epoch=3,
                       optimizer=lambda lr: keras.optimizers.SGD(lr, momentum=0.9))
    assert result.head is None and result.fine_tune.epoch == [3]
    assert len(result.fine_tune.history["val_accuracy"]) == 1
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    assert not np.array_equal(_kernel(model, "predictions"), head)


@pytest.mark.parametrize("arguments, error, message", [
    (dict(fine_tune_from="conv7", fine_tune_epochs=1), ValueError,
     r"fine_tune_from must be a stage of model 'resnet' \(conv2, conv3, or its number\); "
     r"got 'conv7'"),
    (dict(fine_tune_from=9, fine_tune_epochs=1), ValueError, r"got 9"),
    (dict(fine_tune_from="conv3"), ValueError,
     r"fine_tune_from and fine_tune_epochs go together"),
    (dict(head_epochs=0), ValueError, r"head_epochs must be a positive int \(1, 2, 64, \.\.\.\); "
                                      r"got 0"),
    (dict(fine_tune_lr=-1.0, fine_tune_from="conv3", fine_tune_epochs=1), ValueError,
     r"fine_tune_lr must be"),
    (dict(head_epochs=1.5), TypeError, r"head_epochs must be a positive int"),
    (dict(initial_epoch=1), ValueError, r"initial_epoch must be an int in \[0, 0\]; got 1"),
    (dict(optimizer="adam"), TypeError,
     r"optimizer must be None or a callable learning_rate -> optimizer; got 'adam'"),
])
def test_bad_arguments_fail_before_training(arguments, error, message):
    model = keras_resnet.ResNet(stage_depths=(1, 1), widths=(8, 16), input_shape=(32, 32, 3),
                                classes=2, name="resnet")
    head = _kernel(model, "predictions")
    with pytest.raises(error, match=message):
        fine_tune(model, (np.zeros((2, 32, 32, 3), "float32"), np.zeros(2, "int32")),
                  **{"head_epochs": 1, **arguments})
    np.testing.assert_array_equal(_kernel(model, "predictions"), head)
    assert model_stages(model) == ("conv2", "conv3")
    headless = keras_resnet.ResNet(stage_depths=(1, 1), widths=(8, 16), include_top=False,
                                   pooling="avg", input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"has no 'predictions' head to fine-tune"):
        fine_tune(headless, (np.zeros((2, 32, 32, 3), "float32"), np.zeros(2, "int32")),
                  head_epochs=1)


@pytest.mark.slow
def test_a_checkpoint_from_a_related_task_beats_training_from_scratch(tmp_path):
    """Task A: four stripe orientations (512 images). Task B: axis-aligned vs diagonal stripes
    from only 16 images. After the same 3 epochs, the converted task-A checkpoint with a new
    head (backbone frozen) classifies B's validation set far better than the same net trained
    from scratch."""
    keras.utils.set_random_seed(0)
    xa, ya = stripes(512, ORIENTATIONS, seed=1)
    source = keras_resnet.ResNet(classes=4, classifier_activation=None, **TINY)
    source.compile(keras.optimizers.Adam(3e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    source.fit(xa, ya, epochs=4, batch_size=32, verbose=0)
    checkpoint = str(tmp_path / "task_a.safetensors")
    save_file(torch_state_dict(source), checkpoint)

    xb, yb = stripes(16, ORIENTATIONS, seed=2)
    xv, yv = stripes(256, ORIENTATIONS, seed=3)
    yb, yv = yb % 2, yv % 2  # 0/90 degrees -> 0, 45/135 degrees -> 1
    pretrained, scratch = [], []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        model = from_torch_checkpoint(checkpoint, input_shape=TINY["input_shape"], classes=2)
        assert model.pretrained_load.skipped == ("fc.weight", "fc.bias")
        result = fine_tune(model, (xb, yb), (xv, yv), head_epochs=3, head_lr=3e-2, batch_size=8)
        pretrained.append(result.head.history["val_accuracy"][-1])
        keras.utils.set_random_seed(seed)
        model = keras_resnet.ResNet(classes=2, **TINY)
        model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        history = model.fit(xb, yb, epochs=3, batch_size=8, validation_data=(xv, yv), verbose=0)
        scratch.append(history.history["val_accuracy"][-1])
    print(f"validation accuracy on task B: pretrained {pretrained}, scratch {scratch}")
    assert np.mean(pretrained) >= 0.9, pretrained
    assert np.mean(pretrained) >= np.mean(scratch) + 0.2, (pretrained, scratch)
