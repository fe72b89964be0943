"""The paper's recipe as Keras pieces: SGD + L2, learning-rate schedule, warm-up, loss, model.

He et al. 2015 (CIFAR-10): SGD with momentum 0.9, learning rate 0.1 divided by 10 at 50% and 75%
of training (32k and 48k of 64k iterations), weight decay 1e-4, and for ResNet-110 a warm-up at
0.01 until the training error is below 80%. This module owns these pieces; ``keras_resnet.training``
(a run: data, fit, run directory, export) and ``keras_resnet.tuning`` (trials) use them:

* ``compile_model(model, ...)``: SGD + L2 on the kernels + (label-smoothed) cross-entropy.
* ``PaperSchedule``: step decay (``keras.optimizers.schedules.PiecewiseConstantDecay``), cosine
  (``CosineDecay``) or constant, plus the paper's error-gated warm-up.
* ``PaperWarmup``: the callback that ends the schedule's warm-up.
* ``LearningRateLogger``: puts the learning rate into the epoch logs.
* ``build_model(name, data)``: a named network with a ``Normalization`` layer in front.

``PaperSchedule`` and ``SparseCategoricalCrossentropy`` are registered Keras serializables
(package ``keras_resnet``), so ``.keras`` files that use them load after ``import keras_resnet``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
from keras.optimizers.schedules import LearningRateSchedule

from keras_resnet import checks
from keras_resnet.modeling import presets
from keras_resnet.modeling.block_options import resolve_initializer
from keras_resnet.constants import (DEFAULT_INITIALIZER, DEFAULT_LEARNING_RATE, DEFAULT_MOMENTUM,
                                    DEFAULT_WEIGHT_DECAY, JIT_COMPILE_VALUES, SCHEDULES,
                                    WARMUP_LEARNING_RATE, WARMUP_MAX_ERROR)


@keras.saving.register_keras_serializable(package="keras_resnet")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate of He et al.: step decay (÷10 at 50% and 75% of training) or cosine.

    The decay itself is Keras': ``PiecewiseConstantDecay`` for ``"step"``, ``CosineDecay`` (to
    0 at ``total_steps``, after a linear warm-up of ``warmup_steps`` with Keras' own
    ``warmup_steps``) for ``"cosine"``. This class adds the paper's warm-up, which Keras'
    ``warmup_steps`` cannot express because it ends on the training error, not on a step count:
    with ``warmup_learning_rate`` the rate is held there until ``PaperWarmup`` ends the warm-up
    (the paper's 0.01 for ResNet-110, until the training error falls below 80%); the decay
    boundaries still count from step 0, as in the paper.

    Args:
        initial_learning_rate: the rate before the first boundary (the paper's 0.1).
        total_steps: optimizer steps of the whole training (epochs x steps per epoch).
        kind: ``"step"``, ``"cosine"`` or ``"constant"``.
        boundaries: fractions of ``total_steps`` where step decay multiplies by ``decay``.
        decay: the step-decay factor.
        warmup_learning_rate: rate while warming up; None for no warm-up.
        name: name of the schedule.
        warmup_steps: ``"cosine"`` and ``"step"``: steps of a linear ramp from 0 to
            ``initial_learning_rate`` before the cosine decay (Keras' ``CosineDecay`` warm-up),
            or over the first steps of the step decay (its boundaries still count from 0).

    Raises:
        TypeError, ValueError: for a bad argument (``keras_resnet.checks``' messages).
    """

    def __init__(self, initial_learning_rate: float = DEFAULT_LEARNING_RATE,
                 total_steps: int = 64000, kind: str = "step",
                 boundaries: Sequence[float] = (0.5, 0.75), decay: float = 0.1,
                 warmup_learning_rate: float | None = None, name: str = "paper_schedule",
                 warmup_steps: int = 0) -> None:
        super().__init__()
        self.initial_learning_rate = checks.positive_number(
            initial_learning_rate, "initial_learning_rate", example="0.1")
        self.total_steps = checks.positive_int(total_steps, "total_steps")
        self.kind = checks.one_of(kind, "kind", SCHEDULES)
        self.boundaries = _boundaries(boundaries)
        self.decay = checks.positive_number(decay, "decay", example="0.1")
        if warmup_learning_rate is not None:
            warmup_learning_rate = checks.positive_number(
                warmup_learning_rate, "warmup_learning_rate", example=str(WARMUP_LEARNING_RATE))
        self.warmup_learning_rate = warmup_learning_rate
        self.name = name
        self.warmup_steps = checks.positive_int(warmup_steps, "warmup_steps", minimum=0,
                                                maximum=self.total_steps - 1)
        if self.warmup_steps and self.kind not in ("cosine", "step"):
            raise ValueError(f"warmup_steps must be 0 unless kind is 'cosine' or 'step'; got "
                             f"{warmup_steps!r} with kind {kind!r}")
        self._decayed = self._keras_schedule()
        # 1.0 while warming up; PaperWarmup sets it to 0.0 (a variable: read inside the graph).
        self.warming_up = keras.Variable(1.0 if warmup_learning_rate else 0.0, trainable=False,
                                         name="warming_up", dtype="float32")

    @property
    def boundary_steps(self) -> list[int]:
        """The optimizer steps where step decay happens (``int(fraction * total_steps)``)."""
        # (+1e-9: a fraction such as 29/100 of 100 steps is 28.999999999999996 in floats)
        return tuple(int(b * self.total_steps + 1e-9) for b in self.boundaries)

    def _keras_schedule(self):
        schedules = keras.optimizers.schedules
        if self.kind == "cosine" and self.warmup_steps:
            return schedules.CosineDecay(0.0, self.total_steps - self.warmup_steps,
                                         warmup_target=self.initial_learning_rate,
                                         warmup_steps=self.warmup_steps)
        if self.kind == "cosine":
            return schedules.CosineDecay(self.initial_learning_rate, self.total_steps)
        if self.kind == "constant" or not self.boundaries:
            return None
        # PiecewiseConstantDecay switches after a boundary (step > b); the paper's decay starts
        # at the boundary step itself (step >= b), hence b - 1.
        values = [self.initial_learning_rate * self.decay ** i
                  for i in range(len(self.boundaries) + 1)]
        return schedules.PiecewiseConstantDecay([b - 1 for b in self.boundary_steps], values)

    def __call__(self, step):
        from keras import ops

        if self._decayed is None:
            rate = ops.convert_to_tensor(self.initial_learning_rate, "float32")
        else:
            rate = ops.cast(self._decayed(step), "float32")
        if self.kind == "step" and self.warmup_steps:
            # the same linear ramp from 0 as CosineDecay's warm-up; the boundaries count from 0
            ramp = self.initial_learning_rate * ops.cast(step, "float32") / self.warmup_steps
            rate = ops.where(ops.cast(step, "float32") < self.warmup_steps, ramp, rate)
        if self.warmup_learning_rate:
            rate = ops.where(self.warming_up > 0, ops.cast(self.warmup_learning_rate, "float32"),
                             rate)
        return rate

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate,
                "total_steps": self.total_steps, "kind": self.kind,
                "boundaries": list(self.boundaries), "decay": self.decay,
                "warmup_learning_rate": self.warmup_learning_rate, "name": self.name,
                "warmup_steps": self.warmup_steps}


