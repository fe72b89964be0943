"""``HyperResNet``: the search space over depth, initializers and the other ResNet choices.

Depth and initialization come first (the two questions the residual-network story leaves open);
block kind, pre-activation, shortcut, width, activation, learning rate, weight decay and batch
size second. Every hyperparameter can be fixed (a scalar) or narrowed (a list of choices) by a
keyword argument. Hyperparameters that only exist on one branch (the shortcut option of basic
blocks, the depth of an ImageNet stage that only a deeper network has) live in KerasTuner
conditional scopes, so inactive ones never show up in a trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner

from keras_resnet import checks
from keras_resnet.modeling import presets
from keras_resnet.constants import (DEFAULT_DETERMINISTIC, DEFAULT_SCHEDULE, DEFAULT_SEED,
                                    DEFAULT_TUNE_BATCH_SIZE, FAMILIES, SCHEDULES)
from keras_resnet.tuning.choices import BOTTLENECK_SHORTCUTS, CIFAR_SHORTCUTS, check_choices
INITIALIZERS = ("he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal",
                "orthogonal", "truncated_normal")
ACTIVATIONS = ("relu", "leaky_relu")
CIFAR_DEPTHS = (20, 32, 44, 56, 110)
# Inputs up to this many pixels a side (the embedded 8x8 digits) get the small, fast defaults.
SMALL_INPUT = 16
SMALL_CIFAR_DEPTHS = (8, 14, 20)
_IMAGENET_STAGE_DEPTHS = (1, 2, 3, 4, 6)
# The hyperparameters of each family, in the order they are declared (results.csv's columns).
COMMON_NAMES = ("initializer", "zero_init_residual", "bottleneck", "preact", "shortcut",
                "width_multiplier", "activation", "learning_rate", "weight_decay", "batch_size")
CIFAR_NAMES = ("depth",) + COMMON_NAMES
IMAGENET_NAMES = ("stem", "stages") + tuple(f"stage{i}_depth" for i in range(1, 5)) + \
    COMMON_NAMES


class HyperResNet(keras_tuner.HyperModel):
    """A ``keras_tuner.HyperModel`` of residual networks trained with the paper's recipe.

    The space (defaults for inputs of at most 16 pixels a side, such as the embedded 8x8 digits,
    in brackets where they differ):

    * ``depth`` (CIFAR family): the 6n+2 depth, 20, 32, 44, 56, 110 [8, 14, 20]; with
      ``bottleneck=True`` the same n blocks per stage are bottlenecks (9n+2 layers).
    * ``stem``, ``stages``, ``stage1_depth`` ... ``stage4_depth`` (ImageNet family): the stem
      (``"imagenet"`` for inputs of 64 pixels or more, else ``"cifar"``), 3 or 4 stages [2 or 3],
      and the blocks of each stage (1, 2, 3, 4, 6); ``stage4_depth`` only exists when
      ``stages == 4`` (a conditional scope).
    * ``initializer``: he_normal, he_uniform, glorot_normal, glorot_uniform, lecun_normal,
      orthogonal, truncated_normal; ``zero_init_residual``: False, True.
    * ``bottleneck``: False, True [False]; ``preact``: False, True; ``shortcut``: "A" or "B" for
      basic blocks, "B", "C" or "D" for bottlenecks (two conditional scopes);
      ``width_multiplier``: 0.5, 1.0 (stage widths 16/32/64 or 64/128/256/512 times it);
      ``activation``: relu, leaky_relu.
    * ``learning_rate``: 0.01 ... 0.3, log scale (default 0.1); ``weight_decay``: 1e-5 ... 1e-3,
      log scale (default 1e-4); ``batch_size``: 32, 64, 128 [32, 64] (declared in ``fit``).

    Args:
        input_shape: ``(height, width, channels)`` of the images.
        classes: number of classes.
        family: ``"cifar"`` (``CifarResNet``: 3x3 stem, three stages) or ``"imagenet"``
            (``ResNet``: per-stage depths).
        data: a ``keras_resnet.data.Dataset``, or a name/path for ``load_dataset``; used for the
            model's ``Normalization`` layer (raw 0..255 pixels in, as ``keras-resnet train``)
            and as the training data of ``fit``. None: no normalization, ``fit`` needs ``x``.
        seed: seeds the weights and the data pipeline of every trial.
        data_options: keyword options of ``load_dataset`` (not ``batch_size``/``seed``).
        steps_per_epoch: train on at most this many batches per epoch (quick searches).
        schedule: learning-rate schedule of the recipe (``"step"``, ``"cosine"``,
            ``"constant"``).
        **fixed: a hyperparameter name with a scalar (fixed), or a non-empty list or tuple of
            values (the choices to search). ``depth=20``, ``initializer=["he_normal",
            "orthogonal"]``, ``learning_rate=[0.05, 0.1]``.

    Raises:
        ValueError: for an unknown family or hyperparameter, an empty choice list, an unknown
            initializer or activation, a depth outside the family, or an input too small.
    """

    def __init__(self, input_shape: tuple[int, int, int], classes: int, family: str = "cifar",
                 *, data: Any = None, seed: int = DEFAULT_SEED, data_options: dict | None = None,
                 steps_per_epoch: int | None = None, schedule: str = DEFAULT_SCHEDULE,
                 deterministic: bool = DEFAULT_DETERMINISTIC, **fixed) -> None:
        super().__init__(name=f"hyper_resnet_{family}", tunable=True)
        self.family = checks.one_of(family, "family", FAMILIES)
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise TypeError(f"input_shape must be (height, width, channels) of positive ints; "
                            f"got {input_shape!r}")
        self.input_shape = tuple(checks.positive_int(s, "input_shape") for s in input_shape)
        self.classes = checks.positive_int(classes, "classes")
        self.seed = checks.positive_int(seed, "seed", minimum=0)
        self.steps_per_epoch = checks.optional_positive_int(steps_per_epoch, "steps_per_epoch")
        self.schedule = checks.one_of(schedule, "schedule", SCHEDULES)
        self.deterministic = checks.boolean(deterministic, "deterministic")
        self.data = data
        self.data_options = dict(data_options or {})
        self.names = CIFAR_NAMES if family == "cifar" else IMAGENET_NAMES
        self.choices = self._default_choices()
        unknown = sorted(set(fixed) - set(self.names))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {', '.join(map(repr, unknown))} for "
                             f"family={family!r}; valid names: {', '.join(self.names)}")
        for name, value in fixed.items():
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            if not values:
                raise ValueError(f"{name} must be a value or a non-empty list of choices; got "
                                 f"an empty {type(value).__name__}")
            self.choices[name] = tuple(dict.fromkeys(values))  # keeps order, drops repeats
        check_choices(self.choices, self.family, self.input_shape)
        self.last_fit = {}
        self._datasets = {}

    # ------------------------------------------------------------------------- the space

    def _default_choices(self):
        small = min(self.input_shape[:2]) <= SMALL_INPUT
        choices = {
            "initializer": INITIALIZERS, "zero_init_residual": (False, True),
            "bottleneck": (False,) if small else (False, True), "preact": (False, True),
            "shortcut": None,  # per block kind, see _shortcuts
            "width_multiplier": (0.5, 1.0), "activation": ACTIVATIONS,
            "learning_rate": (0.01, 0.3), "weight_decay": (1e-5, 1e-3),
            "batch_size": (32, 64) if small else (32, 64, 128),
        }
        if self.family == "cifar":
            choices["depth"] = SMALL_CIFAR_DEPTHS if small else CIFAR_DEPTHS
        else:
            stem = "imagenet" if min(self.input_shape[:2]) >= 64 else "cifar"
            choices["stem"] = (stem,)
            choices["stages"] = (2, 3) if small else (3, 4)
            for i in range(1, 5):
                choices[f"stage{i}_depth"] = _IMAGENET_STAGE_DEPTHS
        return choices

    def _ranges(self):
        # learning_rate and weight_decay are log-scale ranges unless the caller gave choices.
        return {name: self.choices[name] for name in ("learning_rate", "weight_decay")
                if self.choices[name] == self._default_choices()[name]}

    def _declare(self, hp, name, parent=None):
        """Declares one hyperparameter: Fixed for one value, Choice or a log range otherwise."""
        values = self.choices[name]
        if name in self._ranges():
            low, high = values
            default = {"learning_rate": 0.1, "weight_decay": 1e-4}[name]
            return hp.Float(name, low, high, sampling="log", default=default)
        if len(values) == 1:
            return hp.Fixed(name, values[0])
        if all(isinstance(v, bool) for v in values):  # Choice would turn them into 0/1
            return hp.Boolean(name, default=False)
        default = {"initializer": "he_normal", "zero_init_residual": False,
                   "activation": "relu", "width_multiplier": 1.0}.get(name)
        return hp.Choice(name, list(values),
                         default=default if default in values else values[0])

    def _shortcut(self, hp, bottleneck):
        # One conditional scope per block kind: zero padding only makes sense for basic blocks.
        options = BOTTLENECK_SHORTCUTS if bottleneck else CIFAR_SHORTCUTS
        if self.choices["shortcut"] is not None:
            options = tuple(v for v in self.choices["shortcut"] if v in options) or \
                (("B",) if bottleneck else self.choices["shortcut"][:1])
        def declare():
            if len(options) == 1:
                return hp.Fixed("shortcut", options[0])
            return hp.Choice("shortcut", list(options))

        if len(self.choices["bottleneck"]) == 1:  # one block kind: nothing is conditional
            return declare()
        with hp.conditional_scope("bottleneck", [bottleneck]):
            return declare()

    def declare_architecture(self, hp: keras_tuner.HyperParameters
                             ) -> tuple[Callable[..., keras.Model], dict[str, Any]]:
        """Declares the architecture's hyperparameters on ``hp`` and returns the model options.

        Args:
            hp: a ``keras_tuner.HyperParameters``.

        Returns:
            ``(constructor, kwargs)``: ``keras_resnet.CifarResNet`` or ``keras_resnet.ResNet``
            and its keyword arguments.
        """
        from keras_resnet.modeling.models import CifarResNet, ResNet

        options = {}
        if self.family == "cifar":
            depth = self._declare(hp, "depth")
        else:
            stem = self._declare(hp, "stem")
            stages = self._declare(hp, "stages")
            stage_depths = []
            all_stages = self.choices["stages"]
            for i in range(1, max(all_stages) + 1):
                active = [s for s in all_stages if s >= i]
                if len(active) == len(all_stages):  # every network has this stage
                    value = self._declare(hp, f"stage{i}_depth")
                else:
                    with hp.conditional_scope("stages", active):
                        value = self._declare(hp, f"stage{i}_depth")
                if i <= stages:
                    stage_depths.append(value)
        options["kernel_initializer"] = self._declare(hp, "initializer")
        options["zero_init_residual"] = self._declare(hp, "zero_init_residual")
        bottleneck = self._declare(hp, "bottleneck")
        options["preact"] = self._declare(hp, "preact")
        shortcut = None
        for kind in sorted(set(self.choices["bottleneck"])):
            value = self._shortcut(hp, kind)
            if kind == bottleneck:
                shortcut = value
        multiplier = self._declare(hp, "width_multiplier")
        options["activation"] = self._declare(hp, "activation")
        options.update(bottleneck=bottleneck, shortcut=shortcut)
        if self.family == "cifar":
            options["widths"] = tuple(max(1, round(w * multiplier)) for w in presets.CIFAR_WIDTHS)
            options["depth"] = presets.cifar_depth(presets.cifar_blocks_per_stage(depth),
                                                   bottleneck)
            return CifarResNet, options
        options["widths"] = tuple(max(1, round(w * multiplier))
                                  for w in presets.IMAGENET_WIDTHS[:stages])
        options.update(stage_depths=tuple(stage_depths), stem=stem)
        return ResNet, options

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Builds the network of ``hp`` (``Normalization`` in front with data); ``fit`` compiles
        it (its learning-rate schedule needs the trial's batch size, declared there).

        Args:
            hp: a ``keras_tuner.HyperParameters``.

        Returns:
            An uncompiled ``keras.Model`` taking raw pixels.
        """
        from keras_resnet.modeling.recipe import build_model
        from keras_resnet.training import make_reproducible

        make_reproducible(self.seed, self.deterministic)
        constructor, options = self.declare_architecture(hp)
        self._declare(hp, "learning_rate")
        self._declare(hp, "weight_decay")
        net = constructor(input_shape=self.input_shape, classes=self.classes, **options)
        return build_model(net, self.dataset()) if self.data is not None else net

    # ------------------------------------------------------------------------- training

    def dataset(self, batch_size: int | None = None) -> Any:
        """The ``data`` given to the constructor at ``batch_size`` (None: as loaded), loaded or
        re-batched once per batch size and cut to ``steps_per_epoch`` batches per epoch.

        Args:
            batch_size: images per batch.

        Returns:
            A ``keras_resnet.data.Dataset``.

        Raises:
            ValueError: when the hypermodel has no data.
        """
        import dataclasses

        from keras_resnet.data import Dataset, load_dataset

        if self.data is None:
            raise ValueError("HyperResNet has no data: pass x (and validation_data) to fit, or "
                             "give HyperResNet data=...")
        if batch_size not in self._datasets:
            if isinstance(self.data, Dataset):
                base = _rebatched(self.data, batch_size)
            else:
                keras.utils.set_random_seed(self.seed)  # tf.data's shuffle uses it too
                base = load_dataset(self.data, batch_size=batch_size or DEFAULT_TUNE_BATCH_SIZE,
                                    seed=self.seed, **self.data_options)
            if self.steps_per_epoch and base.steps_per_epoch > self.steps_per_epoch:
                steps = self.steps_per_epoch
                base = dataclasses.replace(base, train=base.train.take(steps),
                                           train_size=min(base.train_size,
                                                          steps * base.batch_size))
            self._datasets[batch_size] = base
        return self._datasets[batch_size]

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, *args, epochs: int = 1,
            callbacks: list | None = None, verbose: str | int = "auto",
            **kwargs) -> keras.callbacks.History:
        """Trains ``model`` with the recipe of ``keras-resnet train``; declares ``batch_size``.

        Compiles ``model`` (``keras_resnet.modeling.recipe.compile_model``); the learning rate follows
        ``keras_resnet.modeling.recipe.PaperSchedule`` (step decay at 50% and
        75% of the trial's epochs), SGD with momentum 0.9 and the trial's weight decay, on the data pipeline of ``keras_resnet.data.load_dataset`` at the trial's
        batch size; ``keras.callbacks.TerminateOnNaN`` ends a diverging trial, which then fails
        with its reason.

        Args:
            hp: the trial's ``keras_tuner.HyperParameters``.
            model: the model from ``build``.
            *args, **kwargs: ``model.fit`` arguments; without ``x`` the ``data`` given to the
                constructor is used.
            epochs: training epochs.
            callbacks: KerasTuner's and the caller's callbacks.
            verbose: ``model.fit`` verbosity.

        Returns:
            The ``keras.callbacks.History``.

        Raises:
            keras_tuner.errors.FailedTrialError: when the loss became NaN or infinite.
        """
        from keras_resnet.modeling.recipe import PaperSchedule, compile_model

        batch_size = self._declare(hp, "batch_size")
        learning_rate = hp.get("learning_rate")
        weight_decay = hp.get("weight_decay")
        if args or "x" in kwargs:
            train, validation = (args[0] if args else kwargs.pop("x")), \
                kwargs.pop("validation_data", None)
            steps = kwargs.get("steps_per_epoch") or self.steps_per_epoch or 1
        else:
            dataset = self.dataset(batch_size)
            train, validation = dataset.train, dataset.validation
            steps = dataset.steps_per_epoch
        schedule = PaperSchedule(learning_rate, max(1, epochs * steps), self.schedule)
        keras.utils.set_random_seed(self.seed)
        with model.distribute_strategy.scope():  # the strategy KerasTuner built it under
            compile_model(model, learning_rate=schedule, weight_decay=weight_decay)
        kwargs.setdefault("shuffle", False)  # tf.data shuffles; Keras only warns about it
        history = model.fit(train, validation_data=validation, epochs=epochs,
                            callbacks=[keras.callbacks.TerminateOnNaN(), *(callbacks or [])],
                            verbose=verbose, **{k: v for k, v in kwargs.items()
                                                if k != "batch_size"})
        self.last_fit = {"params": int(model.count_params()),
                         "epochs": len(history.history.get("loss", []))}
        losses = history.history.get("loss", [])
        if not losses or not all(math.isfinite(v) for v in losses):
            raise keras_tuner.errors.FailedTrialError(
                f"loss became {losses[-1] if losses else 'missing'} at epoch {len(losses)} "
                f"(learning_rate={learning_rate:g}, batch_size={batch_size})")
        return history


