"""Gradient flow diagnostics: per-block gradient norms, branch/shortcut ratios, identity checks.

A *unit* is a residual or plain block when the model names its layers the keras.applications way
(``{block}_1_conv``, ``{block}_2_bn``, ``{block}_add``, ``{block}_out``, as every model of this
package does), otherwise every leaf layer that owns a kernel. For each unit the functions here
report

* ``gradient_norm``: the L2 norm of the loss gradient over the unit's kernels (Conv/Dense);
* ``branch_ratio``: ``||F(X)|| / ||shortcut(X)||`` at the unit's ``Add`` (None without one).

Measurements run the model functionally (``stateless_call``) in training mode, so BatchNorm uses
batch statistics as during ``fit`` and the model's moving statistics are left untouched. Nested
sub-models (the stages of very deep networks) are looked into.
"""

from __future__ import annotations

import csv
import math
import os
import re

import keras
import numpy as np
import tensorflow as tf

from keras_resnet.stats import leaf_layers

# The rest of a block member's name after "{block}_": "1_conv", "0_pad", "preact_bn", "add", ...
_MEMBER = re.compile(r"^(\d+_|preact_|add$|out$)")
_BLOCK_START = re.compile(r"^(?P<block>.+)_1_(conv|dense)$")
UNITS = ("blocks", "layers")


# ----------------------------------------------------------------------------- model walking


def _units(model, units="blocks"):
    """Returns the model's units, in depth order, as dicts of name, kernels and Add layer."""
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}; got {units!r}")
    leaves = list(leaf_layers(model))
    starts = [m.group("block") for m in map(_BLOCK_START.match, (l.name for l in leaves)) if m]
    if starts and units == "blocks":
        blocks = {name: {"name": name, "kernels": [], "add": None} for name in starts}
        for layer in leaves:
            parts = layer.name.split("_")
            for cut in range(len(parts) - 1, 0, -1):
                block = blocks.get("_".join(parts[:cut]))
                if block is not None and _MEMBER.match("_".join(parts[cut:])):
                    if getattr(layer, "kernel", None) is not None:
                        block["kernels"].append(layer.kernel)
                    if isinstance(layer, keras.layers.Add) and len(_inputs(layer)) == 2:
                        block["add"] = layer
                    break
        return list(blocks.values())
    return [{"name": layer.name, "kernels": [layer.kernel], "add": None}
            for layer in leaves if getattr(layer, "kernel", None) is not None]


def _inputs(layer):
    tensors = layer.input
    return list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]


def _outer_inputs(submodel):
    """The tensors a nested model is called on in its parent's graph."""
    nodes = getattr(submodel, "_inbound_nodes", [])
    if len(nodes) != 1:
        raise ValueError(f"sub-model {submodel.name!r} is called {len(nodes)} times; the "
                         "diagnostics need every nested model to be called exactly once")
    return list(nodes[0].input_tensors)


class _Probe:
    """Evaluates chosen layers' inputs and outputs, looking into nested functional models."""

    def __init__(self, model, wanted):
        self.model = model
        self.wanted = [layer.name for layer in model.layers
                       if not isinstance(layer, keras.Model) and wanted(layer)]
        self.children = [(layer, _Probe(layer, wanted)) for layer in model.layers
                         if isinstance(layer, keras.Model)]
        outputs = []
        for name in self.wanted:
            layer = model.get_layer(name)
            outputs += _inputs(layer) + [layer.output]
        for child, _ in self.children:
            outputs += _outer_inputs(child)
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        self.tap = keras.Model(inputs, outputs, name=f"{model.name}_probe") if outputs else None

    def __call__(self, x, training, found=None):
        """Returns {layer name: (input values, output value)} for every wanted layer."""
        found = {} if found is None else found
        if self.tap is None:
            return found
        values, _ = self.tap.stateless_call(
            [v.value for v in self.tap.trainable_variables],
            [v.value for v in self.tap.non_trainable_variables], x, training=training)
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        position = 0
        for name in self.wanted:
            count = len(_inputs(self.model.get_layer(name)))
            found[name] = (values[position:position + count], values[position + count])
            position += count + 1
        for child, probe in self.children:
            count = len(child.inputs)
            child_x = values[position:position + count]
            position += count
            probe(child_x[0] if count == 1 else child_x, training, found)
        return found


# ----------------------------------------------------------------------------- validation


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {type(model).__name__}")
    if not model.built or not model.inputs:
        raise ValueError(f"model must be a built functional keras.Model; got {model.name!r} "
                         "without defined inputs")


