"""keras_resnet.training and `keras-resnet train`: schedule, warm-up, recipe, runs, resume, CLI."""

import dataclasses
import json
import os
import runpy
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_resnet.cli import main
from keras_resnet.data import load_dataset
from keras_resnet.modeling.recipe import (PaperSchedule, PaperWarmup, SparseCategoricalCrossentropy,
                                 build_model, compile_model)
from keras_resnet.training import TrainConfig, read_history, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERAS_RESNET = os.path.join(os.path.dirname(sys.executable), "keras-resnet")


def _rates(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_step_schedule_exact_values_at_the_boundaries():
    # The paper: 0.1, /10 at 32k and 48k of 64k iterations.
    schedule = PaperSchedule(0.1, 64000)
    assert schedule.boundary_steps == (32000, 48000)
    rates = _rates(schedule, [0, 31999, 32000, 47999, 48000, 63999, 64000])
    assert rates == [np.float32(0.1)] * 2 + [np.float32(0.1 * 0.1)] * 2 + \
        [np.float32(0.1 * 0.1 * 0.1)] * 3
    assert rates[2] == np.float32(0.01) and rates[4] == np.float32(0.001)
    # Boundaries are int(fraction * total): 50% and 75% of 30 epochs x 41 steps.
    odd = PaperSchedule(0.2, 1230)
    assert odd.boundary_steps == (615, 922)
    assert _rates(odd, [614, 615, 921, 922]) == [np.float32(v) for v in
                                                 (0.2, 0.2 * 0.1, 0.2 * 0.1, 0.2 * 0.01)]


def test_cosine_and_constant_schedules():
    cosine = PaperSchedule(0.1, 1000, "cosine")
    assert _rates(cosine, [0, 500, 1000, 2000]) == pytest.approx([0.1, 0.05, 0.0, 0.0],
                                                                abs=1e-8)
    assert float(cosine(250)) == pytest.approx(0.05 * (1 + np.cos(np.pi / 4)), rel=1e-6)
    assert _rates(PaperSchedule(0.3, 10, "constant"), [0, 9, 50]) == [np.float32(0.3)] * 3


@pytest.mark.parametrize("kind", ["step", "cosine", "constant"])
def test_schedule_round_trips_through_its_config(kind):
    schedule = PaperSchedule(0.1, 500, kind, warmup_learning_rate=0.01)
    again = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule))
    steps = [0, 1, 249, 250, 374, 375, 499, 500, 900]
    assert _rates(again, steps) == [np.float32(0.01)] * len(steps)  # both still warming up
    for each in (schedule, again):
        each.warming_up.assign(0.0)
    assert _rates(again, steps) == _rates(schedule, steps)
    assert len(set(_rates(again, steps))) == {"step": 3, "cosine": 8, "constant": 1}[kind]


