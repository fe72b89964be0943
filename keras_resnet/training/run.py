"""``train``: one run of the paper's recipe, from a ``TrainConfig`` to ``runs/<name>/`` and an export.

The jobs, in order: check the configuration (``TrainConfig``), seed (and make deterministic),
load the data, build and compile the network (``keras_resnet.modeling.recipe``), fit it with Keras
callbacks (``BackupAndRestore``, ``ModelCheckpoint``, ``CSVLogger``, ``TensorBoard``,
``TerminateOnNaN``, optional ``EarlyStopping``), evaluate it on the test split, write the run
directory atomically and export a SavedModel version through ``keras_resnet.export``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from typing import TYPE_CHECKING

import keras

from keras_resnet import files
from keras_resnet.modeling import presets
from keras_resnet.data import mixing as data_mixing
from keras_resnet.data.position import PositionBackup
from keras_resnet.constants import (DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_RECIPE,
                                    WARMUP_LEARNING_RATE)
from keras_resnet.modeling.recipe import (LearningRateLogger, PaperSchedule, PaperWarmup, build_model,
                                 compile_model)
from keras_resnet.training.config import TrainConfig, default_batch_size, make_reproducible
from keras_resnet.training.history import plot_history, read_history
from keras_resnet.training import recipe_options
from keras_resnet.training.recipe_options import resolve_recipe
from keras_resnet.training.run_files import RunFiles

if TYPE_CHECKING:
    from keras_resnet.data import Dataset

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    """What ``train`` produced: the model, the run's files and its metrics.

    Attributes:
        model: the trained ``keras.Model`` (final weights).
        run_dir: ``runs/<name>``.
        model_path, best_model_path, history_path, curves_path, metrics_path, logs_dir: the
            files in it (``best.keras`` is the best-validation checkpoint).
        export_path: the SavedModel version directory, or None when not exported.
        metrics: the content of ``metrics.json`` (``metrics["config"]`` is the ``TrainConfig``).
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


