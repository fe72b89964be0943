"""Streamed sources: directories of TFRecord shards and folders of image files.

Nothing here grows with the number of images beyond the file list: records and files are read,
decoded and augmented each epoch in parallel (``tf.data``), and only a folder whose files total
less than ``cache_mb`` keeps their encoded bytes in memory.

Training: shuffled file list -> ``interleave`` of ``TFRecordDataset`` -> shuffle buffer of
records -> parse -> decode + augment -> batch -> prefetch, each input pipeline reading its own
files under a ``tf.distribute.InputContext``. The shuffles are keyed by (seed, epoch)
(``keras_resnet.data.position``), so a killed run resumes inside its epoch, and every record
(or file) carries its *sample* number, which keys its augmentation by (seed, epoch, sample) with
stateless random ops, as the in-memory sources do: a resumed run sees the same crops and flips
as an uninterrupted one (``rand_augment`` aside: Keras' layer draws from its own state).

Stream elements are ``(encoded, label, sample)`` (training: ``+ (epoch seed,)``). A record's
sample is ``file number * RECORDS_PER_FILE + its index in the shard``, so a bad label names its
shard and record; an image file's is its index in the file list.
"""

from __future__ import annotations

import contextlib
import logging
import os

import numpy as np

from keras_resnet.data import tfrecord
from keras_resnet.data.dataset import DataError, Dataset
from keras_resnet.data.options import CHANNELS, LoadOptions

log = logging.getLogger(__name__)

# Images (eval-preprocessed) that estimate the per-channel mean and variance when no
# dataset.json holds them: enough for two decimals, bounded whatever the data set's size.
STATS_SAMPLE = 256
# Below this side length the CIFAR recipe (pad + crop) is the default, at or above it the
# ImageNet recipe (random-resized crop, center-crop evaluation).
INCEPTION_MIN_SIDE = 64
DEFAULT_RECORD_IMAGE_SIDE = 224
# Marks the in-graph label check's error (``checked_label``), so ``explain_errors`` names it.
LABEL_ERROR = "label out of range"
# record numbers of one shard: a record's sample is its file's number times this plus its index
RECORDS_PER_FILE = 2 ** 32


