"""keras_resnet.data: every source through its real code path, splits, augmentation, bad input."""

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from keras_resnet import data
from keras_resnet.data import load_dataset


def _arrays(split):
    images, labels = [], []
    for x, y in split:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def test_digits_split_shapes_and_raw_pixels():
    ds = load_dataset("digits", batch_size=50, seed=0, augment=False)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (1293, 144, 360)
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert ds.class_names == tuple("0123456789")
    assert ds.steps_per_epoch == 26
    x_test, y_test = _arrays(ds.test)
    assert x_test.shape == (360, 8, 8, 1) and x_test.dtype == np.float32
    assert y_test.dtype == np.int32
    # Raw pixels: sklearn's 0..16 scaled by 255/16, so the maximum is exactly 255.
    assert x_test.min() == 0.0 and x_test.max() == 255.0
    assert np.allclose(np.unique(x_test) * 16 / 255, np.round(np.unique(x_test) * 16 / 255))
    # Stratified: every class has 35 or 36 or 37 test images.
    assert set(np.bincount(y_test)) <= {35, 36, 37}
    x_train, _ = _arrays(ds.train)
    assert ds.mean[0] == pytest.approx(x_train.mean(), rel=1e-5)
    assert ds.variance[0] == pytest.approx(x_train.var(), rel=1e-4)


def test_digits_split_is_deterministic_per_seed_and_disjoint():
    a = _arrays(load_dataset("digits", seed=0, augment=False).test)
    b = _arrays(load_dataset("digits", seed=0, augment=False).test)
    c = _arrays(load_dataset("digits", seed=1, augment=False).test)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    ds = load_dataset("digits", seed=0, augment=False)
    train = {x.tobytes() for x in _arrays(ds.train)[0]}
    test = [x.tobytes() for x in a[0]]
    # The digits data has a few exact duplicates; the split itself shares no index.
    assert sum(t in train for t in test) < 10


def test_training_pipeline_reshuffles_and_augments_by_shift_without_flip():
    ds = load_dataset("digits", batch_size=2000, seed=0)
    assert ds.augmentation == {"padding": 1, "flip": False}
    plain = load_dataset("digits", batch_size=2000, seed=0, augment=False)
    first, second = next(iter(ds.train))[0].numpy(), next(iter(ds.train))[0].numpy()
    assert first.shape == (1293, 8, 8, 1)
    assert not np.array_equal(first, second)  # a new order and new crops every epoch
    # Pad 1 + crop 8x8 is a shift by at most one pixel: every augmented image equals some
    # original image shifted by (dy, dx) in {-1, 0, 1}^2 with zeros coming in.
    originals = _arrays(plain.train)[0]
    padded = np.pad(originals, ((0, 0), (1, 1), (1, 1), (0, 0)))
    candidates = {padded[i, dy:dy + 8, dx:dx + 8].tobytes() for i in range(len(originals))
                  for dy in range(3) for dx in range(3)}
    assert all(image.tobytes() in candidates for image in first[:200])
    # Not all images are the unshifted original: the crop really moves.
    centred = {o.tobytes() for o in originals}
    assert sum(image.tobytes() not in centred for image in first) > 500


def test_cifar_style_augmentation_flips():
    augment = data.augmentation_layers((4, 4, 1), padding=0, flip=True, seed=0)
    image = np.arange(16, dtype="float32").reshape(4, 4, 1)
    outputs = {augment(image).numpy().tobytes() for _ in range(20)}
    assert outputs == {image.tobytes(), image[:, ::-1].tobytes()}


def test_synthetic():
    ds = load_dataset("synthetic", image_size=(16, 16), num_classes=4, num_examples=100,
                      batch_size=16)
    assert ds.input_shape == (16, 16, 3) and ds.num_classes == 4
    assert (ds.train_size, ds.validation_size, ds.test_size) == (72, 8, 20)
    assert ds.augmentation == {"padding": 2, "flip": True}
    x, y = _arrays(ds.test)
    assert x.shape == (20, 16, 16, 3) and 0 <= x.min() and x.max() <= 255
    assert set(np.unique(y)) <= {0, 1, 2, 3}