def _boundaries(boundaries):
    if isinstance(boundaries, (str, bytes)) or not hasattr(boundaries, "__iter__"):
        raise TypeError(f"boundaries must be increasing fractions in (0, 1) (e.g. [0.5, 0.75]); "
                        f"got {boundaries!r}")
    values = tuple(checks.number(b, "boundaries", minimum=0, maximum=1, min_inclusive=False,
                                 max_inclusive=False) for b in boundaries)
    if list(values) != sorted(values):
        raise ValueError(f"boundaries must be increasing fractions in (0, 1) (e.g. [0.5, 0.75]); "
                         f"got {boundaries!r}")
    return values


class PaperWarmup(keras.callbacks.Callback):
    """Ends a ``PaperSchedule`` warm-up once the training error falls below ``max_error``.

    The check runs after every batch on the epoch's running accuracy. A resumed run starts
    warming up again and ends it after its first batch when the restored model is past it.

    Args:
        schedule: the ``PaperSchedule`` with ``warmup_learning_rate`` set.
        max_error: training error (1 - accuracy) below which the warm-up ends (paper: 0.8).
        metric: the accuracy entry of the logs.
    """

    def __init__(self, schedule: PaperSchedule, max_error: float = WARMUP_MAX_ERROR,
                 metric: str = "accuracy") -> None:
        super().__init__()
        self.schedule = schedule
        self.max_error = checks.fraction(max_error, "max_error", allow_one=True)
        self.metric = metric
        self.ended_at_step = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.ended_at_step is not None or not logs or self.metric not in logs:
            return
        if float(self.schedule.warming_up.numpy()) and 1 - float(logs[self.metric]) < \
                self.max_error:
            self.schedule.warming_up.assign(0.0)
            self.ended_at_step = int(self.model.optimizer.iterations.numpy())


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate of the epoch's last step to the epoch logs as ``learning_rate``
    (``CSVLogger`` and ``TensorBoard`` placed after it record it).

    Args:
        schedule: the optimizer's ``LearningRateSchedule``; None reads the optimizer's rate.
    """

    def __init__(self, schedule: LearningRateSchedule | None = None) -> None:
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        if self.schedule is None:
            rate = self.model.optimizer.learning_rate
        else:
            rate = self.schedule(max(int(self.model.optimizer.iterations.numpy()) - 1, 0))
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


@keras.saving.register_keras_serializable(package="keras_resnet")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy on integer labels with optional label smoothing (Keras' sparse loss has
    none): the labels are one-hot encoded and passed to ``categorical_crossentropy``."""

    def __init__(self, label_smoothing: float = 0.0, from_logits: bool = False,
                 name: str = "sparse_categorical_crossentropy", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = from_logits

    def call(self, y_true: Any, y_pred: Any) -> Any:
        from keras import ops

        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "from_logits": self.from_logits}


