"""A Keras training loop over ``strategy.run``, for ``MultiWorkerMirroredStrategy``.

Keras 3's ``Model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585:
its per-replica log reduction only sees the local replicas). ``run_loop`` here (exported as
``keras_resnet.distribute.fit``) is the small part of
``Model.fit`` that the strategy needs, and nothing else is new: each step runs the compiled
model's own ``train_step`` (forward pass, loss with regularization and the strategy's loss
scaling, ``optimizer.apply_gradients`` which all-reduces the gradients, metric updates) in
every replica with ``strategy.run``; the logs are the metrics read in cross-replica context (an
all-reduce over every worker); a ``keras.callbacks.CallbackList`` gets Keras' usual hooks, so
``ProgbarLogger``, ``CSVLogger``, ``TensorBoard``, ``ModelCheckpoint``, ``BackupAndRestore``,
``EarlyStopping`` and ``TerminateOnNaN`` work unchanged. It works under every strategy (also
one device and ``MirroredStrategy``).

Every worker must run the same steps: ``steps_per_epoch`` and ``validation_steps`` are fixed
counts, and the training pipeline repeats (a worker's shard may be a batch short of another's).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile

import keras

from keras_resnet import checks, files
from keras_resnet.constants import WORKER_TEMP_DIR

logger = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """A collective failed: a worker died, was preempted or stopped answering in time."""


def run_loop(model: keras.Model, strategy, train_fn, *, epochs: int, steps_per_epoch: int,
             validation_fn=None, validation_steps: int | None = None, callbacks=(),
             verbose=1) -> keras.callbacks.History:
    """Trains a compiled ``model`` with ``strategy.run``, driving Keras callbacks like ``fit``.

    Build and compile ``model`` under ``strategy.scope()``. Each worker reads its own shard:
    ``train_fn(input_context)`` returns the ``tf.data`` pipeline of one input pipeline, batched
    at ``input_context.get_per_replica_batch_size(global_batch)`` (``load_dataset(...,
    input_context=context).train`` does both), through
    ``strategy.distribute_datasets_from_function``.

    A ``keras.callbacks.BackupAndRestore`` among ``callbacks`` resumes from its last epoch:
    weights, optimizer state (so the learning-rate schedule goes on from its step) and epoch.

    Args:
        model: a compiled ``keras.Model`` (built under ``strategy.scope()``).
        strategy: a ``tf.distribute.Strategy``.
        train_fn: ``InputContext -> tf.data.Dataset`` of ``(images, labels)`` batches.
        epochs: epochs to train (counting those a restored backup already did).
        steps_per_epoch: optimizer steps per epoch, the same on every worker.
        validation_fn: like ``train_fn`` for the validation split, or None.
        validation_steps: validation batches per epoch (required with ``validation_fn``).
        callbacks: Keras callbacks.
        verbose: 0 silent, 1 progress bar, 2 one line per epoch (``"auto"``: 1).

    Returns:
        The ``keras.callbacks.History`` (also ``model.history``).

    Raises:
        TypeError, ValueError: a bad argument, before anything runs.
        WorkerError: a collective failed (a worker died, or the collective timeout passed);
            the backup of the last finished epoch stays for the restart.
    """
    epochs = checks.positive_int(epochs, "epochs")
    steps_per_epoch = checks.positive_int(steps_per_epoch, "steps_per_epoch")
    if validation_fn is not None:
        validation_steps = checks.positive_int(validation_steps, "validation_steps")
    verbose = checks.one_of(verbose, "verbose", ("auto", 0, 1, 2))
    verbose = 1 if verbose == "auto" else verbose
    if model.optimizer is None:
        raise ValueError(f"model must be compiled (under strategy.scope()) before fit; got "
                         f"{model.name!r} without an optimizer")
    train_step, test_step = _step_functions(model, strategy)
    train_data = iter(strategy.distribute_datasets_from_function(
        lambda context: train_fn(context).repeat()))
    validation_data = (strategy.distribute_datasets_from_function(validation_fn)
                       if validation_fn is not None else None)
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    with explain_collective_errors():
        callback_list.on_train_begin()
        logs = _epochs(model, callback_list, train_step, train_data, test_step, validation_data,
                       epochs, steps_per_epoch, validation_steps)
        callback_list.on_train_end(logs)
    return model.history


def _epochs(model, callback_list, train_step, train_data, test_step, validation_data, epochs,
            steps_per_epoch, validation_steps):
    # BackupAndRestore sets the epoch to resume from, as Model.fit reads it.
    initial_epoch = getattr(model, "_initial_epoch", None) or 0
    logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            logs = _python(train_step(train_data))
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        if validation_data is not None:
            epoch_logs.update(_evaluate(model, test_step, validation_data, validation_steps))
        callback_list.on_epoch_end(epoch, epoch_logs)
        logs = epoch_logs
        if model.stop_training:
            break
    return logs


@contextlib.contextmanager
def explain_collective_errors():
    """Turns TensorFlow's error for a failed collective into a ``WorkerError`` saying what
    happened and how to resume.

    Raises:
        WorkerError: for ``UnavailableError`` (a peer stopped sending heartbeats),
            ``DeadlineExceededError`` (the collective timeout passed), ``AbortedError`` and
            ``CancelledError`` raised inside the block.
    """
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.AbortedError, tf.errors.CancelledError) as error:
        detail = " ".join(str(error.message).split())
        if len(detail) > 300:
            detail = detail[:300] + "…"
        raise WorkerError(
            f"training stopped: a worker stopped answering or the collective timeout passed "
            f"({type(error).__name__}: {detail}). The job cannot go on with a worker missing; "
            "run the same command on every worker to resume from the last backup "
            "(BackupAndRestore)") from None


def steps_for(size: int, batch_size: int, workers: int, replicas: int | None = None) -> int:
    """Steps every worker can run over a split of ``size`` images at global ``batch_size``:
    whole per-worker batches of the smallest worker's shard (at least 1).

    ``distribute_datasets_from_function`` builds one input pipeline per worker; each of a
    worker's ``replicas // workers`` replicas takes one per-replica batch of ``batch_size //
    replicas`` images from it per step (``InputContext.get_per_replica_batch_size``, which
    needs ``batch_size`` to be a multiple of ``replicas``).

    Args:
        size: images in the split.
        batch_size: the global batch.
        workers: worker processes (each reads ``size // workers`` images or one more).
        replicas: replicas in sync over all workers (``strategy.num_replicas_in_sync``, a
            multiple of ``workers``); None: one per worker.

    Returns:
        The step count.

    Raises:
        TypeError, ValueError: a bad argument (``batch_size`` not a multiple of ``replicas``,
            ``replicas`` not a multiple of ``workers``).
    """
    size = checks.positive_int(size, "size")
    workers = checks.positive_int(workers, "workers")
    replicas = workers if replicas is None else checks.positive_int(replicas, "replicas",
                                                                    minimum=workers)
    if replicas % workers:
        raise ValueError(f"replicas must be a multiple of the {workers} workers (every worker "
                         f"has as many); got {replicas}")
    batch_size = checks.positive_int(batch_size, "batch_size", minimum=replicas)
    if batch_size % replicas:
        raise ValueError(f"batch_size must be a multiple of the {replicas} replicas (each "
                         f"takes batch_size // replicas images per step); got {batch_size}")
    per_worker_step = (batch_size // replicas) * (replicas // workers)
    return max(1, (size // workers) // per_worker_step)


def _step_functions(model, strategy):
    import tensorflow as tf

    with strategy.scope():
        # Variables are created in cross-replica context, as Model.fit's symbolic build does.
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(iterator):
        strategy.run(model.train_step, args=(next(iterator),))
        return model.get_metrics_result()  # cross-replica read: summed over every replica

    @tf.function
    def test_step(iterator):
        strategy.run(model.test_step, args=(next(iterator),))
        return model.get_metrics_result()

    return train_step, test_step


def evaluate(model: keras.Model, strategy, test_fn, *, steps: int) -> dict:
    """The compiled metrics of ``model`` over ``steps`` batches of every worker's shard.

    Every worker must call it (the metrics are all-reduced); each reads its share of the
    split from ``test_fn(input_context)``, so ``steps`` batches of the global batch are
    evaluated (a last, partial global batch is left out so that every worker runs the same
    steps).

    Args:
        model: a compiled ``keras.Model`` (built under ``strategy.scope()``).
        strategy: a ``tf.distribute.Strategy``.
        test_fn: ``InputContext -> tf.data.Dataset`` of ``(images, labels)`` batches.
        steps: batches per worker.

    Returns:
        ``{"loss": ..., "accuracy": ..., ...}`` as floats, the same on every worker.

    Raises:
        TypeError, ValueError: a bad ``steps``.
        WorkerError: a collective failed.
    """
    steps = checks.positive_int(steps, "steps")
    _, test_step = _step_functions(model, strategy)
    with explain_collective_errors():
        logs = _evaluate(model, test_step, strategy.distribute_datasets_from_function(test_fn),
                         steps)
    return {name[len("val_"):]: value for name, value in logs.items()}


def _evaluate(model, test_step, validation_data, steps):
    model.reset_metrics()
    iterator = iter(validation_data)
    logs = {}
    for _ in range(steps):
        logs = test_step(iterator)
    return {f"val_{name}": value for name, value in _python(logs).items()}


def _python(logs):
    return {name: float(value) for name, value in logs.items()}


@contextlib.contextmanager
def worker_dir(run_dir: str, is_chief: bool, keep=("backup",)):
    """The directory a worker's callbacks write to: ``run_dir`` on the chief, else a temporary
    directory outside it, removed when the block ends (the usual ``tf.distribute`` pattern:
    every worker saves, only the chief's files are kept). That directory is
    ``$TMPDIR/keras-resnet-workers/.tmp-<pid>-worker-*``: a worker killed before it could
    remove its own leaves it there, and the next worker started on the machine removes it.

    A non-chief worker's temporary directory starts with a copy of the chief's ``keep``
    entries (the ``BackupAndRestore`` directory), so every worker resumes from the same
    checkpoint (``run_dir`` must be on storage every worker reads, e.g. a shared volume).

    Args:
        run_dir: the run directory (the chief's).
        is_chief: whether this worker is the chief.
        keep: entries of ``run_dir`` copied into a worker's directory.

    Yields:
        The directory path.
    """
    if is_chief:
        os.makedirs(run_dir, exist_ok=True)
        yield run_dir
        return
    parent = os.path.join(tempfile.gettempdir(), WORKER_TEMP_DIR)
    files.remove_stale_temporaries(parent)  # those of workers that were killed (SIGKILL)
    directory = files.make_temp_dir(parent, "worker-")
    try:
        for name in keep:
            source = os.path.join(run_dir, name)
            if os.path.isdir(source):
                shutil.copytree(source, os.path.join(directory, name))
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
