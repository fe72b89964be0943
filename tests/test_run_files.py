"""Resuming from a backup that a kill cut short (Keras' BackupAndRestore writes in place), and
the CLI's log lines (one plain format, never Python's default ``INFO:name:`` prefix)."""

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_resnet.training import read_history
from keras_resnet.training.run_files import RunFiles, read_backup_epoch, repair_backup

KERAS_RESNET = os.path.join(os.path.dirname(sys.executable), "keras-resnet")
DEFAULT_FORMAT = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):[\w.]+:", re.MULTILINE)


class _Weights(keras.callbacks.Callback):
    """The model's weights after each epoch."""

    def __init__(self):
        super().__init__()
        self.after = []

    def on_epoch_end(self, epoch, logs=None):
        self.after.append([w.copy() for w in self.model.get_weights()])


def _model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32)


def _backed_up_run(run_dir, epochs=2):
    """Trains ``epochs`` epochs with the run's BackupAndRestore and leaves the backup, as a
    kill after the last epoch's backup would; returns the weights after each epoch."""
    weights = _Weights()
    x, y = _data()
    _model().fit(x, y, batch_size=8, epochs=epochs, verbose=0, shuffle=False, callbacks=[
        weights, keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"),
                                                  double_checkpoint=True,
                                                  delete_checkpoint=False)])
    return weights.after


def _resumed_weights(run_dir):
    """What BackupAndRestore loads from the backup (the epoch and the weights)."""
    model = _model()
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"),
                                         delete_checkpoint=False)])
    return model._initial_epoch, model  # fit ran no epoch: initial_epoch >= epochs


def _cut(path, keep=0.5):
    data = open(path, "rb").read()
    with open(path, "wb") as file:
        file.write(data[:int(len(data) * keep)])


def test_a_whole_backup_resumes_from_its_epoch(tmp_path):
    _backed_up_run(str(tmp_path))
    assert RunFiles(str(tmp_path)).prepare() == 2


@pytest.mark.parametrize("cut", ["training_metadata.json", "latest.weights.h5"])
def test_a_backup_cut_short_falls_back_to_the_previous_one(tmp_path, cut, caplog):
    after = _backed_up_run(str(tmp_path))
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n1,0.9\n")
    _cut(str(tmp_path / "backup" / cut))
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        assert RunFiles(str(tmp_path)).prepare() == 1
    assert f"The backup in {tmp_path / 'backup'} was cut short by a kill" in caplog.text
    assert "resuming from the previous backup (epoch 1) instead" in caplog.text
    assert read_backup_epoch(str(tmp_path / "backup" / "training_metadata.json")) == 1
    assert not (tmp_path / "backup" / "training_metadata.json.bkp").exists()
    assert (tmp_path / "history.csv").exists()  # resumed: the history stays
    epoch, model = _resumed_weights(str(tmp_path))
    assert epoch == 1
    for restored, expected in zip(model.get_weights(), after[0]):
        np.testing.assert_array_equal(restored, expected)


def test_a_cut_backup_without_a_previous_one_restarts_the_run(tmp_path, caplog):
    _backed_up_run(str(tmp_path), epochs=1)  # the first backup: Keras has no previous pair yet
    assert not (tmp_path / "backup" / "latest.weights.h5.bkp").exists()
    (tmp_path / "history.csv").write_text("epoch,loss\n0,1.0\n")
    _cut(str(tmp_path / "backup" / "training_metadata.json"), keep=0.4)
    with pytest.raises(ValueError):  # what Keras itself would have failed with on resume
        json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    with caplog.at_level(logging.WARNING, logger="keras_resnet"):
        assert RunFiles(str(tmp_path)).prepare() is None
    assert "there is no whole previous backup: the run starts again from scratch" in caplog.text
    assert os.listdir(tmp_path / "backup") == []
    assert not (tmp_path / "history.csv").exists()  # a fresh run's history


def test_repair_backup_reports_each_state(tmp_path):
    assert repair_backup(str(tmp_path / "none")) == "none"
    _backed_up_run(str(tmp_path))
    backup = str(tmp_path / "backup")
    assert repair_backup(backup) == "whole"
    (tmp_path / "backup" / "training_metadata.json").write_text('{"epoch": "2"}')
    assert repair_backup(backup) == "previous"
    os.remove(tmp_path / "backup" / "latest.weights.h5")  # weights without metadata: unusable
    assert repair_backup(backup) == "removed"
    assert os.listdir(backup) == []


def _command(tmp_path, epochs):
    return [KERAS_RESNET, "train", "--epochs", str(epochs), "--batch-size", "256", "--out",
            str(tmp_path / "runs"), "--export", str(tmp_path / "saved_models"), "--name", "r",
            "--verbose", "2"]


@pytest.mark.slow
def test_train_resumes_after_a_sigkill_and_a_cut_metadata_file(tmp_path):
    """A real `keras-resnet train` killed after its second backup; its metadata is then cut
    short (as a kill during Keras' in-place write leaves it): the same command resumes from
    the previous backup, its log lines in the CLI's one plain format."""
    run = tmp_path / "runs" / "r"
    metadata = run / "backup" / "training_metadata.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(_command(tmp_path, 6), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    deadline = time.time() + 150
    while time.time() < deadline and process.poll() is None:
        try:
            if read_backup_epoch(str(metadata)) >= 2:
                break
        except (OSError, ValueError):  # not there yet, or being written
            pass
        time.sleep(0.05)
    assert process.poll() is None, process.stdout.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = read_backup_epoch(str(metadata))
    previous = read_backup_epoch(str(metadata) + ".bkp")
    assert 2 <= finished < 6 and previous == finished - 1
    _cut(str(metadata))

    again = subprocess.run(_command(tmp_path, 6), capture_output=True, text=True, env=env,
                           cwd=str(tmp_path), timeout=200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"The backup in {run / 'backup'} was cut short by a kill" in again.stdout
    assert f"Resuming {run} from epoch {previous + 1} of 6" in again.stdout
    assert f"Epoch {previous + 1}/6" in again.stdout and "Epoch 1/6" not in again.stdout
    assert read_history(str(run / "history.csv"))["epoch"] == [0, 1, 2, 3, 4, 5]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == previous
    # The export's INFO line once, plain: no second copy in Python's default format.
    assert again.stdout.count(" version 1 to ") == 1
    assert not DEFAULT_FORMAT.search(again.stdout + again.stderr), again.stdout + again.stderr


@pytest.mark.slow
def test_train_log_lines_have_one_format(tmp_path):
    """TensorFlow's SavedModel export logs through absl, whose first call configures the root
    logger (``logging.basicConfig``); the CLI's lines must not show up again in its format."""
    result = subprocess.run(_command(tmp_path, 1), capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=str(tmp_path),
                            timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr
    exported = [line for line in result.stdout.splitlines() if line.startswith("exported ")]
    assert exported and exported[0].startswith(
        f"exported r version 1 to {tmp_path / 'saved_models' / 'r' / '1'} in ")
    assert len(exported) == 1
    assert not DEFAULT_FORMAT.search(result.stdout + result.stderr), result.stderr


def test_cli_logging_restores_the_package_logger():
    from keras_resnet.cli import cli_logging

    package = logging.getLogger("keras_resnet")
    before = (package.propagate, package.level, list(package.handlers))
    with cli_logging():
        assert package.propagate is False
        assert [h.stream for h in package.handlers[len(before[2]):]] == [sys.stdout, sys.stderr]
    assert (package.propagate, package.level, list(package.handlers)) == before
