"""``model.fit`` with the paper's recipe: ``train`` writes ``runs/<name>/`` and exports the model.

``train`` loads the data (``keras_resnet.data``), builds and compiles the network with the
recipe's pieces (``keras_resnet.recipe``, re-exported here: ``compile_model``, ``PaperSchedule``,
``PaperWarmup``, ``build_model``), fits it with Keras callbacks (progress bar,
``BackupAndRestore``, ``ModelCheckpoint``, ``CSVLogger``, ``TensorBoard``, ``TerminateOnNaN``,
optional ``EarlyStopping``), evaluates it on the test split, writes the run directory and exports
a SavedModel version through ``keras_resnet.export``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import time

import keras

from keras_resnet.recipe import (PRECISIONS, SCHEDULES, LearningRateLogger,  # noqa: F401
                                 PaperSchedule, PaperWarmup, SparseCategoricalCrossentropy,
                                 _check_compile_arguments, _check_model_name, _positive_float,
                                 _positive_int, build_model, compile_model)

# The defaults of `keras-resnet train`, measured: CIFAR ResNet-20 on digits reaches 98-99.5% test
# accuracy (seeds 0-2) in 2-4 minutes on 2 busy CPU cores (README, "Training").
DEFAULT_MODEL = "cifar-resnet20"
DEFAULT_DATA = "digits"
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 32


# ----------------------------------------------------------------------------- train


@dataclasses.dataclass
class TrainResult:
    """What ``train`` produced: the model, the run's files and its metrics.

    Attributes:
        model: the trained ``keras.Model`` (final weights).
        run_dir: ``runs/<name>``.
        model_path, best_model_path, history_path, curves_path, metrics_path, logs_dir: the
            files in it (``best.keras`` is the best-validation checkpoint).
        export_path: the SavedModel version directory, or None when not exported.
        metrics: the content of ``metrics.json``.
        history: per-epoch lists read from ``history.csv`` (every epoch, resumed runs too).
    """

    model: object
    run_dir: str
    model_path: str
    best_model_path: str
    history_path: str
    curves_path: str
    metrics_path: str
    logs_dir: str
    export_path: str | None
    metrics: dict
    history: dict


def train(model=DEFAULT_MODEL, data=DEFAULT_DATA, *, epochs=DEFAULT_EPOCHS, batch_size=None,
          learning_rate=0.1, momentum=0.9, weight_decay=1e-4, schedule="step", warmup=False,
          label_smoothing=0.0, initializer="he_normal", precision="float32", jit_compile="auto",
          early_stopping=None, out_dir="runs", export_dir="saved_models", name=None, seed=0,
          verbose="auto", model_options=None, data_options=None):
    """Trains a ResNet with the paper's recipe; writes ``runs/<name>/`` and exports it.

    Running the same call again after the process was killed resumes from the last finished
    epoch (``keras.callbacks.BackupAndRestore`` in ``runs/<name>/backup``; it is deleted when
    training finishes, so a finished run started again trains anew).

    Args:
        model: a model name (``keras_resnet.presets.MODEL_PRESETS``) or a ``keras.Model``
            taking raw pixels of the data's shape.
        data: a ``keras_resnet.data.Dataset`` or what ``load_dataset`` takes (``"digits"``,
            ``"cifar10"``, ``"synthetic"``, a folder).
        epochs: training epochs.
        batch_size: images per batch (default 32; a ``Dataset`` keeps its own).
        learning_rate: initial learning rate (the paper's 0.1).
        momentum, weight_decay, label_smoothing, jit_compile: see ``compile_model``.
        schedule: ``"step"`` (÷10 at 50% and 75% of training), ``"cosine"`` or ``"constant"``.
        warmup: the paper's warm-up (0.01 until the training error is below 80%).
        initializer: kernel initializer of a named model.
        precision: ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.
        early_stopping: None, or the patience in epochs of ``keras.callbacks.EarlyStopping`` on
            the validation loss (restoring the best weights).
        out_dir: parent of the run directory.
        export_dir: SavedModel base directory (``saved_models``); None to skip the export.
        name: run name (default ``<model>-<data>``).
        seed: seeds the weights, the data split, shuffling and augmentation.
        verbose: ``model.fit`` verbosity (``"auto"``, 0, 1 progress bar, 2 one line per epoch).
        model_options: keyword options for ``build_model`` (e.g. ``{"preact": True}``).
        data_options: keyword options for ``load_dataset`` (e.g. ``{"augment": False}``).

    Returns:
        A ``TrainResult``.

    Raises:
        ValueError: for a bad argument, data or model, before training starts; or when the
            loss became NaN (nothing is saved then).
    """
    from keras_resnet import data as data_module

    epochs = _positive_int(epochs, "epochs")
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    _positive_float(learning_rate, "learning_rate")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}; got {schedule!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if early_stopping is not None:
        _positive_int(early_stopping, "early_stopping")
    if isinstance(model, str):
        _check_model_name(model)
        from keras_resnet.blocks import _initializer
        _initializer(initializer, "initializer")
    elif not isinstance(model, keras.Model):
        raise TypeError(f"model must be a model name or a keras.Model; got {model!r}")
    if name is None:
        data_name = data.name if isinstance(data, data_module.Dataset) else os.fspath(data)
        name = f"{model if isinstance(model, str) else model.name}-" \
               f"{os.path.basename(os.path.normpath(data_name))}"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(f"name must be letters, digits, '.', '_' or '-' (a directory name); "
                         f"got {name!r}")
    run_dir = os.path.join(os.fspath(out_dir), name)
    for argument, path in (("out_dir", out_dir), ("run directory", run_dir),
                           ("export_dir", export_dir)):
        if path is not None and os.path.exists(path) and not os.path.isdir(path):
            raise ValueError(f"{argument} {os.fspath(path)!r} is a file; pass a directory")
    _check_compile_arguments(momentum, weight_decay, label_smoothing, jit_compile)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")

    keras.utils.set_random_seed(seed)
    if isinstance(data, data_module.Dataset):
        if batch_size is not None and batch_size != data.batch_size:
            raise ValueError(f"batch_size={batch_size} disagrees with the Dataset's batch size "
                             f"{data.batch_size}; leave batch_size out or reload the data")
        if data_options:
            raise ValueError("data_options apply when data is a name or path; got a Dataset "
                             f"and data_options={data_options!r}")
        dataset = data
    else:
        dataset = data_module.load_dataset(data, batch_size=batch_size or DEFAULT_BATCH_SIZE,
                                           seed=seed, **(data_options or {}))
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        net = build_model(model, dataset, initializer=initializer, **(model_options or {}))
        return _fit(net, dataset, epochs=epochs, learning_rate=learning_rate, momentum=momentum,
                    weight_decay=weight_decay, schedule=schedule, warmup=warmup,
                    label_smoothing=label_smoothing, jit_compile=jit_compile,
                    early_stopping=early_stopping, run_dir=run_dir, export_dir=export_dir,
                    name=name, seed=seed, verbose=verbose, precision=precision,
                    model_name=model if isinstance(model, str) else net.name)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _fit(model, dataset, *, epochs, learning_rate, momentum, weight_decay, schedule, warmup,
         label_smoothing, jit_compile, early_stopping, run_dir, export_dir, name, seed, verbose,
         precision, model_name):
    started = time.perf_counter()
    paths = {key: os.path.join(run_dir, file) for key, file in (
        ("model", "model.keras"), ("best", "best.keras"), ("history", "history.csv"),
        ("curves", "curves.png"), ("metrics", "metrics.json"), ("logs", "logs"),
        ("backup", "backup"))}
    os.makedirs(run_dir, exist_ok=True)
    resuming = os.path.exists(os.path.join(paths["backup"], "training_metadata.json"))
    if not resuming:  # a fresh run: no stale history or checkpoints from an earlier one
        for key in ("model", "best", "history", "metrics"):
            if os.path.exists(paths[key]):
                os.remove(paths[key])

    lr = PaperSchedule(learning_rate, epochs * dataset.steps_per_epoch, schedule,
                       warmup_learning_rate=0.01 if warmup else None)
    compile_model(model, learning_rate=lr, momentum=momentum, weight_decay=weight_decay,
                  label_smoothing=label_smoothing, jit_compile=jit_compile)
    monitor = "val_accuracy" if dataset.validation is not None else "accuracy"
    callbacks = [
        LearningRateLogger(lr),
        # History first: a kill between the two epoch-end writes then repeats an epoch row
        # (read_history keeps the last), never loses one.
        keras.callbacks.CSVLogger(paths["history"], append=resuming),
        keras.callbacks.BackupAndRestore(paths["backup"]),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(paths["best"], monitor=monitor, mode="max",
                                        save_best_only=True),
        keras.callbacks.TensorBoard(paths["logs"], write_graph=False, profile_batch=0),
    ]
    if warmup:
        callbacks.append(PaperWarmup(lr))
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_loss" if dataset.validation is not None else "loss",
            patience=early_stopping, restore_best_weights=True))
    first_epoch = 0
    if resuming:
        with open(os.path.join(paths["backup"], "training_metadata.json")) as file:
            first_epoch = int(json.load(file).get("epoch", 0))
        print(f"Resuming {run_dir} from epoch {first_epoch + 1} of {epochs}", flush=True)
    model.fit(dataset.train, validation_data=dataset.validation, epochs=epochs,
              callbacks=callbacks, verbose=verbose, shuffle=False)  # the pipeline shuffles
    history = read_history(paths["history"])
    losses = history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise ValueError(f"training diverged (loss {losses[-1] if losses else 'missing'} at "
                         f"epoch {len(losses)}); lower learning_rate (got {learning_rate}) or "
                         "use warmup=True. Nothing was saved.")

    test = model.evaluate(dataset.test, verbose=0, return_dict=True)
    _save_atomically(model, paths["model"])
    plot_history(history, paths["curves"], title=f"{model_name} on {dataset.name}")
    export_path = None
    if export_dir is not None:
        export_path = _export(model, export_dir, name, dataset.class_names)
    metrics = {
        "name": name, "model": model_name, "data": dataset.name,
        "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
        "parameters": int(model.count_params()),
        "trainable_parameters": int(sum(math.prod(v.shape) for v in model.trainable_weights)),
        "epochs": len(losses), "resumed_from_epoch": first_epoch if resuming else None,
        "wall_time_seconds": round(time.perf_counter() - started, 2),
        "final_train_accuracy": history["accuracy"][-1],
        "best_validation_accuracy": max(history["val_accuracy"]) if "val_accuracy" in history
        else None,
        "train_size": dataset.train_size, "validation_size": dataset.validation_size,
        "test_size": dataset.test_size, "batch_size": dataset.batch_size,
        "learning_rate": learning_rate, "schedule": schedule, "warmup": bool(warmup),
        "warmup_ended_at_step": next((c.ended_at_step for c in callbacks
                                      if isinstance(c, PaperWarmup)), None),
        "weight_decay": weight_decay, "momentum": momentum, "label_smoothing": label_smoothing,
        "precision": precision, "seed": seed, "export_path": export_path,
        "keras_version": keras.__version__,
    }
    tmp = paths["metrics"] + ".tmp"
    with open(tmp, "w") as file:
        json.dump(metrics, file, indent=2)
    os.replace(tmp, paths["metrics"])
    return TrainResult(model=model, run_dir=run_dir, model_path=paths["model"],
                       best_model_path=paths["best"], history_path=paths["history"],
                       curves_path=paths["curves"], metrics_path=paths["metrics"],
                       logs_dir=paths["logs"], export_path=export_path, metrics=metrics,
                       history=history)


# ----------------------------------------------------------------------------- run files


def read_history(path):
    """Reads a ``CSVLogger`` file into ``{column: [float per epoch]}`` (``epoch`` as ints).

    Args:
        path: the ``history.csv`` of a run.

    Returns:
        A dict of lists, one entry per epoch; ``{}`` when the file does not exist.
    """
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    # A resumed run may repeat the epoch it was killed in: keep the last row per epoch.
    rows = list({row["epoch"]: row for row in rows}.values())
    columns = rows[0].keys() if rows else ()
    return {c: [int(r[c]) if c == "epoch" else float(r[c]) for r in rows] for c in columns}


def plot_history(history, path, title=None):
    """Plots training/validation loss and accuracy per epoch (matplotlib) to ``path``.

    Args:
        history: ``{column: values}`` as ``read_history`` returns or ``History.history``.
        path: the image file (``.png``).
        title: figure title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history.get("loss", [])) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "training"), ("val_", "validation")):
            if prefix + metric in history:
                axis.plot(epochs, history[prefix + metric], label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _save_atomically(model, path):
    # A killed process leaves at most a hidden temporary file, never a partial model.keras.
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _export(model, export_dir, name, class_names):
    from keras_resnet.export import export_saved_model

    return os.fspath(export_saved_model(model, base_dir=export_dir, name=name,
                                        class_names=list(class_names)))