def _check_batch(model, x, y=None):
    x = np.asarray(x, dtype="float32")
    expected = tuple(model.inputs[0].shape[1:])
    if x.ndim != len(expected) + 1 or any(e is not None and e != s
                                           for e, s in zip(expected, x.shape[1:])):
        raise ValueError(f"x must be a batch of shape (batch, {', '.join(map(str, expected))}) "
                         f"for model {model.name!r}; got shape {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"x must hold at least one example; got shape {x.shape}")
    if y is not None:
        y = np.asarray(y)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have one target per example of x ({x.shape[0]}); "
                             f"got {y.shape[0]}")
    return x, y


def _resolve_loss(loss):
    if callable(loss) and not isinstance(loss, str):
        return loss
    if isinstance(loss, str):
        try:
            return keras.losses.get(loss)
        except (ValueError, TypeError):
            raise ValueError(f"loss {loss!r} is not a Keras loss; use e.g. "
                             "'sparse_categorical_crossentropy', 'mean_squared_error' or a "
                             "callable loss(y_true, y_pred)") from None
    raise TypeError(f"loss must be a Keras loss name or a callable; got {loss!r}")


# ----------------------------------------------------------------------------- measurements


def gradient_norms(model, x, y, loss="sparse_categorical_crossentropy", *, training=True,
                   units="blocks"):
    """Measures the loss gradient's L2 norm over each unit's kernels at the current weights.

    Args:
        model: a built functional ``keras.Model`` (blocks are found by their layer names).
        x: a batch of inputs, shape ``(batch,) + model input shape``.
        y: the targets for ``x``.
        loss: a Keras loss name or a callable ``loss(y_true, y_pred)``.
        training: run BatchNorm with batch statistics (as ``fit`` does).
        units: ``"blocks"`` (one value per block; every kernel layer when the model has no
            named blocks) or ``"layers"`` (one value per layer with a kernel).

    Returns:
        A dict ``{unit name: gradient norm}`` in depth order.

    Raises:
        ValueError: for a batch that does not fit the model or an unknown loss.
        TypeError: for a model or loss of the wrong type.
    """
    _check_model(model)
    x, y = _check_batch(model, x, y)
    loss_fn = _resolve_loss(loss)
    units = _units(model, units)
    trainable = model.trainable_variables
    values = [tf.convert_to_tensor(v.value) for v in trainable]
    with tf.GradientTape() as tape:
        tape.watch(values)
        y_pred, _ = model.stateless_call(
            values, [v.value for v in model.non_trainable_variables], x, training=training)
        loss_value = tf.reduce_mean(loss_fn(y, y_pred))
    grads = dict(zip((id(v) for v in trainable), tape.gradient(loss_value, values)))
    result = {}
    for unit in units:
        squares = [tf.reduce_sum(tf.square(grads[id(k)])) for k in unit["kernels"]
                   if grads.get(id(k)) is not None]
        result[unit["name"]] = float(math.sqrt(sum(float(s) for s in squares)))
    return result


def branch_ratios(model, x, *, training=True):
    """Measures ``||F(X)|| / ||shortcut(X)||`` at every residual unit's ``Add``.

    The shortcut is the ``Add``'s first input and the residual branch its second, as in every
    block of this package and of keras.applications.

    Args:
        model: a built functional ``keras.Model``.
        x: a batch of inputs.
        training: run BatchNorm with batch statistics.

    Returns:
        A dict ``{unit name: ratio}`` for the units that have an ``Add`` (plain blocks have none).

    Raises:
        ValueError: for a batch that does not fit the model.
    """
    _check_model(model)
    x, _ = _check_batch(model, x)
    adds = {unit["add"].name: unit["name"] for unit in _units(model) if unit["add"] is not None}
    if not adds:
        return {}
    found = _Probe(model, lambda layer: layer.name in adds)(x, training)
    ratios = {}
    for add_name, unit_name in adds.items():
        (shortcut, residual), _ = found[add_name]
        ratios[unit_name] = float(tf.norm(residual) / tf.maximum(tf.norm(shortcut), 1e-30))
    return ratios


def gradient_flow(model, x, y, loss="sparse_categorical_crossentropy", *, training=True):
    """Gradient norm and branch/shortcut ratio of every unit, at the model's current weights.

    Call it on a freshly built model to measure the network at initialization.

    Args:
        model, x, y, loss, training: as in ``gradient_norms``.

    Returns:
        A list of dicts ``{"depth": i, "unit": name, "gradient_norm": g, "branch_ratio": r}``
        in depth order (``branch_ratio`` is None for units without a shortcut).
    """
    norms = gradient_norms(model, x, y, loss, training=training)
    ratios = branch_ratios(model, x, training=training)
    return [{"depth": i, "unit": name, "gradient_norm": norm, "branch_ratio": ratios.get(name)}
            for i, (name, norm) in enumerate(norms.items(), start=1)]


