"""Data-parallel training on the JAX backend with Keras' own ``keras.distribution.DataParallel``.

``train`` imports this module only when ``keras.backend.backend() == "jax"``; the TensorFlow
strategies (``keras_resnet.distribute.strategy``) are untouched. ``--strategy`` means on JAX:

* ``"mirrored"``: ``keras.distribution.DataParallel`` over every local device
  (``keras.distribution.list_devices()``): the variables are replicated on each, every global
  batch is sharded along its first axis and XLA all-reduces the gradients (Keras' ``fit``).
* ``"one-device"``: no distribution: Keras trains on JAX's first device.
* ``"auto"``: ``"mirrored"`` when there is more than one local device, else ``"one-device"``.
* ``"multi-worker"`` (or ``"auto"`` under a ``TF_CONFIG`` naming several tasks): an error that
  names the backend; several machines train on the TensorFlow backend.

The batch is the global batch, as with TensorFlow: it must divide by the device count. Batch
normalization needs no synchronization: under ``jit`` the mean and variance of a batch sharded
over the devices are computed over the whole (global) batch, so ``sync_bn`` changes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import keras

from keras_resnet import checks
from keras_resnet.constants import DEFAULT_STRATEGY, JAX_ENGINE, STRATEGIES
from keras_resnet.distribute.cluster import read_cluster

logger = logging.getLogger(__name__)


class DataParallelStrategy:
    """What ``train`` uses on JAX in place of a ``tf.distribute.Strategy``.

    Attributes:
        distribution: the ``keras.distribution.DataParallel`` (None for one device).
        devices: the devices trained on (``keras.distribution.list_devices()`` names).
    """

    def __init__(self, distribution, devices):
        self.distribution = distribution
        self.devices = tuple(devices)

    @property
    def num_replicas_in_sync(self) -> int:
        """The devices a global batch is split over."""
        return len(self.devices)

    def scope(self):
        """Nothing to enter: ``activated`` keeps the distribution on for the whole run."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def activated(self):
        """Sets the distribution globally (model building, ``fit``, ``evaluate``, saving; None
        for one device, whatever was set before) and restores the previous one afterwards."""
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(self.distribution)
        try:
            yield self
        finally:
            keras.distribution.set_distribution(previous)


def choose_strategy(name: str = DEFAULT_STRATEGY, *, devices: int, environ=None) -> str:
    """What ``name`` means on the JAX backend: ``"one-device"`` or ``"mirrored"``.

    Args:
        name: one of ``keras_resnet.constants.STRATEGIES``.
        devices: the number of local devices.
        environ: the environment holding ``TF_CONFIG`` (default ``os.environ``).

    Returns:
        ``"one-device"`` or ``"mirrored"``.

    Raises:
        TypeError, ValueError: an unknown name or a bad ``TF_CONFIG``; ``"multi-worker"``, or
            a ``TF_CONFIG`` naming several tasks (each process would train alone).
    """
    checks.one_of(name, "strategy", STRATEGIES)
    cluster = read_cluster(environ)
    workers = cluster.num_workers if cluster else 0
    if name == "multi-worker" or workers > 1:
        given = (f"strategy {name!r}" if name == "multi-worker"
                 else f"strategy {name!r} with TF_CONFIG naming {workers} tasks")
        raise ValueError(f"multi-worker training needs the tensorflow backend "
                         f"(MultiWorkerMirroredStrategy); got {given} on backend 'jax': run "
                         "with KERAS_BACKEND=tensorflow, or train on this machine's devices "
                         "with strategy 'mirrored' (keras.distribution.DataParallel) and no "
                         "TF_CONFIG")
    if name == "auto":
        return "mirrored" if devices > 1 else "one-device"
    return name


def make_strategy(name: str, batch_size: int, *, environ=None) -> tuple:
    """The ``DataParallelStrategy`` ``name`` picks, checked against the global batch.

    Args:
        name: ``"auto"``, ``"one-device"``, ``"mirrored"`` (``"multi-worker"`` raises).
        batch_size: the global batch; it must divide by the device count.
        environ: the environment holding ``TF_CONFIG`` (default ``os.environ``).

    Returns:
        ``(strategy, description)``: the ``DataParallelStrategy`` and a JSON-ready dict
        (``strategy``, ``backend``, ``engine``, ``replicas``, ``workers``, ``task_type``,
        ``task_index``, ``is_chief``, ``devices``) for ``metrics.json``.

    Raises:
        TypeError, ValueError: see ``choose_strategy``; a batch that does not divide by the
            devices. Before any data is loaded or model built.
    """
    batch_size = checks.positive_int(batch_size, "batch_size")
    available = keras.distribution.list_devices()
    chosen = choose_strategy(name, devices=len(available), environ=environ)
    devices = available if chosen == "mirrored" else available[:1]
    if batch_size % len(devices):
        raise ValueError(f"batch_size must be a multiple of the {len(devices)} devices strategy "
                         f"{chosen!r} splits it over on backend 'jax' (it is the global batch); "
                         f"got {batch_size}")
    distribution = (keras.distribution.DataParallel(devices=devices) if chosen == "mirrored"
                    else None)
    description = {"strategy": chosen, "backend": "jax",
                   "engine": JAX_ENGINE if distribution is not None else None,
                   "replicas": len(devices), "workers": 1, "task_type": None,
                   "task_index": None, "is_chief": True, "devices": list(devices)}
    logger.debug("Training with %s on backend jax: %d device(s) %s", chosen, len(devices),
                 ", ".join(devices))
    return DataParallelStrategy(distribution, devices), description


