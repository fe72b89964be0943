"""The training order as a pure function of (seed, epoch), and resuming inside an epoch.

Keras 3.15's ``BackupAndRestore(save_freq=N)`` writes ``{"epoch": E, "batch": B}`` into
``training_metadata.json`` but restores only the epoch: ``model.fit`` has no initial step, so the
resumed epoch starts again from its first batch and the B+1 batches done before the backup are
trained twice. Here:

* ``TrainOrder``: a training pipeline whose epoch ``e`` is built from ``(seed, e)``, the epoch
  read from a variable when an iteration starts: streamed sources permute their files and seed
  their ``Dataset.shuffle`` buffer by both, in-memory arrays permute their sample indices
  (``keras_resnet.data.arrays.train_order``). ``remainder(e, k)`` is epoch ``e`` without its
  first ``k`` batches, skipped as encoded records, file names or indices (nothing skipped is
  decoded or gathered).
* ``PositionBackup``: ``BackupAndRestore`` that records the epoch correctly after a resume,
  saves at epoch ends too and numbers the batches of a resumed epoch from where it resumed.
* ``fit``: ``model.fit`` in two calls when a backup holds a partial epoch: the rest of that
  epoch (``initial_epoch=e, epochs=e + 1``), then the following epochs.
"""

from __future__ import annotations

import json
import logging
import os
import weakref

import keras

log = logging.getLogger(__name__)

# Decorrelates the shuffle seeds of consecutive epochs and runs (any large odd constant).
_EPOCH_STRIDE = 1_000_003


def epoch_seed(seed: int, epoch):
    """The shuffle seed of ``epoch`` (an int64 tensor) in a run seeded with ``seed``."""
    import tensorflow as tf

    return tf.cast(seed, tf.int64) * _EPOCH_STRIDE + tf.cast(epoch, tf.int64)


def permuted(items, seed: int, epoch):
    """``items`` (a list or 1-D tensor) in epoch ``epoch``'s order: a stateless permutation
    keyed by ``(seed, epoch)``."""
    import tensorflow as tf

    key = tf.stack([epoch_seed(seed, epoch), tf.constant(0, tf.int64)])
    return tf.random.experimental.stateless_shuffle(tf.convert_to_tensor(items), seed=key)


def per_epoch(epochs, seed: int, make):
    """``epochs.flat_map`` of ``make(epoch, shuffle_seed)``: the datasets of one epoch, built
    inside a tf.data function where ``shuffle_seed`` (``epoch_seed(seed, epoch)``, a tensor)
    seeds ``Dataset.shuffle``.

    The function's own graph-level seed is set from ``seed`` first (not the process' global
    seed): TensorFlow's ``get_seed`` compares ``(global seed, op seed) == (0, 0)`` in Python,
    which fails for a tensor op seed when the global seed is 0 (``--seed 0``).
    """
    import tensorflow as tf

    def one(epoch):
        # inside a traced function this sets that graph's seed only; never 0 (see above)
        tf.random.set_seed(seed % (2 ** 31 - 2) + 1)
        return make(epoch, epoch_seed(seed, epoch))

    return epochs.flat_map(one)


class TrainOrder:
    """A training pipeline whose epochs are a pure function of the seed and the epoch number.

    Args:
        build: ``build(epochs, skip_batches) -> tf.data.Dataset`` of one epoch's encoded
            elements in order (``epochs``: a dataset of the one int64 epoch number), without
            the first ``skip_batches`` batches' worth (skipped before anything is decoded).
        finish: ``finish(elements) -> tf.data.Dataset`` of batches: parse, decode, augment,
            batch (applied outside the per-epoch part, where tf.data tunes its parallelism).
        steps: batches per epoch of this input pipeline (None: unknown).
        transforms: functions applied to the batches (e.g. MixUp).
        epoch: the variable holding the next epoch (shared by ``then``).
    """

    def __init__(self, build, finish, steps=None, transforms=(), epoch=None):
        import tensorflow as tf

        self._build = build
        self._finish = finish
        self.steps = steps
        self._transforms = tuple(transforms)
        self.epoch = epoch if epoch is not None else tf.Variable(
            0, dtype=tf.int64, trainable=False, name="train_epoch")
        self._pipelines = []

    def then(self, transform, steps: int | None = None) -> TrainOrder:
        """The same order with ``transform`` applied to the batches (``steps``: the batches
        of an epoch after it, when it drops some; default: unchanged)."""
        return TrainOrder(self._build, self._finish, self.steps if steps is None else steps,
                          self._transforms + (transform,), self.epoch)

    def _batches(self, elements, steps):
        dataset = self._finish(elements)
        for transform in self._transforms:
            dataset = transform(dataset)
        return _with_length(dataset, steps)

    def pipeline(self):
        """The training ``tf.data.Dataset``: each iteration is the epoch in ``self.epoch`` (then
        advanced by one, so a plain loop reshuffles every epoch; ``EpochCallback`` sets it to
        Keras' epoch)."""
        import tensorflow as tf

        def next_epoch(_):
            return self.epoch.assign_add(1) - 1

        epochs = tf.data.Dataset.from_tensors(0).map(next_epoch)
        dataset = self._batches(self._build(epochs, 0), self.steps)
        self._pipelines.append(weakref.ref(dataset))
        return dataset

    def built(self, dataset) -> bool:
        """Whether ``dataset`` is one of this order's ``pipeline()``s (not a pipeline changed
        after it was built, whose remainder this order cannot give)."""
        return any(ref() is dataset for ref in self._pipelines)

    def remainder(self, epoch: int, batches_done: int):
        """Epoch ``epoch`` without its first ``batches_done`` batches (not decoded)."""
        import tensorflow as tf

        epochs = tf.data.Dataset.from_tensors(tf.constant(epoch, tf.int64))
        elements = self._build(epochs, batches_done)
        return self._batches(elements, None if self.steps is None else
                             self.steps - batches_done)

    def callback(self) -> keras.callbacks.Callback:
        """Sets the epoch variable to Keras' epoch before each epoch's iterator is made."""
        return EpochCallback(self.epoch)


