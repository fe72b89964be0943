"""The ``Dataset`` value every source returns, and the error a bad data set raises."""

from __future__ import annotations

import dataclasses
import os


class DataError(ValueError):
    """A data set that cannot be used: a bad record, a missing feature, an empty split.

    A ``ValueError``, so the CLI shows it as a one-line error (exit status 2).
    """


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Batched ``tf.data`` pipelines and what a model needs to know about them.

    Attributes:
        name: ``"digits"``, ``"cifar10"``, ``"synthetic"`` or the directory's path.
        train: shuffled (every epoch), augmented, batched ``(images, labels)``.
        validation: batched ``(images, labels)`` held out from training, or None.
        test: batched ``(images, labels)``, never seen in training (a TFRecord directory
            without ``test-*`` shards tests on its validation split).
        class_names: one name per integer label.
        input_shape: ``(height, width, channels)`` of one image.
        num_classes: ``len(class_names)``.
        train_size, validation_size, test_size: images in each split.
        batch_size: images per batch (global: the sum over input pipelines and replicas).
        mean, variance: per-channel statistics of the training images (0..255 scale), for the
            model's ``Normalization`` layer.
        augmentation: the training augmentation, e.g. ``{"padding": 4, "flip": True}`` or
            ``{"crop": "inception", "flip": True}``, or None.
        crop_fraction: the evaluation preprocessing's center crop (1.0: the whole image resized);
            ``keras_resnet.data.decode_for_eval`` with it reproduces the evaluation images from
            encoded bytes.
        files: the files the pipelines stream from (TFRecord shards or image files, empty for
            in-memory sources); ``explain_errors`` names the bad one.
        label_offset: subtracted from stored labels (1 for ImageNet TFRecords made by the TPU
            tools, whose labels count from 1).
        one_hot_labels: the pipelines give one-hot float labels (``num_classes`` wide) instead
            of integers: with ``mixup``/``cutmix`` (mixed, soft labels in training); the model
            is then compiled with the categorical loss and metrics.
        train_order: the ``keras_resnet.data.position.TrainOrder`` that ``train`` is built
            from: each epoch's order is a function of (seed, epoch), and a run killed inside
            an epoch resumes after its last backed-up batch
            (``keras_resnet.data.position.fit``). None for a ``Dataset`` made by hand.
    """

    name: str
    train: object
    validation: object
    test: object
    class_names: tuple
    input_shape: tuple
    num_classes: int
    train_size: int
    validation_size: int
    test_size: int
    batch_size: int
    mean: tuple
    variance: tuple
    augmentation: dict | None = None
    crop_fraction: float = 1.0
    files: tuple = ()
    label_offset: int = 0
    one_hot_labels: bool = False
    train_order: object = None

    @property
    def steps_per_epoch(self) -> int:
        """Training batches per epoch."""
        return -(-self.train_size // self.batch_size)

    def describe(self) -> str:
        """One line: name, shape, classes and split sizes."""
        return (f"{self.name}: {self.train_size} train / {self.validation_size} validation / "
                f"{self.test_size} test images of {'x'.join(map(str, self.input_shape))}, "
                f"{self.num_classes} classes")


def source_name(data) -> str:
    """The name a run records for ``data``: a ``Dataset``'s name, or the data set name / path.

    Raises:
        TypeError: ``data`` is neither a ``Dataset``, a str nor a path.
    """
    if isinstance(data, Dataset):
        return data.name
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    raise TypeError(f"data must be a Dataset, a data set name or a folder; got {data!r}")
