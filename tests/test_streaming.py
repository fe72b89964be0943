"""Streamed TFRecord directories and folders: sharding, preprocessing, bad input, bad records."""

import io
import re
import json
import os
import struct

import numpy as np
import pytest
import tensorflow as tf
from imagefolders import make_jpeg_folder

from keras_resnet import data
from keras_resnet.data import DataError, explain_errors, images, load_dataset, tfrecord


def _png(value, size=(6, 6)):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _write_records(directory, split, shard_count, values, label_offset=0, classes=3,
                   features=None):
    """Shards whose image i is a constant-colour PNG of value i (so a pixel names its record)."""
    os.makedirs(directory, exist_ok=True)
    for shard in range(shard_count):
        name = os.path.join(directory, tfrecord.shard_name(split, shard, shard_count))
        with tf.io.TFRecordWriter(name) as writer:
            for value in values[shard::shard_count]:
                example = tfrecord.make_example(_png(value), "png", value % classes + label_offset,
                                                f"c{value % classes}", 6, 6, f"{value}.png")
                if features is not None:
                    parsed = tf.train.Example.FromString(example)
                    for key in list(parsed.features.feature):
                        if key not in features:
                            del parsed.features.feature[key]
                    example = parsed.SerializeToString()
                writer.write(example)


def _values(dataset):
    """The record values (pixel [0, 0, 0]) and labels of every element."""
    values, labels = [], []
    for x, y in dataset:
        values += [int(round(v)) for v in x.numpy()[:, 0, 0, 0]]
        labels += [int(v) for v in y.numpy()]
    return values, labels


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """TFRecords as the ImageNet TPU tools write them: labels from 1, no dataset.json."""
    root = str(tmp_path_factory.mktemp("imagenet"))
    _write_records(root, "train", 4, list(range(40)), label_offset=1)
    _write_records(root, "validation", 2, list(range(100, 112)), label_offset=1)
    return root


def _load(path, **kwargs):
    options = dict(num_classes=3, label_offset=1, image_size=4, augment=False, batch_size=8,
                   crop_fraction=1.0)
    return load_dataset(path, **{**options, **kwargs})


def test_imagenet_records_with_a_label_offset(imagenet_like):
    ds = _load(imagenet_like)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (40, 12, 12)
    assert ds.class_names == ("class_0", "class_1", "class_2") and ds.label_offset == 1
    assert int(ds.train.cardinality()) == 5 and int(ds.test.cardinality()) == 2  # 40/8, 12/8
    values, labels = _values(ds.train)
    assert sorted(values) == list(range(40))
    assert all(label == value % 3 for value, label in zip(values, labels))
    assert sorted(_values(ds.test)[0]) == list(range(100, 112))


def test_records_need_their_classes_and_offset(imagenet_like):
    with pytest.raises(DataError, match="has no dataset.json naming its classes; pass "
                                        "num_classes"):
        load_dataset(imagenet_like)
    with pytest.raises(DataError, match=r"holds label 3, outside 0..2 after label_offset 0"):
        _load(imagenet_like, label_offset=0)


@pytest.mark.parametrize("pipelines", [2, 3])
def test_input_pipelines_read_disjoint_records_whose_union_is_everything(imagenet_like,
                                                                         pipelines):
    # 4 training shards: 2 pipelines split by file; 3 fall back to every 3rd record
    seen = []
    for pipeline in range(pipelines):
        context = tf.distribute.InputContext(num_input_pipelines=pipelines,
                                             input_pipeline_id=pipeline,
                                             num_replicas_in_sync=pipelines)
        ds = _load(imagenet_like, input_context=context, batch_size=2 * pipelines)
        batches = list(ds.train)
        assert max(len(x) for x, _ in batches) == 2  # the per-replica batch
        seen.append(_values(ds.train)[0])
    everything = [v for part in seen for v in part]
    assert sorted(everything) == list(range(40))  # disjoint (no repeats) and complete


def test_batch_must_divide_among_replicas(imagenet_like):
    context = tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0,
                                         num_replicas_in_sync=4)
    with pytest.raises(ValueError, match=r"batch_size must be a multiple of the 4 replicas in "
                                         r"sync \(it is the global batch\); got 6"):
        _load(imagenet_like, input_context=context, batch_size=6)


def test_training_order_changes_each_epoch_unless_deterministic(imagenet_like):
    ds = _load(imagenet_like, deterministic=True, augment=True, crop="pad", padding=0,
               flip=False)
    first, second = _values(ds.train)[0], _values(ds.train)[0]
    assert sorted(first) == sorted(second) == list(range(40)) and first != second
    again = _load(imagenet_like, deterministic=True, augment=True, crop="pad", padding=0,
                  flip=False)
    assert _values(again.train)[0] == first  # same seed, same order


