"""Measurements on a model: per-unit gradient norms, branch/shortcut ratios, identity checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import math
import re
import weakref

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import checks
from keras_resnet._tensorflow import require_tensorflow_backend
from keras_resnet.modeling.looped_stages import RepeatedBlocks
from keras_resnet.modeling.stage_conversion import convert_stages, transfer_weights
from keras_resnet.modeling.stats import leaf_layers

_MEMBER = re.compile(r"^(\d+_|preact_|add$|out$)")
_BLOCK_START = re.compile(r"^(?P<block>.+)_1_(conv|dense)$")
UNITS = ("blocks", "layers")


# ----------------------------------------------------------------------------- model walking


def _units(model, units="blocks"):
    """Returns the model's units, in depth order, as dicts of name, kernels and Add layer."""
    checks.one_of(units, "units", UNITS)
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
    """Returns the model to measure: ``model``, or the unrolled twin of a looped one."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {type(model).__name__}")
    if not model.built or not model.inputs:
        raise ValueError(f"model must be a built functional keras.Model; got {model.name!r} "
                         "without defined inputs")
    return _unrolled(model)


# A looped model's blocks live inside one while loop; each measurement reads them from the
# unrolled twin (the same function; its weights are the looped model's per-block slices). The
# twin is built once per model and gets the current weights at every measurement.
_TWINS = weakref.WeakKeyDictionary()


def _unrolled(model):
    if not any(isinstance(layer, RepeatedBlocks) for layer in leaf_layers(model)):
        return model
    twin = _TWINS.get(model)
    if twin is None:
        twin = _TWINS[model] = convert_stages(model, loop=False)
    else:
        transfer_weights(model, twin)
    return twin


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


def gradient_norms(model: keras.Model, x: Any, y: Any,
                   loss: str | Callable = "sparse_categorical_crossentropy", *,
                   training: bool = True, units: str = "blocks") -> dict[str, float]:
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
        TensorFlowBackendRequired: Keras runs on another backend (the gradients are taken
            with ``tf.GradientTape``).
    """
    require_tensorflow_backend("gradient_norms (keras_resnet.diagnostics)")
    model = _check_model(model)
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


def branch_ratios(model: keras.Model, x: Any, *, training: bool = True) -> dict[str, float]:
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
    model = _check_model(model)
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


def gradient_flow(model: keras.Model, x: Any, y: Any,
                  loss: str | Callable = "sparse_categorical_crossentropy", *,
                  training: bool = True) -> list[dict[str, Any]]:
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


def block_identity_errors(model: keras.Model, x: Any, *,
                          training: bool = False) -> list[dict[str, Any]]:
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
    model = _check_model(model)
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
