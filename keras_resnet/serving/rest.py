"""TF Serving's REST API over a `Repository`: routes, JSON <-> tensors, errors.

Follows TF Serving's own code route by route: the path patterns and dispatch of
``model_servers/http_rest_api_util.cc`` / ``http_rest_api_handler.cc`` (case-insensitive,
``/versions/<n>`` or ``/labels/<label>``, anything else under ``/v1/`` is ``Malformed request``),
the JSON rules of ``util/json_tensor.cc`` (a uint8 input takes JSON integers only; ``3.0`` or
``true`` is an INVALID_ARGUMENT, not a cast), its output shapes (one output: bare values), and
``{"error": message}`` bodies with the HTTP status of ``http_server.cc``'s ToHTTPStatusCode.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import urllib.parse

import numpy as np

from keras_resnet.serving import examples, json_text
from keras_resnet.serving.inference import classify_or_regress
from keras_resnet.serving.repository import BadRequest, Repository, ServingStatus

# kPredictionApiGegex and kModelStatusApiRegex of http_rest_api_util.cc; kPathRegex of the handler.
PREDICT_PATH = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                          r":(classify|regress|predict)", re.IGNORECASE)
STATUS_PATH = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r"(?:/(metadata))?", re.IGNORECASE)
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)

logger = logging.getLogger(__name__)


def response_bytes(payload: dict) -> bytes:
    """The JSON text of an answer as TF Serving writes it: strings as UTF-8, not ``\\u`` escapes.

    A string output's bytes that are not UTF-8 are written as they are, as RapidJSON's
    ``Writer::String`` does (they arrive here surrogate-escaped, see `_json_values`).
    """
    text = json.dumps(payload, ensure_ascii=False)
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate of a request's own \uD800 escape, echoed
        return text.encode("utf-8", "backslashreplace")


def handle(repository: Repository, method: str, path: str, body: bytes) -> tuple[int, dict]:
    """Answers one request as TF Serving's REST API does; returns (HTTP status, JSON body)."""
    try:
        return 200, _dispatch(repository, method, path, body)
    except ServingStatus as status:
        return status.http_status, {"error": status.message}
    except RecursionError:  # a document that parsed but nests too deeply to walk (or show)
        return 400, {"error": f"JSON Value: {json_text.TOO_DEEP}"}
    except Exception as error:  # noqa: BLE001 (answer rather than drop the connection)
        logger.exception("%s %s failed", method, path)
        return 500, {"error": f"Internal: {type(error).__name__}: {error}"}


def _dispatch(repository, method, path, body):
    malformed = BadRequest(f"Malformed request: {method} {path}")
    pattern = PREDICT_PATH if method == "POST" else STATUS_PATH if method == "GET" else None
    match = pattern.fullmatch(path) if pattern else None
    if match is None:
        raise malformed
    name = urllib.parse.unquote(match.group(1) or "")
    version = int(match.group(2)) if match.group(2) else None
    label = urllib.parse.unquote(match.group(3)) if match.group(3) else None
    if method == "GET":
        if not name:
            raise BadRequest("Missing model name in request.")
        if match.group(4):
            return repository.metadata(name, version, label)
        return repository.status(name, version, label)
    verb = match.group(4).lower()
    if verb != "predict":
        return _classify_or_regress(repository, name, version, label, body, verb)
    return predict(repository, name, version, label, body)


def _classify_or_regress(repository, name, version, label, body, method):
    """``:classify`` / ``:regress``: JSON examples -> tf.Examples -> ``{"results": [...]}``."""
    document = _parse(body)
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise BadRequest(f"JSON Value: {_show(document)} not formatted correctly. "
                         "'signature_name' key must be a string value.")
    serialized = examples.from_json(document)
    _, outputs = classify_or_regress(repository, method, name, serialized, signature_name,
                                     version, label)
    return {"results": examples.results_json(method, outputs)}


def _parse(body):
    document = json_text.loads(body)  # RapidJSON's kParseNanAndInfFlag: NaN, Inf, Infinity
    if not isinstance(document, dict):
        raise BadRequest(f"JSON Value: {_show(document)} Is not object")
    return document


def predict(repository, name, version, label, body) -> dict:
    """``POST .../<name>:predict``: ``instances`` -> ``predictions``, ``inputs`` -> ``outputs``."""
    document = _parse(body)
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise BadRequest(f"JSON Value: {_show(document)} not formatted correctly. "
                         "'signature_name' key must be a string value.")
    served = repository.get(name, version, label)
    key = signature_name or "serving_default"
    if key not in served.all_signature_defs:
        raise BadRequest(f'Serving signature name: "{key}" not found in signature def')
    if not served.all_signature_defs[key].inputs:  # __saved_model_init_op
        raise BadRequest("Failed to get input map for signature: "
                         f"{signature_name or 'DEFAULT'}")
    dtypes = served.input_dtypes(key)
    if "instances" in document and "inputs" in document:
        raise BadRequest(f"JSON Value: {_show(document)} Not formatted correctly expecting only "
                         "one of 'inputs' or 'instances' keys to exist ")
    if "instances" in document:
        tensors, rows = _from_instances(document, dtypes, body), True
    elif "inputs" in document:
        tensors, rows = _from_inputs(document["inputs"], dtypes, body), False
    else:
        raise BadRequest("Missing 'inputs' or 'instances' key")
    _, outputs = repository.predict(name, tensors, key, version, label)
    return _to_json(outputs, rows)


