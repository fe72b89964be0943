"""The paper's training recipe with ``model.fit``: optimizer, schedule, warm-up, callbacks, runs.

He et al. 2015 (CIFAR-10): SGD with momentum 0.9, learning rate 0.1 divided by 10 at 50% and 75%
of training (32k and 48k of 64k iterations), weight decay 1e-4, batch 128, and for ResNet-110 a
warm-up at 0.01 until the training error is below 80%. The pieces are importable on their own:

* ``compile_model(model, ...)``: SGD + L2 on the kernels + (label-smoothed) cross-entropy.
* ``PaperSchedule``: the step-decay (or cosine) ``keras.optimizers.schedules`` object.
* ``PaperWarmup``: the callback that ends the schedule's warm-up.
* ``build_model(name, data)``: a named network with a ``Normalization`` layer in front.
* ``train(...)``: all of it, writing ``runs/<name>/`` and exporting the SavedModel.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import os
import re
import time

import keras

from keras_resnet import presets

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("step", "cosine", "constant")
# The defaults of `keras-resnet train`, measured: CIFAR ResNet-20 on digits reaches >= 97% test
# accuracy in about two minutes on 2 CPU cores (README, "Training").
DEFAULT_MODEL = "cifar-resnet20"
DEFAULT_DATA = "digits"
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 32


# ----------------------------------------------------------------------------- recipe pieces


@keras.saving.register_keras_serializable(package="keras_resnet")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate of He et al.: step decay (÷10 at 50% and 75% of training) or cosine.

    With ``warmup_learning_rate`` the rate is held there until ``PaperWarmup`` ends the warm-up
    (the paper's 0.01 for ResNet-110, until the training error falls below 80%); the decay
    boundaries still count from step 0, as in the paper.

    Args:
        initial_learning_rate: the rate before the first boundary (the paper's 0.1).
        total_steps: optimizer steps of the whole training (epochs x steps per epoch).
        kind: ``"step"``, ``"cosine"`` (to 0 at ``total_steps``) or ``"constant"``.
        boundaries: fractions of ``total_steps`` where step decay multiplies by ``decay``.
        decay: the step-decay factor.
        warmup_learning_rate: rate while warming up; None for no warm-up.
        name: name of the schedule.
    """

    def __init__(self, initial_learning_rate=0.1, total_steps=64000, kind="step",
                 boundaries=(0.5, 0.75), decay=0.1, warmup_learning_rate=None,
                 name="paper_schedule"):
        super().__init__()
        _positive_float(initial_learning_rate, "initial_learning_rate")
        _positive_int(total_steps, "total_steps")
        if kind not in SCHEDULES:
            raise ValueError(f"kind must be one of {SCHEDULES}; got {kind!r}")
        if list(boundaries) != sorted(boundaries) or not all(0 < b < 1 for b in boundaries):
            raise ValueError(f"boundaries must be increasing fractions in (0, 1); "
                             f"got {boundaries!r}")
        if warmup_learning_rate is not None:
            _positive_float(warmup_learning_rate, "warmup_learning_rate")
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = int(total_steps)
        self.kind = kind
        self.boundaries = tuple(float(b) for b in boundaries)
        self.decay = float(decay)
        self.warmup_learning_rate = warmup_learning_rate
        self.name = name
        # 1.0 while warming up; PaperWarmup sets it to 0.0 (a variable: read inside the graph).
        self.warming_up = keras.Variable(1.0 if warmup_learning_rate else 0.0, trainable=False,
                                         name="warming_up", dtype="float32")

    @property
    def boundary_steps(self):
        """The optimizer steps where step decay happens (``int(fraction * total_steps)``)."""
        return tuple(int(b * self.total_steps) for b in self.boundaries)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        if self.kind == "constant":
            rate = ops.convert_to_tensor(self.initial_learning_rate, "float32")
        elif self.kind == "cosine":
            progress = ops.minimum(step / self.total_steps, 1.0)
            rate = 0.5 * self.initial_learning_rate * (1.0 + ops.cos(math.pi * progress))
        else:
            rate = ops.convert_to_tensor(self.initial_learning_rate, "float32")
            for i, boundary in enumerate(self.boundary_steps, 1):
                value = self.initial_learning_rate * self.decay ** i
                rate = ops.where(step >= boundary, ops.cast(value, "float32"), rate)
        if self.warmup_learning_rate:
            rate = ops.where(self.warming_up > 0, ops.cast(self.warmup_learning_rate, "float32"),
                             rate)
        return rate

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "total_steps": self.total_steps, "kind": self.kind,
                "boundaries": list(self.boundaries), "decay": self.decay,
                "warmup_learning_rate": self.warmup_learning_rate, "name": self.name}


