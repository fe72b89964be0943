"""Tests for keras_resnet.tuning: the space, a search on digits, resume, distributed, bad input."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import keras_tuner
import pytest

from keras_resnet.tuning import INITIALIZERS, HyperResNet, tune
from keras_resnet.tuning.results import read_csv, read_trial_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The smallest, fastest trial: ResNet-8 at half width, one epoch of a few batches.
TINY = dict(epochs=1, steps_per_epoch=3, depth=8, width_multiplier=0.5, batch_size=32)
TINY_CLI = ["--epochs", "1", "--steps-per-epoch", "3", "--set", "depth=8",
            "--set", "width_multiplier=0.5", "--set", "batch_size=32", "--no-export"]


def _declared(hypermodel, values=None):
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_architecture(hp)
    if values:  # a second pass with chosen values, as KerasTuner's trials do
        hp.values.update(values)
        hypermodel.declare_architecture(hp)
    return hp


def _entries(hp, name):
    return [h for h in hp.space if h.name == name]


# ----------------------------------------------------------------------------- space


def test_cifar_space_for_digits():
    hp = _declared(HyperResNet((8, 8, 1), 10))
    names = [h.name for h in hp.space]
    assert names == ["depth", "initializer", "zero_init_residual", "bottleneck", "preact",
                     "shortcut", "width_multiplier", "activation"]
    assert _entries(hp, "depth")[0].values == [8, 14, 20]
    assert _entries(hp, "initializer")[0].values == list(INITIALIZERS) == [
        "he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal",
        "orthogonal", "truncated_normal"]
    assert type(_entries(hp, "bottleneck")[0]).__name__ == "Fixed"  # digits: basic blocks
    assert _entries(hp, "shortcut")[0].values == ["A", "B"]
    assert _entries(hp, "shortcut")[0].conditions == []  # one block kind: not conditional


def test_cifar_space_full_size_and_conditional_shortcut():
    hypermodel = HyperResNet((32, 32, 3), 10)
    hp = _declared(hypermodel)
    assert _entries(hp, "depth")[0].values == [20, 32, 44, 56, 110]
    shortcuts = _entries(hp, "shortcut")
    assert [s.values for s in shortcuts] == [["A", "B"], ["B", "C", "D"]]
    assert [s.conditions[0].values for s in shortcuts] == [[False], [True]]
    assert hp.is_active(shortcuts[0]) and not hp.is_active(shortcuts[1])
    hp = _declared(hypermodel, {"bottleneck": True, "shortcut": "C"})
    assert not hp.is_active(shortcuts[0]) and hp.is_active(_entries(hp, "shortcut")[1])
    constructor, options = hypermodel.declare_architecture(hp)
    assert constructor.__name__ == "CifarResNet"
    assert (options["depth"], options["bottleneck"], options["shortcut"]) == (29, True, "C")


def test_imagenet_stage_depths_are_conditional():
    hypermodel = HyperResNet((8, 8, 1), 10, "imagenet")
    hp = _declared(hypermodel, {"stages": 2})
    stage3 = _entries(hp, "stage3_depth")[0]
    assert stage3.conditions[0].values == [3]
    assert not hp.is_active(stage3) and "stage4_depth" not in hp
    assert [h.name for h in hp.space if not h.conditions][:4] == [
        "stem", "stages", "stage1_depth", "stage2_depth"]
    constructor, options = hypermodel.declare_architecture(hp)
    assert constructor.__name__ == "ResNet" and len(options["stage_depths"]) == 2
    # Fixing stages=2 leaves no phantom stage3_depth at all.
    hp = _declared(HyperResNet((8, 8, 1), 10, "imagenet", stages=2))
    assert "stage3_depth" not in [h.name for h in hp.space]


def test_fix_and_narrow_by_keyword():
    hypermodel = HyperResNet((8, 8, 1), 10, depth=14, initializer=["orthogonal", "he_uniform"],
                             learning_rate=[0.05, 0.1], zero_init_residual=True)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.values["depth"] == 14 and type(_entries(hp, "depth")[0]).__name__ == "Fixed"
    assert _entries(hp, "initializer")[0].values == ["orthogonal", "he_uniform"]
    assert _entries(hp, "learning_rate")[0].values == [0.05, 0.1]
    assert hp.values["zero_init_residual"] is True
    assert model.count_params() == 173_146  # CifarResNet(14, input_shape=(8, 8, 1)), option A


@pytest.mark.parametrize("kwargs, error, message", [
    ({"initializer": ["he_normal", "kaiming"]}, ValueError,
     r"^initializer must be a Keras initializer: a name such as 'he_normal' .*; got 'kaiming'$"),
    ({"activation": ["relu", "relux"]}, ValueError,
     r"activation must be a Keras activation name \(relu, leaky_relu, gelu, ...\); "
     "got 'relux'"),
    ({"depth": []}, ValueError, "depth must be a value or a non-empty list"),
    ({"depth": [20, 21]}, ValueError, r"depth must be 6n\+2 \(8, 14, 20, .*\) for the CIFAR "
                                      "family; .*; got 21"),
    ({"depth": 2}, ValueError, r"depth must be 6n\+2 .*; got 2"),
    ({"depth": 20.0}, TypeError, r"depth must be 6n\+2 .*; got 20.0"),
    ({"batch_size": [32, 0]}, ValueError, r"batch_size must be a positive int \(1, 2, 64, "
                                          r"...\); got 0"),
    ({"learning_rate": [0.1, -1.0]}, ValueError, "learning_rate must be a number > 0; got -1.0"),
    ({"preact": 1}, TypeError, "preact must be True or False; got 1"),
    ({"dropout": 0.5}, ValueError, r"unknown hyperparameter\(s\) 'dropout'"),
    ({"family": "imagenet", "stem": "imagenet", "stages": [2, 3]}, ValueError,
     "downsamples by 16"),
    ({"family": "resnext"}, ValueError, "family must be one of 'cifar', 'imagenet'; got "
                                        "'resnext'"),
])
def test_bad_space(kwargs, error, message):
    family = kwargs.pop("family", "cifar")
    with pytest.raises(error, match=message):
        HyperResNet((8, 8, 1), 10, family, **kwargs)


def test_any_keras_initializer_name_is_searchable():
    hypermodel = HyperResNet((8, 8, 1), 10, initializer=["HeNormal", "variance_scaling"],
                             depth=8)
    hp = _declared(hypermodel)
    assert _entries(hp, "initializer")[0].values == ["HeNormal", "variance_scaling"]


def test_build_does_not_compile_fit_does():
    hypermodel = HyperResNet((8, 8, 1), 10, data="digits", depth=8, width_multiplier=0.5,
                             steps_per_epoch=1, batch_size=32)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert not model.compiled and model.layers[1].name == "normalization"
    hypermodel.fit(hp, model, epochs=1, verbose=0)
    assert model.compiled and model.optimizer.iterations.numpy() == 1
    # PaperSchedule over the trial's 1 step: both boundaries (int(0.5), int(0.75)) are step 0.
    assert float(model.optimizer.learning_rate) == pytest.approx(hp.get("learning_rate") / 100)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"max_trials": 0}, ValueError, r"max_trials must be a positive int \(1, 2, 64, ...\); "
                                    "got 0"),
    ({"epochs": 1.5}, TypeError, r"epochs must be a positive int \(1, 2, 64, ...\); got 1.5"),
    ({"objective": "val_auc"}, ValueError, r"objective must be a metric this model reports on "
                                           r"'digits' \(loss, accuracy, top5_accuracy, "
                                           r"val_loss, .*\); got 'val_auc'"),
    ({"tuner": "evolution"}, ValueError, "tuner must be one of 'random', 'bayesian', "
                                         "'hyperband', 'grid'; got 'evolution'"),
    ({"project_name": "a/b"}, ValueError, "project_name must be 1-128 letters"),
    ({"deterministic": None}, TypeError, "deterministic must be True or False; got None"),
    ({"initializer": ["he_normal", "kaiming"]}, ValueError, "got 'kaiming'"),
    ({"depth": []}, ValueError, "non-empty list"),
    ({"depth": 21}, ValueError, "for the CIFAR family"),
    ({"hyperparameters": "depth"}, TypeError, "hyperparameters must be a "
                                              "keras_tuner.HyperParameters"),
])
def test_bad_search_input_before_the_first_trial(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        tune("digits", directory=str(tmp_path / "search"), **kwargs)
    assert not (tmp_path / "search").exists()  # nothing ran, nothing was written


def test_export_dir_is_checked_before_the_first_trial(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"export_dir must be a directory path; got '.*file/x', "
                                         r"but '.*file' is a file"):
        tune("digits", directory=str(tmp_path / "search"), export_dir=str(tmp_path / "file" / "x"))
    assert not (tmp_path / "search").exists()


# ----------------------------------------------------------------------------- search


@pytest.mark.slow
def test_search_on_digits_writes_report_and_export_and_is_reproducible(tmp_path):
    first = tune("digits", max_trials=2, seed=3, directory=str(tmp_path / "a"),
                 export_dir=str(tmp_path / "saved"), **TINY)
    rows = read_csv(first.results_csv)
    assert [r["trial_id"] for r in rows] == ["0", "1"]
    assert {"depth", "initializer", "score", "params", "seconds", "status", "reason"} <= \
        set(rows[0])
    assert all(r["status"] == "completed" and r["depth"] == "8" for r in rows)
    assert all(r["initializer"] in INITIALIZERS and 0 <= float(r["score"]) <= 1 for r in rows)
    assert all(int(r["params"]) > 10_000 and float(r["seconds"]) > 0 for r in rows)
    with open(first.results_png, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    assert first.export_path == str(tmp_path / "saved" / "cifar-digits-random" / "1")
    assert os.path.exists(os.path.join(first.export_path, "saved_model.pb"))
    assert first.best["score"] == max(float(r["score"]) for r in rows)

    # Same seed: the same hyperparameter sequence and the same first-trial score.
    second = tune("digits", max_trials=2, seed=3, directory=str(tmp_path / "b"),
                  export_dir=None, **TINY)
    hp_columns = [c for c in first.columns if c not in
                  ("trial_id", "status", "score", "params", "seconds", "tuner_id", "reason")]
    for a, b in zip(first.rows, second.rows):
        assert {c: a[c] for c in hp_columns} == {c: b[c] for c in hp_columns}
    assert second.rows[0]["score"] == first.rows[0]["score"]  # deterministic: identical
    assert [r["score"] for r in second.rows] == [r["score"] for r in first.rows]
    assert first.direction == "max" and first.config.seed == 3
    assert json.loads((tmp_path / "a" / "cifar-digits-random" / "tune_config.json").read_text())[
        "fixed"] == {"depth": 8, "width_multiplier": 0.5, "batch_size": 32}

    # A finished search run again re-runs nothing and does not export again.
    again = tune("digits", max_trials=2, seed=3, directory=str(tmp_path / "a"),
                 export_dir=str(tmp_path / "saved"), **TINY)
    assert again.already_finished and again.ran == [] and len(again.rows) == 2
    assert again.export_path == first.export_path


@pytest.mark.slow
def test_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    result = tune("digits", tuner="grid", max_trials=2, directory=str(tmp_path),
                  export_dir=None, initializer="he_normal", zero_init_residual=False,
                  preact=False, shortcut="A", activation="relu", weight_decay=1e-4,
                  learning_rate=[1e30, 0.05], **TINY)
    failed, completed = result.rows
    assert (failed["status"], failed["score"], failed["learning_rate"]) == ("failed", None, 1e30)
    # lr = 1e30 overflows the weights in the first epoch (1e8 only makes the loss huge); whether
    # the loss is first seen as inf or nan may differ between CPUs.
    assert re.fullmatch(r"FailedTrialError: loss became (nan|inf) at epoch 1 "
                        r"\(learning_rate=1e\+30, batch_size=32\)", failed["reason"])
    assert completed["status"] == "completed" and completed["learning_rate"] == 0.05
    assert result.best["trial_id"] == completed["trial_id"]


# ----------------------------------------------------------------------------- processes


def _cli(*args):
    return [sys.executable, "-m", "keras_resnet", "tune", *args]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    command = _cli("--max-trials", "2", "--directory", str(tmp_path), "--project", "p",
                   *TINY_CLI)
    project = tmp_path / "p"
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    while not (project / "trial_1" / "trial.json").exists():  # trial 0 done, trial 1 running
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert [r["trial_id"] for r in read_trial_runs(project)] == ["0"]

    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming" in done.stdout
    runs = read_trial_runs(project)
    assert [r["trial_id"] for r in runs] == ["0", "1"]  # 1 ran again, 0 was kept
    assert runs[0]["pid"] != runs[1]["pid"]
    assert [r["trial_id"] for r in read_csv(project / "results.csv")] == ["0", "1"]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_distributed_chief_and_two_workers_on_loopback(tmp_path):
    port = str(_free_port())
    command = _cli("--max-trials", "4", "--directory", str(tmp_path), "--project", "shared",
                   "--worker-timeout", "60", *TINY_CLI)
    processes = {
        tuner_id: subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=_env(KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP="127.0.0.1",
                     KERASTUNER_ORACLE_PORT=port))
        for tuner_id in ("chief", "tuner0", "tuner1")}
    outputs = {k: p.communicate(timeout=200)[0] for k, p in processes.items()}
    for tuner_id, process in processes.items():
        assert process.returncode == 0, f"{tuner_id}:\n{outputs[tuner_id][-3000:]}"
    project = tmp_path / "shared"
    runs = read_trial_runs(project)
    assert sorted(r["trial_id"] for r in runs) == ["0", "1", "2", "3"]  # none lost or repeated
    # Workers run their trials as the chief would (--trial-process, default auto: recycled
    # processes of up to 5 trials), which join the chief as tuner0-p0, tuner1-p0, ...
    assert {r["tuner_id"].rsplit("-p", 1)[0] for r in runs} == {"tuner0", "tuner1"}
    worker_pids = {processes["tuner0"].pid, processes["tuner1"].pid}
    assert not {r["pid"] for r in runs} & worker_pids
    for tuner_id in ("tuner0", "tuner1"):
        ran = [r["trial_id"] for r in runs if r["tuner_id"].startswith(tuner_id + "-p")]
        assert f"worker done: ran trial(s) {', '.join(ran)} of the search" in outputs[tuner_id]
    rows = read_csv(project / "results.csv")  # in the order the trials finished
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2", "3"]
    assert all(r["status"] == "completed" for r in rows)
    assert "4 trials in" in outputs["chief"]

    # Re-running the finished search: the chief says so, runs nothing and exits.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env=_env(KERASTUNER_TUNER_ID="chief", KERASTUNER_ORACLE_IP="127.0.0.1",
                                    KERASTUNER_ORACLE_PORT=port))
    assert again.returncode == 0 and "already finished its 4 trials" in again.stdout
    assert len(read_trial_runs(project)) == 4


@pytest.mark.slow
def test_chief_without_workers_stops_with_a_message(tmp_path):
    started = time.time()
    done = subprocess.run(
        _cli("--max-trials", "2", "--directory", str(tmp_path), "--worker-timeout", "3",
             *TINY_CLI),
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=_env(KERASTUNER_TUNER_ID="chief", KERASTUNER_ORACLE_IP="127.0.0.1",
                 KERASTUNER_ORACLE_PORT=str(_free_port())))
    assert done.returncode == 1
    assert "no live worker for 3 s and 2 of 2 trials left" in done.stderr
    assert time.time() - started < 90
    state = json.loads((tmp_path / "cifar-digits-random" / "oracle.json").read_text())
    assert state["end_order"] == []


def test_cli_settings():
    from keras_resnet.cli import tune as cli

    assert cli.parse_settings(["depth=8,14", "initializer=orthogonal", "preact=true",
                               "learning_rate=0.05"]) == {
        "depth": [8, 14], "initializer": "orthogonal", "preact": True, "learning_rate": 0.05}
    with pytest.raises(ValueError, match="empty choice list"):
        cli.parse_settings(["depth="])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        cli.parse_settings(["depth"])


def test_cli_shows_the_library_errors(tmp_path, capsys):
    from keras_resnet.cli import main

    status = main(["tune", "--max-trials", "0", "--directory", str(tmp_path)])
    assert status == 2
    assert capsys.readouterr().err == ("keras-resnet tune: error: --max-trials must be a positive "
                                       "int (1, 2, 64, ...); got 0\n")


def test_a_rebatched_trial_does_not_run_out_of_data(tmp_path):
    """Data loaded once and re-batched per trial keeps its number of batches: Keras ends no
    epoch with "Your input ran out of data" (each trial's first epoch did)."""
    import warnings

    from keras_resnet.data import load_dataset

    data = load_dataset("synthetic", image_size=(8, 8), num_classes=2, num_examples=60,
                        batch_size=16, seed=0)
    hypermodel = HyperResNet((8, 8, 3), 2, "cifar", data=data, seed=0)
    rebatched = hypermodel.dataset(7)
    for split, size in ((rebatched.train, data.train_size), (rebatched.test, data.test_size)):
        assert int(split.cardinality()) == -(-size // 7) == sum(1 for _ in split)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune(data, directory=str(tmp_path), max_trials=1, epochs=2, depth=8,
                      width_multiplier=0.5, batch_size=7, trial_process="same",
                      export_dir=None, verbose=0)
    assert result.rows and result.rows[0]["status"] == "completed"
    assert not [w for w in caught if "ran out of data" in str(w.message)]
