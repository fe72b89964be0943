"""``tf.train.Example`` requests of TF Serving's ``:classify`` / ``:regress`` (REST and gRPC).

JSON examples become Examples by ``util/json_tensor.cc``'s rules (``{"b64": ...}`` and strings:
bytes_list; integers and booleans: int64_list; other numbers: float_list), an optional
``context`` is merged into every example as TF Serving's ExampleListWithContext is, and results
are written as ``[[label, score], ...]`` per example (classify) or a score per example (regress).
"""

from __future__ import annotations

import base64

import numpy as np

from keras_resnet.serving.json_text import decimal_value, show
from keras_resnet.serving.repository import BadRequest

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _json_type(value):
    return {bool: "True" if value else "False", type(None): "Null", dict: "Object", list: "Array",
            str: "String"}.get(type(value), "Number")


def _add_value(feature, name, value):
    """AddValueToFeature: one JSON value into a Feature of a consistent kind."""
    if isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str):
        text = value["b64"]
        try:
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise BadRequest("Unable to base64 decode") from None
        kind, value = "bytes_list", data
    elif isinstance(value, str):
        kind, value = "bytes_list", value.encode("utf-8", "surrogateescape")
    elif isinstance(value, bool):
        kind, value = "int64_list", int(value)
    elif isinstance(value, int) and -2**63 <= value < 2**64:  # RapidJSON's Int64 / Uint64
        kind = "int64_list"
    elif isinstance(value, (int, float)):  # a double (NaN and Infinity included)
        kind, value = "float_list", float(value)
    else:
        raise BadRequest(f"Feature: {name} has element with unexpected JSON type: "
                         f"{_json_type(value)}")
    current = feature.WhichOneof("kind")
    if current not in (None, kind):
        raise BadRequest(f"Unexpected element type in feature: {name} expecting type: "
                         f"{current.replace('_list', '')}")
    if kind == "int64_list" and value >= 2**63:
        raise BadRequest(f"Feature: {name} has uint64 element. Only int64 is supported.")
    if kind == "float_list" and abs(value) > _FLOAT32_MAX and abs(value) != float("inf"):
        raise BadRequest(f"Cannot convert JSON value: {show(value)} to float without loss of "
                         "precision.")
    getattr(feature, kind).value.append(value)


def _example(value):
    """MakeExampleFromJsonObject."""
    import tensorflow as tf

    if not isinstance(value, dict):
        raise BadRequest(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = tf.train.Example()
    for name, content in value.items():
        feature = example.features.feature[name]
        for item in content if isinstance(content, list) else [content]:
            _add_value(feature, name, item)
    return example


def from_json(document) -> list[bytes]:
    """The serialized Examples of a ``:classify``/``:regress`` JSON request."""
    context = _example(document["context"]) if "context" in document else None
    if "examples" not in document:
        raise BadRequest(f"JSON Value: {show(document)} When method is classify, key "
                         "'examples' is expected and was not found")
    items = document["examples"]
    if not isinstance(items, list):
        raise BadRequest(f"JSON Value: {show(document)} Expecting 'examples' value to be an "
                         "list/array")
    if not items:
        raise BadRequest(f"JSON Value: {show(document)} 'examples' value is an empty array")
    return [_with_context(_example(item), context) for item in items]


def _with_context(example, context):
    if context is None:
        return example.SerializeToString()
    # InputToSerializedExampleTensor: the context's bytes, then the example's (which win when
    # the parsed message has a feature twice)
    return context.SerializeToString() + example.SerializeToString()


def from_input(request_input) -> list[bytes]:
    """The serialized Examples of a gRPC ``tensorflow.serving.Input`` (util.cc's rules)."""
    which = request_input.WhichOneof("kind")
    serialized = []
    if which == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif which == "example_list_with_context":
        listed = request_input.example_list_with_context
        serialized = [_with_context(e, listed.context) for e in listed.examples]
    if not serialized:
        raise BadRequest("Input is empty.")
    return serialized


def results_json(method, outputs) -> list:
    """ClassificationResult / RegressionResult as TF Serving's REST API writes them.

    Classify: ``[[label, score], ...]`` per example (a missing label is "", a missing score 0).
    """
    if method == "regress":
        return [decimal_value(v) for v in outputs["outputs"].reshape(-1)]
    return [[[label, score] for label, score in row] for row in pairs(outputs)]


def pairs(outputs) -> list:
    """``[[(label, score), ...] per example]`` from a classification signature's outputs."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    shape = (classes if classes is not None else scores).shape
    return [[(classes[i, c].decode("utf-8", "replace") if classes is not None else "",
              decimal_value(scores[i, c]) if scores is not None else 0.0)
             for c in range(shape[1])] for i in range(shape[0])]