def _write_cifar_archive(cache_dir, per_batch=6, test=8):
    """A CIFAR-10 archive in the official layout (pickled dicts with bytes keys) in Keras' cache.

    Protocol 4: the official Python 2 pickles hold str, which protocol 2 from Python 3 would
    write through `_codecs.encode`, a global Keras' restricted unpickler refuses.
    """
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    expected = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        for name in names:
            n = test if name == "test_batch" else per_batch
            pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            labels = [int(v) for v in rng.integers(0, 10, size=n)]
            expected[name] = (pixels, labels)
            payload = pickle.dumps({b"batch_label": name.encode(), b"labels": labels,
                                    b"data": pixels, b"filenames": [b"x.png"] * n}, protocol=4)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    os.makedirs(os.path.join(cache_dir, "datasets"))
    path = os.path.join(cache_dir, "datasets", f"{data.CIFAR10_CACHE_NAME}_archive")
    with open(path, "wb") as file:
        file.write(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest(), expected


def test_cifar10_from_an_archive_in_the_keras_cache(tmp_path, monkeypatch):
    sha256, expected = _write_cifar_archive(str(tmp_path))
    # The archive is ours, not the official one: accept its hash (get_file still checks it).
    monkeypatch.setattr(data.arrays, "CIFAR10_SHA256", sha256)
    monkeypatch.setattr(data.arrays, "CIFAR10_URL", "http://127.0.0.1:9/never-downloaded.tar.gz")
    ds = load_dataset("cifar10", cache_dir=str(tmp_path), batch_size=4, validation_split=0.2,
                      augment=False)
    assert ds.class_names[0] == "airplane" and ds.num_classes == 10
    assert ds.input_shape == (32, 32, 3)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (24, 6, 8)
    assert ds.augmentation is None
    x, y = _arrays(ds.test)
    pixels, labels = expected["test_batch"]
    # CIFAR stores planes (3, 32, 32); the pipeline gives channels-last raw pixels.
    np.testing.assert_array_equal(x, pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(y, labels)
    assert os.path.isdir(tmp_path / "datasets" / data.CIFAR10_CACHE_NAME / "cifar-10-batches-py")
    augmented = load_dataset("cifar10", cache_dir=str(tmp_path), batch_size=4)
    assert augmented.augmentation == {"padding": 4, "flip": True}


def test_cifar10_archive_with_a_wrong_hash_is_not_used(tmp_path, monkeypatch):
    _write_cifar_archive(str(tmp_path))
    monkeypatch.setattr(data.arrays, "CIFAR10_URL", "http://127.0.0.1:9/never-downloaded.tar.gz")
    # The official hash does not match: get_file tries to download again (refused here).
    with pytest.raises(data.DataError, match="could not be downloaded: URL fetch failure"):
        load_dataset("cifar10", cache_dir=str(tmp_path))


def _write_folder(root, classes=("cat", "dog"), per_class=10, size=(12, 10), mode="RGB"):
    from PIL import Image

    rng = np.random.default_rng(0)
    step = 150 // max(len(classes) - 1, 1)  # class c has pixels 40 + step * c + 0..19
    for c, name in enumerate(classes):
        os.makedirs(root / name)
        for i in range(per_class):
            shape = (size[0], size[1], 3) if mode == "RGB" else size
            pixels = np.full(shape, 40 + step * c, dtype=np.uint8) + rng.integers(
                0, 20, size=shape, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i}.png")
    return root


def test_image_folder(tmp_path):
    root = _write_folder(tmp_path / "pets")
    ds = load_dataset(str(root), batch_size=4, seed=0)
    assert ds.class_names == ("cat", "dog") and ds.num_classes == 2
    assert ds.input_shape == (12, 10, 3)  # the first image's size, rgb
    # test: round(20 * 0.2) = 4; validation: round(16 * 0.1) = 2; training: the other 14.
    assert (ds.train_size, ds.validation_size, ds.test_size) == (14, 2, 4)
    # Small images get the CIFAR recipe (pad an eighth, crop, flip), evaluation on the whole.
    assert ds.augmentation == {"padding": 1, "flip": True} and ds.crop_fraction == 1.0
    x, y = _arrays(ds.test)
    assert x.shape == (4, 12, 10, 3) and x.dtype == np.float32
    # The pixels stay raw and match the class: cats are 40..59, dogs 190..209.
    for image, label in zip(x, y):
        assert (40 + 150 * label) <= image.min() and image.max() < 60 + 150 * label
    train_x, _ = _arrays(ds.train)
    assert train_x.shape == (14, 12, 10, 3)
    assert 40 < ds.mean[0] < 210
    same = load_dataset(str(root), batch_size=4, seed=0)
    np.testing.assert_array_equal(_arrays(same.test)[0], x)


def test_image_folder_grayscale_and_resize(tmp_path):
    root = _write_folder(tmp_path / "gray", classes=("a", "b", "c"), per_class=5, size=(9, 9),
                         mode="L")
    ds = load_dataset(root, batch_size=8, image_size=(6, 6), test_split=0.4)
    assert ds.input_shape == (6, 6, 1) and ds.class_names == ("a", "b", "c")
    # test: round(15 * 0.4) = 6; validation: round(9 * 0.1) = 1
    assert (ds.train_size, ds.validation_size, ds.test_size) == (8, 1, 6)


def test_empty_folder(tmp_path):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"data folder .*empty' has no images.*\['cats'\]"):
        load_dataset(str(tmp_path / "empty"))


def test_undecodable_images_are_skipped_and_listed_or_refused_with_strict(tmp_path, caplog):
    root = _write_folder(tmp_path / "pets", per_class=6)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    caplog.set_level("WARNING", logger="keras_resnet.data.folders")
    ds = load_dataset(str(root), batch_size=2)
    # 12 good images of 14: round(12 * 0.2) = 2 test, round(10 * 0.1) = 1 validation
    assert (ds.train_size, ds.validation_size, ds.test_size) == (9, 1, 2)
    assert len(ds.files) == 12 and not any("broken" in f or "empty" in f for f in ds.files)
    warning = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
    assert len(warning) == 1 and warning[0].startswith(
        f"skipping 2 image(s) in {str(root)!r} that do not decode: {root}/cat/empty.jpg: ")
    assert f"; {root}/dog/broken.png: " in warning[0] and "BytesIO" not in warning[0]
    with pytest.raises(data.DataError,
                       match=rf"^2 image\(s\) in '{root}' do not decode \(strict\): "
                             rf"{root}/cat/empty\.jpg: .*; {root}/dog/broken\.png: .*; remove or "
                             r"replace them, or drop strict \(--strict\) to skip them$"):
        load_dataset(str(root), strict=True)
    with pytest.raises(TypeError, match="strict must be True or False; got 'yes'"):
        load_dataset(str(root), strict="yes")


def test_train_cli_strict_refuses_a_folder_with_a_bad_image(tmp_path, capsys):
    from keras_resnet.cli import main

    root = _write_folder(tmp_path / "pets", per_class=6)
    (root / "dog" / "broken.png").write_bytes(b"not a png")
    assert main(["train", "--data", str(root), "--strict", "--epochs", "1", "--no-export",
                 "--out", str(tmp_path / "runs"), "--batch-size", "2", "--verbose", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"keras-resnet train: error: 1 image(s) in '{root}' do not decode "
                            f"(strict): {root}/dog/broken.png: ")
    assert len(error.splitlines()) == 1


def test_single_class_folder(tmp_path):
    root = _write_folder(tmp_path / "one", classes=("only",), per_class=3)
    with pytest.raises(data.DataError, match="at least 2 class sub-folders"):
        load_dataset(str(root))


@pytest.mark.parametrize("kwargs, error, message", [
    ({"source": "imagenet"}, ValueError,
     "unknown data set 'imagenet': not one of digits, cifar10"),
    ({"name_or_path": "imagenet"}, ValueError,
     "unknown data set 'imagenet': not one of digits, cifar10"),
    ({"source": 3}, TypeError, "source must be a data set name or a directory path; got 3"),
    ({"options": {"batch_size": 8}}, TypeError,
     r"options must be a keras_resnet.data.LoadOptions or None; got \{'batch_size': 8\}"),
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive int \(1, 2, 64, ...\); got 0"),
    ({"batch_size": 2.0}, TypeError, r"batch_size must be a positive int .*; got 2.0"),
    ({"validation_split": 1.5}, ValueError,
     r"validation_split must be a number in \[0, 1\); got 1.5"),
    ({"test_split": 0}, ValueError, "test_split must be > 0"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0; got -1"),
    ({"padding": -1}, ValueError, "padding must be an int >= 0; got -1"),
    ({"image_size": (0, 4)}, ValueError, "image_size must be a positive int"),
    ({"image_size": (4, 4, 4)}, ValueError, "image_size must be an int or .height, width."),
    ({"color_mode": "cmyk"}, ValueError, "color_mode must be one of 'rgb', 'grayscale'"),
    ({"crop": "random"}, ValueError, "crop must be one of 'inception', 'pad'; got 'random'"),
    ({"crop_fraction": 0}, ValueError, r"crop_fraction must be a number in \(0, 1\]"),
    ({"deterministic": 1}, TypeError, "deterministic must be True or False; got 1"),
    ({"input_context": "ctx"}, TypeError, "input_context must be a tf.distribute.InputContext"),
])
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_dataset(**kwargs)


def test_unknown_options_are_named_with_the_accepted_ones():
    with pytest.raises(TypeError, match=r"unknown data options batch, sed; accepted: batch_size, "
                                        r"seed, validation_split, .*, mixup, cutmix$"):
        load_dataset("digits", batch=8, sed=1)
    with pytest.raises(TypeError, match=r"unknown data option batch; accepted: batch_size"):
        data.LoadOptions().replace(batch=8)


def test_options_are_declared_once_with_the_cli_defaults():
    from keras_resnet import constants

    options = data.LoadOptions()
    assert options.batch_size == constants.DEFAULT_BATCH_SIZE == 32
    assert options.seed == constants.DEFAULT_SEED
    assert options.shuffle_buffer == constants.DEFAULT_SHUFFLE_BUFFER
    assert options.strict is False
    assert data.LoadOptions(image_size=6).image_size == (6, 6)
    with pytest.raises(ValueError, match=r"batch_size must be a positive int \(1, 2, 64, ...\); "
                                         r"got 0"):
        data.LoadOptions(batch_size=0)
    with pytest.raises(ValueError, match=r"batch_size must be a positive int"):
        options.replace(batch_size=0)
    assert load_dataset("digits", augment=False).batch_size == 32
    given = data.LoadOptions(batch_size=16, augment=False, seed=3)
    ds = load_dataset("digits", given)
    assert ds.batch_size == 16
    assert load_dataset("digits", given, batch_size=8).batch_size == 8
    np.testing.assert_array_equal(_arrays(ds.test)[1],
                                  _arrays(load_dataset("digits", batch_size=16, seed=3,
                                                       augment=False).test)[1])


def test_a_file_is_not_a_data_set(tmp_path):
    path = tmp_path / "images.zip"
    path.write_bytes(b"zip")
    with pytest.raises(ValueError, match="is a file"):
        load_dataset(str(path))


def test_cifar_batches_are_read_without_running_foreign_code(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo never",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Boom(), b"labels": [0]}))
    with pytest.raises(pickle.UnpicklingError, match="CIFAR-10 batch names a forbidden global "
                                                     "posix.system"):
        data.arrays._read_cifar_batch(str(path))
    pixels = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072) % 251
    path.write_bytes(pickle.dumps({b"data": pixels, b"labels": [3, 4]}, protocol=2))
    images, labels = data.arrays._read_cifar_batch(str(path))
    np.testing.assert_array_equal(images, pixels.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))
    assert labels.tolist() == [3, 4] and labels.dtype == np.int32


def test_folder_evaluation_is_decode_for_eval_of_each_file(tmp_path):
    """What a served `serving_bytes` request must reproduce: test images = decode_for_eval."""
    import tensorflow as tf

    from keras_resnet.data import folders

    root = _write_folder(tmp_path / "pets", per_class=10, size=(40, 36))
    ds = load_dataset(str(root), batch_size=3, image_size=(32, 32), crop="inception")
    _, files, labels = folders.list_images(str(root))
    _, _, test_index = folders.split_indices(20, 0, folders.holdout_sizes(20, 0.1, 0.2))
    expected = np.stack([data.decode_for_eval(tf.io.read_file(files[i]), (32, 32), 3,
                                              ds.crop_fraction).numpy() for i in test_index])
    x, y = _arrays(ds.test)
    np.testing.assert_array_equal(x, expected)
    assert y.tolist() == [labels[i] for i in test_index]


def test_a_corrupt_image_met_in_training_names_the_file(tmp_path):
    root = _write_folder(tmp_path / "pets", per_class=3)
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    # met while loading (the statistics pass) or while iterating, the error names the file
    with pytest.raises(data.DataError, match=r"corrupt or unreadable image .*dog/broken\.png"):
        ds = load_dataset(str(root), check_images=False, test_split=0.3)
        with data.explain_errors(ds):
            for split in (ds.train, ds.test):
                for _ in split:
                    pass