def check_compile_arguments(*, momentum: float, weight_decay: float, label_smoothing: float,
                            jit_compile: bool | str) -> None:
    """Checks ``compile_model``'s options (``keras_resnet.checks``' messages); returns None.

    Raises:
        TypeError: a value of the wrong type.
        ValueError: a value out of range.
    """
    checks.fraction(momentum, "momentum")
    checks.non_negative(weight_decay, "weight_decay", example="1e-4")
    checks.fraction(label_smoothing, "label_smoothing")
    checks.one_of(jit_compile, "jit_compile", JIT_COMPILE_VALUES)


def compile_model(model: keras.Model, *,
                  learning_rate: float | LearningRateSchedule = DEFAULT_LEARNING_RATE,
                  momentum: float = DEFAULT_MOMENTUM, weight_decay: float = DEFAULT_WEIGHT_DECAY,
                  label_smoothing: float = 0.0, nesterov: bool = False,
                  jit_compile: bool | str = "auto", from_logits: bool = False,
                  one_hot_labels: bool = False) -> keras.Model:
    """Compiles ``model`` with the paper's recipe: SGD + momentum, L2 on kernels, cross-entropy.

    Weight decay is the paper's (coupled) L2 penalty: every kernel without a regularizer gets
    ``L2(weight_decay / 2)``, so SGD adds ``weight_decay * w`` to its gradient (as
    ``keras_resnet.build(..., weight_decay=...)`` does); BN parameters and biases are not decayed.

    Args:
        model: a ``keras.Model`` taking images and returning class probabilities (or logits
            with ``from_logits=True``).
        learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule`` such as
            ``PaperSchedule``.
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 weight decay on kernels (0 for none).
        label_smoothing: in [0, 1); 0 is the plain cross-entropy.
        nesterov: Nesterov momentum.
        jit_compile: XLA compilation: True, False or ``"auto"`` (on TensorFlow, XLA when a GPU
            is visible: on CPU it adds compilation time per shape and trains no faster; on the
            other backends Keras' own ``"auto"``: ``jax.jit`` on JAX, eager on PyTorch).
        from_logits: the model returns logits.
        one_hot_labels: the data gives one-hot (or mixed, soft) labels, as with MixUp/CutMix
            (``keras_resnet.data.Dataset.one_hot_labels``): Keras' ``CategoricalCrossentropy``
            (with ``label_smoothing``), ``CategoricalAccuracy`` and ``TopKCategoricalAccuracy``
            instead of the sparse forms.

    Returns:
        The model, compiled, with metrics ``accuracy`` and ``top5_accuracy`` (when it has more
        than 5 classes).

    Raises:
        TypeError, ValueError: for a bad argument.
    """
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        checks.positive_number(learning_rate, "learning_rate", example="0.1")
    check_compile_arguments(momentum=momentum, weight_decay=weight_decay,
                            label_smoothing=label_smoothing, jit_compile=jit_compile)
    if jit_compile == "auto" and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        jit_compile = bool(tf.config.list_physical_devices("GPU"))
    if weight_decay:
        for variable in model.trainable_variables:
            if variable.name.endswith("kernel") and variable.regularizer is None:
                variable.regularizer = keras.regularizers.L2(weight_decay / 2)
    if one_hot_labels:
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits,
                                                    label_smoothing=label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if model.output_shape[-1] > 5:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
    else:
        loss = (SparseCategoricalCrossentropy(label_smoothing, from_logits=from_logits)
                if label_smoothing else
                keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if model.output_shape[-1] > 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum,
                                                 nesterov=nesterov),
                  loss=loss, metrics=metrics, jit_compile=jit_compile)
    return model