def _from_instances(document, dtypes, body):
    instances = document["instances"]
    if not isinstance(instances, list):
        raise BadRequest(f"JSON Value: {_show(document)} Excepting 'instances' to be an "
                         "list/array")
    if not instances:
        raise BadRequest(f"JSON Value: {_show(document)} No values in 'instances' array")
    objects = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if not objects and len(dtypes) > 1:
        raise BadRequest("instances is a plain list, but expecting list of objects as multiple "
                         "input tensors required as per tensorinfo_map")
    if not objects:
        for index, row in enumerate(instances):
            if isinstance(row, dict) and not _is_b64(row):
                raise BadRequest(f"Expecting value/list but got object at item {index} of "
                                 "input list")
        alias = next(iter(dtypes))
        return {alias: _tensor(instances, dtypes[alias], body, rows=True)}
    columns = {alias: [] for alias in dtypes}
    for index, row in enumerate(instances):
        if not isinstance(row, dict) or _is_b64(row):
            raise BadRequest(f"Expecting object but got list at item {index} of input list")
        for key in row:
            if key not in dtypes:
                raise BadRequest(f"Failed to process element: {index} key: {key} of "
                                 "'instances' list. Error: INVALID_ARGUMENT: JSON object: does "
                                 f"not have named input: {key}")
        if set(row) != set(dtypes):
            raise BadRequest(f"Failed to process element: {index} of 'instances' list. JSON "
                             f"object: {_show(row)} keys must be equal to: "
                             f"{','.join(sorted(dtypes))}")
        for alias in dtypes:
            columns[alias].append(row[alias])
    return {alias: _tensor(values, dtypes[alias], body, rows=True, key=alias)
            for alias, values in columns.items()}


