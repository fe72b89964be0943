"""Directories as ``Dataset``s: TFRecord shards (``prepare``'s output, ImageNet TFRecords) and
folders with one sub-folder of images per class. Both stream (``keras_resnet.data.streaming``)."""

from __future__ import annotations

import logging
import os

import numpy as np

from keras_resnet.data import folders, streaming, tfrecord
from keras_resnet.data.dataset import DataError, Dataset
from keras_resnet.data.options import CHANNELS, LoadOptions

log = logging.getLogger(__name__)


def is_record_dir(path: str) -> bool:
    """Whether ``path`` holds TFRecord shards (``train-00000-of-00004`` ...)."""
    return os.path.isdir(path) and bool(tfrecord.find_shards(path))


def _split_sizes(path, shards, metadata):
    """Records per split, from dataset.json or by counting (which also finds truncated shards)."""
    sizes = {}
    for split, files in shards.items():
        counted = (metadata or {}).get("splits", {}).get(split, {}).get("count")
        sizes[split] = counted if counted is not None else sum(
            tfrecord.count_records(f) for f in files)
        if sizes[split] == 0:
            raise DataError(f"the {split!r} split of {path!r} is empty: its "
                            f"{len(files)} shard(s) hold no records")
    return sizes


def check_num_classes(name, num_classes, found: int, where: str) -> None:
    """A ``num_classes`` given for a source that names its own classes must agree with it.

    Raises:
        DataError: naming both values.
    """
    if num_classes and num_classes != found:
        raise DataError(f"num_classes is {num_classes} but {name!r} has {found} {where}; drop "
                        f"num_classes (--num-classes) or pass {found}")


def _record_classes(path, metadata, options, stored_labels, label_offset):
    if metadata and metadata.get("class_names"):
        names = tuple(metadata["class_names"])
    elif options.num_classes:
        names = tuple(f"class_{i}" for i in range(options.num_classes))
    else:
        raise DataError(f"TFRecord directory {path!r} has no dataset.json naming its classes; "
                        "pass num_classes (--num-classes N) (and label_offset=1 for ImageNet "
                        "TFRecords whose labels count from 1)")
    check_num_classes(path, options.num_classes, len(names), "classes in its dataset.json")
    for file, label in stored_labels:
        if label is not None and not 0 <= label - label_offset < len(names):
            raise DataError(f"shard {file!r} holds label {label}, outside 0..{len(names) - 1} "
                            f"after label_offset {label_offset}; pass label_offset (1 for "
                            "ImageNet TFRecords counted from 1) or num_classes")
    return names


def load_records(path: str, options: LoadOptions) -> Dataset:
    """A directory of TFRecord shards as a streamed ``Dataset`` (see ``load_dataset``)."""
    import tensorflow as tf

    metadata = tfrecord.read_metadata(path) or {}
    shards = tfrecord.find_shards(path)
    if "train" not in shards:
        raise DataError(f"TFRecord directory {path!r} has no train-NNNNN-of-NNNNN shards; found "
                        f"{', '.join(sorted(shards))} only")
    if "validation" not in shards and "test" not in shards:
        raise DataError(f"TFRecord directory {path!r} has no validation or test shards to "
                        "evaluate on; prepare it with a validation split > 0")
    stored = [(f, tfrecord.check_first_record(f)) for files in shards.values() for f in files]
    sizes = _split_sizes(path, shards, metadata)
    label_offset = (options.label_offset if options.label_offset is not None
                    else int(metadata.get("label_offset", 0)))
    names = _record_classes(path, metadata, options, stored, label_offset)
    color_mode = options.color_mode or metadata.get("color_mode", "rgb")
    channels = CHANNELS[color_mode]
    size = options.image_size or tuple(metadata.get("default_image_size") or
                                       (streaming.DEFAULT_RECORD_IMAGE_SIDE,) * 2)
    train_fn, eval_fn, augmentation, fraction = streaming.recipe(options, size, channels)
    if metadata.get("mean") and len(metadata["mean"]) == channels:
        mean, variance = tuple(metadata["mean"]), tuple(metadata["variance"])
    else:
        encoded = tf.data.TFRecordDataset(shards["train"]).map(lambda r: tfrecord.parse(r)[0])
        try:
            mean, variance = streaming.statistics(encoded, eval_fn, channels)
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            streaming.raise_located(shards["train"], channels, error)

    def pipeline(split):
        return streaming.record_pipeline(shards[split], eval_fn, options, False, label_offset,
                                         sizes[split], num_classes=len(names))

    order = streaming.record_order(shards["train"], train_fn, options, label_offset,
                                   sizes["train"], num_classes=len(names))
    return Dataset(
        name=path, train=order.pipeline(), train_order=order,
        validation=pipeline("validation") if "validation" in shards else None,
        test=pipeline("test" if "test" in shards else "validation"), class_names=names,
        input_shape=(*size, channels),
        num_classes=len(names), train_size=sizes["train"],
        validation_size=sizes.get("validation", 0),
        test_size=sizes.get("test", sizes.get("validation", 0)), batch_size=options.batch_size,
        mean=mean, variance=variance, augmentation=augmentation, crop_fraction=fraction,
        files=tuple(f for files in shards.values() for f in files), label_offset=label_offset)


