"""Which ``tf.distribute`` strategy a run trains with, and what it records about it.

* ``"one-device"``: TensorFlow's default strategy (what Keras uses without one: the first
  GPU, else the CPU; models built outside any scope keep working), or
  ``tf.distribute.OneDeviceStrategy`` on the one device given.
* ``"mirrored"``: ``tf.distribute.MirroredStrategy`` over this machine's GPUs (or ``devices``);
  Keras' ``model.fit`` trains under it.
* ``"multi-worker"``: ``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``;
  ``keras_resnet.distribute.fit`` trains under it (Keras 3's ``fit`` does not,
  keras-team/keras#20585).
* ``"auto"``: ``"multi-worker"`` when ``TF_CONFIG`` names more than one task, ``"mirrored"``
  when more than one GPU is visible, otherwise ``"one-device"``.
"""

from __future__ import annotations

import logging

from keras_resnet import checks
from keras_resnet.constants import (BASE_BATCH_SIZE, DEFAULT_COLLECTIVE_TIMEOUT,
                                    DEFAULT_STRATEGY, DEFAULT_TRAIN_WORKER_TIMEOUT, STRATEGIES)
from keras_resnet.distribute.cluster import Cluster, read_cluster, wait_for_peers

logger = logging.getLogger(__name__)


def choose_strategy(name: str = DEFAULT_STRATEGY, *, environ=None, gpus=None) -> str:
    """The strategy ``name`` resolves to, from ``TF_CONFIG`` and the GPUs; no TF work.

    Args:
        name: one of ``keras_resnet.constants.STRATEGIES``.
        environ: the environment holding ``TF_CONFIG`` (default ``os.environ``).
        gpus: visible GPUs (default: counted by ``tf.config.list_physical_devices``, which
            starts no TensorFlow runtime); only ``"auto"`` without a cluster asks.

    Returns:
        ``"one-device"``, ``"mirrored"`` or ``"multi-worker"``.

    Raises:
        TypeError, ValueError: an unknown name; a bad ``TF_CONFIG`` (see ``read_cluster``);
            ``"multi-worker"`` without a ``TF_CONFIG`` cluster; ``"one-device"`` or
            ``"mirrored"`` while ``TF_CONFIG`` names several tasks (each process would train
            alone and they would overwrite each other's run).
    """
    checks.one_of(name, "strategy", STRATEGIES)
    cluster = read_cluster(environ)
    workers = cluster.num_workers if cluster else 0
    if name == "multi-worker" and cluster is None:
        raise ValueError("strategy 'multi-worker' needs TF_CONFIG naming the cluster and this "
                         "process's task (e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
                         "[\"host1:12345\", \"host2:12345\"]}, \"task\": {\"type\": \"worker\", "
                         "\"index\": 0}}'); got no TF_CONFIG")
    if name in ("one-device", "mirrored") and workers > 1:
        raise ValueError(f"strategy {name!r} trains on one machine but TF_CONFIG names "
                         f"{workers} tasks; use strategy 'multi-worker' (or 'auto') or unset "
                         "TF_CONFIG")
    if name != "auto":
        return name
    if workers > 1:
        return "multi-worker"
    if gpus is None:
        import tensorflow as tf

        gpus = len(tf.config.list_physical_devices("GPU"))
    return "mirrored" if gpus > 1 else "one-device"


