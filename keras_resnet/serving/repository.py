"""The models a local server serves: the latest version of each, loaded with TensorFlow only.

Shared by the REST (KServe) and gRPC front ends in `keras_resnet.serving.server`; requests are
checked against the signatures here, so both answer bad input the same way.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time

import numpy as np

from keras_resnet.serving.client import DEFAULT_SIGNATURE

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

class BadRequest(ValueError):
    """The request does not fit the model's signature (answered with HTTP 400)."""


class NotFound(LookupError):
    """No such model or version (answered with HTTP 404)."""


class LoadedVersion:
    """One SavedModel version loaded with ``tf.saved_model.load``, run by signature name."""

    def __init__(self, name, version, path):
        import tensorflow as tf
        from google.protobuf import json_format
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        self.name, self.version, self.path = name, version, path
        self.loaded = tf.saved_model.load(path)
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
            proto.ParseFromString(handle.read())
        definitions = get_model_metadata_pb2.SignatureDefMap()
        for key, value in proto.meta_graphs[0].signature_def.items():
            if not key.startswith("__"):
                definitions.signature_def[key].CopyFrom(value)
        self.signature_metadata = json_format.MessageToDict(definitions,
                                                            preserving_proto_field_name=True)
        self.inputs = {}
        for key, function in self.loaded.signatures.items():
            self.inputs[key] = {n: (s.dtype.name, tuple(s.shape.as_list()))
                                for n, s in function.structured_input_signature[1].items()}

    def run(self, signature_name, inputs):
        """Checks ``{input: array-like}`` against the signature, runs it, returns NumPy outputs."""
        if signature_name not in self.inputs:
            raise BadRequest(f"model {self.name!r} has no signature {signature_name!r}; "
                             f"signatures: {sorted(self.inputs)}")
        expected = self.inputs[signature_name]
        if set(inputs) != set(expected):
            raise BadRequest(f"signature {signature_name!r} takes inputs {sorted(expected)}; "
                             f"got {sorted(inputs)}")
        feed = {key: _as_input(key, value, *expected[key]) for key, value in inputs.items()}
        outputs = self.loaded.signatures[signature_name](**feed)
        return {key: value.numpy() for key, value in outputs.items()}


def _as_input(key, value, dtype, shape):
    """JSON/NumPy value -> an array of the signature's dtype and shape, or BadRequest."""
    if dtype == "string":
        items = value if isinstance(value, (list, tuple, np.ndarray)) else None
        if items is None or not all(isinstance(i, (bytes, str)) for i in items):
            raise BadRequest(f"input {key!r} takes a list of bytes ({{\"b64\": ...}} in JSON); "
                             f"got {type(value).__name__}")
        array = np.array([i.encode() if isinstance(i, str) else i for i in items], dtype=object)
    else:
        try:
            array = np.asarray(value)
        except ValueError as error:
            raise BadRequest(f"input {key!r} is ragged: every image must have shape "
                             f"{shape[1:]}; {error}") from None
        if array.dtype.kind not in "biuf":
            raise BadRequest(f"input {key!r} must be numbers ({dtype}); got {array.dtype.kind!r}"
                             f" values such as {array.flat[0]!r}" if array.size else
                             f"input {key!r} is empty")
        if dtype == "uint8":
            if array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0):
                raise BadRequest(f"input {key!r} is uint8: integers 0..255 expected, got "
                                 "fractional values (send raw pixels, not normalized floats)")
            if array.size and (array.min() < 0 or array.max() > 255):
                raise BadRequest(f"input {key!r} is uint8: values must be 0..255; got "
                                 f"{array.min()}..{array.max()}")
        array = array.astype(dtype)
    if len(array.shape) != len(shape) or any(
            e is not None and e != a for e, a in zip(shape, array.shape)):
        wanted = "[" + ", ".join("batch" if i == 0 else ("any" if e is None else str(e))
                                 for i, e in enumerate(shape)) + "]"
        raise BadRequest(f"input {key!r} must have shape {wanted}; got {list(array.shape)}")
    if array.shape[0] == 0:
        raise BadRequest(f"input {key!r} has an empty batch")
    return array