def _first_image(file, options):
    from PIL import Image

    with Image.open(file) as first:
        size = options.image_size or (first.height, first.width)
        gray = first.mode in ("1", "L", "LA", "I", "I;16", "F")
        return size, options.color_mode or ("grayscale" if gray else "rgb")


def _decodable(path, files, labels, options):
    """``files`` and ``labels`` without the images that do not decode (listed in a warning;
    with ``options.strict`` a ``DataError``), when ``options.check_images``."""
    if not options.check_images:
        return files, labels
    bad = folders.find_bad_images(files)
    folders.report_bad_images(bad, path, options.strict)
    if not bad:
        return files, labels
    skip = {file for file, _ in bad}
    kept = [(file, label) for file, label in zip(files, labels) if file not in skip]
    if not kept:
        raise DataError(f"data folder {path!r}: none of its {len(files)} images decodes")
    return [file for file, _ in kept], [label for _, label in kept]


def load_folder(path: str, options: LoadOptions) -> Dataset:
    """A folder of class sub-folders as a streamed ``Dataset`` (see ``load_dataset``)."""
    import tensorflow as tf

    names, files, labels = folders.list_images(path)
    check_num_classes(path, options.num_classes, len(names), "class sub-folders")
    if options.test_split == 0:
        raise ValueError("test_split must be > 0 for a folder (it has no separate test set); "
                         "got 0")
    files, labels = _decodable(path, files, labels, options)
    validation, test = folders.holdout_sizes(len(files), options.validation_split,
                                             options.test_split)
    train_index, val_index, test_index = folders.split_indices(len(files), options.seed,
                                                               (validation, test))
    if len(train_index) == 0 or len(test_index) == 0:
        raise DataError(f"data folder {path!r}: the split left {len(train_index)} training and "
                        f"{len(test_index)} test images; lower test_split/validation_split or "
                        "add images")
    size, color_mode = _first_image(files[0], options)
    channels = CHANNELS[color_mode]
    train_fn, eval_fn, augmentation, fraction = streaming.recipe(options, size, channels)
    cache = sum(os.path.getsize(f) for f in files) <= options.cache_mb * 2 ** 20

    def pipeline(index):
        return streaming.file_pipeline([files[i] for i in index], [labels[i] for i in index],
                                       eval_fn, options, False, cache)

    order = streaming.file_order([files[i] for i in train_index],
                                 [labels[i] for i in train_index], train_fn, options, cache)

    sample = [files[i] for i in np.random.default_rng(options.seed).permutation(
        train_index)[:streaming.STATS_SAMPLE]]
    try:
        mean, variance = streaming.statistics(
            tf.data.Dataset.from_tensor_slices(sample).map(tf.io.read_file), eval_fn, channels)
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        streaming.raise_located(sample, channels, error)
    return Dataset(
        name=path, train=order.pipeline(), train_order=order,
        validation=pipeline(val_index) if len(val_index) else None, test=pipeline(test_index),
        class_names=names, input_shape=(*size, channels), num_classes=len(names),
        train_size=len(train_index), validation_size=len(val_index), test_size=len(test_index),
        batch_size=options.batch_size, mean=mean, variance=variance, augmentation=augmentation,
        crop_fraction=fraction, files=tuple(files))
