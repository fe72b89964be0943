"""MixUp and CutMix on training batches, with Keras' own layers (``keras.layers.MixUp``,
``keras.layers.CutMix``), in the ``tf.data`` pipeline.

Mixed images carry mixed (soft) labels, so a data set loaded with ``mixup`` or ``cutmix`` gives
one-hot float labels in every split (``Dataset.one_hot_labels``): the training batches mixed,
validation and test one-hot and unmixed, so ``model.evaluate`` and the saved model agree with
the categorical loss and metrics the run compiles (``compile_model(one_hot_labels=True)``).
With both off (the default) the ``Dataset`` is returned unchanged.
"""

from __future__ import annotations

import dataclasses

from keras_resnet.data.dataset import Dataset
from keras_resnet.data.options import LoadOptions


def mixing_layers(options: LoadOptions) -> list:
    """Keras' ``MixUp(alpha=mixup)`` and/or ``CutMix(factor=cutmix)`` (float32, seeded by the
    run's seed); empty when both are 0."""
    import keras

    layers = []
    if options.mixup:
        layers.append(keras.layers.MixUp(alpha=options.mixup, seed=options.seed,
                                         dtype="float32", name="mixup"))
    if options.cutmix:
        layers.append(keras.layers.CutMix(factor=options.cutmix, seed=options.seed + 1,
                                          dtype="float32", name="cutmix"))
    return layers


def apply_mixing(dataset: Dataset, options: LoadOptions) -> Dataset:
    """``dataset`` with mixed training batches and one-hot labels everywhere (see the module).

    Each training batch (the per-replica batch under an ``InputContext``: the pipeline is
    already sharded and batched) goes through one layer: MixUp, CutMix, or with both the two in
    turn (even batches MixUp, odd CutMix). The map runs in order, so the layers' seeded random
    draws follow the batches (the same run with the same seed mixes the same way).
    """
    layers = mixing_layers(options)
    if not layers:
        return dataset
    import tensorflow as tf

    classes = dataset.num_classes

    def one_hot(images, labels):
        return images, tf.one_hot(tf.cast(labels, tf.int32), classes, dtype=tf.float32)

    def mixed(layer, images, labels):
        out = layer({"images": images, "labels": labels}, training=True)
        return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], tf.float32)

    def mix(index, batch):
        images, labels = one_hot(*batch)
        if len(layers) == 1:
            return mixed(layers[0], images, labels)
        return tf.cond(index % 2 == 0, lambda: mixed(layers[0], images, labels),
                       lambda: mixed(layers[1], images, labels))

    def evaluation(split):
        return None if split is None else split.map(one_hot)

    def mix_batches(batches):
        return batches.enumerate().map(mix).prefetch(tf.data.AUTOTUNE)

    order = dataset.train_order
    if order is not None:  # mixed inside each epoch, so a resumed epoch is mixed too
        order = order.then(mix_batches)
        train = order.pipeline()
    else:
        train = mix_batches(dataset.train)
    augmentation = dict(dataset.augmentation or {})
    augmentation.update({k: getattr(options, k) for k in ("mixup", "cutmix")
                         if getattr(options, k)})
    return dataclasses.replace(dataset, train=train, validation=evaluation(dataset.validation),
                               test=evaluation(dataset.test), augmentation=augmentation,
                               one_hot_labels=True, train_order=order)


def check_fine_tuning(data_options: dict, weights) -> None:
    """MixUp/CutMix need the categorical loss that ``train`` compiles; fine-tuning (``weights``)
    compiles its own sparse one, so the two do not combine.

    Raises:
        ValueError: ``weights`` together with ``mixup`` or ``cutmix`` in ``data_options``.
    """
    mixing = {k: data_options.get(k) for k in ("mixup", "cutmix") if data_options.get(k)}
    if weights is not None and mixing:
        raise ValueError(f"mixup/cutmix apply to training from scratch, not to fine-tuning "
                         f"weights={weights!r}; got {mixing!r}")