def _with_length(dataset, steps):
    import tensorflow as tf

    if steps is None:
        return dataset
    return dataset.apply(tf.data.experimental.assert_cardinality(steps))


class EpochCallback(keras.callbacks.Callback):
    """Puts Keras' epoch number into a ``TrainOrder``'s variable at each epoch's start."""

    def __init__(self, variable):
        super().__init__()
        self.variable = variable

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


class PositionBackup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` that knows where in an epoch its backup was made.

    Three differences, all in what ``training_metadata.json`` says (same keys, same weights
    file): after a resume, mid-epoch backups record the resumed epoch (Keras 3.15 records epoch
    0 until the first epoch end); every epoch end is backed up (with an integer ``save_freq``
    too) as ``{"epoch": E + 1, "batch": -1}`` (nothing of epoch E + 1 done yet); and while
    ``batch_offset`` is set (the rest of a resumed epoch), batch numbers count from the start of
    the epoch, so ``"batch"`` is always the index of the last batch trained in that epoch.
    ``keep`` skips the deletion at the end of ``fit`` (between the two fits of a resume).
    Uses two attributes of Keras 3.15's class (``_current_epoch``, ``_last_batch_seen``).
    """

    def __init__(self, backup_dir, save_freq="epoch", **kwargs):
        super().__init__(backup_dir, save_freq=save_freq, **kwargs)
        self.batch_offset = 0
        self.keep = False

    def interrupted_at(self):
        """``(epoch, batches done in it)`` of the backup, or None without one (with
        ``save_freq="epoch"`` every backup is an epoch end: nothing done)."""
        path = os.path.join(self.backup_dir, "training_metadata.json")
        try:
            with open(path, encoding="utf-8") as stream:
                metadata = json.load(stream)
        except (OSError, ValueError):
            return None
        done = 0 if self.save_freq == "epoch" else int(metadata.get("batch", -1)) + 1
        return int(metadata.get("epoch", 0)), done

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch
        if self.batch_offset:
            self._last_batch_seen = self.batch_offset - 1

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch + self.batch_offset, logs)

    def on_epoch_end(self, epoch, logs=None):
        # Keras' own on_epoch_end, plus the save at every epoch end whatever save_freq says
        self._current_epoch = epoch + 1
        self._last_batch_seen = -1
        self._save_model()
        self._last_batch_seen = 0

    def on_train_end(self, logs=None):
        if self.keep:  # the rest of a resumed epoch: the following epochs still need it
            return
        super().on_train_end(logs)


def fit(model, dataset, *, epochs: int, callbacks: list, verbose="auto"):
    """``model.fit`` on ``dataset.train`` that resumes inside an epoch where it can.

    With a ``TrainOrder`` (``dataset.train_order``, which built ``dataset.train``) and a
    ``PositionBackup`` among ``callbacks`` whose backup stopped after batch ``k`` of epoch
    ``e``, it fits the rest of epoch ``e`` first (``order.remainder(e, k)``), then epochs
    ``e + 1 ...``: every batch of the uninterrupted run is trained exactly once. Otherwise (no
    order, or a ``train`` changed after the order built it) it is one ``model.fit``.

    Returns:
        The last ``History``.
    """
    order = getattr(dataset, "train_order", None)
    backup = next((c for c in callbacks if isinstance(c, PositionBackup)), None)
    common = dict(validation_data=dataset.validation, verbose=verbose, shuffle=False)
    if order is None:
        return model.fit(dataset.train, epochs=epochs, callbacks=callbacks, **common)
    callbacks = [*callbacks, order.callback()]  # the epoch's order follows Keras' epoch
    where = backup.interrupted_at() if backup is not None else None
    if where is not None and where[1] > 0 and not order.built(dataset.train):
        log.info("the training pipeline was changed after its TrainOrder built it (a change "
                 "outside TrainOrder.then): the interrupted epoch starts again")
        where = None
    if where is not None and where[1] > 0 and where[0] < epochs:
        epoch, done = where
        if order.steps is not None and done >= order.steps:
            _mark_epoch_done(backup, epoch)  # killed during its validation: go on with the next
        else:
            log.info("Resuming epoch %d after its batch %d (the data skips the %d batches "
                     "done)", epoch + 1, done, done)
            keep = backup.keep
            backup.batch_offset, backup.keep = done, True
            try:
                history = model.fit(order.remainder(epoch, done), initial_epoch=epoch,
                                    epochs=epoch + 1, callbacks=callbacks, **common)
            finally:
                backup.batch_offset, backup.keep = 0, keep
            if model.stop_training or epoch + 1 >= epochs:
                return history
    return model.fit(dataset.train, epochs=epochs, callbacks=callbacks, **common)


def _mark_epoch_done(backup, epoch):
    from keras_resnet import files

    log.warning("the backup holds every batch of epoch %d but not its end (validation, "
                "history row); going on with epoch %d", epoch + 1, epoch + 2)
    files.write_text(os.path.join(backup.backup_dir, "training_metadata.json"),
                     json.dumps({"epoch": epoch + 1, "batch": -1}))