def layer_count(values, family):
    """Weighted layers (convolutions + the Dense head) of a trial's hyperparameter values."""
    bottleneck = bool(values.get("bottleneck", False))
    if family == "cifar":
        return presets.cifar_depth(presets.cifar_blocks_per_stage(int(values["depth"])),
                                   bottleneck)
    blocks = sum(int(values[f"stage{i}_depth"]) for i in range(1, int(values["stages"]) + 1))
    stem = {"imagenet": 1, "cifar": 1, "deep": 3}[values.get("stem", "imagenet")]
    return (3 if bottleneck else 2) * blocks + stem + 1


def _rebatched(data, batch_size):
    """``data`` (a ``Dataset``) with every split re-batched to ``batch_size``, its number of
    batches known (an unknown one ends each first epoch with Keras' "Your input ran out of
    data" warning)."""
    import dataclasses

    if batch_size is None or batch_size == data.batch_size:
        return data
    return dataclasses.replace(
        data, train=_rebatch(data.train, data.train_size, data.batch_size, batch_size),
        validation=None if data.validation is None
        else _rebatch(data.validation, data.validation_size, data.batch_size, batch_size),
        test=_rebatch(data.test, data.test_size, data.batch_size, batch_size),
        batch_size=batch_size)


def _rebatch(split, size, old_batch_size, batch_size):
    """``split`` (``size`` images in batches of ``old_batch_size``) re-batched, its number of
    batches known when the old one was."""
    import tensorflow as tf

    batches = int(split.cardinality())
    rebatched = split.unbatch().batch(batch_size)
    if batches == math.ceil(size / old_batch_size):
        images = size
    elif batches == size // old_batch_size:  # the partial last batch was dropped
        images = batches * old_batch_size
    else:  # unknown, infinite or cut: nothing to carry over
        return rebatched
    return rebatched.apply(tf.data.experimental.assert_cardinality(
        math.ceil(images / batch_size)))
