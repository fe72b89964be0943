"""The options of ``load_dataset`` as one validated, immutable value shared by every source.

Each option is declared once, here, as a ``LoadOptions`` field; its default is the field's (taken
from ``keras_resnet.constants`` where the CLI shares it) and its check runs in ``__post_init__``,
so ``LoadOptions(batch_size=0)``, ``dataclasses.replace(options, batch_size=0)`` and
``load_dataset(..., batch_size=0)`` all raise the same error before anything loads.
"""

from __future__ import annotations

import dataclasses
import os

from keras_resnet import checks, constants

COLOR_MODES = constants.COLOR_MODES
CROPS = constants.CROPS
# channels per color mode
CHANNELS = {"rgb": 3, "grayscale": 1, "rgba": 4}


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How ``load_dataset`` loads a source; every field is checked when the value is made.

    Attributes:
        batch_size: images per batch; with ``input_context`` the global batch (default: the
            CLI's ``keras-resnet train`` batch, ``constants.DEFAULT_BATCH_SIZE``).
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
        check_images: decode every image of a folder once before training; undecodable ones
            are skipped and listed (see ``strict``).
        strict: with ``check_images``, an undecodable image in a folder raises ``DataError``
            listing every bad file instead of being skipped.
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

    Raises:
        TypeError: a value of the wrong type.
        ValueError: a value out of range, naming the option and what is accepted.
    """

    batch_size: int = constants.DEFAULT_BATCH_SIZE
    seed: int = constants.DEFAULT_SEED
    validation_split: float = 0.1
    test_split: float = 0.2
    augment: bool = True
    padding: int | None = None
    flip: bool | None = None
    image_size: tuple | None = None
    color_mode: str | None = None
    cache_dir: str | None = None
    num_classes: int | None = None
    num_examples: int = 1000
    check_images: bool = True
    strict: bool = False
    crop: str | None = None
    crop_fraction: float | None = None
    rand_augment: bool = False
    label_offset: int | None = None
    input_context: object = None
    deterministic: bool | None = None
    shuffle_buffer: int = constants.DEFAULT_SHUFFLE_BUFFER
    cache_mb: float = constants.DEFAULT_CACHE_MB
    mixup: float = 0.0
    cutmix: float = 0.0

    def __post_init__(self):
        for name, value in _checked(self).items():
            object.__setattr__(self, name, value)
        self.per_replica_batch_size()

    def replace(self, **overrides) -> LoadOptions:
        """A copy with ``overrides`` (checked); unknown names raise ``TypeError``."""
        check_names(overrides)
        return dataclasses.replace(self, **overrides) if overrides else self

    def per_replica_batch_size(self) -> int:
        """The batch of one input pipeline's replica under ``input_context`` (else the batch)."""
        if self.input_context is None:
            return self.batch_size
        try:
            return self.input_context.get_per_replica_batch_size(self.batch_size)
        except ValueError:
            replicas = self.input_context.num_replicas_in_sync
            raise ValueError(f"batch_size must be a multiple of the {replicas} replicas in sync "
                             f"(it is the global batch); got {self.batch_size!r}") from None

    def is_deterministic(self, training: bool) -> bool:
        """Element order: fixed for evaluation; for training only when asked (throughput)."""
        return (not training) if self.deterministic is None else self.deterministic


OPTION_NAMES = tuple(field.name for field in dataclasses.fields(LoadOptions))


def check_names(options: dict) -> None:
    """Raises ``TypeError`` naming the keys of ``options`` that are not ``LoadOptions`` fields."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown data option{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(unknown)}; accepted: {', '.join(OPTION_NAMES)}")


def image_size(value, argument: str = "image_size") -> tuple | None:
    """``None``, an int (a square) or ``(height, width)`` of positive ints, as a tuple."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(checks.positive_int(side, argument) for side in value)
    if isinstance(value, (tuple, list)):
        raise ValueError(f"{argument} must be an int or (height, width) of positive ints; "
                         f"got {value!r}")
    size = checks.positive_int(value, argument)
    return (size, size)


def _optional(check, value, *args, **kwargs):
    return None if value is None else check(value, *args, **kwargs)


def _checked(o: LoadOptions) -> dict:
    """Every field of ``o`` checked and normalised (ints, floats, tuples)."""
    _check_types(o)
    return {
        "batch_size": checks.positive_int(o.batch_size, "batch_size"),
        "seed": checks.positive_int(o.seed, "seed", minimum=0),
        "validation_split": checks.fraction(o.validation_split, "validation_split"),
        "test_split": checks.fraction(o.test_split, "test_split"),
        "augment": checks.boolean(o.augment, "augment"),
        "padding": _optional(checks.positive_int, o.padding, "padding", minimum=0),
        "flip": _optional(checks.boolean, o.flip, "flip"),
        "image_size": image_size(o.image_size),
        "color_mode": _optional(checks.one_of, o.color_mode, "color_mode", COLOR_MODES),
        "num_classes": checks.optional_positive_int(o.num_classes, "num_classes"),
        "num_examples": checks.positive_int(o.num_examples, "num_examples"),
        "check_images": checks.boolean(o.check_images, "check_images"),
        "strict": checks.boolean(o.strict, "strict"),
        "crop": _optional(checks.one_of, o.crop, "crop", CROPS),
        "rand_augment": checks.boolean(o.rand_augment, "rand_augment"),
        "crop_fraction": _optional(checks.number, o.crop_fraction, "crop_fraction", minimum=0,
                                   maximum=1, min_inclusive=False, example="0.875"),
        "label_offset": _optional(checks.positive_int, o.label_offset, "label_offset",
                                  minimum=0),
        "deterministic": _optional(checks.boolean, o.deterministic, "deterministic"),
        "shuffle_buffer": checks.positive_int(o.shuffle_buffer, "shuffle_buffer"),
        "cache_mb": checks.non_negative(o.cache_mb, "cache_mb", example="256"),
        "mixup": float(checks.non_negative(o.mixup, "mixup", example="0.2")),
        "cutmix": float(checks.number(o.cutmix, "cutmix", minimum=0, maximum=1)),
    }


def _check_types(o: LoadOptions) -> None:
    context = o.input_context
    if context is not None and not all(hasattr(context, a) for a in (
            "num_input_pipelines", "input_pipeline_id", "get_per_replica_batch_size")):
        raise TypeError(f"input_context must be a tf.distribute.InputContext or None; "
                        f"got {context!r}")
    if o.cache_dir is not None and not isinstance(o.cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a directory path or None; got {o.cache_dir!r}")


def make_options(**kwargs) -> LoadOptions:
    """``LoadOptions(**kwargs)``: every option checked before anything loads.

    Raises:
        TypeError: an unknown option or a value of the wrong type.
        ValueError: a value out of range, naming the option and what is accepted.
    """
    check_names(kwargs)
    return LoadOptions(**kwargs)