def normalization_layer(data: Any) -> keras.layers.Normalization:
    """The ``keras.layers.Normalization`` for ``data``'s raw pixels.

    Uses the statistics the data source computed in its one pass over the unaugmented training
    images (``Dataset.mean`` / ``Dataset.variance``); a source without them (None) is measured
    with ``Normalization.adapt`` over its training images.
    """
    mean, variance = getattr(data, "mean", None), getattr(data, "variance", None)
    if mean is not None and variance is not None:
        return keras.layers.Normalization(mean=list(mean), variance=list(variance),
                                          name="normalization")
    layer = keras.layers.Normalization(axis=-1, name="normalization")
    layer.adapt(data.train.map(lambda images, labels: images))
    return layer


def build_model(model: str | keras.Model, data: Any, *,
                initializer: str | dict | Callable = DEFAULT_INITIALIZER, normalize: bool = True,
                **options) -> keras.Model:
    """A network for ``data``: ``images -> Normalization -> ResNet`` (raw 0..255 pixels in).

    Args:
        model: a name of ``keras_resnet.modeling.presets.MODEL_PRESETS`` (built with the data's input
            shape and classes) or a ``keras.Model`` (checked against the data).
        data: a ``keras_resnet.data.Dataset``.
        initializer: kernel initializer of a named network.
        normalize: put a ``keras.layers.Normalization`` layer holding the training images'
            per-channel mean and variance in front, so the model takes raw pixels.
        **options: keyword options of the named network (``preact``, ``shortcut``, ...).

    Returns:
        A ``keras.Model``.

    Raises:
        TypeError: ``model`` is neither a name nor a ``keras.Model``.
        ValueError: for an unknown name, or a head (``classes``) or input shape that does not
            fit the data.
    """
    from keras_resnet.modeling.models import build

    if not isinstance(model, keras.Model):
        presets.check_model_name(model)
    classes = options.pop("classes", data.num_classes)
    if classes != data.num_classes:
        raise ValueError(f"model head has classes={classes!r} but data {data.name!r} has "
                         f"{data.num_classes} classes; drop classes or pass "
                         f"{data.num_classes}")
    inputs = keras.Input(shape=data.input_shape, name="images")
    x = normalization_layer(data)(inputs) if normalize else inputs
    if isinstance(model, str):
        resolve_initializer(initializer, "initializer")  # Keras' own lookup, with a clear message
        net = build(model, input_tensor=x, classes=classes, kernel_initializer=initializer,
                    **options)
        return net if normalize else keras.Model(inputs, net.output, name=net.name)
    _check_model_fits(model, data)
    return keras.Model(inputs, model(x), name=model.name) if normalize else model


def _check_model_fits(model, data):
    if tuple(model.input_shape[1:]) != tuple(data.input_shape):
        raise ValueError(f"model {model.name!r} takes input shape {model.input_shape[1:]} but "
                         f"data {data.name!r} has images of {data.input_shape}")
    if model.output_shape[-1] != data.num_classes:
        raise ValueError(f"model head has classes={model.output_shape[-1]} but data "
                         f"{data.name!r} has {data.num_classes} classes; rebuild it with "
                         f"classes={data.num_classes}")