class PaperWarmup(keras.callbacks.Callback):
    """Ends a ``PaperSchedule`` warm-up once the training error falls below ``max_error``.

    The check runs after every batch on the epoch's running accuracy. A resumed run starts
    warming up again and ends it after its first batch when the restored model is past it.

    Args:
        schedule: the ``PaperSchedule`` with ``warmup_learning_rate`` set.
        max_error: training error (1 - accuracy) below which the warm-up ends (paper: 0.8).
        metric: the accuracy entry of the logs.
    """

    def __init__(self, schedule, max_error=0.8, metric="accuracy"):
        super().__init__()
        self.schedule = schedule
        self.max_error = float(max_error)
        self.metric = metric
        self.ended_at_step = None

    def on_train_batch_end(self, batch, logs=None):
        if self.ended_at_step is not None or not logs or self.metric not in logs:
            return
        if float(self.schedule.warming_up.numpy()) and 1 - float(logs[self.metric]) < \
                self.max_error:
            self.schedule.warming_up.assign(0.0)
            self.ended_at_step = int(self.model.optimizer.iterations.numpy())


@keras.saving.register_keras_serializable(package="keras_resnet")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with optional label smoothing (Keras' sparse loss has
    none): the labels are one-hot encoded and passed to ``categorical_crossentropy``."""

    def __init__(self, label_smoothing=0.0, from_logits=False,
                 name="sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        from keras import ops

        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "from_logits": self.from_logits}


def compile_model(model, *, learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                  label_smoothing=0.0, nesterov=False, jit_compile="auto", from_logits=False):
    """Compiles ``model`` with the paper's recipe: SGD + momentum, L2 on kernels, cross-entropy.

    Weight decay is the paper's (coupled) L2 penalty: every kernel without a regularizer gets
    ``L2(weight_decay / 2)``, so SGD adds ``weight_decay * w`` to its gradient (as
    ``keras_resnet.build(..., weight_decay=...)`` does); BN parameters and biases are not decayed.

    Args:
        model: a ``keras.Model`` taking images and returning class probabilities (or logits
            with ``from_logits=True``).
        learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule`` such as
            ``PaperSchedule``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay on kernels (0 for none).
        label_smoothing: in [0, 1); 0 is the plain cross-entropy.
        nesterov: Nesterov momentum.
        jit_compile: XLA compilation: True, False or ``"auto"``.
        from_logits: the model returns logits.

    Returns:
        The model, compiled, with metrics ``accuracy`` and ``top5_accuracy`` (when it has more
        than 5 classes).

    Raises:
        ValueError: for an out-of-range argument.
    """
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        _positive_float(learning_rate, "learning_rate")
    _check_compile_arguments(momentum, weight_decay, label_smoothing, jit_compile)
    if weight_decay:
        for variable in model.trainable_variables:
            if variable.name.endswith("kernel") and variable.regularizer is None:
                variable.regularizer = keras.regularizers.L2(weight_decay / 2)
    loss = (SparseCategoricalCrossentropy(label_smoothing, from_logits=from_logits)
            if label_smoothing else
            keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if model.output_shape[-1] > 5:
        metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum,
                                                 nesterov=nesterov),
                  loss=loss, metrics=metrics, jit_compile=jit_compile)
    return model


def build_model(model, data, *, initializer="he_normal", normalize=True, **options):
    """A network for ``data``: ``images -> Normalization -> ResNet`` (raw 0..255 pixels in).

    Args:
        model: a name of ``keras_resnet.presets.MODEL_PRESETS`` (built with the data's input
            shape and classes) or a ``keras.Model`` (checked against the data).
        data: a ``keras_resnet.data.Dataset``.
        initializer: kernel initializer of a named network.
        normalize: put a ``keras.layers.Normalization`` layer holding the training images'
            per-channel mean and variance in front, so the model takes raw pixels.
        **options: keyword options of the named network (``preact``, ``shortcut``, ...).

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: for an unknown name, or a head (``classes``) or input shape that does not
            fit the data.
    """
    from keras_resnet.models import build

    classes = options.pop("classes", data.num_classes)
    if classes != data.num_classes:
        raise ValueError(f"model head has classes={classes!r} but data {data.name!r} has "
                         f"{data.num_classes} classes; drop classes or pass "
                         f"{data.num_classes}")
    inputs = keras.Input(shape=data.input_shape, name="images")
    x = inputs
    if normalize:
        x = keras.layers.Normalization(mean=list(data.mean), variance=list(data.variance),
                                       name="normalization")(x)
    if isinstance(model, str):
        _check_model_name(model)
        net = build(model, input_tensor=x, classes=classes, kernel_initializer=initializer,
                    **options)
        return net if normalize else keras.Model(inputs, net.output, name=net.name)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a model name or a keras.Model; got {model!r}")
    if tuple(model.input_shape[1:]) != tuple(data.input_shape):
        raise ValueError(f"model {model.name!r} takes input shape {model.input_shape[1:]} but "
                         f"data {data.name!r} has images of {data.input_shape}")
    if model.output_shape[-1] != data.num_classes:
        raise ValueError(f"model head has classes={model.output_shape[-1]} but data "
                         f"{data.name!r} has {data.num_classes} classes; rebuild it with "
                         f"classes={data.num_classes}")
    return keras.Model(inputs, model(x), name=model.name) if normalize else model


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

    keras.utils.set_random_seed(seed)
    if isinstance(data, data_module.Dataset):
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
        keras.callbacks.BackupAndRestore(paths["backup"]),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(paths["best"], monitor=monitor, mode="max",
                                        save_best_only=True),
        keras.callbacks.CSVLogger(paths["history"], append=resuming),
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
              callbacks=callbacks, verbose=verbose)
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
    """Reads a ``CSVLogger`` file into ``{column: [float per epoch]}`` (``epoch`` as ints)."""
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
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
    if importlib.util.find_spec("keras_resnet.export") is None:
        # TEMPORARY until the exporter (issue 4) lands.
        print("Note: keras_resnet.export is not available yet; skipped the SavedModel export "
              f"(the model is in model.keras).", flush=True)
        return None
    from keras_resnet.export import export_saved_model

    return os.fspath(export_saved_model(model, base_dir=export_dir, name=name,
                                        class_names=list(class_names)))


# ----------------------------------------------------------------------------- validation


def _positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{argument} must be a positive int; got {value!r}")
    return value


def _positive_float(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{argument} must be a number > 0 (e.g. 0.1); got {value!r}")
    return float(value)


def _check_compile_arguments(momentum, weight_decay, label_smoothing, jit_compile):
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
            or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a float in [0, 1); got {momentum!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or weight_decay < 0:
        raise ValueError(f"weight_decay must be a float >= 0 (e.g. 1e-4); got {weight_decay!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be a float in [0, 1); got {label_smoothing!r}")
    if jit_compile not in (True, False, "auto"):
        raise ValueError(f"jit_compile must be True, False or 'auto'; got {jit_compile!r}")


def _check_model_name(name):
    if name not in presets.MODEL_PRESETS:
        raise ValueError(f"unknown model {name!r}; valid names: "
                         f"{', '.join(presets.MODEL_PRESETS)}")