def test_cosine_warmup_steps_are_keras_cosine_decay_warmup():
    schedule = PaperSchedule(0.1, 1000, "cosine", warmup_steps=100)
    keras_cosine = keras.optimizers.schedules.CosineDecay(0.0, 900, warmup_target=0.1,
                                                          warmup_steps=100)
    steps = [0, 50, 99, 100, 550, 999, 1000, 1200]
    assert _rates(schedule, steps) == _rates(keras_cosine, steps)
    assert _rates(schedule, [0, 50, 100, 550, 1000]) == pytest.approx(
        [0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-7)
    with pytest.raises(ValueError, match="warmup_steps must be 0 unless kind is 'cosine' or "
                                         "'step'; got 10 with kind 'constant'"):
        PaperSchedule(0.1, 1000, "constant", warmup_steps=10)
    with pytest.raises(ValueError, match=r"warmup_steps must be an int in \[0, 999\]; got 1000"):
        PaperSchedule(0.1, 1000, "cosine", warmup_steps=1000)


def test_schedule_config_written_by_the_first_version_still_loads():
    # As a .keras file of the first version records it (module keras_resnet.modeling.recipe).
    old = {"module": "keras_resnet.modeling.recipe", "class_name": "PaperSchedule",
           "registered_name": "keras_resnet>PaperSchedule",
           "config": {"initial_learning_rate": 0.2, "total_steps": 100, "kind": "step",
                      "boundaries": [0.5, 0.75], "decay": 0.1, "warmup_learning_rate": None,
                      "name": "paper_schedule"}}
    schedule = keras.optimizers.schedules.deserialize(old)
    assert isinstance(schedule, PaperSchedule)
    assert _rates(schedule, [0, 49, 50, 74, 75]) == [np.float32(v) for v in (
        0.2, 0.2, 0.2 * 0.1, 0.2 * 0.1, 0.2 * 0.01)]


def test_step_and_cosine_are_keras_schedules():
    step = PaperSchedule(0.1, 1000)
    keras_step = keras.optimizers.schedules.PiecewiseConstantDecay([499, 749], [0.1, 0.01, 0.001])
    cosine = PaperSchedule(0.1, 1000, "cosine")
    keras_cosine = keras.optimizers.schedules.CosineDecay(0.1, 1000)
    steps = [0, 100, 499, 500, 749, 750, 999, 1000, 1500]
    assert _rates(step, steps) == _rates(keras_step, steps)
    assert _rates(cosine, steps) == _rates(keras_cosine, steps)


def test_warmup_holds_001_until_training_error_below_80_percent():
    schedule = PaperSchedule(0.1, 1000, warmup_learning_rate=0.01)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    compile_model(model, learning_rate=schedule)
    warmup = PaperWarmup(schedule)
    warmup.set_model(model)
    assert _rates(schedule, [0, 600, 800]) == [np.float32(0.01)] * 3
    warmup.on_train_batch_end(0, {"accuracy": 0.19, "loss": 2.0})  # error 81%: keep warming
    assert float(schedule(0)) == np.float32(0.01) and warmup.ended_at_step is None
    warmup.on_train_batch_end(1, {"accuracy": 0.21, "loss": 2.0})  # error 79%: back to 0.1
    assert warmup.ended_at_step == 0
    assert _rates(schedule, [0, 600, 800]) == [np.float32(v) for v in (0.1, 0.01, 0.001)]


def test_compile_model_adds_l2_on_kernels_only_and_sgd_momentum():
    model = build_model("cifar-resnet20", load_dataset("digits", augment=False))
    compile_model(model, weight_decay=1e-4)
    kernels = [v for v in model.trainable_variables if v.name == "kernel"]
    assert len(kernels) == 20  # 19 convolutions + the Dense head (option A: no 1x1 convs)
    assert all(v.regularizer is not None for v in kernels)
    assert all(v.regularizer is None for v in model.trainable_variables if v.name != "kernel")
    expected = sum(1e-4 / 2 * float(np.sum(np.square(v.numpy()))) for v in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == 0.9
    assert float(model.optimizer.learning_rate) == pytest.approx(0.1)


def test_label_smoothing_loss_matches_categorical_crossentropy():
    labels = np.array([0, 2])
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype="float32")
    smoothed = SparseCategoricalCrossentropy(label_smoothing=0.1)(labels, probabilities)
    one_hot = np.eye(3)[labels]
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(one_hot, probabilities)
    assert float(smoothed) == pytest.approx(float(reference), rel=1e-6)
    # Smoothed targets: 0.1/3 on the wrong classes, 1 - 0.1 + 0.1/3 on the right one.
    targets = one_hot * 0.9 + 0.1 / 3
    manual = -np.mean(np.sum(targets * np.log(probabilities), axis=1))
    assert float(smoothed) == pytest.approx(manual, rel=1e-5)


def test_build_model_normalizes_raw_pixels_inside_the_model():
    data = load_dataset("digits", augment=False)
    model = build_model("cifar-resnet20", data)
    assert model.layers[0].name == "images" and model.layers[1].name == "normalization"
    assert model.input_shape == (None, 8, 8, 1) and model.output_shape == (None, 10)
    # Trainable parameters: the paper's 269,722 with a 1-channel stem (3x3x1x16, not x3).
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == 269_722 - 3 * 3 * 2 * 16
    normalized = model.layers[1](np.full((1, 8, 8, 1), data.mean[0], dtype="float32"))
    assert np.allclose(normalized, 0.0, atol=1e-5)


def test_normalization_is_adapted_when_the_data_has_no_statistics():
    data = load_dataset("digits", augment=False)
    unmeasured = dataclasses.replace(data, mean=None, variance=None)
    layer = build_model("cifar-resnet20", unmeasured).get_layer("normalization")
    # Normalization.adapt over the training images finds the statistics load_dataset computed.
    assert np.ravel(layer.mean) == pytest.approx(data.mean, rel=1e-5)
    assert np.ravel(layer.variance) == pytest.approx(data.variance, rel=1e-4)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"epochs": 0}, ValueError, r"epochs must be a positive int \(1, 2, 64, ...\); got 0"),
    ({"epochs": 2.0}, TypeError, r"epochs must be a positive int \(1, 2, 64, ...\); got 2.0"),
    ({"batch_size": 0}, ValueError, r"batch_size must be a positive int \(1, 2, 64, ...\); "
                                    "got 0"),
    ({"learning_rate": 0.0}, ValueError, r"learning_rate must be a number > 0 \(e.g. 0.1\); "
                                         "got 0.0"),
    ({"model": "resnet7"}, ValueError, "unknown model 'resnet7'; model must be one of: "
                                       "resnet18, resnet34,.*cifar-resnet20"),
    ({"data": "mnist"}, ValueError, "unknown data set 'mnist': not one of digits, cifar10, "
                                    "synthetic"),
    ({"precision": "float16"}, ValueError, "precision must be one of 'float32', "
                                           "'mixed_bfloat16', 'mixed_float16'; got 'float16'"),
    ({"schedule": "linear"}, ValueError, "schedule must be one of 'step', 'cosine', "
                                         "'constant'; got 'linear'"),
    ({"label_smoothing": 1.0}, ValueError, r"label_smoothing must be a number in \[0, 1\); "
                                           "got 1.0"),
    ({"initializer": "he_nrmal"}, ValueError, r"^initializer must be a Keras initializer: a "
                                              r"name such as 'he_normal' .*; got 'he_nrmal'$"),
    ({"name": "../escape"}, ValueError, "name must be 1-128 letters, digits, .*; "
                                        "got '../escape'"),
    ({"seed": -1}, ValueError, "seed must be an int >= 0; got -1"),
    ({"warmup": 1}, TypeError, "warmup must be True or False; got 1"),
    ({"deterministic": "yes"}, TypeError, "deterministic must be True or False; got 'yes'"),
    ({"warmup_steps": 5, "schedule": "constant"}, ValueError,
     "warmup_steps must be 0 unless schedule is 'cosine' or 'step'; got 5 with schedule "
     "'constant'"),
    ({"model_options": {"classes": 5}}, ValueError, "model head has classes=5 but data "
                                                    "'digits' has 10"),
    ({"model": "resnet50"}, ValueError, r"height 8 is too small; this network downsamples by "
                                        "32"),
    ({"batch_size": 100000}, ValueError, "batch_size must be at most the 1293 images of the "
                                         "'digits' training split; got 100000"),
    ({"epochs_per_run": 3}, TypeError, "train\\(\\) got unexpected option\\(s\\) "
                                       "epochs_per_run"),
])
def test_bad_input_fails_before_training(tmp_path, kwargs, error, message):
    arguments = {"out_dir": str(tmp_path / "runs"), "export_dir": None, **kwargs}
    with pytest.raises(error, match=message):
        train(**arguments)
    assert not os.path.exists(tmp_path / "runs" / "cifar-resnet20-digits" / "history.csv")


