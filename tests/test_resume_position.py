"""A streamed run killed mid-epoch resumes after its last backed-up batch: over the whole run,
every batch of the uninterrupted run is trained once, in the same order, to the same weights."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from resume_helpers import (assert_killed_run_matches_whole_run,
                            kill_after_a_mid_epoch_backup)
from test_streaming import _values, _write_records

from keras_resnet.data import load_dataset, position

WORKER = os.path.join(os.path.dirname(__file__), "position_worker.py")
STEPS = 10  # 40 records, batch 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shards"))
    _write_records(root, "train", 3, list(range(40)))
    _write_records(root, "validation", 1, list(range(100, 108)))
    return root


def _options(**extra):
    return dict(num_classes=3, label_offset=0, image_size=4, augment=False, batch_size=4,
                crop_fraction=1.0, deterministic=True, shuffle_buffer=8, **extra)


def test_each_epoch_is_a_function_of_seed_and_epoch(shards):
    ds = load_dataset(shards, **_options())
    first, second = _values(ds.train)[0], _values(ds.train)[0]
    assert sorted(first) == sorted(second) == list(range(40)) and first != second
    fresh = load_dataset(shards, **_options())
    fresh.train_order.epoch.assign(1)  # a new process starting at epoch 1
    assert _values(fresh.train)[0] == second
    assert _values(load_dataset(shards, **_options(seed=1)).train)[0] != first
    # the rest of epoch 1 after 3 batches: the same records, none of the first 12
    assert _values(ds.train_order.remainder(1, 3))[0] == second[12:]
    assert int(ds.train.cardinality()) == STEPS
    assert int(ds.train_order.remainder(1, 3).cardinality()) == STEPS - 3


def test_folders_follow_the_epoch_too(tmp_path):
    from imagefolders import make_jpeg_folder

    folder = make_jpeg_folder(str(tmp_path / "pets"), classes=2, per_class=10, size=(8, 8))
    for cache_mb in (0, 256):  # names read each epoch, or the bytes in memory
        options = dict(batch_size=2, image_size=8, augment=False, deterministic=True,
                       test_split=0.2, validation_split=0.0, cache_mb=cache_mb)
        ds = load_dataset(folder, **options)
        epochs = [np.concatenate([x.numpy() for x, _ in ds.train]) for _ in range(2)]
        assert not np.array_equal(*epochs)
        again = load_dataset(folder, **options)
        again.train_order.epoch.assign(1)
        assert np.array_equal(np.concatenate([x.numpy() for x, _ in again.train]), epochs[1])
        rest = np.concatenate([x.numpy() for x, _ in ds.train_order.remainder(1, 2)])
        assert np.array_equal(rest, epochs[1][4:])


def test_a_mixed_pipeline_resumes_its_epoch_mixed(shards):
    ds = load_dataset(shards, **_options(mixup=0.2))
    labels = [y.numpy() for _, y in ds.train_order.remainder(0, 2)]
    assert len(labels) == STEPS - 2 and all(np.allclose(y.sum(1), 1) for y in labels)


def _run(shards, out, name, log, *mode):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__),
                                          os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, WORKER, shards, str(out), name, str(log), *mode],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)


def _steps(log):
    return [tuple(map(int, line.split())) for line in log.read_text().splitlines()]


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_trains_every_batch_once(shards, tmp_path):
    # the uninterrupted run
    whole = _run(shards, tmp_path / "runs", "whole", tmp_path / "whole.log")
    output = whole.communicate(timeout=240)[0].decode()
    assert whole.returncode == 0, output
    expected = _steps(tmp_path / "whole.log")
    assert len(expected) == 3 * STEPS and all(len(b) == 4 for b in expected)
    assert [sorted(sum(expected[e * STEPS:(e + 1) * STEPS], ())) for e in range(3)] == \
        [list(range(40))] * 3

    # the same run, killed in its second epoch just after a mid-epoch backup
    log = tmp_path / "killed.log"
    metadata = tmp_path / "runs" / "killed" / "backup" / "training_metadata.json"
    process = _run(shards, tmp_path / "runs", "killed", log)
    state = kill_after_a_mid_epoch_backup(process, metadata, timeout=240)
    assert state["epoch"] == 1 and state["batch"] in (1, 3, 5, 7)  # a backup every 2 steps
    done = state["epoch"] * STEPS + state["batch"] + 1
    before = _steps(log)
    assert len(before) >= done  # steps after the backup were lost with the process

    resumed = _run(shards, tmp_path / "runs", "killed", log)
    output = resumed.communicate(timeout=240)[0].decode()
    assert resumed.returncode == 0, output
    after = _steps(log)[len(before):]
    assert f"Resuming epoch 2 after its batch {state['batch'] + 1}" in output
    # every batch once, in the uninterrupted order: the backed-up steps, then the rest
    assert before[:done] + after == expected
    assert len(after) == 3 * STEPS - done
    # ... and so the same model, history and test numbers
    runs = tmp_path / "runs"
    for name in ("whole", "killed"):
        assert (runs / name / "history.csv").read_text().count("\n") == 4
    from position_worker import RecordBatches

    assert_killed_run_matches_whole_run(runs, {"RecordBatches": RecordBatches})


def test_position_backup_records_epoch_ends_and_offsets(tmp_path):
    backup = position.PositionBackup(str(tmp_path / "b"), save_freq=2)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    backup.set_model(model)
    backup.on_epoch_begin(3)
    backup.on_train_batch_end(0)
    backup.on_train_batch_end(1)
    assert backup.interrupted_at() == (3, 2)
    backup.on_epoch_end(3)
    assert backup.interrupted_at() == (4, 0)
    backup.batch_offset = 5
    backup.on_epoch_begin(4)
    backup.on_train_batch_end(0)  # the 6th batch of epoch 4: one since the last save
    assert backup.interrupted_at() == (4, 0)
    backup.on_train_batch_end(1)
    assert backup.interrupted_at() == (4, 7)
    assert tf.io.gfile.exists(str(tmp_path / "b" / "latest.weights.h5"))


@pytest.mark.slow
def test_resumed_epoch_under_mirrored_strategy(shards, tmp_path):
    """The epoch-keyed pipeline and the two-fit resume under MirroredStrategy (2 logical CPUs,
    a fresh process): the rest of epoch 1 after 2 of its batches, then epoch 2."""
    from tests.test_distribute import run_python

    out = run_python(f"""
        import json, os
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras
        from keras_resnet.data import load_dataset, position
        ds = load_dataset({shards!r}, num_classes=3, label_offset=0, image_size=4, augment=False,
                          batch_size=4, crop_fraction=1.0, shuffle_buffer=8, mixup=0.2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = keras.Sequential([keras.Input((4, 4, 3)), keras.layers.Flatten(),
                                      keras.layers.Dense(3, activation="softmax")])
            model.compile("sgd", "categorical_crossentropy")
        backup_dir = {str(tmp_path / "backup")!r}
        os.makedirs(backup_dir)
        with open(os.path.join(backup_dir, "training_metadata.json"), "w") as f:
            json.dump({{"epoch": 1, "batch": 1}}, f)
        steps = []
        log = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: steps.append(batch),
            on_epoch_begin=lambda epoch, logs: steps.append(("epoch", epoch)))
        backup = position.PositionBackup(backup_dir, save_freq=3)
        history = position.fit(model, ds, epochs=3, callbacks=[backup, log], verbose=0)
        print(json.dumps([s if isinstance(s, int) else list(s) for s in steps]))
    """, timeout=200)
    steps = json.loads(out.strip().splitlines()[-1])
    assert steps == [["epoch", 1], *range(8), ["epoch", 2], *range(10)]


@pytest.fixture(scope="module")
def textured_shards(tmp_path_factory):
    """Shards of 8x8 noise images (a crop or a flip changes what the model sees)."""
    import io

    from PIL import Image

    from keras_resnet.data import tfrecord

    root = tmp_path_factory.mktemp("textured")
    rng = np.random.default_rng(0)
    for split, count, shard_count in (("train", 40, 3), ("validation", 8, 1)):
        for shard in range(shard_count):
            name = root / tfrecord.shard_name(split, shard, shard_count)
            with tf.io.TFRecordWriter(str(name)) as writer:
                for value in range(shard, count, shard_count):
                    buffer = io.BytesIO()
                    pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(buffer, "PNG")
                    writer.write(tfrecord.make_example(buffer.getvalue(), "png", value % 3,
                                                       f"c{value % 3}", 8, 8, f"{value}.png"))
    return str(root)


def test_streamed_augmentation_is_keyed_by_seed_epoch_and_sample(textured_shards):
    options = dict(_options(), augment=True, crop="inception")
    ds = load_dataset(textured_shards, **options)
    epoch0 = np.concatenate([x.numpy() for x, _ in ds.train])
    epoch1 = np.concatenate([x.numpy() for x, _ in ds.train])
    fresh = load_dataset(textured_shards, **options)
    assert np.array_equal(np.concatenate([x.numpy() for x, _ in fresh.train]), epoch0)
    # a resumed epoch 1 after 3 batches: the same crops and flips as the whole epoch's rest
    rest = np.concatenate([x.numpy() for x, _ in fresh.train_order.remainder(1, 3)])
    assert np.array_equal(rest, epoch1[12:])
    assert not np.array_equal(epoch0, epoch1)


@pytest.mark.slow
def test_sigkill_mid_epoch_with_augmentation_resumes_to_the_same_weights(textured_shards,
                                                                         tmp_path):
    runs = tmp_path / "runs"
    whole = _run(textured_shards, runs, "whole", tmp_path / "whole.log", "augment")
    output = whole.communicate(timeout=240)[0].decode()
    assert whole.returncode == 0, output
    process = _run(textured_shards, runs, "killed", tmp_path / "killed.log", "augment")
    state = kill_after_a_mid_epoch_backup(
        process, runs / "killed" / "backup" / "training_metadata.json", timeout=240)
    assert state["epoch"] == 1
    resumed = _run(textured_shards, runs, "killed", tmp_path / "killed.log", "augment")
    output = resumed.communicate(timeout=240)[0].decode()
    assert resumed.returncode == 0, output
    assert f"Resuming epoch 2 after its batch {state['batch'] + 1}" in output
    from position_worker import RecordBatches

    assert_killed_run_matches_whole_run(runs, {"RecordBatches": RecordBatches})
    # the validation after every epoch too (the killed epoch's training averages cover only
    # the batches after the resume, so they are not compared)
    import csv

    def val_losses(name):
        with open(runs / name / "history.csv") as stream:
            return [float(row["val_loss"]) for row in csv.DictReader(stream)]

    assert val_losses("killed") == val_losses("whole")
