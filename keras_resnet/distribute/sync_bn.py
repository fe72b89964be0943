"""Cross-replica batch normalization (``--sync-bn``).

Under a strategy with several replicas, every ``BatchNormalization`` layer normalizes with the
statistics of its own replica's share of the batch (the global batch / replicas), and the moving
statistics kept are those of one replica: Keras' layer and the project's
``FusedBatchNormalization`` (``keras_resnet.modeling.fused_batch_norm``) behave identically there.
``synchronize_batch_norm`` rebuilds a model with ``synchronized=True`` on every batch
normalization layer: Keras then all-reduces the batch's sum and sum of squares across replicas,
so a step on N replicas equals a step on one device with the global batch
(``FusedBatchNormalization`` steps aside to Keras' implementation for synchronized layers).
It matters when the per-replica batch is small (detection, large images); with 32+ images per
replica the difference is small and the all-reduce per layer costs time.
"""

from __future__ import annotations

import keras


def synchronize_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` whose batch normalization layers (in nested models too) use
    cross-replica statistics.

    Call it under ``strategy.scope()`` so the copy's variables are distributed; the copy has
    the same layers, names and weights (moving statistics included) as ``model``.

    Args:
        model: a functional or sequential ``keras.Model``.

    Returns:
        The new model (uncompiled); ``model`` itself is not changed.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {model!r}")
    return _clone(model, True)


def _clone(model, sync_bn):
    def clone(layer):
        config = layer.get_config()
        if sync_bn and isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


def replicate(model: keras.Model, strategy, *, sync_bn: bool = False) -> keras.Model:
    """``model`` with its variables in ``strategy``'s scope (mirrored over its replicas).

    A model built outside ``strategy.scope()`` (a ``keras.Model`` a user passed in) is
    rebuilt inside it with the same layers and weights; with ``sync_bn`` its batch
    normalization layers also get cross-replica statistics. Under TensorFlow's default
    strategy (one device) without ``sync_bn``, ``model`` itself is returned.

    Args:
        model: a functional or sequential ``keras.Model``.
        strategy: a ``tf.distribute.Strategy``.
        sync_bn: synchronize batch normalization (``synchronize_batch_norm``).

    Returns:
        The model to compile and train under ``strategy.scope()``.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``; ``sync_bn`` is not a bool.
    """
    import tensorflow as tf

    from keras_resnet import checks

    checks.boolean(sync_bn, "sync_bn")
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {model!r}")
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy() \
            and not sync_bn:
        return model
    with strategy.scope():
        return _clone(model, sync_bn)


def count_synchronized(model: keras.Model) -> int:
    """Batch normalization layers of ``model`` (nested models included) with
    ``synchronized=True``."""
    return sum(1 for layer in _layers(model)
               if isinstance(layer, keras.layers.BatchNormalization) and layer.synchronized)


def _layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _layers(layer)
