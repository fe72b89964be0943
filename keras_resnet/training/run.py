"""``train``: one run of the paper's recipe, from a ``TrainConfig`` to ``runs/<name>/`` and an export.

The jobs, in order: check the configuration (``TrainConfig``), seed (and make deterministic),
load the data, build and compile the network (``keras_resnet.modeling.recipe``), fit it with Keras
callbacks (``BackupAndRestore``, ``ModelCheckpoint``, ``CSVLogger``, ``TensorBoard``,
``TerminateOnNaN``, optional ``EarlyStopping``), evaluate it on the test split, write the run
directory atomically and export a SavedModel version through ``keras_resnet.export``. The fit
is ``keras_resnet.training.fitting.fit`` and the end of the run ``keras_resnet.training.outcome``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import TYPE_CHECKING

import keras

from keras_resnet.modeling import presets
from keras_resnet.data import mixing as data_mixing
from keras_resnet.constants import DEFAULT_DATA, DEFAULT_MODEL, DEFAULT_RECIPE, WARMUP_LEARNING_RATE
from keras_resnet.modeling.recipe import PaperSchedule, PaperWarmup, build_model, compile_model
from keras_resnet.training import fine_tuning, recipe_options, strategy_fit
from keras_resnet.training.config import (TrainConfig, default_batch_size, is_torch_checkpoint,
                                          make_reproducible)
from keras_resnet.training.fitting import fit, run_callbacks
from keras_resnet.training.history import read_history
from keras_resnet.training.outcome import TrainResult, finish_run
from keras_resnet.training.recipe_options import resolve_recipe
from keras_resnet.training.run_files import RunFiles, check_creatable

if TYPE_CHECKING:
    from keras_resnet.data import Dataset

logger = logging.getLogger(__name__)


def train(model: str | keras.Model = DEFAULT_MODEL,
          data: str | os.PathLike | Dataset = DEFAULT_DATA, *, config: TrainConfig | None = None,
          **options) -> TrainResult:
    """Trains a ResNet with the paper's recipe; writes ``runs/<name>/`` and exports it.

    Running the same call again after the process was killed resumes from the last finished
    epoch (``keras.callbacks.BackupAndRestore`` in ``runs/<name>/backup``; it is deleted once
    ``model.keras`` and ``metrics.json`` are written, so a finished run started again trains
    anew, and one that failed after training, in its plot or export, does not). With ``deterministic``
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
            training split, or an output or export directory that cannot be created, before
            training starts; ``ValueError`` when the loss became NaN (nothing is saved then).
        keras_resnet.training.outcome.ExportFailedError: (a ``ValueError``) the run is
            trained and saved but its export failed; the message names the
            ``keras-resnet export`` command that finishes it.
    """
    from keras_resnet import distribute

    config = _make_config(model, data, config, options)
    _check_directories(config)
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


def _check_directories(config):
    """The run and export directories can be made: found before any work, not after training."""
    check_creatable(config.out_dir, "out_dir", "--out")
    if config.export_dir is not None:
        check_creatable(config.export_dir, "export_dir", "--export")


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
    from keras_resnet.data import explain_errors

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
        try:
            with explain_errors(dataset):  # a bad record or label: one line naming the shard
                fit(model, dataset, epochs=config.epochs, callbacks=callbacks,
                    verbose=config.verbose,
                    loop=strategy_fit.strategy_loop(config, dataset, strategy, distribution,
                                                    steps))
        except BaseException:
            run_files.discard_untrained()
            raise
        test = strategy_fit.evaluate_test(config, model, dataset, strategy, distribution)
        history = read_history(run_files.path("history"))
    warmup_end = next((c.ended_at_step for c in callbacks if isinstance(c, PaperWarmup)), None)
    return finish_run(config, model, dataset, RunFiles(config.run_dir), history=history,
                      test=test, distribution=distribution, resumed_from=resumed_from,
                      started=started, warmup_ended_at_step=warmup_end,
                      learning_rate_used=learning_rate)
