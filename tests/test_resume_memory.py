"""In-memory data (digits, CIFAR-10) resumes inside an epoch too: the training order and the
augmentation are functions of (seed, epoch), and a real `keras-resnet train` killed mid-epoch
trains every batch of an uninterrupted run once, in the same order, to the same weights."""

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

from keras_resnet.data import load_dataset

WORKER = os.path.join(os.path.dirname(__file__), "memory_position_worker.py")
TRAIN_SIZE = 1293  # the digits' training split (seed 0)
BATCH = 128
STEPS = 11  # ceil(1293 / 128)


def _epoch(train):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in train])
    return np.concatenate(images), np.concatenate(labels)


def test_each_in_memory_epoch_is_a_function_of_seed_and_epoch():
    ds = load_dataset("digits", batch_size=BATCH)
    first, second = _epoch(ds.train), _epoch(ds.train)
    assert len(first[1]) == len(second[1]) == TRAIN_SIZE
    assert np.array_equal(np.sort(first[1]), np.sort(second[1]))
    assert not np.array_equal(first[1], second[1])  # reshuffled every epoch
    fresh = load_dataset("digits", batch_size=BATCH)
    fresh.train_order.epoch.assign(1)  # a new process starting at epoch 1
    again = _epoch(fresh.train)
    assert np.array_equal(again[0], second[0]) and np.array_equal(again[1], second[1])
    other = _epoch(load_dataset("digits", batch_size=BATCH, seed=1).train)
    assert not np.array_equal(other[1][:50], first[1][:50])
    # the rest of epoch 1 after 3 batches: the same images, crops included
    rest = _epoch(ds.train_order.remainder(1, 3))
    assert np.array_equal(rest[0], second[0][3 * BATCH:])
    assert np.array_equal(rest[1], second[1][3 * BATCH:])
    assert int(ds.train.cardinality()) == STEPS
    assert int(ds.train_order.remainder(1, 3).cardinality()) == STEPS - 3


def test_the_augmentation_is_keyed_by_seed_epoch_and_sample():
    plain = load_dataset("digits", batch_size=BATCH, augment=False)
    images, labels = _epoch(plain.train)
    # without augmentation every epoch holds the training images themselves, permuted
    x_train = _epoch(load_dataset("digits", batch_size=TRAIN_SIZE, augment=False).train)[0]
    assert {x.tobytes() for x in images} == {x.tobytes() for x in x_train}
    ds = load_dataset("digits", batch_size=BATCH)
    augmented, same_labels = _epoch(ds.train)
    assert np.array_equal(same_labels, labels)  # the same order with or without augmentation
    shifted = [not np.array_equal(a, b) for a, b in zip(augmented, images)]
    assert 0.5 < np.mean(shifted) < 1  # padding 1: a crop offset of (1, 1) keeps the image
    # each one a crop of the zero-padded image
    for a, b in zip(augmented[:20], images[:20]):
        padded = np.pad(b, [(1, 1), (1, 1), (0, 0)])
        assert any(np.array_equal(a, padded[i:i + 8, j:j + 8])
                   for i in range(3) for j in range(3))