class Repository:
    """The latest version of every model under ``base_dir``, reloaded when a new one appears."""

    def __init__(self, base_dir):
        if not os.path.isdir(base_dir):
            raise FileNotFoundError(f"base_dir {base_dir!r} is not a directory of exported "
                                    "models (write one with `keras-resnet export`)")
        self.base_dir = base_dir
        self.models = {}
        self.lock = threading.Lock()
        self.listeners = []

    def scan(self):
        """Loads new models and versions, drops removed ones; returns the changes as text."""
        from keras_resnet.export.bundle import model_names, versions

        changes = []
        present = set(model_names(self.base_dir))
        for name in sorted(present):
            latest = versions(os.path.join(self.base_dir, name))[-1]
            current = self.models.get(name)
            if current is not None and current.version >= latest:
                continue
            loaded = LoadedVersion(name, latest, os.path.join(self.base_dir, name, str(latest)))
            with self.lock:
                self.models[name] = loaded
            changes.append(f"{name} version {latest}")
            for listener in self.listeners:
                listener(name)
        for name in set(self.models) - present:
            with self.lock:
                del self.models[name]
            changes.append(f"{name} removed")
        return changes

    def watch(self, poll_seconds):
        """Rescans every ``poll_seconds`` in a daemon thread (TF Serving polls the same way)."""
        def loop():
            while True:
                time.sleep(poll_seconds)
                try:
                    for change in self.scan():
                        print(f"serving {change}", flush=True)
                except Exception as error:  # a half-copied model must not kill the server
                    print(f"rescan failed: {error}", flush=True)

        threading.Thread(target=loop, name="saved-models-watcher", daemon=True).start()

    def get(self, name, version=None):
        """The loaded version (latest by default), or NotFound."""
        current = self.models.get(name)
        if current is None:
            raise NotFound(f"model {name!r} is not served here; models: {sorted(self.models)}")
        if version is not None and int(version) != current.version:
            raise NotFound(f"model {name!r} version {version} is not loaded; the served version "
                           f"is {current.version} (latest only)")
        return current

    def predict_json(self, name, body, version=None):
        """TF Serving's REST predict: ``instances`` -> ``predictions``, ``inputs`` -> ``outputs``.
        """
        if isinstance(body, (bytes, str)):
            try:
                body = json.loads(body)
            except ValueError as error:
                raise BadRequest(f"request body is not JSON: {error}") from None
        if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
            raise BadRequest('request must be a JSON object with exactly one of "instances" '
                             '(row form) or "inputs" (columnar form)')
        served = self.get(name, version)
        signature = body.get("signature_name", DEFAULT_SIGNATURE)
        if signature not in served.inputs:
            raise BadRequest(f"model {name!r} has no signature {signature!r}; signatures: "
                             f"{sorted(served.inputs)}")
        input_names = sorted(served.inputs[signature])
        rows = "instances" in body
        data = _unb64(body["instances"] if rows else body["inputs"])
        if rows:
            if not isinstance(data, list) or not data:
                raise BadRequest('"instances" must be a non-empty list of rows')
            if all(isinstance(r, dict) for r in data):
                inputs = {k: [r.get(k) for r in data] for k in {k for r in data for k in r}}
            else:
                inputs = {input_names[0]: data}
        else:
            inputs = data if isinstance(data, dict) else {input_names[0]: data}
        outputs = served.run(signature, inputs)
        outputs = {k: _to_json(v) for k, v in outputs.items()}
        if not rows:
            return {"outputs": outputs}
        batch = len(next(iter(outputs.values())))
        return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(batch)]}

    def status(self, name, version=None):
        """TF Serving's ``GET /v1/models/<name>`` reply (plus KServe's ``name``/``ready``)."""
        served = self.get(name, version)
        return {"name": name, "ready": True, "model_version_status": [
            {"version": str(served.version), "state": "AVAILABLE",
             "status": {"error_code": "OK", "error_message": ""}}]}

    def metadata(self, name, version=None):
        """TF Serving's ``GET /v1/models/<name>/metadata`` reply."""
        served = self.get(name, version)
        return {"model_spec": {"name": name, "signature_name": "",
                               "version": str(served.version)},
                "metadata": {"signature_def": served.signature_metadata}}


def _unb64(value):
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (ValueError, TypeError):
                raise BadRequest("a {\"b64\": ...} value is not valid base64") from None
        return {k: _unb64(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unb64(v) for v in value]
    return value


def _to_json(array):
    if array.dtype == object or array.dtype.kind == "S":
        return np.vectorize(lambda b: b.decode("utf-8", "replace"), otypes=[object])(array).tolist()
    return array.tolist()


def check_request_path(path):
    """An error message when ``path`` names a model that cannot exist (e.g. ``../x``), else None."""
    prefix = "/v1/models/"
    if not path.startswith(prefix) or len(path) == len(prefix):
        return None
    name = path[len(prefix):].split("/")[0].split(":")[0]
    if not _NAME.match(name) or ".." in name:
        return (f"invalid model name {name!r}: model names are letters, digits, '_', '-' and "
                "'.', start with a letter or digit and never contain '..' or '/'")
    return None