def block_identity_errors(model, x, *, training=False):
    """Checks block by block whether each residual block maps its shortcut to its output.

    For a block ``Y = relu(S(X) + F(X))`` this measures ``max |F(X)|`` and ``max |Y - S(X)|``
    (``S`` is the identity, or option A's subsample-and-zero-pad). Both are exactly 0 when the
    block is the identity on its (non-negative) input, e.g. with ``zero_init_residual=True``.

    Args:
        model: a built functional ``keras.Model`` with residual blocks.
        x: a batch of inputs.
        training: run BatchNorm with batch statistics instead of the moving ones.

    Returns:
        A list of dicts ``{"unit", "shortcut", "max_abs_branch", "max_abs_error"}`` in depth
        order; ``shortcut`` is ``"identity"`` when ``S(X)`` is the block's input itself.

    Raises:
        ValueError: for a batch that does not fit the model or a model without residual blocks.
    """
    _check_model(model)
    x, _ = _check_batch(model, x)
    units = [unit for unit in _units(model) if unit["add"] is not None]
    if not units:
        raise ValueError(f"model {model.name!r} has no residual blocks (no {{block}}_add layer "
                         "with two inputs); a plain network has nothing to check")
    out_layer = {}
    for layer in leaf_layers(model):
        out_layer[layer.name] = layer
    wanted = set()
    for unit in units:
        wanted.add(unit["add"].name)
        # Post-activation blocks end in "{block}_out" after the Add; pre-activation ones do not.
        if f"{unit['name']}_out" in out_layer and unit["add"].name != f"{unit['name']}_out":
            wanted.add(f"{unit['name']}_out")
    found = _Probe(model, lambda layer: layer.name in wanted)(x, training)
    rows = []
    for unit in units:
        (shortcut, residual), summed = found[unit["add"].name]
        output = found.get(f"{unit['name']}_out", (None, summed))[1]
        shortcut_layer = _inputs(unit["add"])[0]
        kind = "identity" if shortcut_layer is _block_input(unit, out_layer) else "projection"
        if kind == "projection" and f"{unit['name']}_0_pad" in out_layer:
            kind = "zero-pad (option A)"
        rows.append({
            "unit": unit["name"],
            "shortcut": kind,
            "max_abs_branch": float(tf.reduce_max(tf.abs(residual))),
            "max_abs_error": float(tf.reduce_max(tf.abs(output - shortcut))),
        })
    return rows


def _block_input(unit, layers_by_name):
    """The symbolic input of a block: the input of its first layer."""
    for suffix in ("preact_bn", "1_pad", "1_conv", "1_dense"):
        layer = layers_by_name.get(f"{unit['name']}_{suffix}")
        if layer is not None:
            return _inputs(layer)[0]
    return None


# ----------------------------------------------------------------------------- callbacks


class GradientFlowLogger(keras.callbacks.Callback):
    """Records per-unit gradient norms and branch/shortcut ratios during ``fit``.

    Every ``every_n_batches`` training batches (and at the end of every epoch) it measures
    ``gradient_flow`` on a fixed batch and appends one row per unit to ``csv_path``
    (``epoch, step, depth, unit, gradient_norm, branch_ratio``) and writes TensorBoard scalars
    ``gradient_norm/{unit}`` and ``branch_ratio/{unit}`` under ``log_dir``. The latest
    measurement is kept in ``self.history`` (a list of ``(step, rows)``).

    Args:
        x: a fixed batch of training inputs (a few dozen examples are enough).
        y: its targets.
        loss: a Keras loss name or callable; None uses the loss the model was compiled with.
        csv_path: CSV file to write, or None.
        log_dir: TensorBoard log directory, or None.
        every_n_batches: also measure every this many batches; None measures per epoch only.
    """

    def __init__(self, x, y, loss=None, csv_path=None, log_dir=None, every_n_batches=None):
        super().__init__()
        if every_n_batches is not None and (isinstance(every_n_batches, bool) or not isinstance(
                every_n_batches, int) or every_n_batches < 1):
            raise ValueError(f"every_n_batches must be None or an int >= 1; got "
                             f"{every_n_batches!r}")
        if loss is not None:
            _resolve_loss(loss)
        self.x, self.y = np.asarray(x, dtype="float32"), np.asarray(y)
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"y must have one target per example of x ({self.x.shape[0]}); "
                             f"got {self.y.shape[0]}")
        self.loss, self.csv_path, self.log_dir = loss, csv_path, log_dir
        self.every_n_batches = every_n_batches
        self.history = []
        self._writer = None
        self._epoch = 0
        self._step = 0

    def on_train_begin(self, logs=None):
        _check_batch(self.model, self.x, self.y)
        if self.loss is None:
            self.loss = getattr(self.model, "loss", None)
            if self.loss is None:
                raise ValueError("GradientFlowLogger needs loss=... when the model was compiled "
                                 "without a loss")
        if self.csv_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.csv_path)), exist_ok=True)
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(["epoch", "step", "depth", "unit", "gradient_norm",
                                        "branch_ratio"])
        if self.log_dir:
            self._writer = tf.summary.create_file_writer(os.fspath(self.log_dir))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        if self.every_n_batches and self._step % self.every_n_batches == 0:
            self._measure()

    def on_epoch_end(self, epoch, logs=None):
        if not self.history or self.history[-1][0] != self._step:
            self._measure()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()

    def _measure(self):
        rows = gradient_flow(self.model, self.x, self.y, self.loss)
        self.history.append((self._step, rows))
        if self.csv_path:
            with open(self.csv_path, "a", newline="") as f:
                writer = csv.writer(f)
                for row in rows:
                    ratio = "" if row["branch_ratio"] is None else f"{row['branch_ratio']:.6g}"
                    writer.writerow([self._epoch, self._step, row["depth"], row["unit"],
                                     f"{row['gradient_norm']:.6g}", ratio])
        if self._writer is not None:
            with self._writer.as_default(step=self._step):
                for row in rows:
                    tf.summary.scalar(f"gradient_norm/{row['unit']}", row["gradient_norm"])
                    if row["branch_ratio"] is not None:
                        tf.summary.scalar(f"branch_ratio/{row['unit']}", row["branch_ratio"])
            self._writer.flush()