def test_records_lacking_a_feature_name_it_and_the_file(tmp_path):
    _write_records(str(tmp_path), "train", 1, [1, 2], features={"image/encoded"})
    _write_records(str(tmp_path), "validation", 1, [3])
    with pytest.raises(DataError, match=r"TFRecord shard .*train-00000-of-00001' lacks the "
                                        r"feature 'image/class/label' \(int64\)"):
        load_dataset(str(tmp_path), num_classes=3)


def test_an_empty_split_is_an_error(tmp_path):
    _write_records(str(tmp_path), "train", 1, [])
    _write_records(str(tmp_path), "validation", 1, [3])
    with pytest.raises(DataError, match=r"the 'train' split of .* is empty: its 1 shard\(s\) "
                                        "hold no records"):
        load_dataset(str(tmp_path), num_classes=3)


def test_a_truncated_shard_is_found_at_load(tmp_path):
    _write_records(str(tmp_path), "train", 1, [1, 2, 3])
    _write_records(str(tmp_path), "validation", 1, [4])
    shard = tmp_path / "train-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"truncated TFRecord shard .*train-00000-of-00001': "
                                        r"record 2 \(0-based\) ends past the end"):
        load_dataset(str(tmp_path), num_classes=3)


def _record_offset(path, index):
    offset = 0
    with open(path, "rb") as stream:
        for _ in range(index):
            stream.seek(offset)
            offset += 16 + struct.unpack("<Q", stream.read(8))[0]
    return offset


def _metadata(directory):
    """A dataset.json holding the statistics, so loading reads no record."""
    (directory / "dataset.json").write_text(json.dumps({
        "class_names": ["a", "b", "c"], "label_offset": 0, "mean": [1.0, 1.0, 1.0],
        "variance": [1.0, 1.0, 1.0]}))


def _corrupt_record(directory):
    _write_records(str(directory), "train", 2, list(range(12)))
    _write_records(str(directory), "validation", 1, [20])
    shard = directory / "train-00001-of-00002"
    raw = bytearray(shard.read_bytes())
    raw[_record_offset(shard, 4) + 40] ^= 0xFF  # inside record 4's data: its CRC fails
    shard.write_bytes(bytes(raw))


def test_a_corrupt_record_found_at_load_names_the_shard_and_index(tmp_path):
    _corrupt_record(tmp_path)  # no dataset.json: the statistics pass reads the records
    with pytest.raises(DataError, match=r"corrupt record 4 in shard .*train-00001-of-00002': "
                                        r"corrupted record at \d+"):
        _load(str(tmp_path), label_offset=0)


def test_a_corrupt_record_met_in_training_names_the_shard_and_index(tmp_path):
    _corrupt_record(tmp_path)
    _metadata(tmp_path)
    ds = _load(str(tmp_path), label_offset=0, num_classes=None)
    with pytest.raises(DataError, match=r"corrupt record 4 in shard .*train-00001-of-00002': "
                                        r"corrupted record at \d+"), explain_errors(ds):
        for _ in ds.train:
            pass


def test_an_image_that_does_not_decode_names_the_shard_and_index_in_fit(tmp_path):
    import keras

    _write_records(str(tmp_path), "train", 1, [0, 1, 2])
    _write_records(str(tmp_path), "validation", 1, [20])
    with tf.io.TFRecordWriter(str(tmp_path / "train-00000-of-00001")) as writer:
        for value in (0, 1):
            writer.write(tfrecord.make_example(_png(value), "png", 0, "c0", 6, 6, "x.png"))
        writer.write(tfrecord.make_example(b"\xff\xd8 not a jpeg", "jpeg", 1, "c1", 6, 6, "y"))
    _metadata(tmp_path)
    ds = _load(str(tmp_path), label_offset=0, num_classes=None)
    model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(DataError, match=r"corrupt record 2 in shard .*train-00000-of-00001': "
                                        "Unknown image file format"), explain_errors(ds):
        model.fit(ds.train, epochs=1, verbose=0)


def test_a_directory_that_is_no_data_set(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"data directory .* holds neither TFRecord shards "
                                        r"\(train-00000-of-NNNNN, validation-…\) nor class "
                                        "sub-folders of images"):
        load_dataset(str(tmp_path))