def test_output_directories_are_checked_before_training(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    with pytest.raises(ValueError, match=r"out_dir must be a directory; got '.*runs', which is "
                                         "a file"):
        train(out_dir=str(tmp_path / "runs"), export_dir=None)
    (tmp_path / "models").write_text("")
    with pytest.raises(ValueError, match=r"export_dir must be a directory; got '.*models', "
                                         "which is a file"):
        train(out_dir=str(tmp_path / "ok"), export_dir=str(tmp_path / "models"))
    with pytest.raises(ValueError, match=r"export_dir must be a directory path; got "
                                         r"'.*models/v1', but '.*models' is a file"):
        train(out_dir=str(tmp_path / "ok"), export_dir=str(tmp_path / "models" / "v1"))
    assert not (tmp_path / "ok").exists()  # nothing was created


def test_cli_unwritable_export_fails_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    status = main(["train", "--out", str(tmp_path / "runs"), "--export",
                   str(tmp_path / "file" / "exports")])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-resnet train: error: --export must be a directory path; ")
    assert error.count("\n") == 1 and not (tmp_path / "runs").exists()


def test_config_is_frozen_and_round_trips_through_a_dict(tmp_path):
    config = TrainConfig(epochs=3, out_dir=str(tmp_path), name="r", model_options={"preact": True})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 4
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.run_dir == str(tmp_path / "r")
    with pytest.raises(TypeError, match="TrainConfig has no field\\(s\\) epoch; fields: "):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(TypeError, match="pass either config or keyword options, not both"):
        train(config=config, epochs=2)


def test_a_keras_model_whose_head_disagrees_with_the_data():
    data = load_dataset("digits", augment=False)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(7, activation="softmax")])
    with pytest.raises(ValueError, match="model head has classes=7 but data 'digits' has 10"):
        build_model(net, data)
    wrong_input = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                                    keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match=r"takes input shape \(32, 32, 3\) but data"):
        build_model(wrong_input, data)


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be a positive int (1, 2, 64, ...); got 0"),
    (["--batch-size", "-1"], "--batch-size must be a positive int (1, 2, 64, ...); got -1"),
    (["--batch-size", "100000"], "--batch-size must be at most the 1293 images of the "
                                 "'digits' training split; got 100000"),
    (["--model", "resnet9"], "unknown model 'resnet9'; --model must be one of: resnet18"),
    (["--initializer", "kaiming"], "--initializer must be a Keras initializer"),
    (["--data", "no/such/folder"], "unknown data set 'no/such/folder'"),
    (["--classes", "3"], "model head has --classes=3 but data 'digits' has 10 classes"),
])
def test_cli_bad_input(tmp_path, capsys, argv, message):
    status = main(["train", "--out", str(tmp_path / "runs"), "--no-export", *argv])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-resnet train: error: ")
    assert message in error


