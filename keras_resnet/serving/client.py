"""TF Serving's REST and gRPC APIs from Python: predict, model status and metadata."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
MAX_BODY_BYTES = 32 * 1024 * 1024


class ServingError(RuntimeError):
    """A request the server refused or failed; ``status`` is the HTTP status (None: no reply)."""

    def __init__(self, message, status=None):
        super().__init__(f"HTTP {status}: {message}" if status else message)
        self.status = status
        self.message = message


def _jsonable(value):
    """NumPy arrays/scalars and bytes -> JSON values; bytes become TF Serving's ``{"b64": ...}``."""
    if isinstance(value, (bytes, bytearray)):
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OS":
            return [_jsonable(item) for item in value]
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


class Client:
    """A client for TF Serving (or `serve`): REST, and gRPC when ``grpc_target`` is given.

    Args:
        url: the REST base URL, e.g. ``http://127.0.0.1:8501``.
        grpc_target: ``host:port`` of the gRPC API (TF Serving's ``--port``, usually 8500).
        timeout: seconds per request.
    """

    def __init__(self, url="http://127.0.0.1:8501", grpc_target=None, timeout=30.0):
        if not isinstance(url, str) or not re.match(r"^https?://[^/]+", url):
            raise ValueError(f"url must be an http(s) URL such as http://127.0.0.1:8501; got "
                             f"{url!r}")
        if grpc_target is not None and (not isinstance(grpc_target, str)
                                        or not re.match(r"^[^:/]+:\d+$", grpc_target)):
            raise ValueError(f"grpc_target must be 'host:port'; got {grpc_target!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"timeout must be a number of seconds > 0; got {timeout!r}")
        self.url = url.rstrip("/")
        self.grpc_target = grpc_target
        self.timeout = float(timeout)
        self._channel = None

    def _path(self, model, version, suffix=""):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model name; got {model!r}")
        path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
        if version is not None:
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise ValueError(f"version must be an int >= 1 or None (latest); got {version!r}")
            path += f"/versions/{version}"
        return self.url + path + suffix

    def _request(self, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error") or text
            except (ValueError, AttributeError):
                message = text
            raise ServingError(message, error.code) from None
        except urllib.error.URLError as error:
            raise ServingError(f"cannot reach {url}: {error.reason}") from None

    def status(self, model, version=None):
        """``GET /v1/models/<model>[/versions/<v>]``: ``{"model_version_status": [...]}``."""
        return self._request(self._path(model, version))

    def metadata(self, model, version=None):
        """``GET .../metadata``: the model spec and its signature definitions."""
        return self._request(self._path(model, version, "/metadata"))

    def predict(self, model, instances=None, inputs=None, signature_name=None, version=None):
        """``POST .../<model>:predict`` in the row (``instances``) or columnar (``inputs``) form.

        Args:
            model: the model name.
            instances: a list (or array) of rows; bytes are sent as ``{"b64": ...}``.
            inputs: a batch (or ``{input name: batch}``), the columnar form.
            signature_name: e.g. ``"serving_bytes"``; default ``serving_default``.
            version: an int to pin a version; None for the latest.

        Returns:
            The decoded JSON reply: ``{"predictions": [...]}`` or ``{"outputs": {...}}``.

        Raises:
            ServingError: the server answered with an error (``status`` holds the HTTP code).
        """
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row form) or inputs= (columnar "
                             "form)")
        body = {"instances": _jsonable(instances)} if inputs is None else \
            {"inputs": _jsonable(inputs)}
        if signature_name is not None:
            body["signature_name"] = signature_name
        return self._request(self._path(model, version, ":predict"), body)

    def classify_images(self, model, images=None, encoded=None, version=None):
        """Top-k rows for uint8 images [batch, h, w, c] or for encoded JPEG/PNG bytes.

        Returns:
            One dict per image with ``scores``, ``classes`` and (when exported) ``labels``.
        """
        if (images is None) == (encoded is None):
            raise ValueError("pass exactly one of images= (uint8 array) or encoded= (list of "
                             "JPEG/PNG bytes)")
        if images is not None:
            return self.predict(model, instances=np.asarray(images), version=version)[
                "predictions"]
        return self.predict(model, instances=[bytes(b) for b in encoded],
                            signature_name="serving_bytes", version=version)["predictions"]

    @staticmethod
    def predict_request(model, inputs, signature_name=DEFAULT_SIGNATURE, version=None):
        """Builds TF Serving's gRPC ``PredictRequest`` from ``{input name: array}``."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        if not isinstance(inputs, dict) or not inputs:
            raise ValueError(f"inputs must be a non-empty dict {{input name: array}}; got "
                             f"{type(inputs).__name__}")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        for name, value in inputs.items():
            value = np.asarray(value, dtype=object) if isinstance(value, (list, tuple)) and \
                value and isinstance(value[0], bytes) else np.asarray(value)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return request

    def grpc_predict(self, model, inputs, signature_name=DEFAULT_SIGNATURE, version=None):
        """``PredictionService.Predict`` over gRPC; returns ``{output name: numpy array}``."""
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if self.grpc_target is None:
            raise ValueError("grpc_predict needs Client(..., grpc_target='host:port')")
        request = self.predict_request(model, inputs, signature_name, version)
        if self._channel is None:
            self._channel = grpc.insecure_channel(
                self.grpc_target, options=[("grpc.max_receive_message_length", MAX_BODY_BYTES),
                                           ("grpc.max_send_message_length", MAX_BODY_BYTES)])
        stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        try:
            response = stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(f"{error.code().name}: {error.details()}") from None
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}