def test_image_size_against_the_network_minimum():
    assert data.minimum_image_size("resnet50") == 32
    assert data.minimum_image_size("cifar-resnet20") == 4
    assert data.check_image_size(224, "resnet50") == (224, 224)
    assert data.check_image_size((8, 6), "cifar-resnet20") == (8, 6)
    with pytest.raises(ValueError, match=r"image_size must be at least 32x32 for 'resnet50' "
                                         r"\(its total stride\); got 16"):
        data.check_image_size(16, "resnet50")
    with pytest.raises(ValueError, match="unknown model 'resnet5'"):
        data.check_image_size(64, "resnet5")


def test_eval_preprocessing_is_a_center_crop_then_resize():
    pixels = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    encoded = tf.io.encode_png(pixels)
    # 0.5 of 8 is the central 4x4, already the output size: exactly those pixels
    out = data.decode_for_eval(encoded, (4, 4), 3, crop_fraction=0.5).numpy()
    np.testing.assert_array_equal(out, pixels[2:6, 2:6].astype("float32"))
    whole = images.decode_for_eval(encoded, (8, 8), 3, crop_fraction=1.0).numpy()
    np.testing.assert_array_equal(whole, pixels.astype("float32"))
    wide = tf.io.encode_png(np.zeros((10, 20, 1), np.uint8))
    assert images.center_crop_window(10, 20, 0.875).numpy().tolist() == [1, 6, 8, 8]
    assert data.decode_for_eval(wide, (5, 5), 1).shape == (5, 5, 1)


@pytest.mark.parametrize("image_format", ["jpeg", "png"])
def test_random_resized_crop_and_flip(image_format):
    pixels = np.zeros((64, 96, 3), np.uint8)
    pixels[:, :48] = 200  # left half bright: a flip or a crop moves the bright part
    encoded = (tf.io.encode_jpeg if image_format == "jpeg" else tf.io.encode_png)(pixels)
    tf.random.set_seed(0)
    outputs = [images.decode_for_training(encoded, (16, 16), 3).numpy() for _ in range(30)]
    assert all(o.shape == (16, 16, 3) and o.dtype == np.float32 for o in outputs)
    assert all(0 <= o.min() and o.max() <= 255 for o in outputs)
    left = [o[:, :8].mean() - o[:, 8:].mean() for o in outputs]
    assert min(left) < -50 and max(left) > 50  # flipped and not flipped
    assert len({round(float(o.mean())) for o in outputs}) > 5  # different crops


def test_folder_streams_with_the_imagenet_recipe_at_64(tmp_path):
    root = make_jpeg_folder(str(tmp_path / "jpegs"), per_class=10, size=(80, 72))
    cached = load_dataset(root, batch_size=4, image_size=64)
    streamed = load_dataset(root, batch_size=4, image_size=64, cache_mb=0)
    assert cached.augmentation == {"crop": "inception", "flip": True}
    assert cached.crop_fraction == 0.875 and cached.input_shape == (64, 64, 3)
    assert (cached.train_size, cached.validation_size, cached.test_size) == (14, 2, 4)
    np.testing.assert_array_equal(_values(cached.test)[1], _values(streamed.test)[1])
    x, y = next(iter(streamed.test))
    np.testing.assert_allclose(x.numpy(), next(iter(cached.test))[0].numpy())
    for image, label in zip(x.numpy(), y.numpy()):
        assert abs(image.mean() - ([30, 120][label] + 7.5)) < 6
    train_x, _ = next(iter(streamed.train))
    assert train_x.shape == (4, 64, 64, 3)
    assert len(cached.files) == 20


def test_rand_augment_is_keras_own_layer_after_the_crop(tmp_path):
    root = make_jpeg_folder(str(tmp_path / "jpegs"), per_class=4, size=(72, 72))
    ds = load_dataset(root, batch_size=8, image_size=64, rand_augment=True, check_images=False)
    assert ds.augmentation == {"crop": "inception", "flip": True, "rand_augment": True}
    x, _ = next(iter(ds.train))
    assert x.shape[1:] == (64, 64, 3) and 0 <= float(tf.reduce_min(x))
    assert float(tf.reduce_max(x)) <= 255
    with pytest.raises(TypeError, match="rand_augment must be True or False; got 'yes'"):
        load_dataset(root, rand_augment="yes")


