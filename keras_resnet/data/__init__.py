"""Data sets as ``tf.data`` pipelines: digits (embedded), CIFAR-10, synthetic, image folders and
directories of TFRecord shards (``prepare``'s output, ImageNet TFRecords).

``load_dataset`` returns a ``Dataset``: batched ``train`` / ``validation`` / ``test`` pipelines of
``(images, integer labels)`` plus metadata. Images are float32 *raw* pixel values (0..255);
normalization belongs to the model (``keras_resnet.modeling.recipe.build_model`` prepends a
``Normalization`` layer holding ``Dataset.mean`` / ``Dataset.variance``), so an exported model takes
raw pixels. The small sources live in memory (``arrays``); folders and shards stream
(``streaming``); ``prepare`` turns a folder into shards.
"""

from __future__ import annotations

import os
from typing import Any

from keras_resnet._tensorflow import require_tensorflow

require_tensorflow("data pipelines (keras_resnet.data, tf.data)")

from keras_resnet import constants
from keras_resnet.data.arrays import (CIFAR10_CACHE_NAME, CIFAR10_CLASSES, CIFAR10_SHA256,
                                      CIFAR10_URL, augmentation_layers)
from keras_resnet.data.dataset import DataError, Dataset, source_name
from keras_resnet.data.options import COLOR_MODES, LoadOptions, make_options

SOURCES = constants.DATA_NAMES

__all__ = ["CIFAR10_CACHE_NAME", "CIFAR10_CLASSES", "CIFAR10_SHA256", "CIFAR10_URL",
           "COLOR_MODES", "DataError", "Dataset", "LoadOptions", "SOURCES",
           "augmentation_layers", "check_image_size", "decode_for_eval", "explain_errors",
           "load_dataset", "minimum_image_size", "prepare", "source_name"]


def load_dataset(name_or_path: str | os.PathLike = "digits", *, batch_size: int = 64,
                 seed: int = 0, validation_split: float = 0.1, test_split: float = 0.2,
                 augment: bool = True, padding: int | None = None, flip: bool | None = None,
                 image_size: int | tuple[int, int] | None = None, color_mode: str | None = None,
                 cache_dir: str | os.PathLike | None = None, num_classes: int | None = None,
                 num_examples: int = 1000, check_images: bool = True, crop: str | None = None,
                 crop_fraction: float | None = None, rand_augment: bool = False,
                 label_offset: int | None = None, input_context: Any = None,
                 deterministic: bool | None = None,
                 shuffle_buffer: int = constants.DEFAULT_SHUFFLE_BUFFER,
                 cache_mb: float = constants.DEFAULT_CACHE_MB, mixup: float = 0.0,
                 cutmix: float = 0.0) -> Dataset:
    """Loads a data set as batched ``tf.data`` pipelines of raw float32 pixels and int labels.

    Sources:

    * ``"digits"`` (default): scikit-learn's bundled 8x8 handwritten digits (1,797 images,
      10 classes), offline; pixels 0..16 are scaled to 0..255. A stratified split from ``seed``
      holds out ``test_split`` for testing and ``validation_split`` of the rest for validation.
    * ``"cifar10"``: CIFAR-10 through ``keras.utils.get_file`` (official URL and sha256) into
      Keras' cache (``$KERAS_HOME/datasets`` or ``cache_dir``), the entry ``keras.datasets.cifar10``
      uses. The official 10,000 test images are the test split.
    * ``"synthetic"``: ``num_examples`` learnable images of ``image_size`` (default 32x32).
    * a directory of TFRecord shards (``train-00000-of-00016``, ``validation-…``, optional
      ``test-…``) in the ImageNet / TF Model Garden format, e.g. made by ``prepare``: streamed;
      class names, label offset, the default image size and the statistics come from its
      ``dataset.json`` (without one, pass ``num_classes`` and ``label_offset``). Without test
      shards the validation split is the test split.
    * a directory with one sub-folder of images per class (bmp, gif, jpeg, png): streamed from
      the file list (split by ``seed``); every image is decoded once up front when
      ``check_images`` (a corrupt file raises ``DataError`` naming it); the file bytes stay in
      memory when they total at most ``cache_mb``. ``image_size`` defaults to the first image's.

    Images of ``image_size`` >= 64 get the ImageNet recipe (``crop="inception"``: a random-resized
    crop + flip for training, a 0.875 center crop for evaluation); smaller ones the CIFAR recipe
    (``crop="pad"``: zero padding + random crop + flip, evaluation on the whole image).

    Args:
        name_or_path: a source name above or a directory path.
        batch_size: images per batch; with ``input_context`` the global batch.
        seed: fixes the split, the shuffling and the augmentation.
        validation_split: fraction of the non-test images held out for validation (0: none).
        test_split: fraction of all images held out for testing (digits, folders, synthetic).
        augment: augment the training pipeline.
        padding: pad-and-crop padding in pixels (default 1 for digits, 4 for CIFAR-10, an eighth
            of the image size otherwise).
        flip: random horizontal flips (default False for digits, True otherwise).
        image_size: ``(height, width)`` (or one int) of the images the pipelines produce.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` (folders, shards).
        cache_dir: Keras cache directory for CIFAR-10.
        num_classes: classes of the synthetic data, or of TFRecords without a dataset.json.
        num_examples: images of the synthetic data.
        check_images: decode every image of a folder once before training.
        crop: ``"inception"`` or ``"pad"`` for folders and shards (default by image size).
        crop_fraction: the evaluation center crop (default 0.875 with ``"inception"``, else 1).
        rand_augment: add Keras' ``RandAugment`` layer after the random-resized crop.
        label_offset: subtracted from stored labels (default: dataset.json's, else 0).
        input_context: a ``tf.distribute.InputContext``: this pipeline reads its share (by
            shard file where there are enough) at the per-replica batch size.
        deterministic: element order of the parallel maps (default: free for training,
            fixed for evaluation); True for reproducible runs.
        shuffle_buffer: records in the shuffle buffer of a TFRecord stream.
        cache_mb: largest folder (total file size, MiB) whose bytes are kept in memory.
        mixup: Keras' ``MixUp(alpha=mixup)`` on training batches (0: off); labels become
            one-hot in every split (``Dataset.one_hot_labels``; ``keras_resnet.data.mixing``).
        cutmix: Keras' ``CutMix(factor=cutmix)`` in [0, 1] likewise (0: off); with both, the
            training batches take turns.

    Returns:
        A ``Dataset``.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a bad argument value or an unknown source; ``DataError`` (a ValueError) for
            a source that cannot be used (empty split, missing feature, corrupt image).
    """
    options = make_options(
        batch_size=batch_size, seed=seed, validation_split=validation_split,
        test_split=test_split, augment=augment, padding=padding, flip=flip,
        image_size=image_size, color_mode=color_mode, cache_dir=cache_dir,
        num_classes=num_classes, num_examples=num_examples, check_images=check_images,
        crop=crop, crop_fraction=crop_fraction, rand_augment=rand_augment,
        label_offset=label_offset,
        input_context=input_context, deterministic=deterministic,
        shuffle_buffer=shuffle_buffer, cache_mb=cache_mb, mixup=mixup, cutmix=cutmix)
    from keras_resnet.data import mixing

    return mixing.apply_mixing(_load(_source(name_or_path), options), options)