@pytest.mark.slow
def test_end_to_end_on_a_small_synthetic_set(tmp_path):
    data = load_dataset("synthetic", image_size=(8, 8), num_classes=3, num_examples=60,
                        batch_size=16, seed=0)
    result = train("cifar-resnet20", data, epochs=2, out_dir=str(tmp_path / "runs"),
                   export_dir=None, name="smoke", verbose=0, schedule="cosine", warmup=True,
                   label_smoothing=0.1, early_stopping=5)
    run = tmp_path / "runs" / "smoke"
    assert result.run_dir == str(run)
    for file in ("model.keras", "best.keras", "history.csv", "curves.png", "metrics.json"):
        assert (run / file).is_file(), file
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(run / "logs")
               for name in files)
    assert not (run / "backup").exists()  # BackupAndRestore cleans up after a finished run
    assert not [f for f in os.listdir(run) if f.startswith(".tmp")]
    history = read_history(str(run / "history.csv"))
    assert history["epoch"] == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history)
    # Cosine over 2 epochs of 3 steps (45 training images / 16): step 2 is the middle.
    steps = data.steps_per_epoch
    assert steps == 3
    expected_last = 0.5 * 0.1 * (1 + np.cos(np.pi * (2 * steps - 1) / (2 * steps)))
    assert history["learning_rate"][1] == pytest.approx(expected_last, rel=1e-5)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["epochs"] == 2 and metrics["parameters"] == result.model.count_params()
    assert metrics["test_size"] == 12 and metrics["config"]["schedule"] == "cosine"
    assert metrics["config"]["deterministic"] is True and metrics["test_split"] == "test"
    # the configuration once, under "config"; the results beside it
    assert not {"name", "schedule", "learning_rate", "seed", "data_options"} & set(metrics)
    assert TrainConfig.from_dict(metrics["config"]) == TrainConfig(
        data="synthetic", epochs=2, out_dir=str(tmp_path / "runs"), export_dir=None,
        name="smoke", verbose=0, schedule="cosine", warmup=True, label_smoothing=0.1,
        early_stopping=5)
    for key in ("test_accuracy", "test_loss", "wall_time_seconds"):
        assert isinstance(metrics[key], float)
    test = result.model.evaluate(data.test, verbose=0, return_dict=True)
    assert metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert metrics["test_loss"] == pytest.approx(test["loss"], rel=1e-5)
    # model.keras is the trained model: same predictions on raw pixels after loading.
    images = next(iter(data.test))[0]
    loaded = keras.saving.load_model(str(run / "model.keras"))
    np.testing.assert_allclose(loaded.predict(images, verbose=0),
                               result.model.predict(images, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_same_seed_same_run_and_a_run_repeats_from_its_record(tmp_path):
    tiny = dict(data="synthetic", epochs=2, batch_size=16, out_dir=str(tmp_path),
                export_dir=None, verbose=0, seed=5,
                data_options={"image_size": [8, 8], "num_classes": 3, "num_examples": 48})
    first = train("cifar-resnet20", name="first", **tiny)
    record = json.loads((tmp_path / "first" / "metrics.json").read_text())["config"]
    again = train(config=TrainConfig.from_dict({**record, "name": "again"}))
    assert again.metrics["config"] == {**record, "name": "again"}
    for column in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert again.history[column] == first.history[column], column
    assert again.metrics["test_loss"] == first.metrics["test_loss"]
    other_seed = train("cifar-resnet20", name="other", **{**tiny, "seed": 6})
    assert other_seed.history["loss"] != first.history["loss"]


def test_divergence_saves_nothing(tmp_path):
    data = load_dataset("synthetic", image_size=(8, 8), num_classes=3, num_examples=40,
                        batch_size=8)
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")], name="small")
    with pytest.raises(ValueError, match="training diverged.*Nothing was saved"):
        train(small, data, epochs=3, learning_rate=1e12, schedule="constant",
              out_dir=str(tmp_path), export_dir=None, name="nan", verbose=0)
    assert not (tmp_path / "nan" / "model.keras").exists()


@pytest.mark.slow
def test_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train_digits.py", "--epochs", "1", "--out",
                                      str(tmp_path)])
    runpy.run_path(os.path.join(ROOT, "examples", "train_digits.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "digits: 1293 train / 144 validation / 360 test images of 8x8x1" in out
    assert "test accuracy" in out and "predicted [" in out
    assert (tmp_path / "example-digits" / "metrics.json").is_file()


def _command(tmp_path, *extra):
    return [KERAS_RESNET, "train", "--epochs", "3", "--batch-size", "256", "--out",
            str(tmp_path / "runs"), "--export", str(tmp_path / "saved_models"), "--name", "r",
            "--verbose", "2", *extra]


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    """Kill a real `keras-resnet train` after an epoch finished; the same command resumes."""
    run = tmp_path / "runs" / "r"
    metadata = run / "backup" / "training_metadata.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(_command(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    finished = 0
    deadline = time.time() + 150
    while time.time() < deadline and process.poll() is None:
        if metadata.exists():
            try:
                finished = json.loads(metadata.read_text())["epoch"]
            except (ValueError, KeyError):  # being written
                finished = 0
            if finished >= 1:
                break
        time.sleep(0.05)
    assert process.poll() is None, process.stdout.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert 1 <= finished < 3
    # Killed mid-run: no model.keras or export that looks finished.
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert not (tmp_path / "saved_models").exists()
    finished = json.loads(metadata.read_text())["epoch"]  # the last one written before the kill

    again = subprocess.run(_command(tmp_path), capture_output=True, text=True, env=env,
                           cwd=str(tmp_path), timeout=170)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Resuming {run} from epoch {finished + 1} of 3" in again.stdout
    assert f"Epoch {finished + 1}/3" in again.stdout and "Epoch 1/3" not in again.stdout
    history = read_history(str(run / "history.csv"))
    assert history["epoch"] == [0, 1, 2]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["resumed_from_epoch"] == finished
    # The schedule continued from the restored optimizer step: 3 epochs x 6 steps, /10 from
    # step 9 and /100 from step 13; the epochs end at steps 5, 11 and 17.
    assert history["learning_rate"] == pytest.approx([0.1, 0.01, 0.001])
    assert (run / "model.keras").is_file() and not (run / "backup").exists()
    assert "SavedModel" in again.stdout and "test accuracy" in again.stdout
    assert metrics["export_path"] and os.path.isdir(metrics["export_path"])


# ------------------------------------------------------------------ data flags of `train`

def _spy_load_dataset(monkeypatch):
    """Records the arguments and the Dataset of every load_dataset call `train` makes."""
    import keras_resnet.data as data_module

    calls = []
    real = data_module.load_dataset

    def spy(*args, **kwargs):
        calls.append((args, kwargs, real(*args, **kwargs)))
        return calls[-1][2]

    monkeypatch.setattr(data_module, "load_dataset", spy)
    return calls


def _folder_run(tmp_path, *flags):
    from imagefolders import make_jpeg_folder

    folder = make_jpeg_folder(str(tmp_path / "pets"), classes=2, per_class=8)
    return main(["train", "--data", folder, "--model", "cifar-resnet20", "--epochs", "1",
                 "--batch-size", "4", "--out", str(tmp_path / "runs"), "--no-export",
                 "--name", "flags", "--verbose", "0", *flags])


@pytest.mark.slow
def test_cli_data_flags_reach_the_pipeline(tmp_path, monkeypatch, capsys):
    calls = _spy_load_dataset(monkeypatch)
    status = _folder_run(tmp_path, "--image-size", "16x12", "--crop", "inception",
                         "--crop-fraction", "0.5", "--rand-augment", "--label-offset", "0",
                         "--shuffle-buffer", "7", "--cache-mb", "0")
    assert status == 0, capsys.readouterr().err
    (_, kwargs, dataset), = calls
    expected = {"image_size": (16, 12), "crop": "inception", "crop_fraction": 0.5,
                "rand_augment": True, "label_offset": 0, "shuffle_buffer": 7, "cache_mb": 0.0}
    assert {k: kwargs[k] for k in expected} == expected
    assert dataset.input_shape == (16, 12, 3) and dataset.crop_fraction == 0.5
    assert dataset.augmentation["crop"] == "inception"
    assert dataset.augmentation.get("rand_augment") is True
    metrics = json.loads((tmp_path / "runs" / "flags" / "metrics.json").read_text())
    assert metrics["config"]["data_options"] == {**expected, "image_size": [16, 12]}


@pytest.mark.parametrize("flags, message", [
    (["--image-size", "12x"], "--image-size must be N or HxW (e.g. 64 or 160x128); got '12x'"),
    (["--model", "resnet18", "--image-size", "16"],
     "--image-size must be at least 32x32 for 'resnet18' (its total stride); got 16"),
    (["--crop-fraction", "1.5"], "--crop-fraction must be a number in (0, 1]"),
    (["--shuffle-buffer", "0"], "--shuffle-buffer must be a positive int"),
    (["--cache-mb", "-1"], "--cache-mb must be a number >= 0"),
    (["--label-offset", "-1"], "--label-offset must be an int >= 0; got -1"),
])
def test_cli_bad_data_flags_exit_2_before_training(tmp_path, capsys, flags, message):
    status = main(["train", "--out", str(tmp_path / "runs"), "--no-export", *flags])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("keras-resnet train: error: ") and error.count("\n") == 1
    assert message in error
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_corrupt_record_met_in_training_stops_with_the_shard_and_index(tmp_path, capsys):
    from keras_resnet.data import prepare
    from imagefolders import make_jpeg_folder

    folder = make_jpeg_folder(str(tmp_path / "pets"), classes=2, per_class=8, size=(12, 12))
    prepare(folder, str(tmp_path / "shards"), shards=1, validation_split=0.25)
    shard = tmp_path / "shards" / "train-00000-of-00001"
    raw = bytearray(shard.read_bytes())
    raw[-8] ^= 0xFF  # inside the last record's data: its CRC fails
    shard.write_bytes(bytes(raw))
    status = main(["train", "--data", str(tmp_path / "shards"), "--epochs", "1",
                   "--batch-size", "4", "--out", str(tmp_path / "runs"), "--no-export",
                   "--verbose", "0"])
    assert status == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert "corrupt record 11 in shard '" in error and "train-00000-of-00001'" in error
    # nothing was trained: no empty history.csv, no logs/ left behind
    assert not list((tmp_path / "runs").rglob("history.csv"))
    assert not list((tmp_path / "runs").rglob("logs"))


@pytest.mark.slow
def test_cli_loop_stages_trains_the_looped_network(tmp_path, capsys):
    status = _folder_run(tmp_path, "--loop-stages", "--recompute-grad", "--image-size", "16")
    assert status == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "runs" / "flags" / "metrics.json").read_text())
    assert metrics["config"]["model_options"] == {"loop_stages": True, "recompute_grad": True}
    model = keras.models.load_model(tmp_path / "runs" / "flags" / "model.keras")
    looped = [layer for layer in model.layers if type(layer).__name__ == "RepeatedBlocks"]
    looped += [inner for layer in model.layers if isinstance(layer, keras.Model)
               for inner in layer.layers if type(inner).__name__ == "RepeatedBlocks"]
    # ResNet-20: three stages of three blocks; blocks 2-3 of each stage run as one loop
    assert len(looped) == 3
    assert all(layer.get_config()["recompute_grad"] for layer in looped)
    assert metrics["parameters"] == model.count_params()


