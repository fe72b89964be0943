"""The one resuming ``fit`` of a run (and of both fine-tuning phases), and the run's callbacks.

``fit`` chooses the engine: Keras' ``model.fit`` (resuming inside an epoch through the data's
``TrainOrder``, ``keras_resnet.data.position``) or, for ``MultiWorkerMirroredStrategy`` where
Keras 3's ``fit`` fails (keras-team/keras#20585), the ``strategy.run`` loop of
``keras_resnet.distribute.step_loop``. Either way a ``PositionBackup`` (Keras'
``BackupAndRestore``) among the callbacks resumes a killed run from its backup; the run's
callbacks keep that backup when training ends, and the run removes it once ``metrics.json`` and
``model.keras`` are written (``keras_resnet.training.outcome``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras

from keras_resnet.data.position import PositionBackup
from keras_resnet.modeling.recipe import LearningRateLogger


@dataclasses.dataclass(frozen=True)
class StrategyLoop:
    """What the multi-worker loop (``step_loop.run_loop``) reads in place of a dataset.

    Attributes:
        strategy: the ``tf.distribute.Strategy``.
        train_fn: ``InputContext -> tf.data.Dataset`` of this worker's training shard.
        steps_per_epoch: optimizer steps per epoch, the same on every worker.
        validation_fn: like ``train_fn`` for the validation split, or None.
        validation_steps: validation batches per epoch (with ``validation_fn``).
    """

    strategy: object
    train_fn: Callable
    steps_per_epoch: int
    validation_fn: Callable | None = None
    validation_steps: int | None = None


def fit(model: keras.Model, train, validation=None, *, epochs: int, callbacks=(),
        initial_epoch: int = 0, verbose="auto", batch_size: int | None = None,
        loop: StrategyLoop | None = None) -> keras.callbacks.History:
    """Fits a compiled ``model`` up to epoch ``epochs``, resuming from a backup in ``callbacks``.

    Args:
        model: a compiled ``keras.Model``.
        train: a ``keras_resnet.data.Dataset`` (its ``validation`` split validates, and a run
            killed mid-epoch goes on after its last backed-up batch), a ``tf.data.Dataset`` of
            ``(images, labels)`` batches or an ``(images, labels)`` tuple of arrays; ignored
            with ``loop``.
        validation: validation data like ``train`` (not with a ``keras_resnet`` Dataset).
        epochs: the epoch to train up to (counting the epochs already done).
        callbacks: Keras callbacks; a ``BackupAndRestore`` among them restores its backup.
        initial_epoch: the first epoch when no backup says otherwise (fine-tuning's phase 2).
        verbose: Keras' ``verbose``.
        batch_size: the batch size of array inputs.
        loop: the multi-worker loop's inputs: fit with ``strategy.run`` instead of
            ``model.fit``.

    Returns:
        The last ``keras.callbacks.History``.
    """
    from keras_resnet.data import Dataset, position

    callbacks = list(callbacks)
    if loop is not None:
        from keras_resnet.distribute.step_loop import run_loop

        return run_loop(model, loop.strategy, loop.train_fn, epochs=epochs,
                        steps_per_epoch=loop.steps_per_epoch, validation_fn=loop.validation_fn,
                        validation_steps=loop.validation_steps, callbacks=callbacks,
                        verbose=verbose)
    if isinstance(train, Dataset) and initial_epoch == 0:
        return position.fit(model, train, epochs=epochs, callbacks=callbacks, verbose=verbose)
    if isinstance(train, Dataset):
        train, validation = train.train, train.validation
    if isinstance(train, tuple):
        return model.fit(*train, batch_size=batch_size, epochs=epochs,
                         initial_epoch=initial_epoch, validation_data=validation,
                         callbacks=callbacks, verbose=verbose)
    # A dataset shuffles itself (Keras would ignore shuffle=True and warn).
    return model.fit(train, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
                     validation_data=validation, callbacks=callbacks, verbose=verbose)


def run_callbacks(config, dataset, run_files, resuming, backup_dir, schedule=None):
    """The callbacks every run (and each fine-tuning phase) trains with.

    The backup outlives the fit (``keep``): the run removes it after writing ``metrics.json``
    and ``model.keras``, so a run that fails after training resumes instead of starting over.
    """
    monitor = "val_accuracy" if dataset.validation is not None else "accuracy"
    backup = PositionBackup(backup_dir, double_checkpoint=True,
                            save_freq=config.backup_every_steps or "epoch")
    backup.keep = True
    return [
        LearningRateLogger(schedule),
        # History first: a kill between the two epoch-end writes then repeats an epoch row
        # (read_history keeps the last), never loses one.
        keras.callbacks.CSVLogger(run_files.path("history"), append=resuming),
        # BackupAndRestore that also knows the batch: streamed data resumes after it; the
        # previous backup is kept (double_checkpoint) for a kill during a write (see run_files)
        backup,
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(run_files.path("best"), monitor=monitor, mode="max",
                                        save_best_only=True),
        keras.callbacks.TensorBoard(run_files.path("logs"), write_graph=False, profile_batch=0),
    ]