@pytest.mark.slow
def test_two_runs_under_op_determinism_see_the_same_training_images(tmp_path):
    """The deterministic mode the training engineer adds: set_random_seed + op determinism."""
    import subprocess
    import sys

    root = make_jpeg_folder(str(tmp_path / "jpegs"), per_class=6, size=(72, 80))
    script = (
        "import sys, keras, numpy as np, tensorflow as tf\n"
        "keras.utils.set_random_seed(0)\n"
        "tf.config.experimental.enable_op_determinism()\n"
        "from keras_resnet.data import load_dataset\n"
        f"ds = load_dataset({root!r}, batch_size=4, image_size=64, deterministic=True)\n"
        "x = np.concatenate([b.numpy() for b, _ in ds.train])\n"
        "np.save(sys.argv[1], x)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    for run in ("a", "b"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / f"{run}.npy")], check=True,
                       env=env, capture_output=True)
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    assert a.shape == (9, 64, 64, 3)  # 12 images: round(2.4) = 2 test, 1 validation, 9 train
    np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ num_classes (--num-classes)
def test_num_classes_must_agree_with_the_data(tmp_path, imagenet_like):
    with pytest.raises(DataError, match=r"num_classes is 4 but 'digits' has 10 classes; drop "
                                        r"num_classes \(--num-classes\) or pass 10"):
        load_dataset("digits", num_classes=4)
    root = str(tmp_path / "prepared")
    _write_records(root, "train", 1, list(range(6)))
    _write_records(root, "validation", 1, list(range(6)))
    with open(os.path.join(root, "dataset.json"), "w") as stream:
        json.dump({"class_names": ["a", "b", "c"]}, stream)
    with pytest.raises(DataError, match=r"num_classes is 5 but .* has 3 classes in its "
                                        r"dataset.json; drop num_classes"):
        _load(root, num_classes=5, label_offset=0)


def test_a_label_beyond_num_classes_stops_the_stream_with_a_clear_error(tmp_path):
    # shard s holds values s, s + 2, ... (label = value): record i of shard s has label 2i + s
    root = str(tmp_path)
    _write_records(root, "train", 2, list(range(8)), classes=8)
    _write_records(root, "validation", 1, [0, 1])
    ds = _load(root, num_classes=3, label_offset=0, deterministic=True)
    expected = (rf"^label out of range: record (\d) of shard '{root}/train-0000([01])-of-00002' "
                r"stores label (\d); minus label_offset 0 it must be in \[0, 3\) "
                r"\(num_classes 3\); pass num_classes \(--num-classes\) covering every label, or "
                r"the right label_offset \(--label-offset\), or prepare the data again$")
    with pytest.raises(DataError, match=expected) as raised:
        with explain_errors(ds):
            list(ds.validation)  # values 0, 1: in range
            list(ds.train)
    index, shard, label = map(int, re.match(expected, str(raised.value)).groups())
    assert label == 2 * index + shard and label >= 3


def test_train_cli_names_the_shard_of_a_bad_label_and_of_a_corrupt_record(tmp_path, capsys):
    from keras_resnet.cli import main

    labels = tmp_path / "labels"
    _write_records(str(labels), "train", 2, list(range(8)), classes=8)
    _write_records(str(labels), "validation", 1, [0, 1, 2])
    _metadata(labels)
    common = ["train", "--out", str(tmp_path / "runs"), "--no-export", "--epochs", "1",
              "--batch-size", "2", "--image-size", "8", "--verbose", "0"]
    assert main([*common, "--data", str(labels)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert re.fullmatch(r"keras-resnet train: error: label out of range: record \d of shard "
                        rf"'{labels}/train-0000[01]-of-00002' stores label [3-7]; minus "
                        r"--label-offset 0 it must be in \[0, 3\) .*prepare the data again",
                        error), error
    corrupt = tmp_path / "corrupt"
    _corrupt_record(corrupt)
    _metadata(corrupt)
    assert main([*common, "--data", str(corrupt)]) == 2
    error = capsys.readouterr().err.strip()
    assert re.fullmatch(r"keras-resnet train: error: corrupt record 4 in shard "
                        rf"'{corrupt}/train-00001-of-00002': corrupted record at \d+; prepare "
                        r"the data again \(keras-resnet prepare\) or restore the shard from a "
                        r"good copy", error), error


def test_train_cli_takes_num_classes_and_says_when_it_is_missing(imagenet_like, tmp_path,
                                                                  capsys):
    from keras_resnet.cli import main

    common = ["train", "--out", str(tmp_path / "runs"), "--no-export", "--epochs", "1"]
    assert main([*common, "--data", imagenet_like, "--label-offset", "1"]) == 2
    error = capsys.readouterr().err
    assert "has no dataset.json naming its classes; pass --num-classes N" in error
    assert len(error.strip().splitlines()) == 1
    assert main([*common, "--data", "digits", "--num-classes", "4"]) == 2
    assert ("--num-classes is 4 but 'digits' has 10 classes; drop --num-classes or "
            "pass 10") in capsys.readouterr().err