def recipe(options: LoadOptions, image_size, channels):
    """``(train_fn, eval_fn, augmentation, crop_fraction)`` for one source: ``eval_fn(bytes)``
    and ``train_fn(bytes, key)``, whose random draws are keyed by the int64 ``[2]`` ``key``."""
    from keras_resnet.data import images
    from keras_resnet.data.arrays import keyed_augmentation

    crop = options.crop or ("inception" if min(image_size) >= INCEPTION_MIN_SIDE else "pad")
    default_fraction = images.EVAL_CROP_FRACTION if crop == "inception" else 1.0
    fraction = options.crop_fraction or default_fraction
    flip = True if options.flip is None else options.flip

    def eval_fn(image_bytes):
        return images.decode_for_eval(image_bytes, image_size, channels, fraction)

    if not options.augment:
        return (lambda image_bytes, key: eval_fn(image_bytes)), eval_fn, None, fraction
    if crop == "inception":
        rand_augment = _rand_augment(options, channels)

        def train_fn(image_bytes, key):
            image = images.decode_for_training(image_bytes, image_size, channels, flip=flip,
                                               key=key)
            return image if rand_augment is None else rand_augment(image, training=True)

        augmentation = {"crop": "inception", "flip": flip}
        if rand_augment is not None:
            augmentation["rand_augment"] = True
        return train_fn, eval_fn, augmentation, fraction
    padding = max(1, image_size[0] // 8) if options.padding is None else options.padding
    augment = keyed_augmentation((*image_size, channels), padding, flip)

    def pad_fn(image_bytes, key):
        return augment(images.decode_for_eval(image_bytes, image_size, channels, 1.0), key)

    return pad_fn, eval_fn, {"padding": padding, "flip": flip}, fraction


def _rand_augment(options, channels):
    """Keras' own ``RandAugment`` layer (2 operations, magnitude 0.5) on 0..255 RGB images."""
    if not options.rand_augment:
        return None
    if channels != 3:
        raise ValueError(f"rand_augment needs RGB images; got {channels} channel(s)")
    import keras

    return keras.layers.RandAugment(value_range=(0, 255), seed=options.seed)


def _finish(dataset, image_fn, options, training, label_offset=0, num_classes=None, files=()):
    """Decodes (and augments) ``(encoded, label, sample[, epoch seed])``, then batches."""
    import tensorflow as tf

    names = tf.constant([os.fspath(file) for file in files] or [""])

    def prepare(image_bytes, label, sample, *epoch_seed):
        label = tf.cast(label - label_offset, tf.int32)
        if num_classes is not None:
            label = checked_label(label, num_classes, label_offset,
                                  where=(tf.gather(names, sample // RECORDS_PER_FILE),
                                         sample % RECORDS_PER_FILE))
        if not epoch_seed:
            return image_fn(image_bytes), label
        # key [epoch seed, sample + 1]: never the file permutation's [epoch seed, 0]
        return image_fn(image_bytes, tf.stack([epoch_seed[0], sample + 1])), label

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=options.is_deterministic(training))
    return dataset.batch(options.per_replica_batch_size()).prefetch(tf.data.AUTOTUNE)


def checked_label(label, num_classes: int, label_offset: int = 0, where=None):
    """``label``, with an assertion in the graph that it lies in ``[0, num_classes)``: a stored
    label outside stops the pipeline with ``LABEL_ERROR`` in the message (``explain_errors``
    turns it into a ``DataError`` naming ``where``, ``(shard name, record index)`` tensors)
    instead of training on it (a NaN loss, or a silent clip)."""
    import tensorflow as tf

    in_range = tf.logical_and(label >= 0, label < tf.constant(num_classes, label.dtype))
    file, index = where if where is not None else (tf.constant("?"), tf.constant(-1, tf.int64))
    # parsed back by explain_errors: [LABEL_ERROR] [file] [index] [stored] [offset] [classes]
    check = tf.debugging.Assert(in_range, [LABEL_ERROR, file, index, label + label_offset,
                                           label_offset, num_classes])
    with tf.control_dependencies([check]):
        return tf.identity(label)


def label_error(message: str) -> str | None:
    """The one-line explanation of ``checked_label``'s assertion message (None: not one)."""
    import re

    found = re.search(rf"\[{LABEL_ERROR}\] \[(.*)\] \[(-?\d+)\] \[(-?\d+)\] \[(-?\d+)\] "
                      rf"\[(\d+)\]", message)
    if found is None:
        return None
    file, index, stored, offset, classes = found.groups()
    where = f"record {index} of shard {file!r}" if int(index) >= 0 else "a record"
    return (f"{LABEL_ERROR}: {where} stores label {stored}; minus label_offset {offset} it "
            f"must be in [0, {classes}) (num_classes {classes}); pass num_classes "
            "(--num-classes) covering every label, or the right label_offset "
            "(--label-offset), or prepare the data again")


def record_pipeline(files, image_fn, options: LoadOptions, training: bool, label_offset=0,
                    count=None, num_classes=None):
    """Batched ``(images, labels)`` streamed from TFRecord shards.

    Each input pipeline of ``options.input_context`` reads its own shards (file-level sharding);
    with fewer shards than pipelines it reads every shard and keeps every n-th record instead.
    ``count`` (the records in ``files``) gives one pipeline a known length, so Keras shows
    progress and does not warn at the end of the first epoch. With ``num_classes`` every label
    is checked in the graph (``checked_label``). Training pipelines are ``record_order``'s.
    """
    if training:
        return record_order(files, image_fn, options, label_offset, count,
                            num_classes).pipeline()
    return _records(files, image_fn, options, False, label_offset, count, num_classes)


def record_order(files, image_fn, options: LoadOptions, label_offset=0, count=None,
                 num_classes=None):
    """The training stream of TFRecord shards as a ``position.TrainOrder``: epoch ``e``'s file
    order and shuffle buffer are seeded by ``(seed, e)``; a resumed epoch skips the records of
    the batches done before parsing or decoding them."""
    from keras_resnet.data import position

    context = options.input_context
    one_pipeline = context is None or context.num_input_pipelines == 1
    steps = -(-count // options.per_replica_batch_size()) if count and one_pipeline else None

    def build(epochs, skip_batches):
        return _record_stream(files, options, True, epochs, skip_batches)

    def finish(records):
        return _parsed(records, image_fn, options, True, label_offset, None, num_classes, files)

    return position.TrainOrder(build, finish, steps)


def _records(files, image_fn, options, training, label_offset, count, num_classes):
    return _parsed(_record_stream(files, options, training), image_fn, options, training,
                   label_offset, count, num_classes, files)


def _record_stream(files, options, training, epochs=None, skip_batches=0):
    """``(serialized record, sample)`` of one epoch in order; training: keyed by the seed and
    the epoch in ``epochs`` (a dataset of one epoch number; ``position.per_epoch``), with the
    epoch seed appended."""
    import tensorflow as tf

    from keras_resnet.data.position import per_epoch, permuted

    deterministic = options.is_deterministic(training)
    context = options.input_context
    pipelines = 1 if context is None else context.num_input_pipelines
    by_record = pipelines > len(files)
    mine = list(range(len(files)))
    if pipelines > 1 and not by_record:
        mine = mine[context.input_pipeline_id::pipelines]  # Dataset.shard's split
    names = tf.constant([os.fspath(file) for file in files])

    def read(number, name):  # the records of one shard, numbered
        return tf.data.TFRecordDataset(name).enumerate().map(
            lambda index, record: (record, number * RECORDS_PER_FILE + index))

    def records(numbers):
        numbers = tf.cast(numbers, tf.int64)
        dataset = tf.data.Dataset.from_tensor_slices((numbers, tf.gather(names, numbers)))
        dataset = dataset.interleave(
            read, cycle_length=min(len(files), 16), block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic or by_record)
        if by_record and pipelines > 1:
            log.warning("%d shards for %d input pipelines: every pipeline reads every shard",
                        len(files), pipelines)
            dataset = dataset.shard(pipelines, context.input_pipeline_id)
        return dataset

    if not training:
        return records(mine)

    def one_epoch(epoch, shuffle_seed):
        numbers = mine if by_record else permuted(np.asarray(mine, "int64"), options.seed,
                                                  epoch)
        dataset = records(numbers).shuffle(options.shuffle_buffer, seed=shuffle_seed,
                                           reshuffle_each_iteration=False)
        # still encoded: skipping reads the records but decodes none
        return dataset.skip(skip_batches * options.per_replica_batch_size()).map(
            lambda record, sample: (record, sample, shuffle_seed))

    return per_epoch(epochs, options.seed, one_epoch)


def _parsed(records, image_fn, options, training, label_offset, count, num_classes, files):
    import tensorflow as tf

    def parse(record, sample, *epoch_seed):
        return (*tfrecord.parse(record), sample, *epoch_seed)

    dataset = records.map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=options.is_deterministic(training))
    context = options.input_context
    if count is not None and (context is None or context.num_input_pipelines == 1):
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return _finish(dataset, image_fn, options, training, label_offset, num_classes, files)


def file_pipeline(files, labels, image_fn, options: LoadOptions, training: bool, cache: bool):
    """Batched ``(images, labels)`` read from image files (their bytes cached when ``cache``);
    training pipelines are ``file_order``'s."""
    if training:
        return file_order(files, labels, image_fn, options, cache).pipeline()
    return _file_epoch(_file_source(files, labels, options, False, cache), len(files), image_fn,
                       options, False, cache)


def _file_source(files, labels, options, training, cache):
    """``(files, labels, samples)`` of this input pipeline: arrays for a training stream of
    names, else a dataset (of the bytes when ``cache``)."""
    import tensorflow as tf

    context = options.input_context
    files, labels = list(files), np.asarray(labels, "int64")
    samples = np.arange(len(files), dtype="int64")
    if context is not None and context.num_input_pipelines > 1:
        part = slice(context.input_pipeline_id, None, context.num_input_pipelines)
        files, labels, samples = files[part], labels[part], samples[part]  # Dataset.shard's
    if training and not cache:  # names and labels, shuffled per epoch by _file_epoch
        return files, labels, samples
    dataset = tf.data.Dataset.from_tensor_slices((files, labels, samples))
    if cache:  # bounded by cache_mb: read once, then shuffle the bytes in memory
        dataset = dataset.map(lambda file, label, sample: (tf.io.read_file(file), label, sample),
                              num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=options.is_deterministic(training)).cache()
    return dataset


def _file_epoch(source, size, image_fn, options, training, cache):
    return _file_finish(_file_stream(source, size, options, training, cache), image_fn,
                        options, training, cache)


def _file_stream(source, size, options, training, cache, epochs=None, skip_batches=0):
    """``(file name or cached bytes, label, sample)`` of one epoch in order; training: keyed by
    the seed and the epoch in ``epochs`` (a dataset of one epoch number), with the epoch seed
    appended."""
    import tensorflow as tf

    from keras_resnet.data.position import per_epoch, permuted

    if not training:
        return source
    skip = skip_batches * options.per_replica_batch_size()  # nothing skipped is decoded

    def names(epoch, shuffle_seed):  # a permutation of the names: nothing but the list in memory
        files, labels, samples = source
        order = permuted(tf.range(len(files), dtype=tf.int64), options.seed, epoch)
        return tf.data.Dataset.from_tensor_slices(
            (tf.gather(files, order), tf.gather(labels, order), tf.gather(samples, order),
             tf.fill(tf.shape(order), shuffle_seed))).skip(skip)

    def cached(_, shuffle_seed):  # the cached bytes (at most cache_mb) shuffled in memory
        return source.shuffle(max(size, 1), seed=shuffle_seed,
                              reshuffle_each_iteration=False).skip(skip).map(
            lambda data, label, sample: (data, label, sample, shuffle_seed))

    return per_epoch(epochs, options.seed, cached if cache else names)


def _file_finish(dataset, image_fn, options, training, cache):
    import tensorflow as tf

    if not cache:  # shuffle the names, read each epoch
        dataset = dataset.map(lambda file, *rest: (tf.io.read_file(file), *rest),
                              num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=options.is_deterministic(training))
    return _finish(dataset, image_fn, options, training)


def file_order(files, labels, image_fn, options: LoadOptions, cache: bool):
    """The training stream of image files as a ``position.TrainOrder`` (epoch ``e`` shuffled by
    ``(seed, e)``; the cached bytes, if any, shared by every epoch)."""
    from keras_resnet.data import position

    source = _file_source(files, labels, options, True, cache)
    context = options.input_context
    pipelines, index = ((1, 0) if context is None else
                        (context.num_input_pipelines, context.input_pipeline_id))
    mine = len(files) // pipelines + (index < len(files) % pipelines)
    steps = -(-mine // options.per_replica_batch_size())

    def build(epochs, skip_batches):
        return _file_stream(source, len(files), options, True, cache, epochs, skip_batches)

    def finish(dataset):
        return _file_finish(dataset, image_fn, options, True, cache)

    return position.TrainOrder(build, finish, steps)


def statistics(encoded, eval_fn, channels):
    """Per-channel mean and variance of up to ``STATS_SAMPLE`` images of a dataset of bytes."""
    import tensorflow as tf

    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    sample = encoded.take(STATS_SAMPLE).map(eval_fn, num_parallel_calls=tf.data.AUTOTUNE)
    for batch in sample.batch(64):
        pixels = batch.numpy().astype("float64").reshape(-1, channels)
        total += pixels.sum(0)
        total_sq += (pixels ** 2).sum(0)
        count += len(pixels)
    mean = total / max(count, 1)
    return tuple(map(float, mean)), tuple(map(float, np.maximum(total_sq / max(count, 1)
                                                                - mean ** 2, 0.0)))


@contextlib.contextmanager
def explain_errors(dataset: Dataset):
    """Turns a TensorFlow error met while iterating ``dataset`` into a ``DataError`` naming the
    shard (or image file) and the record index.

    Wrap ``model.fit`` / ``evaluate`` / a loop over ``dataset.train`` in it. On a
    ``DataLossError`` (a corrupt or truncated record) or an ``InvalidArgumentError`` (an image
    that does not decode) it reads ``dataset.files`` again to find the first bad record; errors
    it cannot place are re-raised unchanged.

    Raises:
        DataError: ``"corrupt record 3 in shard '.../train-00001-of-00004': ..."``.
    """
    import tensorflow as tf

    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
        if LABEL_ERROR in error.message:
            explained = label_error(error.message)
            if explained is None or " of shard " not in explained:
                explained = f"{dataset.name!r}: {explained or _one_line(tfrecord.reason(error))}"
            raise DataError(explained) from None
        raise_located(dataset.files, dataset.input_shape[-1], error)


def raise_located(files, channels, error):
    """Raises ``DataError`` naming the first bad record (or image file) of ``files``; re-raises
    ``error`` itself when every record reads."""
    if not files:
        raise error
    if tfrecord.SHARD_PATTERN.fullmatch(os.path.basename(files[0])):
        found = tfrecord.locate_bad_record(files, channels)
        if found is None:
            raise error
        file, index, reason = found
        raise DataError(f"corrupt record {index} in shard {file!r}: {_one_line(reason)}; "
                        "prepare the data again (keras-resnet prepare) or restore the shard "
                        "from a good copy") from None
    found = locate_bad_image(files, channels)
    if found is None:
        raise error
    raise DataError(f"corrupt or unreadable image {found[0]!r}: {_one_line(found[1])}; "
                    "remove or replace the file") from None


def _one_line(reason: str) -> str:
    return " ".join(reason.split())


def locate_bad_image(files, channels):
    """``(file, reason)`` of the first image file that does not decode, or None."""
    import tensorflow as tf

    for file in files:
        try:
            tf.io.decode_image(tf.io.read_file(file), channels=channels, expand_animations=False)
        except tf.errors.OpError as error:
            return file, tfrecord.reason(error)
    return None


def default_channels(color_mode):
    """Channels of a color mode (None: 3)."""
    return CHANNELS[color_mode or "rgb"]