def train(model: str | keras.Model = DEFAULT_MODEL,
          data: str | os.PathLike | Dataset = DEFAULT_DATA, *, config: TrainConfig | None = None,
          **options) -> TrainResult:
    """Trains a ResNet with the paper's recipe; writes ``runs/<name>/`` and exports it.

    Running the same call again after the process was killed resumes from the last finished
    epoch (``keras.callbacks.BackupAndRestore`` in ``runs/<name>/backup``; it is deleted when
    training finishes, so a finished run started again trains anew). With ``deterministic``
    (the default) the same seed gives the same run; it turns TensorFlow's op determinism on for
    the whole process. On ``KERAS_BACKEND=jax`` the strategy is Keras' ``DataParallel``
    (``keras_resnet.distribute.jax_parallel``) and the export runs in a TensorFlow-backend
    process from the saved ``model.keras`` (``keras_resnet.training.tf_export``).

    Args:
        model: a model name (``keras_resnet.modeling.presets.MODEL_PRESETS``) or a ``keras.Model``
            taking raw pixels of the data's shape.
        data: a ``keras_resnet.data.Dataset`` or what ``load_dataset`` takes (``"digits"``,
            ``"cifar10"``, ``"synthetic"``, a folder).
        config: a ``TrainConfig`` holding every setting (e.g. from an earlier run's
            ``metrics.json``); its ``model`` and ``data`` are used unless ``model``/``data``
            are objects. Not together with ``options``.
        **options: the fields of ``TrainConfig``: ``epochs``, ``batch_size``,
            ``learning_rate``, ``momentum``, ``weight_decay``, ``schedule``, ``warmup``,
            ``warmup_steps``,
            ``label_smoothing``, ``initializer``, ``precision``, ``jit_compile``,
            ``early_stopping``, ``out_dir``, ``export_dir``, ``name``, ``seed``,
            ``deterministic``, ``verbose``, ``model_options``, ``data_options``,
            ``warmup_epochs``, ``backup_every_steps``, ``weights``, ``fine_tune_from``,
            ``head_epochs``, ``head_lr``, ``fine_tune_lr``; and ``recipe`` (a name of
            ``keras_resnet.modeling.presets.RECIPES``, default ``"cifar"``): its values fill every option
            not given (``keras_resnet.training.recipe_options.resolve_recipe``). With ``weights``, the
            run fine-tunes them in two phases (``keras_resnet.training.fine_tuning``).

    Returns:
        A ``TrainResult``.

    Raises:
        TypeError, ValueError: for a bad argument, data or model, or a batch larger than the
            training split, before training starts; ``ValueError`` when the loss became NaN
            (nothing is saved then).
    """
    from keras_resnet import distribute

    config = _make_config(model, data, config, options)
    if keras.backend.backend() == "jax":
        return _train_on_jax(config, model, data)
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow work.
    strategy, distribution = distribute.make_strategy(config.strategy,
                                                       worker_timeout=config.worker_timeout)
    if distribution["strategy"] == "multi-worker" and (
            not isinstance(data, (str, os.PathLike)) or config.weights is not None):
        raise ValueError("strategy 'multi-worker' needs data as a name or path (each worker "
                         f"loads its own shard) and no weights to fine-tune; got data={data!r}, "
                         f"weights={config.weights!r}")
    data_mixing.check_fine_tuning(config.data_options, config.weights)
    make_reproducible(config.seed, config.deterministic)
    dataset = _load_data(config, data, named_model=not isinstance(model, keras.Model))
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        if config.weights is not None:
            from keras_resnet.training import fine_tuning

            with strategy.scope():
                return fine_tuning.run_fine_tuning(config, model, dataset)
        with strategy.scope():
            net = build_model(model if isinstance(model, keras.Model) else config.model,
                              dataset, initializer=config.initializer, **config.model_options)
        if config.sync_bn or isinstance(model, keras.Model):
            # a model built outside the scope (or with sync_bn) is rebuilt inside it
            net = distribute.replicate(net, strategy, sync_bn=config.sync_bn)
        return _run(config, net, dataset, strategy, distribution)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _train_on_jax(config, model, data):
    """``train`` on the JAX backend: ``keras.distribution.DataParallel`` over the local devices
    (``keras_resnet.distribute.jax_parallel``) in place of a ``tf.distribute`` strategy."""
    from keras_resnet.data import Dataset
    from keras_resnet.distribute import jax_parallel

    batch_size = data.batch_size if isinstance(data, Dataset) else default_batch_size(config)
    strategy, distribution = jax_parallel.make_strategy(config.strategy, batch_size)
    jax_parallel.note_sync_bn(config.sync_bn)
    jax_parallel.keep_tensorflow_off_accelerators()
    make_reproducible(config.seed, config.deterministic)
    dataset = _load_data(config, data, named_model=not isinstance(model, keras.Model))
    dataset, distribution["left_out"] = jax_parallel.shard_evenly(
        dataset, strategy.num_replicas_in_sync)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(config.precision)
    try:
        with strategy.activated():
            if config.weights is not None:
                from keras_resnet.training import fine_tuning

                return fine_tuning.run_fine_tuning(config, model, dataset)
            net = build_model(model if isinstance(model, keras.Model) else config.model,
                              dataset, initializer=config.initializer, **config.model_options)
            if isinstance(model, keras.Model):  # its variables were made before the distribution
                net = jax_parallel.replicate(net, strategy)
            return _run(config, net, dataset, strategy, distribution)
    finally:
        keras.config.set_dtype_policy(previous_policy)


def _make_config(model, data, config, options):
    """The run's ``TrainConfig``: ``config``, or one built from the keyword options."""
    from keras_resnet.data import Dataset, source_name

    if config is not None:
        if options:
            raise TypeError(f"pass either config or keyword options, not both; got config and "
                            f"{', '.join(sorted(options))}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a keras_resnet.training.TrainConfig; got {config!r}")
        options = config.to_dict()
        model = model if isinstance(model, keras.Model) else options.pop("model")
        data = data if isinstance(data, Dataset) else options.pop("data")
    fields = {field.name for field in dataclasses.fields(TrainConfig)} - {"model", "data"}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(f"train() got unexpected option(s) {', '.join(unknown)}; options: "
                        f"{', '.join(sorted(fields))}")
    if config is None:
        options = resolve_recipe(options.pop("recipe", DEFAULT_RECIPE), options,
                                 dataset_batch_size=data.batch_size
                                 if isinstance(data, Dataset) else None)
    if isinstance(model, keras.Model):
        model_name = model.name
    else:
        model_name = presets.check_model_name(model)
    data_name = source_name(data)
    options = {key: value for key, value in options.items() if key not in ("model", "data")}
    if options.get("name") is None:
        weights = options.get("weights")
        if is_torch_checkpoint(weights) and not isinstance(model, keras.Model):
            model_name_for_run = os.path.basename(os.fspath(weights)).split(".")[0]
        else:
            model_name_for_run = model_name
        options["name"] = (f"{model_name_for_run}-"
                           f"{os.path.basename(os.path.normpath(data_name))}")
    options.setdefault("model_options", {})
    options.setdefault("data_options", {})
    options["model_options"] = dict(options["model_options"] or {})
    options["data_options"] = dict(options["data_options"] or {})
    return TrainConfig(model=model_name, data=data_name, **options)


