"""The TFRecord format of TF Model Garden and the ImageNet-to-TFRecord tools, and the
``dataset.json`` that ``prepare`` writes beside the shards.

One ``tf.train.Example`` per image with the features in ``FEATURES``; shards are named
``{split}-{index:05d}-of-{count:05d}`` (``train-00000-of-00004``).
"""

from __future__ import annotations

import json
import os
import re
import struct

from keras_resnet.data.dataset import DataError

ENCODED = "image/encoded"
LABEL = "image/class/label"
# feature key -> kind ("bytes" or "int64"); all but ENCODED and LABEL are optional on read
FEATURES = {
    ENCODED: "bytes",
    "image/format": "bytes",
    LABEL: "int64",
    "image/class/text": "bytes",
    "image/height": "int64",
    "image/width": "int64",
    "image/filename": "bytes",
}
REQUIRED = (ENCODED, LABEL)
SPLITS = ("train", "validation", "test")
METADATA_FILE = "dataset.json"
SHARD_PATTERN = re.compile(r"(train|validation|test)-(\d{5})-of-(\d{5})(\.tfrecord)?")


def shard_name(split: str, index: int, count: int) -> str:
    """``train-00003-of-00016``."""
    return f"{split}-{index:05d}-of-{count:05d}"


def make_example(encoded: bytes, image_format: str, label: int, text: str, height: int,
                 width: int, filename: str) -> bytes:
    """One serialized ``tf.train.Example`` with every feature of ``FEATURES``."""
    import tensorflow as tf

    def as_bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def as_int(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))

    feature = {ENCODED: as_bytes(encoded), "image/format": as_bytes(image_format.encode()),
               LABEL: as_int(label), "image/class/text": as_bytes(text.encode()),
               "image/height": as_int(height), "image/width": as_int(width),
               "image/filename": as_bytes(filename.encode())}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse(record):
    """A serialized Example -> ``(encoded bytes, stored label)`` tensors (for ``Dataset.map``)."""
    import tensorflow as tf

    spec = {ENCODED: tf.io.FixedLenFeature([], tf.string),
            LABEL: tf.io.FixedLenFeature([], tf.int64)}
    parsed = tf.io.parse_single_example(record, spec)
    return parsed[ENCODED], parsed[LABEL]


def find_shards(path: str) -> dict:
    """``{split: [shard paths]}`` of a directory (splits without shards are left out)."""
    shards = {}
    for entry in sorted(os.listdir(path)):
        match = SHARD_PATTERN.fullmatch(entry)
        if match and os.path.isfile(os.path.join(path, entry)):
            shards.setdefault(match.group(1), []).append(os.path.join(path, entry))
    return shards


def count_records(path: str) -> int:
    """Records in one TFRecord file, found by seeking over the record frames (no data read).

    Raises:
        DataError: the file ends inside a record (a truncated shard), naming it and the record.
    """
    size = os.path.getsize(path)
    count, offset = 0, 0
    with open(path, "rb") as stream:
        while offset < size:
            header = stream.read(8)
            if len(header) < 8:
                break
            length = struct.unpack("<Q", header)[0]
            offset += 8 + 4 + length + 4
            if offset > size:
                break
            stream.seek(offset)
            count += 1
    if offset != size:
        raise DataError(f"truncated TFRecord shard {path!r}: record {count} (0-based) ends past "
                        f"the end of the file; prepare the data again or remove the shard")
    return count


def check_first_record(path: str) -> int | None:
    """Checks that the first record of a shard is an Example with the required features.

    Returns:
        Its stored label (None for an empty shard).

    Raises:
        DataError: naming the file and the missing key (or the reason it cannot be read).
    """
    import tensorflow as tf

    try:
        record = next(iter(tf.data.TFRecordDataset([path]).take(1)), None)
        if record is None:
            return None
        example = tf.train.Example.FromString(record.numpy())
    except (tf.errors.OpError, ValueError) as error:  # DecodeError is a ValueError subclass
        raise DataError(f"TFRecord shard {path!r} cannot be read: {error}") from None
    features = example.features.feature
    for key in REQUIRED:
        kind = FEATURES[key]
        if key not in features or not getattr(features[key], f"{kind}_list").value:
            raise DataError(f"TFRecord shard {path!r} lacks the feature {key!r} ({kind}) in its "
                            f"first record; expected the ImageNet/TF Model Garden format with "
                            f"{', '.join(REQUIRED)}")
    return int(features[LABEL].int64_list.value[0])


def read_metadata(path: str) -> dict | None:
    """The ``dataset.json`` of a directory, or None when there is none."""
    file = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, ValueError) as error:
        raise DataError(f"{file!r} is not a readable dataset.json: {error}") from None


def reason(error) -> str:
    """A TensorFlow error's message without its graph-function and op decorations."""
    message = re.sub(r"\{\{function_node [^}]*\}\}", "", error.message)
    return message.split("[Op:")[0].strip()


def locate_bad_record(files, channels: int = 3) -> tuple[str, int, str] | None:
    """Reads ``files`` record by record; returns ``(file, index, reason)`` of the first bad one.

    A record is bad when its frame is corrupt (CRC), it is not an Example with the required
    features, or its image does not decode. Slow (it decodes every image): call it after an error
    to say where the error is, not before training.
    """
    import tensorflow as tf

    for file in files:
        iterator = iter(tf.data.TFRecordDataset([file]))
        index = 0
        while True:
            try:
                record = next(iterator)
            except StopIteration:
                break
            except tf.errors.OpError as error:
                return file, index, reason(error)
            try:
                encoded, _ = parse(record)
                tf.io.decode_image(encoded, channels=channels, expand_animations=False)
            except tf.errors.OpError as error:
                return file, index, reason(error)
            index += 1
    return None