@pytest.mark.parametrize("flag, argument, path, reason", [
    ("--export", "export_dir", "/proc/keras-resnet/exports", "No such file or directory"),
    ("--out", "out_dir", "/sys/keras-resnet-runs", "Operation not permitted"),
])
def test_cli_directories_that_cannot_be_created_fail_before_training(tmp_path, capsys, flag,
                                                                     argument, path, reason):
    """Root's os.access says yes under /proc and /sys: the directory is made to find out."""
    if os.geteuid() != 0 and not os.access(os.path.dirname(path), os.W_OK):
        pytest.skip("os.access already refuses this path to this user")
    argv = ["train", "--epochs", "1", "--out", str(tmp_path / "runs"),
            "--export", str(tmp_path / "exports"), flag, path]
    status = main(argv)
    assert status == 2
    error = capsys.readouterr().err
    # the library says "{argument} ({flag})"; the CLI names the flag alone
    assert argument.endswith("_dir")
    assert error == (f"keras-resnet train: error: {flag} {path!r} cannot be "
                     f"created or written: {reason}\n")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "exports").exists()


def test_check_creatable_removes_what_it_created(tmp_path):
    from keras_resnet.training.run_files import check_creatable

    check_creatable(tmp_path / "a" / "b" / "c", "out_dir", "--out")
    assert os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()
    check_creatable(tmp_path / "kept", "out_dir", "--out")
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []


