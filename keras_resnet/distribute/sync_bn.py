"""Cross-replica batch normalization (``--sync-bn``).

Under a strategy with several replicas, every ``BatchNormalization`` layer normalizes with the
statistics of its own replica's share of the batch (the global batch / replicas), and the moving
statistics kept are those of one replica: Keras' layer and the project's
``FusedBatchNormalization`` (``keras_resnet.batch_norm``) behave identically there.
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

    def clone(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["synchronized"] = True
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    copy.set_weights(model.get_weights())
    return copy


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