def _load_data(config, data, named_model=True):
    """The ``Dataset`` of the run, checked against the configuration."""
    from keras_resnet import data as data_module

    size = config.data_options.get("image_size")
    if size is not None and named_model and not is_torch_checkpoint(config.weights):
        data_module.check_image_size(size, config.model)

    if isinstance(data, data_module.Dataset):
        if config.batch_size is not None and config.batch_size != data.batch_size:
            raise ValueError(f"batch_size={config.batch_size} disagrees with the Dataset's batch "
                             f"size {data.batch_size}; leave batch_size out or reload the data")
        if config.data_options:
            raise ValueError("data_options apply when data is a name or path; got a Dataset "
                             f"and data_options={config.data_options!r}")
        dataset = data
    else:
        dataset = data_module.load_dataset(config.data, batch_size=default_batch_size(config),
                                           seed=config.seed, **config.data_options)
    if dataset.batch_size > dataset.train_size:
        raise ValueError(f"batch_size must be at most the {dataset.train_size} images of the "
                         f"{dataset.name!r} training split; got {dataset.batch_size}")
    return dataset


def is_torch_checkpoint(path) -> bool:
    """Whether ``path`` names a torchvision / timm checkpoint (by its extension)."""
    from keras_resnet.constants import TORCH_CHECKPOINT_EXTENSIONS

    return path is not None and os.fspath(path).lower().endswith(TORCH_CHECKPOINT_EXTENSIONS)


def run_callbacks(config, dataset, run_files, resuming, backup_dir, schedule=None):
    """The callbacks every run (and each fine-tuning phase) trains with."""
    monitor = "val_accuracy" if dataset.validation is not None else "accuracy"
    return [
        LearningRateLogger(schedule),
        # History first: a kill between the two epoch-end writes then repeats an epoch row
        # (read_history keeps the last), never loses one.
        keras.callbacks.CSVLogger(run_files.path("history"), append=resuming),
        # BackupAndRestore that also knows the batch: streamed data resumes after it; the
        # previous backup is kept (double_checkpoint) for a kill during a write (see run_files)
        PositionBackup(backup_dir, double_checkpoint=True,
                       save_freq=config.backup_every_steps or "epoch"),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(run_files.path("best"), monitor=monitor, mode="max",
                                        save_best_only=True),
        keras.callbacks.TensorBoard(run_files.path("logs"), write_graph=False, profile_batch=0),
    ]


def _callbacks(config, schedule, dataset, run_files, resuming):
    callbacks = run_callbacks(config, dataset, run_files, resuming, run_files.path("backup"),
                              schedule)
    if config.warmup:
        callbacks.append(PaperWarmup(schedule))
    if config.early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(
            "val_loss" if dataset.validation is not None else "loss",
            patience=config.early_stopping, restore_best_weights=True))
    return callbacks


def _run(config, model, dataset, strategy, distribution):
    """Compiles, fits, evaluates and records ``model``; returns the ``TrainResult``."""
    from keras_resnet.training import strategy_fit

    started = time.perf_counter()
    steps = strategy_fit.steps_per_epoch(dataset, distribution)
    learning_rate = strategy_fit.learning_rate(config, dataset)
    schedule = PaperSchedule(learning_rate, config.epochs * steps, config.schedule,
                             warmup_learning_rate=WARMUP_LEARNING_RATE if config.warmup else None,
                             warmup_steps=config.warmup_steps or config.warmup_epochs * steps,
                             **recipe_options.schedule_options(config))
    with strategy.scope():
        compile_model(model, learning_rate=schedule, momentum=config.momentum,
                      weight_decay=config.weight_decay, label_smoothing=config.label_smoothing,
                      jit_compile=strategy_fit.jit_compile(config),
                      one_hot_labels=dataset.one_hot_labels)
    with strategy_fit.worker_run_files(config, distribution) as run_files:
        resumed_from = run_files.prepare()
        callbacks = _callbacks(config, schedule, dataset, run_files, resumed_from is not None)
        if resumed_from is not None:
            logger.info("Resuming %s from epoch %d of %d%s", config.run_dir, resumed_from + 1,
                        config.epochs, run_files.backed_up_step_note())
        test = strategy_fit.fit(config, model, dataset, strategy, distribution, callbacks, steps)
        history = read_history(run_files.path("history"))
    warmup_end = next((c.ended_at_step for c in callbacks if isinstance(c, PaperWarmup)), None)
    return finish_run(config, model, dataset, RunFiles(config.run_dir), history=history,
                      test=test, distribution=distribution, resumed_from=resumed_from,
                      started=started, warmup_ended_at_step=warmup_end,
                      learning_rate_used=learning_rate)