def keep_tensorflow_off_accelerators() -> None:
    """Hides the GPUs from TensorFlow, which only runs the ``tf.data`` input pipeline here:
    otherwise its runtime would reserve most of the memory JAX trains in."""
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow started its devices before (earlier TF work)
        logger.warning("TensorFlow's devices were initialized before train: it may hold GPU "
                       "memory that JAX needs")


def note_sync_bn(sync_bn: bool) -> None:
    """Logs why ``sync_bn`` changes nothing on JAX (the statistics are already global)."""
    if checks.boolean(sync_bn, "sync_bn"):
        logger.info("sync_bn: nothing to do on backend jax: batch normalization's statistics "
                    "are computed over the whole global batch (sharded over the devices, "
                    "reduced by XLA)")


def replicate(model: keras.Model, strategy: DataParallelStrategy) -> keras.Model:
    """``model`` (built before the distribution was set) rebuilt with replicated variables.

    Args:
        model: a functional or sequential ``keras.Model``.
        strategy: the run's ``DataParallelStrategy`` (activated).

    Returns:
        ``model`` itself on one device, else a clone holding the same weights.
    """
    if strategy.distribution is None:
        return model
    with strategy.distribution.scope():
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
    return clone


def shard_evenly(dataset, replicas: int):
    """``dataset`` with every batch a multiple of ``replicas`` images.

    A sharded batch must split evenly over the devices, so the last, partial batch of each
    split loses its last ``size % replicas`` images (fewer than ``replicas``; a partial batch
    smaller than that is left out, and a validation split smaller than that is dropped). The
    split sizes are reduced to what is used.

    Args:
        dataset: a ``keras_resnet.data.Dataset`` whose ``batch_size`` divides by ``replicas``.
        replicas: the devices a batch is sharded over.

    Returns:
        ``(dataset, left_out)``: the new ``Dataset`` and ``{split: images left out}``.

    Raises:
        ValueError: a test split with fewer images than ``replicas``.
    """
    if replicas == 1:
        return dataset, {"train": 0, "validation": 0, "test": 0}
    changes, left_out = {}, {}
    for split in ("train", "validation", "test"):
        size = getattr(dataset, f"{split}_size")
        pipeline = getattr(dataset, split)
        left_out[split] = (size % dataset.batch_size) % replicas
        if pipeline is None or not left_out[split]:
            continue
        if size == left_out[split] and split == "test":
            raise ValueError(f"the test split's {size} images are fewer than the {replicas} "
                             "devices a batch is sharded over; give more test images "
                             "(test_split) or use fewer devices")
        steps = size // dataset.batch_size + int(size % dataset.batch_size >= replicas)
        if split == "train" and dataset.train_order is not None:
            # cut inside the order, so a resumed epoch's remainder is cut the same way
            order = dataset.train_order.then(lambda batches: _cut(batches, replicas), steps)
            changes.update(train_order=order, train=order.pipeline())
        else:
            changes[split] = (None if size == left_out[split] else  # validation: none left
                              _trimmed(pipeline, replicas, steps))
        changes[f"{split}_size"] = size - left_out[split]
    if any(left_out.values()):
        logger.info("Batches sharded over %d devices: the last batch of each split is cut to a "
                    "multiple of %d (left out per epoch: %s)", replicas, replicas,
                    ", ".join(f"{split} {count}" for split, count in left_out.items()))
    return dataclasses.replace(dataset, **changes), left_out


def _cut(pipeline, replicas):
    """Each batch of ``pipeline`` cut to a multiple of ``replicas``; one left empty is dropped."""
    import tensorflow as tf

    def cut(*batch):
        keep = tf.shape(tf.nest.flatten(batch)[0])[0] // replicas * replicas
        batch = tf.nest.map_structure(lambda tensor: tensor[:keep], batch)
        return batch[0] if len(batch) == 1 else batch

    def kept(*batch):
        return tf.shape(tf.nest.flatten(batch)[0])[0] > 0

    return pipeline.map(cut).filter(kept)


def _trimmed(pipeline, replicas, steps):
    import tensorflow as tf

    return _cut(pipeline, replicas).apply(tf.data.experimental.assert_cardinality(steps))