"""The options of ``load_dataset`` as one validated, immutable value shared by every source."""

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
    """Validated arguments of ``load_dataset`` (see there for their meaning)."""

    batch_size: int = 64
    seed: int = 0
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


def make_options(**kwargs) -> LoadOptions:
    """Checks every argument (before anything loads) and returns a ``LoadOptions``.

    Raises:
        TypeError: a value of the wrong type.
        ValueError: a value out of range, naming the argument and what is accepted.
    """
    o = dict(kwargs)
    o["batch_size"] = checks.positive_int(o["batch_size"], "batch_size")
    o["seed"] = checks.positive_int(o["seed"], "seed", minimum=0)
    o["validation_split"] = checks.fraction(o["validation_split"], "validation_split")
    o["test_split"] = checks.fraction(o["test_split"], "test_split")
    o["augment"] = checks.boolean(o["augment"], "augment")
    if o["padding"] is not None:
        o["padding"] = checks.positive_int(o["padding"], "padding", minimum=0)
    if o["flip"] is not None:
        o["flip"] = checks.boolean(o["flip"], "flip")
    o["image_size"] = image_size(o["image_size"])
    if o["color_mode"] is not None:
        checks.one_of(o["color_mode"], "color_mode", COLOR_MODES)
    o["num_classes"] = checks.optional_positive_int(o["num_classes"], "num_classes")
    o["num_examples"] = checks.positive_int(o["num_examples"], "num_examples")
    o["check_images"] = checks.boolean(o["check_images"], "check_images")
    if o["crop"] is not None:
        checks.one_of(o["crop"], "crop", CROPS)
    o["rand_augment"] = checks.boolean(o["rand_augment"], "rand_augment")
    if o["crop_fraction"] is not None:
        o["crop_fraction"] = checks.number(o["crop_fraction"], "crop_fraction", minimum=0,
                                           maximum=1, min_inclusive=False, example="0.875")
    if o["label_offset"] is not None:
        o["label_offset"] = checks.positive_int(o["label_offset"], "label_offset", minimum=0)
    if o["deterministic"] is not None:
        o["deterministic"] = checks.boolean(o["deterministic"], "deterministic")
    o["shuffle_buffer"] = checks.positive_int(o["shuffle_buffer"], "shuffle_buffer")
    o["cache_mb"] = checks.non_negative(o["cache_mb"], "cache_mb", example="256")
    o["mixup"] = float(checks.non_negative(o["mixup"], "mixup", example="0.2"))
    o["cutmix"] = float(checks.number(o["cutmix"], "cutmix", minimum=0, maximum=1))
    context = o["input_context"]
    if context is not None and not all(hasattr(context, a) for a in (
            "num_input_pipelines", "input_pipeline_id", "get_per_replica_batch_size")):
        raise TypeError(f"input_context must be a tf.distribute.InputContext or None; "
                        f"got {context!r}")
    if o["cache_dir"] is not None and not isinstance(o["cache_dir"], (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a directory path or None; got {o['cache_dir']!r}")
    options = LoadOptions(**o)
    options.per_replica_batch_size()
    return options