def make_strategy(name: str = DEFAULT_STRATEGY, *, devices=None,
                  collective_timeout: float = DEFAULT_COLLECTIVE_TIMEOUT,
                  worker_timeout: float = DEFAULT_TRAIN_WORKER_TIMEOUT) -> tuple:
    """Creates the ``tf.distribute`` strategy ``name`` picks; call it before any other TF op.

    ``MultiWorkerMirroredStrategy`` must be created before TensorFlow runs anything in the
    process (it starts the process's gRPC server), so build it first, then the data and model.

    Args:
        name: ``"auto"``, ``"one-device"``, ``"mirrored"`` or ``"multi-worker"``.
        devices: device names (``["/gpu:0", "/gpu:1"]``, or logical CPUs
            ``["/cpu:0", "/cpu:1"]``) for ``"mirrored"``, one device for ``"one-device"``
            (``"auto"`` picks ``"mirrored"`` for several); None: the GPUs (else the CPU).
            Not for ``"multi-worker"`` (each worker uses its GPUs, else its CPU).
        collective_timeout: seconds a multi-worker all-reduce waits for a peer before the job
            stops with an error (a killed worker); TensorFlow's health check also aborts
            collectives when a peer stops answering.
        worker_timeout: seconds a multi-worker task waits for every other task of
            ``TF_CONFIG`` to answer on its port before it gives up (``cluster.wait_for_peers``:
            it logs whom it waits for, and SIGTERM / SIGINT stop it).

    Returns:
        ``(strategy, description)``: the ``tf.distribute.Strategy`` and a JSON-ready dict
        (``strategy``, ``replicas``, ``workers``, ``task_type``, ``task_index``, ``is_chief``,
        ``devices``) for ``metrics.json``.

    Raises:
        TypeError, ValueError: see ``choose_strategy``; a bad ``devices``,
            ``collective_timeout`` or ``worker_timeout``. All before TensorFlow starts anything.
        cluster.WorkerTimeoutError: a peer still not answering after ``worker_timeout``.
    """
    devices = _devices(devices)
    collective_timeout = checks.positive_number(collective_timeout, "collective_timeout",
                                                example="300")
    worker_timeout = checks.positive_number(worker_timeout, "worker_timeout", example="600")
    chosen = choose_strategy(name, gpus=None if name == "auto" and devices is None
                             else len(devices or ()))
    if chosen == "multi-worker" and devices is not None:
        raise ValueError(f"devices applies to strategies 'mirrored' and 'one-device'; "
                         f"got devices={list(devices)!r} with strategy {chosen!r}")
    if chosen == "one-device" and devices is not None and len(devices) != 1:
        raise ValueError(f"strategy 'one-device' takes one device; got devices="
                         f"{list(devices)!r}")
    cluster = read_cluster() if chosen == "multi-worker" else None
    if cluster is not None:
        wait_for_peers(cluster, worker_timeout)
    strategy = _create(chosen, devices, collective_timeout)
    description = describe(strategy, chosen, cluster)
    if chosen == "mirrored" and description["replicas"] == 1:
        logger.info("MirroredStrategy has 1 device (%s): training runs as on one device; "
                    "several GPUs (or devices=[...]) give it replicas to mirror",
                    description["devices"][0])
    logger.debug("Training with %s: %d replica(s) on %d worker(s)%s", chosen,
                description["replicas"], description["workers"],
                f" (this is {cluster.task_type} {cluster.task_index})" if cluster else "")
    return strategy, description


def _devices(devices):
    if devices is None:
        return None
    if isinstance(devices, str) or not all(isinstance(d, str) and d for d in devices) \
            or not devices:
        raise TypeError(f"devices must be a non-empty list of device names (e.g. "
                        f"['/gpu:0', '/gpu:1']) or None; got {devices!r}")
    return tuple(devices)


def _create(chosen, devices, collective_timeout):
    import tensorflow as tf

    if chosen == "multi-worker":
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if chosen == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if devices is None:
        return tf.distribute.get_strategy()
    return tf.distribute.OneDeviceStrategy(devices[0])


def describe(strategy, name: str, cluster: Cluster | None = None) -> dict:
    """What ``metrics.json`` records about a strategy (see ``make_strategy``)."""
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        devices = ["/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0"]
    else:
        devices = list(strategy.extended.worker_devices)
    return {
        "strategy": name,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": cluster.num_workers if cluster else 1,
        "task_type": cluster.task_type if cluster else None,
        "task_index": cluster.task_index if cluster else None,
        "is_chief": cluster.is_chief if cluster else True,
        "devices": devices,
    }


def scaled_learning_rate(learning_rate: float, batch_size: int, *,
                         base_batch_size: int = BASE_BATCH_SIZE) -> float:
    """The linear scaling rule: ``learning_rate * batch_size / base_batch_size``.

    Goyal et al. 2017: when the (global) batch grows k times, multiply the learning rate by k,
    so each image moves the weights as much as before. ``learning_rate`` is the rate for a batch
    of ``base_batch_size`` (He et al.'s 0.1 is for their batch of 128); with a strategy the
    batch is the global one, summed over replicas and workers.

    Args:
        learning_rate: the rate for a batch of ``base_batch_size``.
        batch_size: the global batch of the run.
        base_batch_size: the batch ``learning_rate`` is given for.

    Returns:
        The scaled rate.

    Raises:
        TypeError, ValueError: a non-positive or non-numeric argument.
    """
    learning_rate = checks.positive_number(learning_rate, "learning_rate", example="0.1")
    batch_size = checks.positive_int(batch_size, "batch_size")
    base_batch_size = checks.positive_int(base_batch_size, "base_batch_size")
    return learning_rate * batch_size / base_batch_size