class TrainingError(keras.callbacks.Callback):
    """Measures the error on the (un-augmented) training set at the end of every epoch.

    Unlike the running accuracy ``fit`` reports (averaged over an epoch of changing weights, in
    training mode), this evaluates the model as it stands, in inference mode, on every training
    example. The values go into the epoch logs as ``train_error`` and into ``self.errors``.

    Args:
        data: a ``tf.data.Dataset`` of ``(images, integer labels)`` batches (without
            augmentation), or a tuple ``(images, labels)`` of arrays.
        batch_size: evaluation batch size for arrays.
    """

    def __init__(self, data, batch_size=512):
        super().__init__()
        if isinstance(data, tuple):
            if len(data) != 2 or len(data[0]) != len(data[1]):
                raise ValueError("data must be (images, labels) with one label per image; got "
                                 f"a tuple of {len(data)} items")
            data = tf.data.Dataset.from_tensor_slices(
                (np.asarray(data[0], "float32"), np.asarray(data[1]))).batch(batch_size)
        elif not isinstance(data, tf.data.Dataset):
            raise TypeError(f"data must be a tf.data.Dataset or (images, labels); got "
                            f"{type(data).__name__}")
        self.data = data
        self.errors = []

    def on_epoch_end(self, epoch, logs=None):
        wrong = total = 0
        for images, labels in self.data:
            predicted = np.argmax(self.model.predict_on_batch(images), axis=-1)
            labels = np.asarray(labels).reshape(predicted.shape)
            wrong += int(np.sum(predicted != labels))
            total += len(labels)
        error = wrong / max(total, 1)
        self.errors.append(error)
        if logs is not None:
            logs["train_error"] = error


# ----------------------------------------------------------------------------- plots


def plot_by_depth(curves, path=None, *, ylabel="gradient norm", title=None, log_scale=True,
                  xlabel="depth (block)", ax=None):
    """Plots one line per curve of a value against depth and saves it as an image.

    Args:
        curves: ``{label: sequence of values}`` (one value per unit, shallowest first), or
            ``{label: rows}`` with rows from ``gradient_flow`` (their ``gradient_norm`` is used).
        path: the image file to write (``.png``, ``.svg``, ...); None with ``ax``.
        ylabel, title, xlabel: axis labels and title.
        log_scale: logarithmic y axis (norms span orders of magnitude).
        ax: a matplotlib Axes to draw into (for figures with several panels); the caller then
            saves the figure.

    Returns:
        ``path`` (or ``ax`` when drawing into one).

    Raises:
        ValueError: for empty curves, or neither ``path`` nor ``ax``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(curves, dict) or not curves:
        raise ValueError(f"curves must be a non-empty dict {{label: values}}; got {curves!r}")
    if path is None and ax is None:
        raise ValueError("plot_by_depth needs path=... (an image file) or ax=... (an Axes)")
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, values in curves.items():
        values = [v["gradient_norm"] if isinstance(v, dict) else v for v in values]
        if not values:
            raise ValueError(f"curve {label!r} has no values")
        ax.plot(range(1, len(values) + 1), values, marker="." if len(values) < 60 else None,
                label=label)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if not own_figure:
        return ax
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