def _from_inputs(inputs, dtypes, body):
    if not isinstance(inputs, dict) or _is_b64(inputs):
        if len(dtypes) > 1:
            raise BadRequest("inputs is a plain value/list, but expecting an object as multiple "
                             "input tensors required as per tensorinfo_map")
        inputs = {next(iter(dtypes)): inputs}
    tensors = {}
    for alias, dtype in dtypes.items():
        if alias not in inputs:
            raise BadRequest(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = _tensor(inputs[alias], dtype, body, rows=False)
    return tensors


def _tensor(value, dtype, body, rows, key=None):
    """JSON values -> an array of the signature's dtype, by json_tensor.cc's rules."""
    if dtype == object:
        array = np.array(_strings(value), dtype=object)
    else:
        try:
            array = np.asarray(value)
        except ValueError:  # ragged
            array = None
        # numpy reads [true, 1] as ints: JSON booleans need the element-wise look
        booleans = b"true" in body or b"false" in body
        if array is None or booleans or not _fits(array, np.dtype(dtype)):
            _check_leaves(value, np.dtype(dtype), rows, key)
            try:
                array = np.asarray(value)
            except ValueError as error:  # not expected after the checks; still a client error
                raise BadRequest(f"JSON Value is not a dense tensor: {error}") from None
        array = array.astype(dtype)  # ints wrap into uint8 as in TF's FromProto (C++ cast)
    return array


def _check_leaves(value, dtype, rows, key=None):
    """Raises TF Serving's error for the first value of the wrong type or list of the wrong size.

    As FillTensorProto / AddInstanceItem do: the dense shape is read along the first elements,
    every list must match it, every instance must have the size and shape of the first.
    """
    items = value if rows and isinstance(value, list) else [value]
    first = None
    for index, item in enumerate(items):
        shape = _dense_shape(item)
        problem = _first_bad_leaf(item, dtype, shape)
        if problem is None and rows:
            if first is None:
                first = shape
            elif int(np.prod(shape)) != int(np.prod(first)):
                problem = (f"Expecting tensor size: {int(np.prod(first))} but got: "
                           f"{int(np.prod(shape))}")
            elif shape != first:
                problem = f"Expecting shape {_shape_text(first)} but got: {_shape_text(shape)}"
        if problem and rows:
            where = f"{index} key: {key}" if key else f"{index}"
            raise BadRequest(f"Failed to process element: {where} of 'instances' list. "
                             f"Error: INVALID_ARGUMENT: {problem}")
        if problem:
            raise BadRequest(problem)


def _dense_shape(value):
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _shape_text(shape):
    return "[" + ",".join(str(size) for size in shape) + "]"


def _first_bad_leaf(value, dtype, shape, level=0):
    if isinstance(value, list):
        if level >= len(shape):
            return f"Encountered list at unexpected level: {level} expected < {len(shape)}"
        if len(value) != shape[level]:
            return (f"Encountered list at unexpected size: {len(value)} at level: {level} "
                    f"expected size: {shape[level]}")
        for item in value:
            problem = _first_bad_leaf(item, dtype, shape, level + 1)
            if problem:
                return problem
        return None
    if level != len(shape):
        return (f"JSON Value: {_show(value)} found at incorrect level: {level + 1} in the JSON "
                f"DOM. Expected at level: {len(shape)}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and dtype.kind in "iu":  # IsInt / IsInt64 / IsUint / IsUint64 of AddValueToTensor
        low, high = _INT_RANGES.get(dtype.name, _INT_RANGES["int32"])
        number = isinstance(value, int) and low <= value <= high
    elif number and not _lossless(value, dtype):
        return (f"Cannot convert JSON value: {_show(value)} to {_dtype_name(dtype)} without "
                "loss of precision.")
    if number:
        return None
    return (f"JSON Value: {_show(value)} Type: {_json_type(value)} is not of expected type: "
            f"{_dtype_name(dtype)}")


# The JSON integers AddValueToTensor takes: int_val types read IsInt(), the others their own.
_INT_RANGES = {"int64": (-2**63, 2**63 - 1), "uint32": (0, 2**32 - 1),
               "uint64": (0, 2**64 - 1), "int32": (-2**31, 2**31 - 1)}


def _lossless(value, dtype):
    """IsLosslessDecimal: non-finite is fine; integers within the mantissa; doubles in range."""
    if isinstance(value, float) and not np.isfinite(value):
        return True
    if isinstance(value, int) and -2**63 <= value < 2**64:
        return abs(value) <= 2**np.finfo(dtype).nmant * 2 - 1
    return -float(np.finfo(dtype).max) <= value <= float(np.finfo(dtype).max)


def _fits(array, dtype):
    """Whether a numeric array passes AddValueToTensor as a whole (the fast path)."""
    if array.dtype.kind not in "iuf" or (dtype.kind in "iu" and array.dtype.kind == "f"):
        return False
    if not array.size:
        return True
    if dtype.kind in "iu":
        low, high = _INT_RANGES.get(dtype.name, _INT_RANGES["int32"])
        return low <= int(array.min()) and int(array.max()) <= high
    if array.dtype.kind in "iu":
        return max(-int(array.min()), int(array.max())) <= 2**np.finfo(dtype).nmant * 2 - 1
    finite = array[np.isfinite(array)]
    return not finite.size or float(np.abs(finite).max()) <= float(np.finfo(dtype).max)


def _strings(value):
    if isinstance(value, list):
        return [_strings(item) for item in value]
    if _is_b64(value):
        text = value["b64"]
        try:  # absl::Base64Unescape also takes unpadded base64
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except ValueError:
            raise BadRequest("Unable to base64 decode") from None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")  # the body's bytes, as RapidJSON
    raise BadRequest(f"JSON Value: {_show(value)} Type: {_json_type(value)} is not of expected "
                     "type: string")


def _is_b64(value):
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _json_type(value):
    return {bool: "True" if value else "False", type(None): "Null", dict: "Object", list: "Array",
            str: "String"}.get(type(value), "Number")


def _dtype_name(dtype):
    return {"float32": "float", "float64": "double"}.get(dtype.name, dtype.name)


_show = json_text.show


def _to_json(outputs, rows):
    """MakeJsonFromTensors: one output gives bare values, several give objects."""
    values = {alias: _json_values(alias, array) for alias, array in outputs.items()}
    if not rows:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    batch = len(next(iter(values.values())))
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [{alias: value[i] for alias, value in values.items()}
                            for i in range(batch)]}


def _json_values(alias, array):
    if array.dtype == object or array.dtype.kind == "S":
        if alias.endswith("_bytes"):  # kBytesTensorNameSuffix: binary outputs as {"b64": ...}
            convert = lambda b: {"b64": base64.b64encode(b).decode("ascii")}  # noqa: E731
        else:
            # Writer::String copies the bytes: UTF-8 text stays text (`response_bytes` writes
            # it unescaped), other bytes go out as they are (surrogateescape carries them).
            convert = lambda b: b.decode("utf-8", "surrogateescape")  # noqa: E731
        return np.vectorize(convert, otypes=[object])(array).tolist()
    if array.dtype == np.float32:  # WriteDecimal: %g, else %.9g; NaN, Infinity, -Infinity
        return np.vectorize(json_text.decimal_value, otypes=[object])(array).tolist()
    return array.tolist()
