"""Named training recipes (cifar, imagenet), `train --recipe`, and step-level backups."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_resnet.modeling import presets
from keras_resnet.cli import main
from keras_resnet.modeling.recipe import PaperSchedule
from keras_resnet.training import TrainConfig, read_history
from keras_resnet.training.recipe_options import resolve_recipe

KERAS_RESNET = os.path.join(os.path.dirname(sys.executable), "keras-resnet")


def test_cifar_recipe_is_the_default_of_train():
    resolved = resolve_recipe("cifar", {})
    assert resolved == {"epochs": 30, "learning_rate": 0.1, "momentum": 0.9,
                        "weight_decay": 1e-4, "schedule": "step", "label_smoothing": 0.0,
                        "model_options": {}, "data_options": {}, "recipe": "cifar"}
    default = TrainConfig()
    assert all(getattr(default, key) == value for key, value in resolved.items())


def test_imagenet_recipe_resolved_values():
    resolved = resolve_recipe("imagenet", {})
    assert resolved == {
        "epochs": 90, "batch_size": 256, "learning_rate": 0.1, "momentum": 0.9,
        "weight_decay": 1e-4, "schedule": "cosine", "warmup_epochs": 5, "label_smoothing": 0.1,
        "model_options": {"zero_init_residual": True}, "data_options": {"crop": "inception"},
        "recipe": "imagenet"}
    # Goyal et al.: the learning rate scales with the batch, 0.1 x batch / 256 ...
    assert resolve_recipe("imagenet", {"batch_size": 64})["learning_rate"] == 0.025
    assert resolve_recipe("imagenet", {"batch_size": 1024})["learning_rate"] == 0.4
    # ... unless given; explicit options override, option dicts merge key by key.
    explicit = resolve_recipe("imagenet", {
        "batch_size": 64, "learning_rate": 0.3, "epochs": 3, "batch_size_unused": None,
        "data_options": {"image_size": 64}, "model_options": {"preact": True}})
    assert explicit["learning_rate"] == 0.3 and explicit["epochs"] == 3
    assert explicit["data_options"] == {"crop": "inception", "image_size": 64}
    assert explicit["model_options"] == {"zero_init_residual": True, "preact": True}
    # A None for a value the recipe sets keeps the recipe's (the CLI's unset flags).
    assert resolve_recipe("imagenet", {"epochs": None})["epochs"] == 90
    # Another warm-up or schedule drops the recipe's warm-up epochs.
    assert resolve_recipe("imagenet", {"warmup_steps": 100})["warmup_epochs"] == 0
    assert resolve_recipe("imagenet", {"schedule": "step"})["warmup_epochs"] == 0
    # A Dataset object brings its own batch (and pipeline).
    from_dataset = resolve_recipe("imagenet", {}, dataset_batch_size=32)
    assert "batch_size" not in from_dataset and from_dataset["learning_rate"] == 0.0125
    assert from_dataset["data_options"] == {}
    assert set(presets.RECIPES) == {"cifar", "imagenet", "imagenet-step"}


def test_imagenet_step_recipe_resolved_values():
    resolved = resolve_recipe("imagenet-step", {"batch_size": 512})
    assert resolved == {
        "epochs": 90, "batch_size": 512, "learning_rate": 0.2, "momentum": 0.9,
        "weight_decay": 1e-4, "schedule": "step", "warmup_epochs": 5, "label_smoothing": 0.1,
        "step_boundaries": (30 / 90, 60 / 90, 80 / 90),
        "model_options": {"zero_init_residual": True}, "data_options": {"crop": "inception"},
        "recipe": "imagenet-step"}
    # another schedule drops the recipe's warm-up and its decay epochs
    cosine = resolve_recipe("imagenet-step", {"schedule": "cosine"})
    assert cosine["warmup_epochs"] == 0 and "step_boundaries" not in cosine
    assert TrainConfig(**resolved).step_boundaries == (30 / 90, 60 / 90, 80 / 90)


@pytest.mark.parametrize("steps", [1, 7, 5004])  # 5004: ImageNet's 1.28 M images at 256
def test_imagenet_step_rate_at_the_boundary_steps(steps):
    """lr 0.1 x batch/256; a linear ramp over 5 epochs; /10 from the first step of epochs 30,
    60 and 80 of 90 (the steps the run's PaperSchedule is built with)."""
    from keras_resnet.training import recipe_options

    config = TrainConfig(**resolve_recipe("imagenet-step", {"batch_size": 128}))
    schedule = PaperSchedule(config.learning_rate, config.epochs * steps, config.schedule,
                             warmup_steps=config.warmup_epochs * steps,
                             **recipe_options.schedule_options(config))
    assert schedule.boundary_steps == (30 * steps, 60 * steps, 80 * steps)
    # PiecewiseConstantDecay itself, not a hand-written rule, holds the decay
    assert isinstance(schedule._decayed, keras.optimizers.schedules.PiecewiseConstantDecay)

    def rate(step):
        return float(schedule(step))

    peak = 0.05  # 0.1 x 128 / 256
    warmup = 5 * steps
    assert rate(0) == 0.0 and rate(warmup) == pytest.approx(peak, rel=1e-6)
    assert rate(warmup - 1) == pytest.approx(peak * (warmup - 1) / warmup, rel=1e-6)
    for epoch, before, after in ((30, peak, peak / 10), (60, peak / 10, peak / 100),
                                 (80, peak / 100, peak / 1000)):
        assert rate(epoch * steps - 1) == pytest.approx(before, rel=1e-6), epoch
        assert rate(epoch * steps) == pytest.approx(after, rel=1e-6), epoch
    assert rate(90 * steps - 1) == pytest.approx(peak / 1000, rel=1e-6)
    # it saves and loads like every PaperSchedule
    restored = PaperSchedule.from_config(schedule.get_config())
    assert float(restored(30 * steps)) == pytest.approx(peak / 10, rel=1e-6)


def test_paper_schedule_boundary_steps_are_exact_fractions():
    # 0.29 x 100 is 28.999999999999996 in floats: the boundary is step 29, not 28
    assert PaperSchedule(0.1, 100, "step", boundaries=(0.29, 0.58)).boundary_steps == (29, 58)
    assert PaperSchedule(0.1, 10, "step").boundary_steps == (5, 7)  # 7.5 -> 7, as before


@pytest.mark.parametrize("call, error, message", [
    (lambda: resolve_recipe("resnet"), ValueError, "recipe must be one of 'cifar', 'imagenet', 'imagenet-step'; "
                                                   "got 'resnet'"),
    (lambda: resolve_recipe(3), TypeError, "recipe must be one of 'cifar', 'imagenet', 'imagenet-step'; got 3"),
    (lambda: TrainConfig(warmup_epochs=2, schedule="cosine", epochs=2), ValueError,
     r"warmup_epochs must be less than epochs \(2\); got 2 \(recipe 'cifar'\); pass a "
     r"smaller warmup_epochs \(--warmup-epochs\) or more epochs"),
    (lambda: TrainConfig(warmup_epochs=1, epochs=3, schedule="constant"), ValueError,
     "warmup_epochs must be 0 unless schedule is 'cosine' or 'step'; got 1 with schedule "
     "'constant'"),
    (lambda: TrainConfig(step_boundaries=[0.5, 0.4]), ValueError,
     r"step_boundaries must be increasing fractions of training in \(0, 1\)"),
    (lambda: TrainConfig(step_boundaries=[0.5, 1.0]), ValueError,
     r"step_boundaries must be .*; got 1.0"),
    (lambda: TrainConfig(step_boundaries=0.5), TypeError, "step_boundaries must be increasing"),
    (lambda: TrainConfig(step_boundaries=[0.5], schedule="cosine"), ValueError,
     "step_boundaries needs schedule 'step'; got \\[0.5\\] with schedule 'cosine'"),
    (lambda: TrainConfig(warmup_epochs=1, warmup_steps=4, epochs=3, schedule="cosine"),
     ValueError, "give warmup_steps or warmup_epochs, not both"),
    (lambda: TrainConfig(backup_every_steps=0), ValueError,
     r"backup_every_steps must be a positive int \(1, 2, 64, ...\); got 0"),
    (lambda: TrainConfig(recipe="fast"), ValueError, "recipe must be one of"),
])
def test_bad_recipe_values(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_cli_recipe_warmup_longer_than_the_run_exits_2(tmp_path, capsys):
    status = main(["train", "--recipe", "imagenet", "--epochs", "3", "--out",
                   str(tmp_path / "runs"), "--no-export"])
    assert status == 2
    error = capsys.readouterr().err
    assert error == ("keras-resnet train: error: --warmup-epochs must be less than epochs (3); "
                     "got 5 (recipe 'imagenet'); pass a smaller --warmup-epochs "
                     "or more epochs\n")
    assert not (tmp_path / "runs").exists()


def test_cli_unknown_recipe_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "fast"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'fast' (choose from 'cifar', 'imagenet', 'imagenet-step')" in capsys.readouterr().err


@pytest.mark.slow
def test_tiny_imagenet_recipe_run_on_64px_images(tmp_path, monkeypatch, capsys):
    """`train --recipe imagenet` on a generated folder of 64x64 JPEGs: 2 epochs, 1 warm-up."""
    import keras_resnet.training.run as run_module
    from imagefolders import make_jpeg_folder

    compiled = []
    real_compile = run_module.compile_model

    def spy(model, **kwargs):
        compiled.append((model, kwargs,
                         {layer.name: layer.gamma.numpy().copy() for layer in model.layers
                          if isinstance(layer, keras.layers.BatchNormalization)}))
        return real_compile(model, **kwargs)

    monkeypatch.setattr(run_module, "compile_model", spy)
    folder = make_jpeg_folder(str(tmp_path / "pets"), classes=2, per_class=8, size=(64, 64))
    status = main(["train", "--recipe", "imagenet", "--data", folder, "--batch-size", "4",
                   "--epochs", "2", "--warmup-epochs", "1", "--out", str(tmp_path / "runs"),
                   "--no-export", "--name", "tiny", "--verbose", "0"])
    assert status == 0, capsys.readouterr().err
    (model, kwargs, gammas), = compiled
    assert kwargs["momentum"] == 0.9 and kwargs["weight_decay"] == 1e-4
    assert kwargs["label_smoothing"] == 0.1
    # Zero-init last BN: the second BN of every basic block starts at 0, the others at 1.
    last = [name for name in gammas if re.fullmatch(r"conv\d_block\d+_2_bn", name)]
    assert len(last) == 9 and all(not gammas[name].any() for name in last)
    assert all((g == 1).all() for name, g in gammas.items() if name not in last)
    # Weight decay on kernels only: no regularizer on BN gamma/beta or any bias.
    for variable in model.trainable_variables:
        assert (variable.regularizer is not None) == (variable.name == "kernel"), variable.path
    kernels = [v for v in model.trainable_variables if v.name == "kernel"]
    expected = sum(1e-4 / 2 * float(np.sum(np.square(v.numpy()))) for v in kernels)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    metrics = json.loads((tmp_path / "runs" / "tiny" / "metrics.json").read_text())
    config = metrics["config"]
    assert config["recipe"] == "imagenet"
    assert config["learning_rate"] == 0.1 * 4 / 256 and config["schedule"] == "cosine"
    assert config["model_options"] == {"zero_init_residual": True}
    assert config["data_options"] == {"crop": "inception"}
    assert config["warmup_epochs"] == 1 and config["batch_size"] == 4
    assert config["label_smoothing"] == 0.1 and config["momentum"] == 0.9
    # One warm-up epoch (a linear ramp), then cosine to 0 over the last epoch.
    steps = -(-metrics["train_size"] // 4)
    rate = 0.1 * 4 / 256
    history = read_history(str(tmp_path / "runs" / "tiny" / "history.csv"))
    assert history["learning_rate"] == pytest.approx(
        [rate * (steps - 1) / steps, rate * 0.5 * (1 + np.cos(np.pi * (steps - 1) / steps))],
        rel=1e-5)


# ------------------------------------------------------------------ step-level backups

def _command(tmp_path):
    return [KERAS_RESNET, "train", "--epochs", "2", "--batch-size", "256",
            "--backup-every-steps", "2", "--out", str(tmp_path / "runs"), "--no-export",
            "--name", "r", "--verbose", "2"]


@pytest.mark.slow
def test_backup_every_steps_resumes_from_the_last_backed_up_step(tmp_path):
    """SIGKILL mid-epoch; the same command resumes with the weights and optimizer step of the
    last N-step backup, and the data goes on after that step (batch for batch:
    tests/test_resume_memory.py and tests/test_resume_position.py)."""
    run = tmp_path / "runs" / "r"
    metadata = run / "backup" / "training_metadata.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(_command(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path))
    deadline = time.time() + 150
    state = {}
    while time.time() < deadline and process.poll() is None:
        try:
            state = json.loads(metadata.read_text())
        except (OSError, ValueError):  # not there yet, or being written
            state = {}
        if "batch" in state:  # the first backup: kill now, mid-epoch
            break
        time.sleep(0.02)
    assert process.poll() is None, process.stdout.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    state = json.loads(metadata.read_text())  # the last backup written before the kill
    epoch, batch = state["epoch"], state["batch"]
    assert batch in (1, 3, 5)  # every 2 of digits' 6 steps per epoch (1293 images / 256)
    assert not (run / "metrics.json").exists()

    again = subprocess.run(_command(tmp_path), capture_output=True, text=True, env=env,
                           cwd=str(tmp_path), timeout=170)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (f"Resuming {run} from epoch {epoch + 1} of 2 (weights and optimizer as backed up "
            f"after its step {batch + 1})") in again.stdout
    # the in-memory data goes on after that step too (keras_resnet.data.position)
    assert (f"Resuming epoch {epoch + 1} after its batch {batch + 1} (the data skips the "
            f"{batch + 1} batches done)") in again.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_epoch"] == epoch and metrics["config"]["backup_every_steps"] == 2
    # The optimizer step went on from the backup and the resumed epoch ran only its remaining
    # steps, so every epoch ends where an uninterrupted run's does: its last step is
    # (k + 1) * 6 - 1 (the rate logged is the one that step used).
    schedule = PaperSchedule(0.1, 2 * 6)
    history = read_history(str(run / "history.csv"))
    assert history["epoch"] == [0, 1]
    resumed = history["learning_rate"][epoch:]
    assert resumed == pytest.approx([float(schedule((k + 1) * 6 - 1))
                                     for k in range(epoch, 2)])
    assert not (run / "backup").exists()


@pytest.mark.slow
def test_imagenet_step_recipe_run_records_the_decayed_rates(tmp_path, capsys):
    """`train --recipe imagenet-step --epochs 3`: the decays fall at epochs 1, 2 and 8/3."""
    status = main(["train", "--recipe", "imagenet-step", "--data", "digits", "--batch-size",
                   "256", "--epochs", "3", "--warmup-epochs", "1", "--out",
                   str(tmp_path / "runs"), "--no-export", "--name", "step", "--verbose", "0"])
    assert status == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "runs" / "step" / "metrics.json").read_text())
    assert metrics["config"]["step_boundaries"] == [1 / 3, 2 / 3, 8 / 9]
    assert metrics["config"]["schedule"] == "step" and metrics["config"]["learning_rate"] == 0.1
    steps = -(-metrics["train_size"] // 256)
    history = read_history(str(tmp_path / "runs" / "step" / "history.csv"))
    # epoch 1: the ramp's last step (the first decay is at step `steps`); epoch 2: /10;
    # epoch 3 ends past 8/9 of training: /1000
    assert history["learning_rate"] == pytest.approx([0.1 * (steps - 1) / steps, 0.01, 1e-4],
                                                     rel=1e-5)