def test_in_memory_shards_under_an_input_context_cover_the_split():
    seen = []
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index,
                                             num_replicas_in_sync=2)
        ds = load_dataset("digits", batch_size=64, augment=False, input_context=context)
        assert int(ds.train.cardinality()) == -(-(TRAIN_SIZE // 2 + 1 - index) // 32)
        images, _ = _epoch(ds.train)
        seen.append([x.tobytes() for x in images])
        rest = _epoch(ds.train_order.remainder(1, 2))[0]
        ds.train_order.epoch.assign(1)
        assert np.array_equal(rest, _epoch(ds.train)[0][64:])
    assert not set(seen[0]) & set(seen[1])
    assert len(seen[0]) + len(seen[1]) == TRAIN_SIZE


def _command(tmp_path, name, log):
    return [sys.executable, WORKER, str(log), "train", "--data", "digits", "--epochs", "3",
            "--batch-size", str(BATCH), "--backup-every-steps", "2", "--jit-compile", "off",
            "--no-export", "--out", str(tmp_path / "runs"), "--name", name, "--verbose", "2"]


def _run(tmp_path, name, log):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(_command(tmp_path, name, log), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))


def _steps(log):
    return log.read_text().splitlines()


def _labels(lines):
    return sorted(int(label) for line in lines for label in line.split()[1:])


@pytest.mark.slow
def test_keras_resnet_train_killed_mid_epoch_trains_every_batch_once(tmp_path):
    whole = _run(tmp_path, "whole", tmp_path / "whole.log")
    output = whole.communicate(timeout=300)[0].decode()
    assert whole.returncode == 0, output
    expected = _steps(tmp_path / "whole.log")
    assert len(expected) == 3 * STEPS and len(set(expected)) == 3 * STEPS
    epochs = [expected[e * STEPS:(e + 1) * STEPS] for e in range(3)]
    assert _labels(epochs[0]) == _labels(epochs[1]) == _labels(epochs[2])
    assert len(_labels(epochs[0])) == TRAIN_SIZE

    # the same run, killed in its second epoch just after a mid-epoch backup
    log = tmp_path / "killed.log"
    metadata = tmp_path / "runs" / "killed" / "backup" / "training_metadata.json"
    process = _run(tmp_path, "killed", log)
    state = kill_after_a_mid_epoch_backup(process, metadata, timeout=300)
    # a backup every 2 steps, counted over the run (11 steps an epoch): after batches 0, 2, ...
    assert state["epoch"] == 1 and state["batch"] in (2, 4, 6, 8)
    done = STEPS + state["batch"] + 1
    before = _steps(log)
    assert len(before) >= done  # steps after the backup were lost with the process

    resumed = _run(tmp_path, "killed", log)
    output = resumed.communicate(timeout=300)[0].decode()
    assert resumed.returncode == 0, output
    assert f"Resuming epoch 2 after its batch {state['batch'] + 1}" in output
    after = _steps(log)[len(before):]
    # every batch once, in the uninterrupted order, augmented alike: the backed-up steps, then
    # the rest
    assert before[:done] + after == expected
    assert_killed_run_matches_whole_run(tmp_path / "runs")


def test_a_train_pipeline_changed_after_its_order_built_it_restarts_its_epoch(tmp_path):
    """A ``train`` the order did not build (here: its batches cut, as for JAX devices) has no
    remainder to resume: ``position.fit`` starts the interrupted epoch again, in that epoch's
    order."""
    import dataclasses

    from keras_resnet.data import position

    ds = load_dataset("digits", batch_size=BATCH, augment=False)
    assert ds.train_order.built(ds.train)
    cut = dataclasses.replace(ds, train=ds.train.map(lambda x, y: (x[:64], y[:64])))
    assert not ds.train_order.built(cut.train)
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    (backup_dir / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 3}))
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    steps = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: steps.append(batch),
        on_epoch_begin=lambda epoch, logs: steps.append(("epoch", epoch)))
    backup = position.PositionBackup(str(backup_dir), save_freq=4)
    position.fit(model, cut, epochs=2, callbacks=[backup, record], verbose=0)
    assert steps == [("epoch", 1), *range(STEPS)]
    assert int(ds.train_order.epoch.numpy()) == 2  # epoch 1 read (then advanced by one)


def test_keyed_flips_mirror_some_images_and_keep_the_rest():
    options = dict(batch_size=32, num_examples=100, image_size=8, test_split=0.2,
                   validation_split=0.0)
    images = _epoch(load_dataset("synthetic", augment=False, **options).train)[0]
    ds = load_dataset("synthetic", padding=0, flip=True, **options)
    assert ds.augmentation == {"padding": 0, "flip": True}
    flipped = _epoch(ds.train)[0]
    mirrored = [np.array_equal(a, b[:, ::-1]) for a, b in zip(flipped, images)]
    assert all(m or np.array_equal(a, b) for m, a, b in zip(mirrored, flipped, images))
    assert 20 < sum(mirrored) < 60  # about half of the 80
    again = _epoch(load_dataset("synthetic", padding=0, flip=True, **options).train)[0]
    assert np.array_equal(again, flipped)  # keyed: the same flips in a new Dataset's epoch 0
