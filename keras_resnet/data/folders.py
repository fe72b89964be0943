"""Folders with one sub-folder of images per class: the file list, the split, image sizes."""

from __future__ import annotations

import os

import numpy as np

from keras_resnet.data.dataset import DataError

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
    """``(validation, test)`` image counts: ``test_split`` of all, ``validation_split`` of the rest."""
    test = int(round(count * test_split))
    validation = int(round((count - test) * validation_split))
    return validation, test
