"""Pretrained weights in the constructors (`weights=PATH`) and `keras-resnet train --weights`."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import save_file

import keras_resnet
from keras_resnet.cli import main
from keras_resnet.training import read_history
from pretrained_helpers import randomize_batch_norm, torch_state_dict

SMALL = dict(stage_depths=(1, 1, 1, 1), widths=(8, 8, 16, 16), bottleneck=False)


def _checkpoint(tmp_path, classes=10):
    """A torchvision-layout ResNet checkpoint (.safetensors) of a small random network."""
    model = keras_resnet.ResNet(**SMALL, input_shape=(32, 32, 3), classes=classes)
    randomize_batch_norm(model)
    path = str(tmp_path / "tiny_resnet.safetensors")
    save_file(torch_state_dict(model), path)
    return model, path


def test_constructor_weights_path_loads_a_torch_checkpoint_and_keras_files(tmp_path):
    original, path = _checkpoint(tmp_path)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    expected = original.predict(images, verbose=0)
    loaded = keras_resnet.ResNet(**SMALL, input_shape=(32, 32, 3), classes=10, weights=path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-5)
    keras_file = str(tmp_path / "tiny.keras")
    original.save(keras_file)
    again = keras_resnet.ResNet(**SMALL, input_shape=(32, 32, 3), classes=10, weights=keras_file)
    np.testing.assert_allclose(again.predict(images, verbose=0), expected, atol=1e-6)
    (tmp_path / "tiny.ckpt").write_text("x")
    with pytest.raises(ValueError, match=r"weights file '.*tiny\.ckpt' must end with one of "
                                         r"\.safetensors, \.pth, \.pt, \.bin, \.keras, "
                                         r"\.weights\.h5, \.h5"):
        keras_resnet.ResNet(**SMALL, weights=str(tmp_path / "tiny.ckpt"))
    with pytest.raises(ValueError, match=r"checkpoint stage layer2 has 1 blocks but model "
                                         r"'resnet' stage conv3 has 2"):
        keras_resnet.ResNet(stage_depths=(1, 2, 1, 1), widths=(8, 8, 16, 16),
                            input_shape=(32, 32, 3), classes=10, weights=path)


def _pets(tmp_path):
    from imagefolders import make_jpeg_folder

    return make_jpeg_folder(str(tmp_path / "pets"), classes=2, per_class=8, size=(32, 32))


def _train(tmp_path, *flags):
    return main(["train", "--data", _pets(tmp_path), "--batch-size", "4",
                 "--out", str(tmp_path / "runs"), "--name", "ft", "--verbose", "0", *flags])


@pytest.mark.parametrize("flags, message", [
    (["--fine-tune-from", "conv7"], "--fine-tune-from must be a stage of model 'tiny_resnet' "
                                    "(conv2, conv3, conv4, conv5, or its number); got 'conv7'"),
    (["--fine-tune-from", "conv5", "--epochs", "1"],
     "--epochs must be at least 2 with --fine-tune-from (one epoch per phase); got 1"),
    (["--head-epochs", "3", "--epochs", "2"], r"--head-epochs must be an int in [1, 2]; got 3"),
])
def test_bad_fine_tuning_input_exits_2_before_training(tmp_path, capsys, flags, message):
    _, path = _checkpoint(tmp_path)
    status = _train(tmp_path, "--weights", path, "--no-export", *flags)
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-resnet train: error: ") and error.count("\n") == 1
    assert message in error
    assert not (tmp_path / "runs" / "ft" / "history.csv").exists()


def test_fine_tuning_flags_need_weights(tmp_path, capsys):
    status = main(["train", "--fine-tune-from", "conv5", "--out", str(tmp_path / "runs"),
                   "--no-export"])
    assert status == 2
    assert ("--fine-tune-from fine-tunes pretrained weights: it needs --weights=PATH; got "
            "--fine-tune-from='conv5' without weights") in capsys.readouterr().err


@pytest.mark.slow
def test_cli_fine_tunes_a_converted_torch_checkpoint_in_two_phases(tmp_path, capsys):
    _, path = _checkpoint(tmp_path)
    status = _train(tmp_path, "--weights", path, "--epochs", "2", "--head-epochs", "1",
                    "--fine-tune-from", "conv5", "--fine-tune-lr", "5e-4",
                    "--export", str(tmp_path / "saved_models"))
    out = capsys.readouterr().out
    assert status == 0, out
    run = tmp_path / "runs" / "ft"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["phase_epochs"] == [1, 1] and metrics["epochs"] == 2
    assert metrics["model"] == metrics["pretrained_model"] == "tiny_resnet"
    assert metrics["config"]["weights"] == path
    assert metrics["config"]["fine_tune_from"] == "conv5"
    history = read_history(str(run / "history.csv"))
    assert history["epoch"] == [0, 1]
    assert history["learning_rate"] == pytest.approx([1e-3, 5e-4])  # head, then fine-tune
    assert {"val_accuracy", "accuracy", "loss"} <= set(history)
    for file in ("model.keras", "best.keras", "curves.png"):
        assert (run / file).is_file(), file
    assert not (run / "backup").exists() and not (run / "head.weights.h5").exists()
    assert metrics["export_path"] and os.path.isdir(metrics["export_path"])
    assert "SavedModel" in out and "tiny_resnet on " in out and "test accuracy" in out
    # The model takes raw pixels: torchvision's normalization is its first layer.
    import keras

    model = keras.saving.load_model(str(run / "model.keras"))
    assert model.layers[1].name == "torch_preprocessing"
    assert model.output_shape == (None, 2)


@pytest.mark.slow
def test_a_fine_tuning_run_killed_in_phase_2_resumes_there(tmp_path):
    """SIGKILL after phase 2's first epoch; the same command keeps the trained head and
    phase 2's backup, and trains only the last epoch."""
    import signal
    import subprocess
    import sys
    import time

    _, path = _checkpoint(tmp_path)
    command = [os.path.join(os.path.dirname(sys.executable), "keras-resnet"), "train",
               "--data", _pets(tmp_path), "--batch-size", "4", "--out", str(tmp_path / "runs"),
               "--name", "ft", "--verbose", "2", "--no-export", "--weights", path,
               "--epochs", "3", "--head-epochs", "1", "--fine-tune-from", "5"]
    run = tmp_path / "runs" / "ft"
    metadata = run / "backup" / "fine_tune" / "training_metadata.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env, cwd=str(tmp_path))
    deadline = time.time() + 150
    # Keras writes the metadata in place: wait until it is whole, or the kill can land between
    # its creation and its content (a race of this test, not of the resume).
    while time.time() < deadline and process.poll() is None and not _whole_json(metadata):
        time.sleep(0.02)
    assert process.poll() is None, process.stdout.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert (run / "head.weights.h5").is_file() and not (run / "metrics.json").exists()
    done = json.loads(metadata.read_text())["epoch"]
    assert done == 2  # phase 1's epoch and phase 2's first

    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                           timeout=170)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Resuming {run}: the head is trained" in again.stdout
    assert "phase 1" not in again.stdout  # the head is not trained again
    assert "epoch 3/3 (phase 2): " in again.stdout and "epoch 2/3" not in again.stdout
    history = read_history(str(run / "history.csv"))
    assert history["epoch"] == [0, 1, 2]
    assert history["learning_rate"] == pytest.approx([1e-3, 1e-4, 1e-4])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["phase_epochs"] == [1, 2] and metrics["resumed_from_epoch"] == 0
    assert not (run / "backup").exists() and not (run / "head.weights.h5").exists()


def _whole_json(path):
    try:
        json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return False
    return True
