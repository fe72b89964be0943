"""Folders with one sub-folder of images per class: the file list, the split, image sizes."""

from __future__ import annotations

import logging
import os
import re

import numpy as np

from keras_resnet.data.dataset import DataError

log = logging.getLogger(__name__)
# bad files a strict error names (a warning names them all)
LISTED_IN_ERRORS = 20

# What TensorFlow's decoders read (a streamed folder decodes in the graph).
STREAM_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# What `prepare` reads (Pillow); TIFF and WebP are re-encoded as PNG.
PREPARE_FORMATS = STREAM_FORMATS + (".tif", ".tiff", ".webp")


def is_class_folder(path: str) -> bool:
    """Whether ``path`` is a directory with at least one sub-directory."""
    return os.path.isdir(path) and any(
        entry.is_dir() and not entry.name.startswith(".") for entry in os.scandir(path))


def list_images(path: str, formats=STREAM_FORMATS) -> tuple[tuple, list, list]:
    """The class names and every image file with its label, sorted.

    Files with other extensions (``.DS_Store``, ``README.txt``) are ignored; hidden folders too.

    Returns:
        ``(class_names, files, labels)``.

    Raises:
        DataError: fewer than two classes or no images.
    """
    classes = tuple(sorted(entry.name for entry in os.scandir(path)
                           if entry.is_dir() and not entry.name.startswith(".")))
    files, labels = [], []
    for label, name in enumerate(classes):
        for entry in sorted(os.scandir(os.path.join(path, name)), key=lambda e: e.name):
            if entry.is_file() and entry.name.lower().endswith(formats):
                files.append(entry.path)
                labels.append(label)
    if not files:
        raise DataError(f"data folder {path!r} has no images: expected one sub-folder per class "
                        f"holding {', '.join(formats)} files; found sub-folders {list(classes)}")
    if len(classes) < 2:
        raise DataError(f"data folder {path!r} needs at least 2 class sub-folders; found "
                        f"{list(classes)}")
    return classes, files, labels


def split_indices(count: int, seed: int, holdouts: tuple) -> list:
    """A seeded permutation of ``range(count)`` cut into parts.

    Args:
        count: items to split.
        seed: fixes the permutation.
        holdouts: sizes of the held-out parts, taken from the front; the rest comes first in
            the result (the training part).

    Returns:
        ``[rest, holdout_1, holdout_2, ...]`` as sorted index arrays.
    """
    order = np.random.default_rng(seed).permutation(count)
    parts, start = [], 0
    for size in holdouts:
        parts.append(np.sort(order[start:start + size]))
        start += size
    return [np.sort(order[start:])] + parts


def holdout_sizes(count: int, validation_split: float, test_split: float) -> tuple[int, int]:
    """``(validation, test)`` image counts: ``test_split`` of all, ``validation_split`` of the
    rest."""
    test = int(round(count * test_split))
    validation = int(round((count - test) * validation_split))
    return validation, test


def decoder_reason(error) -> str:
    """A decoder's (Pillow's or TensorFlow's) error as one line without object addresses or
    graph decorations: ``cannot identify image file``, ``Unknown image file format. ...``."""
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    message = re.sub(r"\{\{function_node [^}]*\}\}", "", message).split("[Op:")[0]
    message = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-fA-F]+>", "", message)
    return " ".join(message.split()) or type(error).__name__


def find_bad_images(files) -> list:
    """``(file, reason)`` of every file TensorFlow's decoders cannot read.

    One fast pass decodes every file in parallel; only when it fails is each file decoded on
    its own to name every bad one.
    """
    import tensorflow as tf

    def decoded(file):
        image = tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
        return tf.shape(image)[0]

    try:
        for _ in tf.data.Dataset.from_tensor_slices(list(files)).map(
                decoded, num_parallel_calls=tf.data.AUTOTUNE).batch(1024):
            pass
        return []
    except tf.errors.OpError:
        pass
    bad = []
    for file in files:
        try:
            decoded(tf.constant(file))
        except tf.errors.OpError as error:
            bad.append((file, decoder_reason(error)))
    return bad


def report_bad_images(bad, where: str, strict: bool) -> None:
    """Lists the undecodable images ``bad`` (``(file, reason)`` pairs) of folder ``where``:
    a warning naming each (they are skipped), or with ``strict`` a ``DataError``.

    Used by ``prepare`` and by training on a folder, so both skip, list and refuse alike.

    Raises:
        DataError: ``strict`` and ``bad`` not empty.
    """
    if not bad:
        return
    listing = "; ".join(f"{file}: {reason}" for file, reason in bad[:LISTED_IN_ERRORS])
    if len(bad) > LISTED_IN_ERRORS:
        listing += f"; and {len(bad) - LISTED_IN_ERRORS} more"
    if strict:
        raise DataError(f"{len(bad)} image(s) in {where!r} do not decode (strict): {listing}; "
                        "remove or replace them, or drop strict (--strict) to skip them")
    log.warning("skipping %d image(s) in %r that do not decode: %s", len(bad), where,
                "; ".join(f"{file}: {reason}" for file, reason in bad))