def test_a_run_that_fails_before_any_epoch_leaves_no_history_or_logs(tmp_path):
    import tensorflow as tf

    data = load_dataset("synthetic", image_size=(8, 8), num_classes=3, num_examples=40,
                        batch_size=8)
    broken = data.train.map(lambda x, y: (tf.debugging.check_numerics(x * np.nan, "bad image"),
                                          y))
    data = dataclasses.replace(data, train=broken, train_order=None)
    small = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")], name="small")
    with pytest.raises(tf.errors.InvalidArgumentError, match="bad image"):
        train(small, data, epochs=1, out_dir=str(tmp_path), export_dir=None, name="broken",
              verbose=0)
    assert not (tmp_path / "broken").exists()


@pytest.mark.slow
def test_an_export_that_fails_after_training_keeps_the_run_and_the_cli_finishes_it(
        tmp_path, capsys):
    import shlex

    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "kept").write_text("a file where the export's model directory goes")
    status = main(["train", "--data", "digits", "--epochs", "1", "--batch-size", "256",
                   "--out", str(tmp_path / "runs"), "--export", str(exports), "--name", "kept",
                   "--verbose", "0"])
    assert status == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error
    assert error.startswith(f"keras-resnet train: error: the run is trained and saved in "
                            f"{tmp_path / 'runs' / 'kept'} (model.keras, metrics.json), but its "
                            f"export to {exports} failed: ")
    run = tmp_path / "runs" / "kept"
    assert (run / "model.keras").is_file() and (run / "curves.png").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["export_path"] is None and metrics["epochs"] == 1
    assert not (run / "backup").exists()  # complete: a re-run would train anew
    command = error.split("`")[1]
    (exports / "kept").unlink()
    assert shlex.split(command)[:2] == ["keras-resnet", "export"]
    assert main(shlex.split(command)[1:]) == 0, capsys.readouterr().err
    assert (exports / "kept" / "1" / "saved_model.pb").is_file()