def _source(name_or_path) -> str:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a data set name or a directory path; "
                        f"got {name_or_path!r}")
    return os.fspath(name_or_path)


def _load(name: str, options: LoadOptions) -> Dataset:
    from keras_resnet.data import arrays, directories, folders

    if name in SOURCES:
        if name != "synthetic":
            directories.check_num_classes(name, options.num_classes, 10, "classes")
        return arrays.load_arrays(name, options)
    if directories.is_record_dir(name):
        return directories.load_records(name, options)
    if folders.is_class_folder(name):
        return directories.load_folder(name, options)
    if os.path.isdir(name):
        raise DataError(f"data directory {name!r} holds neither TFRecord shards "
                        "(train-00000-of-NNNNN, validation-…) nor class sub-folders of images")
    if os.path.exists(name):
        raise DataError(f"data {name!r} is a file; pass {', '.join(map(repr, SOURCES))}, a "
                        "directory with one sub-folder of images per class or a directory of "
                        "TFRecord shards")
    raise DataError(f"unknown data set {name!r}: not one of {', '.join(SOURCES)} and not an "
                    "existing directory (class sub-folders of images, or TFRecord shards)")


def minimum_image_size(model: str) -> int:
    """The smallest height and width a named network accepts (its total stride).

    Args:
        model: a name of ``keras_resnet.modeling.presets.MODEL_PRESETS`` (``"resnet50"``, ...).

    Returns:
        32 for the ImageNet networks (stride-4 stem, three stride-2 stages), 4 for the CIFAR
        ones (stride-1 stem, two stride-2 stages).
    """
    from keras_resnet.modeling import presets

    family, _ = presets.MODEL_PRESETS[presets.check_model_name(model)]
    return 32 if family == "imagenet" else 4


def check_image_size(image_size, model: str, argument: str = "image_size") -> tuple:
    """Checks ``image_size`` against ``model``'s minimum before anything loads.

    Returns:
        ``(height, width)``.

    Raises:
        TypeError: not an int or a pair of ints.
        ValueError: below ``minimum_image_size(model)``.
    """
    from keras_resnet.data.options import image_size as as_size

    size = as_size(image_size, argument)
    smallest = minimum_image_size(model)
    if size is not None and min(size) < smallest:
        raise ValueError(f"{argument} must be at least {smallest}x{smallest} for {model!r} (its "
                         f"total stride); got {image_size!r}")
    return size


def decode_for_eval(image_bytes, image_size, channels=3, crop_fraction=0.875):
    """The evaluation preprocessing (bytes -> float32 image); see ``data.images``."""
    from keras_resnet.data import images

    return images.decode_for_eval(image_bytes, image_size, channels, crop_fraction)


def explain_errors(dataset: Dataset):
    """Context manager: a corrupt record met in ``dataset`` -> ``DataError`` naming the shard
    and record (see ``data.streaming.explain_errors``)."""
    from keras_resnet.data import streaming

    return streaming.explain_errors(dataset)


def prepare(*args, **kwargs):
    """Folder -> TFRecord shards; see ``keras_resnet.data.shards.prepare``."""
    from keras_resnet.data import shards

    return shards.prepare(*args, **kwargs)