def finish_run(config, net, dataset, run_files, *, resumed_from, started, history=None,
               test=None, distribution=None, **extra):
    """Evaluates, saves, plots, exports and records a fitted run; returns its ``TrainResult``.

    Only the chief of a multi-worker run (every single-machine run is its own chief) writes
    the run directory and the export.

    Raises:
        ValueError: the loss became NaN (nothing is saved).
    """
    from keras_resnet.data import explain_errors

    history = read_history(run_files.path("history")) if history is None else history
    chief = distribution is None or distribution["is_chief"]
    losses = history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise ValueError(f"training diverged (loss {losses[-1] if losses else 'missing'} at "
                         f"epoch {len(losses)}); lower learning_rate (got "
                         f"{config.learning_rate}) or use warmup=True. Nothing was saved.")
    if test is None:
        with explain_errors(dataset):
            test = net.evaluate(dataset.test, verbose=0, return_dict=True)
    export_path = None
    if chief:
        with files.atomic_path(run_files.path("model")) as temporary:
            net.save(temporary)
        title = f"{extra.get('model', config.model)} on {dataset.name}"
        plot_history(history, run_files.path("curves"), title=title)
        export_path = _export(net, config, dataset, run_files.path("model"))
    metrics = _metrics(config, net, dataset, history, test, resumed_from=resumed_from,
                       export_path=export_path, seconds=time.perf_counter() - started,
                       distribution=distribution, **extra)
    if chief:
        files.write_text(run_files.path("metrics"), json.dumps(metrics, indent=2))
    return TrainResult(model=net, run_dir=config.run_dir, model_path=run_files.path("model"),
                       best_model_path=run_files.path("best"),
                       history_path=run_files.path("history"),
                       curves_path=run_files.path("curves"),
                       metrics_path=run_files.path("metrics"), logs_dir=run_files.path("logs"),
                       export_path=export_path, metrics=metrics, history=history)


def _metrics(config, net, dataset, history, test, *, resumed_from, export_path, seconds,
             warmup_ended_at_step=None, **extra):
    """The content of ``metrics.json``: results, data sizes and the run's ``TrainConfig``."""
    return {
        "name": config.name, "model": config.model, "data": dataset.name,
        "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
        "parameters": int(net.count_params()),
        "trainable_parameters": int(sum(math.prod(v.shape) for v in net.trainable_weights)),
        "epochs": len(history["loss"]), "resumed_from_epoch": resumed_from,
        "wall_time_seconds": round(seconds, 2),
        "final_train_accuracy": history["accuracy"][-1],
        "best_validation_accuracy": max(history["val_accuracy"]) if "val_accuracy" in history
        else None,
        "train_size": dataset.train_size, "validation_size": dataset.validation_size,
        "test_size": dataset.test_size, "batch_size": dataset.batch_size,
        "learning_rate": config.learning_rate, "schedule": config.schedule,
        "warmup": config.warmup, "warmup_ended_at_step": warmup_ended_at_step,
        "warmup_steps": config.warmup_steps,
        "weight_decay": config.weight_decay, "momentum": config.momentum,
        "label_smoothing": config.label_smoothing, "precision": config.precision,
        "seed": config.seed, "deterministic": config.deterministic, "export_path": export_path,
        "recipe": config.recipe, "warmup_epochs": config.warmup_epochs,
        "backup_every_steps": config.backup_every_steps, "data_options": config.data_options,
        "keras_version": keras.__version__, "backend": keras.backend.backend(),
        "config": config.to_dict(), **extra,
    }


def _export(model, config, dataset, model_path=None):
    if config.export_dir is None:
        return None
    if keras.backend.backend() != "tensorflow":
        from keras_resnet.training.tf_export import export_in_tensorflow

        return export_in_tensorflow(model_path, config.export_dir, name=config.name,
                                    class_names=list(dataset.class_names),
                                    crop_fraction=dataset.crop_fraction)
    from keras_resnet.export import export_saved_model

    # serving_bytes applies the data's own evaluation crop: served = evaluated
    return os.fspath(export_saved_model(model, base_dir=config.export_dir, name=config.name,
                                        class_names=list(dataset.class_names),
                                        crop_fraction=dataset.crop_fraction))
