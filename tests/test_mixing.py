"""MixUp / CutMix (Keras' layers) on training batches: soft labels, one-hot evaluation, training."""

import json

import numpy as np
import pytest
import tensorflow as tf

from keras_resnet.data import load_dataset, mixing
from keras_resnet.data.options import make_options

_OPTIONS = dict(batch_size=16, augment=False, deterministic=True)


def _first(split):
    images, labels = next(iter(split))
    return images.numpy().astype("float64"), labels.numpy().astype("float64")


def test_mixup_batches_are_convex_mixes_of_the_batch_with_soft_labels():
    plain = load_dataset("digits", **_OPTIONS)
    mixed = load_dataset("digits", mixup=0.4, **_OPTIONS)
    assert mixed.one_hot_labels and not plain.one_hot_labels
    assert mixed.augmentation == {"mixup": 0.4}
    x, y = _first(plain.train)
    xm, ym = _first(mixed.train)
    assert ym.shape == (16, 10) and np.allclose(ym.sum(axis=1), 1.0, atol=1e-6)
    assert (ym.max(axis=1) < 0.999).sum() >= 8  # most labels are soft
    assert np.abs(xm - x).max() > 10  # the images changed
    one_hot = np.eye(10)[y.astype(int)]
    for i in range(16):
        # xm[i] = w x[i] + (1 - w) x[j] and ym[i] = w y[i] + (1 - w) y[j] for one j and w
        fits = []
        for j in range(16):
            d = (x[i] - x[j]).ravel()
            w = 1.0 if not d.any() else float(np.dot((xm[i] - x[j]).ravel(), d) / np.dot(d, d))
            image_error = np.abs(w * x[i] + (1 - w) * x[j] - xm[i]).max()
            label_error = np.abs(w * one_hot[i] + (1 - w) * one_hot[j] - ym[i]).max()
            fits.append(image_error < 1e-3 and label_error < 1e-4 and -1e-6 <= w <= 1 + 1e-6)
        assert any(fits), i


def test_cutmix_pastes_patches_and_mixes_labels_by_area():
    plain = load_dataset("digits", **_OPTIONS)
    mixed = load_dataset("digits", cutmix=1.0, **_OPTIONS)
    x, y = _first(plain.train)
    xm, ym = _first(mixed.train)
    assert np.allclose(ym.sum(axis=1), 1.0, atol=1e-6)
    for i in range(16):
        changed = (xm[i] != x[i]).any(axis=-1)
        # every pixel comes from this image or from one other image of the batch
        sources = [j for j in range(16) if np.array_equal(xm[i][changed], x[j][changed])]
        assert not changed.any() or sources, i
        # the changed pixels' bounding rectangle is one other image's, pasted whole
        if changed.any():
            rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
            box = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert any(np.array_equal(xm[i][box], x[j][box]) for j in sources), i
        # the label mixes this image's class with (at most) one other
        assert np.count_nonzero(ym[i] > 1e-6) <= 2
        assert ym[i, int(y[i])] > 0 or not changed.any()
    assert (ym.max(axis=1) < 0.999).sum() >= 4 and (xm != x).any()


def test_evaluation_splits_are_one_hot_and_unmixed():
    plain = load_dataset("digits", **_OPTIONS)
    mixed = load_dataset("digits", mixup=0.2, cutmix=0.5, **_OPTIONS)
    for split in ("validation", "test"):
        x, y = _first(getattr(plain, split))
        xm, ym = _first(getattr(mixed, split))
        assert np.array_equal(x, xm) and np.array_equal(ym, np.eye(10)[y.astype(int)])


def test_off_by_default_leaves_the_dataset_as_it_was():
    plain = load_dataset("digits", **_OPTIONS)
    options = make_options(**{**dict(
        batch_size=16, seed=0, validation_split=0.1, test_split=0.2, augment=False, padding=None,
        flip=None, image_size=None, color_mode=None, cache_dir=None, num_classes=None,
        num_examples=1000, check_images=True, crop=None, crop_fraction=None,
        rand_augment=False, label_offset=None, input_context=None, deterministic=True,
        shuffle_buffer=1024, cache_mb=256, mixup=0.0, cutmix=0.0)})
    assert mixing.apply_mixing(plain, options) is plain
    assert plain.train.element_spec[1].dtype == tf.int32 or \
        plain.train.element_spec[1].dtype == tf.int64
    again = load_dataset("digits", mixup=0, cutmix=0, **_OPTIONS)
    assert not again.one_hot_labels and again.augmentation is None
    for (a, b), (c, d) in zip(plain.train, again.train):
        assert np.array_equal(a.numpy(), c.numpy()) and np.array_equal(b.numpy(), d.numpy())


def test_mixing_is_per_replica_under_an_input_context():
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=2)
    mixed = load_dataset("digits", mixup=0.2, input_context=context, **_OPTIONS)
    x, y = _first(mixed.train)
    assert x.shape[0] == 8 and y.shape == (8, 10)  # the per-replica batch, mixed in itself


@pytest.mark.parametrize("kwargs, error, message", [
    ({"mixup": -0.1}, ValueError, r"mixup must be a number >= 0 \(e.g. 0.2\); got -0.1"),
    ({"cutmix": 1.5}, ValueError, r"cutmix must be a number in \[0, 1\]; got 1.5"),
    ({"mixup": "0.2"}, TypeError, r"mixup must be a number >= 0 \(e.g. 0.2\); got '0.2'"),
])
def test_bad_mixing_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_dataset("digits", **kwargs)


def test_fine_tuning_with_mixup_is_refused_before_training(tmp_path):
    from keras_resnet.training import train

    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"mixup/cutmix apply to training from scratch, not to "
                                         r"fine-tuning weights=.*; got \{'mixup': 0.2\}"):
        train("cifar-resnet20", "digits", weights=str(weights), data_options={"mixup": 0.2},
              out_dir=str(tmp_path / "runs"), export_dir=None)


@pytest.mark.slow
def test_train_with_mixup_and_cutmix_on_digits(tmp_path, capsys):
    import keras

    from keras_resnet.cli import main

    status = main(["train", "--data", "digits", "--epochs", "2", "--batch-size", "128",
                   "--mixup", "0.2", "--cutmix", "1.0", "--label-smoothing", "0.1",
                   "--out", str(tmp_path / "runs"), "--no-export", "--name", "mix",
                   "--verbose", "0"])
    assert status == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "mix"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["data_options"] == {"mixup": 0.2, "cutmix": 1.0}
    assert np.isfinite(metrics["test_loss"]) and 0 <= metrics["test_accuracy"] <= 1
    model = keras.models.load_model(run / "model.keras")
    assert isinstance(model.loss, keras.losses.CategoricalCrossentropy)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    # the saved model evaluates the run's own (one-hot) test split to the recorded numbers
    data = load_dataset("digits", batch_size=128, mixup=0.2, cutmix=1.0)
    result = model.evaluate(data.test, verbose=0, return_dict=True)
    assert result["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
