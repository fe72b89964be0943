"""Data sets as ``tf.data`` pipelines: digits (embedded), CIFAR-10, synthetic, image folders and
directories of TFRecord shards (``prepare``'s output, ImageNet TFRecords).

``load_dataset`` returns a ``Dataset``: batched ``train`` / ``validation`` / ``test`` pipelines of
``(images, integer labels)`` plus metadata. Images are float32 *raw* pixel values (0..255);
normalization belongs to the model (``keras_resnet.modeling.recipe.build_model`` prepends a
``Normalization`` layer holding ``Dataset.mean`` / ``Dataset.variance``), so an exported model takes
raw pixels. The small sources live in memory (``arrays``); folders and shards stream
(``streaming``); ``prepare`` turns a folder into shards.

This module only re-exports: each name lives in the submodule that defines it (``loading``,
``options``, ``dataset``, ``arrays``, ``images``, ``streaming``, ``shards``).
"""

from __future__ import annotations

from keras_resnet._tensorflow import require_tensorflow

require_tensorflow("data pipelines (keras_resnet.data, tf.data)")

from keras_resnet.data.arrays import (CIFAR10_CACHE_NAME, CIFAR10_CLASSES, CIFAR10_SHA256,
                                      CIFAR10_URL, augmentation_layers)
from keras_resnet.data.dataset import DataError, Dataset, source_name
from keras_resnet.data.images import decode_for_eval
from keras_resnet.data.loading import (SOURCES, check_image_size, load_dataset,
                                       minimum_image_size)
from keras_resnet.data.options import COLOR_MODES, LoadOptions
from keras_resnet.data.shards import prepare
from keras_resnet.data.streaming import explain_errors

__all__ = ["CIFAR10_CACHE_NAME", "CIFAR10_CLASSES", "CIFAR10_SHA256", "CIFAR10_URL",
           "COLOR_MODES", "DataError", "Dataset", "LoadOptions", "SOURCES",
           "augmentation_layers", "check_image_size", "decode_for_eval", "explain_errors",
           "load_dataset", "minimum_image_size", "prepare", "source_name"]
