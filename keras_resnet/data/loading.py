"""``load_dataset``: a source name or directory -> a ``Dataset``, and the image-size checks the
run makes before loading."""

from __future__ import annotations

import os
from typing import Any

from keras_resnet import constants
from keras_resnet.data import mixing
from keras_resnet.data.dataset import DataError, Dataset
from keras_resnet.data.options import LoadOptions

SOURCES = constants.DATA_NAMES


def load_dataset(source: str | os.PathLike = "digits", options: LoadOptions | None = None,
                 **overrides: Any) -> Dataset:
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
      ``check_images``: undecodable files are skipped and listed in a warning (with ``strict``,
      a ``DataError`` lists them); the file bytes stay in memory when they total at most
      ``cache_mb``. ``image_size`` defaults to the first image's.

    Images of ``image_size`` >= 64 get the ImageNet recipe (``crop="inception"``: a random-resized
    crop + flip for training, a 0.875 center crop for evaluation); smaller ones the CIFAR recipe
    (``crop="pad"``: zero padding + random crop + flip, evaluation on the whole image).

    Args:
        source: a source name above or a directory path.
        options: a ``LoadOptions`` (default: ``LoadOptions()``, whose fields document every
            option and its default).
        **overrides: ``LoadOptions`` fields replacing those of ``options``, e.g.
            ``load_dataset("digits", batch_size=32, augment=False)``.

    Returns:
        A ``Dataset``.

    Raises:
        TypeError: an argument of the wrong type, or an unknown option (the message lists the
            accepted ones).
        ValueError: a bad option value or an unknown source; ``DataError`` (a ValueError) for
            a source that cannot be used (empty split, missing feature, corrupt image).
    """
    if "name_or_path" in overrides:  # the first argument's former keyword
        source = overrides.pop("name_or_path")
    if options is None:
        options = LoadOptions()
    elif not isinstance(options, LoadOptions):
        raise TypeError(f"options must be a keras_resnet.data.LoadOptions or None; "
                        f"got {options!r}")
    options = options.replace(**overrides)
    return mixing.apply_mixing(_load(_source(source), options), options)


def _source(source) -> str:
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a data set name or a directory path; got {source!r}")
    return os.fspath(source)


def _load(name: str, options: LoadOptions) -> Dataset:
    from keras_resnet.data import arrays, directories, folders

    check_source(name)  # a known name or an existing directory from here on
    if name in SOURCES:
        if name != "synthetic":
            directories.check_num_classes(name, options.num_classes, 10, "classes")
        return arrays.load_arrays(name, options)
    if directories.is_record_dir(name):
        return directories.load_records(name, options)
    if folders.is_class_folder(name):
        return directories.load_folder(name, options)
    raise DataError(f"data directory {name!r} holds neither TFRecord shards "
                    "(train-00000-of-NNNNN, validation-…) nor class sub-folders of images")


def check_source(source: str | os.PathLike) -> str:
    """Cheap check of a ``load_dataset`` source, before anything expensive loads.

    Returns:
        ``source`` as a str: a data set name or an existing directory (what is inside a
        directory is checked when it loads).

    Raises:
        TypeError: ``source`` is not a str or path.
        DataError: an unknown name, or a path that is a file or does not exist.
    """
    name = _source(source)
    if name in SOURCES or os.path.isdir(name):
        return name
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
