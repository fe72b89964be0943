"""keras_resnet.data.shards (`prepare`) and streaming TFRecord directories, on generated files."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from imagefolders import CLASSES, LEVELS, MIXED, make_mixed_folder

from keras_resnet.cli import main
from keras_resnet.data import DataError, load_dataset, shards, tfrecord


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    make_mixed_folder(str(root / "src"))
    report = shards.prepare(str(root / "src"), str(root / "out"), shards=2,
                            validation_split=0.25, seed=0, label_offset=1)
    return root, report


def _records(path):
    out = []
    for record in tf.data.TFRecordDataset([path]):
        features = tf.train.Example.FromString(record.numpy()).features.feature
        out.append({key: (features[key].int64_list.value[0] if kind == "int64"
                          else features[key].bytes_list.value[0])
                    for key, kind in tfrecord.FEATURES.items()})
    return out


def test_prepare_counts_splits_and_skips(mixed):
    root, report = mixed
    # 21 images (7 per class, one truncated each); validation: round(21 * 0.25) = 5 of them,
    # 2 of which are truncated; the strays (README.txt, .DS_Store, notes.md) are not images.
    assert report.counts == {"train": 15, "validation": 3}
    assert report.shards == {"train": ["train-00000-of-00002", "train-00001-of-00002"],
                             "validation": ["validation-00000-of-00001"]}
    assert sorted(os.path.relpath(f, root / "src") for f, _ in report.skipped) == [
        "cat/broken.jpg", "dog/broken.jpg", "fish/broken.jpg"]
    assert all(reason for _, reason in report.skipped)
    assert report.reencoded == 3  # the CMYK JPEGs; everything else keeps its bytes
    metadata = json.loads((root / "out" / "dataset.json").read_text())
    assert metadata["class_names"] == list(CLASSES) and metadata["label_offset"] == 1
    per_class = [metadata["splits"][s]["per_class"] for s in ("train", "validation")]
    assert [a + b for a, b in zip(*(p.values() for p in per_class))] == [6, 6, 6]
    assert sum(per_class[0].values()) == 15 and sum(per_class[1].values()) == 3
    assert metadata["image_size"]["height"]["min"] == 20
    assert metadata["image_size"]["height"]["max"] == 40
    assert len(metadata["skipped"]) == 3
    assert sorted(os.listdir(root / "out")) == [".prepare", "dataset.json",
                                                "train-00000-of-00002", "train-00001-of-00002",
                                                "validation-00000-of-00001"]


def test_records_have_the_model_garden_features(mixed):
    root, _ = mixed
    records = [r for name in ("train-00000-of-00002", "train-00001-of-00002",
                              "validation-00000-of-00001")
               for r in _records(str(root / "out" / name))]
    assert len(records) == 18
    sizes = {name: size for name, _, _, size in MIXED}
    for record in records:
        filename = record["image/filename"].decode()
        cls, base = filename.split("/")
        assert record["image/class/label"] == CLASSES.index(cls) + 1  # label_offset 1
        assert record["image/class/text"].decode() == cls
        assert (record["image/height"], record["image/width"]) == sizes[base]
        original = (root / "src" / filename).read_bytes()
        if base == "e.jpeg":  # CMYK: re-encoded as an RGB JPEG
            assert record["image/encoded"] != original and record["image/format"] == b"jpeg"
        else:
            assert record["image/encoded"] == original
        pixels = tf.io.decode_image(record["image/encoded"], channels=3).numpy()
        level = LEVELS[CLASSES.index(cls)]
        assert abs(pixels.mean() - (level + 7.5)) < 6  # the class's colour survived


def test_load_prepared_directory_streams_with_its_label_offset(mixed):
    root, _ = mixed
    ds = load_dataset(str(root / "out"), batch_size=4, image_size=32, augment=False)
    assert (ds.train_size, ds.validation_size, ds.test_size) == (15, 3, 3)
    assert ds.class_names == CLASSES and ds.label_offset == 1
    assert ds.input_shape == (32, 32, 3) and ds.steps_per_epoch == 4
    labels = []
    for images, batch_labels in ds.train:
        assert images.dtype == tf.float32
        for image, label in zip(images.numpy(), batch_labels.numpy()):
            assert abs(image.mean() - (LEVELS[label] + 7.5)) < 8  # 0-based again
            labels.append(int(label))
    assert sorted(np.bincount(labels, minlength=3)) == sorted(
        json.loads((root / "out" / "dataset.json").read_text())["splits"]["train"]
        ["per_class"].values())
    default = load_dataset(str(root / "out"), batch_size=4)
    # dataset.json: the median shorter side of the 15 training images
    assert default.input_shape == (28, 28, 3)


def test_rerun_keeps_finished_shards_and_redoes_a_missing_one(tmp_path):
    make_mixed_folder(str(tmp_path / "src"), truncated=False, strays=False)
    first = shards.prepare(tmp_path / "src", tmp_path / "out", shards=3)
    assert first.reused == 0 and first.counts == {"train": 16, "validation": 2}
    stamp = os.stat(tmp_path / "out" / "train-00001-of-00003").st_mtime_ns
    (tmp_path / "out" / "train-00002-of-00003").unlink()
    (tmp_path / "out" / ".tmp-999999999-train-00002-of-00003").write_bytes(b"half")
    again = shards.prepare(tmp_path / "src", tmp_path / "out", shards=3)
    assert again.reused == 3 and again.counts == first.counts  # 4 shards, one rewritten
    assert os.stat(tmp_path / "out" / "train-00001-of-00003").st_mtime_ns == stamp
    assert not (tmp_path / "out" / ".tmp-999999999-train-00002-of-00003").exists()
    other = shards.prepare(tmp_path / "src", tmp_path / "out", shards=2)
    assert other.reused == 1  # the validation shard's plan did not change
    assert sorted(os.listdir(tmp_path / "out" / ".prepare")) == [
        "train-00000-of-00002.json", "train-00001-of-00002.json",
        "validation-00000-of-00001.json"]
    assert sorted(f for f in os.listdir(tmp_path / "out") if f.startswith("train")) == [
        "train-00000-of-00002", "train-00001-of-00002"]


def test_strict_fails_on_a_truncated_image_and_leaves_nothing(tmp_path):
    make_mixed_folder(str(tmp_path / "src"), strays=False)
    (tmp_path / "src" / "dog" / "text.png").write_bytes(b"plain text, not a png")
    with pytest.raises(DataError, match=r"4 image\(s\) in .* do not decode \(strict\): .*"
                                        r"broken\.jpg: .*; remove or replace them, or drop "
                                        r"strict \(--strict\) to skip them$") as raised:
        shards.prepare(tmp_path / "src", tmp_path / "out", strict=True)
    assert "BytesIO" not in str(raised.value) and "0x" not in str(raised.value)
    assert f"{tmp_path}/src/dog/text.png: cannot identify image file;" in str(raised.value)
    assert os.listdir(tmp_path / "out") == []  # no shards, no .prepare state


def test_skip_reasons_name_the_decoder_not_an_object(tmp_path):
    make_mixed_folder(str(tmp_path / "src"), truncated=False, strays=False)
    (tmp_path / "src" / "dog" / "text.png").write_bytes(b"plain text, not a png")
    report = shards.prepare(tmp_path / "src", tmp_path / "out", shards=1)
    assert report.skipped == [[str(tmp_path / "src" / "dog" / "text.png"),
                               "cannot identify image file"]]


def test_grayscale_prepare_gives_one_channel(tmp_path):
    make_mixed_folder(str(tmp_path / "src"), truncated=False, strays=False)
    shards.prepare(tmp_path / "src", tmp_path / "out", color_mode="grayscale", shards=1)
    ds = load_dataset(str(tmp_path / "out"), batch_size=32, image_size=16)
    images, _ = next(iter(ds.test))
    assert ds.input_shape == (16, 16, 1) and images.shape[1:] == (16, 16, 1)
    assert len(ds.mean) == 1


@pytest.mark.parametrize("kwargs, error, message", [
    ({"shards": 0}, ValueError, r"shards must be an int in \[1, 99999\]; got 0"),
    ({"validation_split": 1.0}, ValueError, r"validation_split must be a number in \[0, 1\)"),
    ({"color_mode": "rgba"}, ValueError, "color_mode must be one of 'rgb', 'grayscale'"),
    ({"label_offset": -1}, ValueError, "label_offset must be an int >= 0; got -1"),
])
def test_prepare_bad_arguments(tmp_path, kwargs, error, message):
    make_mixed_folder(str(tmp_path / "src"), truncated=False, strays=False)
    with pytest.raises(error, match=message):
        shards.prepare(tmp_path / "src", tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_prepare_source_must_be_a_class_folder(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(b"x")
    with pytest.raises(ValueError, match="source must be a folder with one sub-folder of images "
                                         "per class; got .*flat'"):
        shards.prepare(tmp_path / "flat", tmp_path / "out")
    make_mixed_folder(str(tmp_path / "src"), truncated=False, strays=False)
    with pytest.raises(ValueError, match="dest must be outside source .*; got .*src/records' "
                                         "in .*src'"):
        shards.prepare(tmp_path / "src", tmp_path / "src" / "records")


def test_cli_prepare(tmp_path, capsys):
    make_mixed_folder(str(tmp_path / "src"))
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--shards", "2",
                 "--validation-split", "0.25", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote 15 train, 3 validation images into 3 shards" in out
    assert "skipped 3 image(s) that do not decode:" in out and "cat/broken.jpg" in out
    (tmp_path / "file").write_text("x")
    assert main(["prepare", str(tmp_path / "src"), str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"keras-resnet prepare: error: dest must be a directory; got "
        f"{str(tmp_path / 'file')!r}, which is a file")


def test_progress_counts_every_image(tmp_path):
    make_mixed_folder(str(tmp_path / "src"))
    done = []
    shards.prepare(tmp_path / "src", tmp_path / "out", shards=2, progress=done.append)
    assert sum(done) == 21 and set(done) == {1}  # 18 written + 3 skipped, one call each
    again = []
    shards.prepare(tmp_path / "src", tmp_path / "out", shards=2, progress=again.append)
    assert sum(again) == 21  # finished shards count at once