def test_the_split_of_test_accuracy_is_named(tmp_path):
    """TFRecord shards without test-* shards test on the validation split: metrics.json and
    the CLI say so."""
    from imagefolders import make_jpeg_folder

    from keras_resnet.data import prepare
    from keras_resnet.training.outcome import test_split_name

    folder = make_jpeg_folder(str(tmp_path / "pets"), classes=2, per_class=8, size=(12, 12))
    prepare(folder, str(tmp_path / "shards"), shards=1, validation_split=0.25)
    shards = load_dataset(str(tmp_path / "shards"), batch_size=4)
    assert test_split_name(shards) == "validation (TFRecord data has no test split)"
    assert test_split_name(load_dataset(folder, batch_size=4)) == "test"
    assert test_split_name(load_dataset("synthetic", image_size=(8, 8), num_classes=2,
                                        num_examples=20, batch_size=4)) == "test"


@pytest.mark.slow
def test_non_ascii_class_names_train_save_and_export(tmp_path, capsys):
    """Folders named ñandú, "blue jay" and 🦜: the run trains, saves and exports their names."""
    from imagefolders import make_jpeg_folder

    folder = make_jpeg_folder(str(tmp_path / "birds"), classes=3, per_class=6, size=(16, 16))
    names = ["ñandú", "blue jay", "🦜"]
    for old, new in zip(sorted(os.listdir(folder)), names):
        os.rename(os.path.join(folder, old), os.path.join(folder, new))
    status = main(["train", "--data", folder, "--model", "cifar-resnet20", "--epochs", "1",
                   "--batch-size", "4", "--out", str(tmp_path / "runs"), "--export",
                   str(tmp_path / "exports"), "--name", "birds", "--verbose", "0"])
    assert status == 0, capsys.readouterr().err
    run = tmp_path / "runs" / "birds"
    assert (run / "model.keras").is_file()
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    export = tmp_path / "exports" / "birds" / "1"
    assert metrics["export_path"] == str(export) and (export / "saved_model.pb").is_file()
    record = json.loads((export / "assets.extra" / "keras_resnet_export.json")
                        .read_text(encoding="utf-8"))
    assert sorted(record["spec"]["class_names"]) == sorted(names)
