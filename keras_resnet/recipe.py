"""The paper's recipe as Keras pieces: SGD + L2, learning-rate schedule, warm-up, loss, model.

He et al. 2015 (CIFAR-10): SGD with momentum 0.9, learning rate 0.1 divided by 10 at 50% and 75%
of training (32k and 48k of 64k iterations), weight decay 1e-4, and for ResNet-110 a warm-up at
0.01 until the training error is below 80%. ``keras_resnet.training`` puts them together; the
tuning and diagnostics code uses them directly:

* ``compile_model(model, ...)``: SGD + L2 on the kernels + (label-smoothed) cross-entropy.
* ``PaperSchedule``: the step-decay (or cosine) ``keras.optimizers.schedules`` object.
* ``PaperWarmup``: the callback that ends the schedule's warm-up.
* ``LearningRateLogger``: puts the learning rate into the epoch logs.
* ``build_model(name, data)``: a named network with a ``Normalization`` layer in front.
"""

from __future__ import annotations

import math

import keras

from keras_resnet import presets

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("step", "cosine", "constant")

@keras.saving.register_keras_serializable(package="keras_resnet")
class PaperSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate of He et al.: step decay (÷10 at 50% and 75% of training) or cosine.

    With ``warmup_learning_rate`` the rate is held there until ``PaperWarmup`` ends the warm-up
    (the paper's 0.01 for ResNet-110, until the training error falls below 80%); the decay
    boundaries still count from step 0, as in the paper.

    Args:
        initial_learning_rate: the rate before the first boundary (the paper's 0.1).
        total_steps: optimizer steps of the whole training (epochs x steps per epoch).
        kind: ``"step"``, ``"cosine"`` (to 0 at ``total_steps``) or ``"constant"``.
        boundaries: fractions of ``total_steps`` where step decay multiplies by ``decay``.
        decay: the step-decay factor.
        warmup_learning_rate: rate while warming up; None for no warm-up.
        name: name of the schedule.
    """

    def __init__(self, initial_learning_rate=0.1, total_steps=64000, kind="step",
                 boundaries=(0.5, 0.75), decay=0.1, warmup_learning_rate=None,
                 name="paper_schedule"):
        super().__init__()
        _positive_float(initial_learning_rate, "initial_learning_rate")
        _positive_int(total_steps, "total_steps")
        if kind not in SCHEDULES:
            raise ValueError(f"kind must be one of {SCHEDULES}; got {kind!r}")
        if list(boundaries) != sorted(boundaries) or not all(0 < b < 1 for b in boundaries):
            raise ValueError(f"boundaries must be increasing fractions in (0, 1); "
                             f"got {boundaries!r}")
        if warmup_learning_rate is not None:
            _positive_float(warmup_learning_rate, "warmup_learning_rate")
        self.initial_learning_rate = float(initial_learning_rate)
        self.total_steps = int(total_steps)
        self.kind = kind
        self.boundaries = tuple(float(b) for b in boundaries)
        self.decay = float(decay)
        self.warmup_learning_rate = warmup_learning_rate
        self.name = name
        # 1.0 while warming up; PaperWarmup sets it to 0.0 (a variable: read inside the graph).
        self.warming_up = keras.Variable(1.0 if warmup_learning_rate else 0.0, trainable=False,
                                         name="warming_up", dtype="float32")

    @property
    def boundary_steps(self):
        """The optimizer steps where step decay happens (``int(fraction * total_steps)``)."""
        return tuple(int(b * self.total_steps) for b in self.boundaries)

    def __call__(self, step):
        from keras import ops

        step = ops.cast(step, "float32")
        if self.kind == "constant":
            rate = ops.convert_to_tensor(self.initial_learning_rate, "float32")
        elif self.kind == "cosine":
            progress = ops.minimum(step / self.total_steps, 1.0)
            rate = 0.5 * self.initial_learning_rate * (1.0 + ops.cos(math.pi * progress))
        else:
            rate = ops.convert_to_tensor(self.initial_learning_rate, "float32")
            for i, boundary in enumerate(self.boundary_steps, 1):
                value = self.initial_learning_rate * self.decay ** i
                rate = ops.where(step >= boundary, ops.cast(value, "float32"), rate)
        if self.warmup_learning_rate:
            rate = ops.where(self.warming_up > 0, ops.cast(self.warmup_learning_rate, "float32"),
                             rate)
        return rate

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "total_steps": self.total_steps, "kind": self.kind,
                "boundaries": list(self.boundaries), "decay": self.decay,
                "warmup_learning_rate": self.warmup_learning_rate, "name": self.name}


class PaperWarmup(keras.callbacks.Callback):
    """Ends a ``PaperSchedule`` warm-up once the training error falls below ``max_error``.

    The check runs after every batch on the epoch's running accuracy. A resumed run starts
    warming up again and ends it after its first batch when the restored model is past it.

    Args:
        schedule: the ``PaperSchedule`` with ``warmup_learning_rate`` set.
        max_error: training error (1 - accuracy) below which the warm-up ends (paper: 0.8).
        metric: the accuracy entry of the logs.
    """

    def __init__(self, schedule, max_error=0.8, metric="accuracy"):
        super().__init__()
        self.schedule = schedule
        self.max_error = float(max_error)
        self.metric = metric
        self.ended_at_step = None

    def on_train_batch_end(self, batch, logs=None):
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

    def __init__(self, schedule=None):
        super().__init__()
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
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

    def __init__(self, label_smoothing=0.0, from_logits=False,
                 name="sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        from keras import ops

        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing,
                "from_logits": self.from_logits}


def compile_model(model, *, learning_rate=0.1, momentum=0.9, weight_decay=1e-4,
                  label_smoothing=0.0, nesterov=False, jit_compile="auto", from_logits=False):
    """Compiles ``model`` with the paper's recipe: SGD + momentum, L2 on kernels, cross-entropy.

    Weight decay is the paper's (coupled) L2 penalty: every kernel without a regularizer gets
    ``L2(weight_decay / 2)``, so SGD adds ``weight_decay * w`` to its gradient (as
    ``keras_resnet.build(..., weight_decay=...)`` does); BN parameters and biases are not decayed.

    Args:
        model: a ``keras.Model`` taking images and returning class probabilities (or logits
            with ``from_logits=True``).
        learning_rate: a float or a ``keras.optimizers.schedules.LearningRateSchedule`` such as
            ``PaperSchedule``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay on kernels (0 for none).
        label_smoothing: in [0, 1); 0 is the plain cross-entropy.
        nesterov: Nesterov momentum.
        jit_compile: XLA compilation: True, False or ``"auto"`` (XLA when a GPU is visible; on
            CPU it costs ~20 s of compilation per shape and trains no faster).
        from_logits: the model returns logits.

    Returns:
        The model, compiled, with metrics ``accuracy`` and ``top5_accuracy`` (when it has more
        than 5 classes).

    Raises:
        ValueError: for an out-of-range argument.
    """
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        _positive_float(learning_rate, "learning_rate")
    _check_compile_arguments(momentum, weight_decay, label_smoothing, jit_compile)
    if jit_compile == "auto":
        import tensorflow as tf

        jit_compile = bool(tf.config.list_physical_devices("GPU"))
    if weight_decay:
        for variable in model.trainable_variables:
            if variable.name.endswith("kernel") and variable.regularizer is None:
                variable.regularizer = keras.regularizers.L2(weight_decay / 2)
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


def build_model(model, data, *, initializer="he_normal", normalize=True, **options):
    """A network for ``data``: ``images -> Normalization -> ResNet`` (raw 0..255 pixels in).

    Args:
        model: a name of ``keras_resnet.presets.MODEL_PRESETS`` (built with the data's input
            shape and classes) or a ``keras.Model`` (checked against the data).
        data: a ``keras_resnet.data.Dataset``.
        initializer: kernel initializer of a named network.
        normalize: put a ``keras.layers.Normalization`` layer holding the training images'
            per-channel mean and variance in front, so the model takes raw pixels.
        **options: keyword options of the named network (``preact``, ``shortcut``, ...).

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: for an unknown name, or a head (``classes``) or input shape that does not
            fit the data.
    """
    from keras_resnet.models import build

    classes = options.pop("classes", data.num_classes)
    if classes != data.num_classes:
        raise ValueError(f"model head has classes={classes!r} but data {data.name!r} has "
                         f"{data.num_classes} classes; drop classes or pass "
                         f"{data.num_classes}")
    inputs = keras.Input(shape=data.input_shape, name="images")
    x = inputs
    if normalize:
        x = keras.layers.Normalization(mean=list(data.mean), variance=list(data.variance),
                                       name="normalization")(x)
    if isinstance(model, str):
        _check_model_name(model)
        net = build(model, input_tensor=x, classes=classes, kernel_initializer=initializer,
                    **options)
        return net if normalize else keras.Model(inputs, net.output, name=net.name)
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a model name or a keras.Model; got {model!r}")
    if tuple(model.input_shape[1:]) != tuple(data.input_shape):
        raise ValueError(f"model {model.name!r} takes input shape {model.input_shape[1:]} but "
                         f"data {data.name!r} has images of {data.input_shape}")
    if model.output_shape[-1] != data.num_classes:
        raise ValueError(f"model head has classes={model.output_shape[-1]} but data "
                         f"{data.name!r} has {data.num_classes} classes; rebuild it with "
                         f"classes={data.num_classes}")
    return keras.Model(inputs, model(x), name=model.name) if normalize else model


# ----------------------------------------------------------------------------- validation


def _positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{argument} must be a positive int; got {value!r}")
    return value


def _positive_float(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{argument} must be a number > 0 (e.g. 0.1); got {value!r}")
    return float(value)


def _check_compile_arguments(momentum, weight_decay, label_smoothing, jit_compile):
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
            or not 0 <= momentum < 1:
        raise ValueError(f"momentum must be a float in [0, 1); got {momentum!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) \
            or weight_decay < 0:
        raise ValueError(f"weight_decay must be a float >= 0 (e.g. 1e-4); got {weight_decay!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)) \
            or not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be a float in [0, 1); got {label_smoothing!r}")
    if jit_compile not in (True, False, "auto"):
        raise ValueError(f"jit_compile must be True, False or 'auto'; got {jit_compile!r}")


def _check_model_name(name):
    if name not in presets.MODEL_PRESETS:
        raise ValueError(f"unknown model {name!r}; valid names: "
                         f"{', '.join(presets.MODEL_PRESETS)}")
