"""TF Serving's REST and gRPC APIs from Python: predict, model status and metadata.

`Client` reads each signature's input dtypes from the model's metadata once (cached per model,
version and label) and casts what it sends to them, so code that runs against the local server
runs unchanged against TF Serving, which takes a uint8 input only as integers (REST) or as a
DT_UINT8 tensor (gRPC). Values that do not fit the dtype (``0.5`` or ``300`` for uint8) raise
ValueError before anything is sent.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from keras_resnet import checks
from keras_resnet.constants import (BYTES_SIGNATURE, CLASSIFY_SIGNATURE, DEFAULT_HOST,
                                    DEFAULT_REST_PORT, EXAMPLE_IMAGE_FEATURE,
                                    DEFAULT_TIMEOUT_SECONDS, IMAGES_SIGNATURE,
                                    MAX_BODY_BYTES)

DEFAULT_SIGNATURE = IMAGES_SIGNATURE
# DataType names of TF Serving's metadata JSON -> NumPy dtypes (DT_STRING: bytes, not cast)
_DTYPES = {"DT_UINT8": np.uint8, "DT_INT8": np.int8, "DT_INT16": np.int16, "DT_INT32": np.int32,
           "DT_INT64": np.int64, "DT_UINT16": np.uint16, "DT_UINT32": np.uint32,
           "DT_UINT64": np.uint64, "DT_FLOAT": np.float32, "DT_DOUBLE": np.float64,
           "DT_HALF": np.float16, "DT_BOOL": np.bool_, "DT_STRING": object}


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


def cast_input(value, dtype, name="input"):
    """``value`` as an array of ``dtype`` (a NumPy dtype; ``object`` for strings).

    Raises:
        ValueError: a value changes in the cast (fractional or out of range for an integer
            dtype, non-finite for an integer dtype).
    """
    if dtype is object:
        if isinstance(value, (bytes, str)):
            return value
        return np.asarray([v if isinstance(v, (bytes, str)) else bytes(v) for v in value],
                          dtype=object)
    array = np.asarray(value)
    if array.dtype == dtype:
        return array
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} takes {np.dtype(dtype).name} numbers; got {array.dtype} "
                         "values")
    cast = array.astype(dtype)
    if np.dtype(dtype).kind in "iu" and array.size and not np.array_equal(cast, array):
        info = np.iinfo(dtype)
        raise ValueError(f"{name} is {np.dtype(dtype).name} in the model's signature: values "
                         f"must be integers in [{info.min}, {info.max}]; got values in "
                         f"[{array.min()}, {array.max()}]"
                         + (" with fractions" if array.dtype.kind == "f" else ""))
    return cast


class Client:
    """A client for TF Serving (or `serve`): REST, and gRPC when ``grpc_target`` is given.

    Args:
        url: the REST base URL, e.g. ``http://127.0.0.1:8501``.
        grpc_target: ``host:port`` of the gRPC API (TF Serving's ``--port``, usually 8500).
        timeout: seconds per request.
    """

    def __init__(self, url=f"http://{DEFAULT_HOST}:{DEFAULT_REST_PORT}", grpc_target=None,
                 timeout=DEFAULT_TIMEOUT_SECONDS):
        if not isinstance(url, str) or not re.match(r"^https?://[^/]+", url):
            raise ValueError(f"url must be an http(s) URL such as http://127.0.0.1:8501; got "
                             f"{url!r}")
        if grpc_target is not None and (not isinstance(grpc_target, str)
                                        or not re.match(r"^[^:/]+:\d+$", grpc_target)):
            raise ValueError(f"grpc_target must be 'host:port'; got {grpc_target!r}")
        self.url = url.rstrip("/")
        self.grpc_target = grpc_target
        self.timeout = checks.positive_number(timeout, "timeout", example="30")
        self._channel = None
        self._dtypes = {}

    def _path(self, model, version=None, suffix="", label=None):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty model name; got {model!r}")
        path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
        version = checks.optional_positive_int(version, "version")
        if version is not None and label is not None:
            raise ValueError(f"pass version= or label=, not both; got {version!r} and {label!r}")
        if version is not None:
            path += f"/versions/{version}"
        if label is not None:
            path += f"/labels/{urllib.parse.quote(checks.name(label, 'label'), safe='')}"
        return self.url + path + suffix

    def _request(self, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                # TF Serving writes a string output's bytes as they are: text if UTF-8
                return json.loads(response.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as error:
            text = error.read().decode(errors="replace")
            try:
                message = json.loads(text).get("error") or text
            except (ValueError, AttributeError):
                message = text
            raise ServingError(message, error.code) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServingError(f"cannot reach {url}: {reason}") from None

    def status(self, model, version=None, label=None):
        """``GET /v1/models/<model>[/versions/<v>|/labels/<l>]``: ``{"model_version_status"}``."""
        return self._request(self._path(model, version, label=label))

    def metadata(self, model, version=None, label=None):
        """``GET .../metadata``: the model spec and its signature definitions."""
        return self._request(self._path(model, version, "/metadata", label=label))

    def input_dtypes(self, model, signature_name=None, version=None, label=None) -> dict:
        """``{input name: NumPy dtype}`` of a signature, from the metadata (cached)."""
        key = (model, version, label)
        if key not in self._dtypes:
            signatures = self.metadata(model, version, label)["metadata"]["signature_def"][
                "signature_def"]
            self._dtypes[key] = {
                signature: {alias: _DTYPES.get(info.get("dtype"), None)
                            for alias, info in definition.get("inputs", {}).items()}
                for signature, definition in signatures.items()}
        signature = signature_name or DEFAULT_SIGNATURE
        if signature not in self._dtypes[key]:
            raise ValueError(f"model {model!r} has no signature {signature!r}; signatures: "
                             f"{sorted(self._dtypes[key])}")
        return self._dtypes[key][signature]

    def _cast(self, model, signature_name, version, label, instances, inputs):
        dtypes = self.input_dtypes(model, signature_name, version, label)
        only = next(iter(dtypes)) if len(dtypes) == 1 else None
        only_dtype = dtypes[only] if only is not None else None
        if inputs is not None:
            if isinstance(inputs, dict):
                return None, {k: cast_input(v, dtypes.get(k) or np.asarray(v).dtype, repr(k))
                              for k, v in inputs.items()}
            return None, cast_input(inputs, only_dtype, repr(only)) if only_dtype else inputs
        if isinstance(instances, (list, tuple)) and instances and isinstance(instances[0], dict):
            return [{k: cast_input(v, dtypes.get(k) or np.asarray(v).dtype, repr(k))
                     for k, v in row.items()} for row in instances], None
        return (cast_input(instances, only_dtype, repr(only)) if only_dtype
                else instances), None

    def predict(self, model, instances=None, inputs=None, signature_name=None, version=None,
                label=None):
        """``POST .../<model>:predict`` in the row (``instances``) or columnar (``inputs``) form.

        Args:
            model: the model name.
            instances: a list (or array) of rows; bytes are sent as ``{"b64": ...}``.
            inputs: a batch (or ``{input name: batch}``), the columnar form.
            signature_name: e.g. ``"serving_bytes"``; default ``serving_default``.
            version: an int to pin a version; None for the latest.
            label: a version label from ``models.config`` (``/labels/<label>``).

        Returns:
            The decoded JSON reply: ``{"predictions": [...]}`` or ``{"outputs": {...}}``.

        Raises:
            ValueError: a value does not fit the signature's dtype (checked before sending).
            ServingError: the server answered with an error (``status`` holds the HTTP code).
        """
        if (instances is None) == (inputs is None):
            raise ValueError("pass exactly one of instances= (row form) or inputs= (columnar "
                             "form)")
        url = self._path(model, version, ":predict", label=label)
        instances, inputs = self._cast(model, signature_name, version, label, instances, inputs)
        body = {"instances": _jsonable(instances)} if inputs is None else \
            {"inputs": _jsonable(inputs)}
        if signature_name is not None:
            body["signature_name"] = signature_name
        return self._request(url, body)

    def classify_images(self, model, images=None, encoded=None, version=None):
        """`predict` on uint8 images [batch, h, w, c] or on encoded JPEG/PNG bytes.

        Images go to ``serving_default``; encoded files to ``serving_bytes`` as ``{"b64": ...}``.

        Returns:
            The decoded JSON reply, as `predict` returns it: ``{"predictions": [...]}`` with one
            dict per image of ``probabilities``, ``scores``, ``classes`` and (when exported)
            ``labels``.
        """
        if (images is None) == (encoded is None):
            raise ValueError("pass exactly one of images= (uint8 array) or encoded= (list of "
                             "JPEG/PNG bytes)")
        if images is not None:
            return self.predict(model, instances=np.asarray(images), version=version)
        return self.predict(model, instances=[bytes(b) for b in encoded],
                            signature_name=BYTES_SIGNATURE, version=version)

    def classify(self, model, examples=None, encoded=None, signature_name=CLASSIFY_SIGNATURE,
                 version=None, label=None):
        """``POST .../<model>:classify``: ``[[(label, score), ...] per example]``.

        Args:
            model: the model name.
            examples: JSON examples (``{feature: value or list}``; bytes become ``{"b64"}``).
            encoded: JPEG/PNG bytes instead, each sent as the export's ``image/encoded`` feature.
            signature_name: a classification signature (the export's ``classify``).
            version, label: pin a version by number or label.
        """
        if (examples is None) == (encoded is None):
            raise ValueError("pass exactly one of examples= (JSON tf.Examples) or encoded= "
                             "(list of JPEG/PNG bytes)")
        if encoded is not None:
            examples = [{EXAMPLE_IMAGE_FEATURE: bytes(b)} for b in encoded]
        body = {"signature_name": signature_name, "examples": _jsonable(list(examples))}
        results = self._request(self._path(model, version, ":classify", label=label), body)
        return [[(str(c), float(s)) for c, s in row] for row in results["results"]]

    @staticmethod
    def predict_request(model, inputs, signature_name=DEFAULT_SIGNATURE, version=None,
                        dtypes=None, output_filter=(), label=None):
        """Builds TF Serving's gRPC ``PredictRequest`` from ``{input name: array}``.

        Args:
            model, signature_name, version, label: the model spec.
            inputs: ``{input name: array}``; lists of bytes become DT_STRING tensors.
            dtypes: ``{input name: NumPy dtype}`` to cast to (see `input_dtypes`); None sends
                the arrays' own dtypes.
            output_filter: output names to return (default: all).
        """
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        if not isinstance(inputs, dict) or not inputs:
            raise ValueError(f"inputs must be a non-empty dict {{input name: array}}; got "
                             f"{type(inputs).__name__}")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = checks.positive_int(version, "version")
        if label is not None:
            request.model_spec.version_label = checks.name(label, "label")
        request.output_filter.extend(output_filter)
        for name, value in inputs.items():
            dtype = (dtypes or {}).get(name)
            if dtype is not None:
                value = cast_input(value, dtype, repr(name))
            elif isinstance(value, (list, tuple)) and value and isinstance(value[0], bytes):
                value = np.asarray(value, dtype=object)
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        return request

    def _stub(self, service):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if self.grpc_target is None:
            raise ValueError("gRPC calls need Client(..., grpc_target='host:port')")
        if self._channel is None:
            self._channel = grpc.insecure_channel(
                self.grpc_target, options=[("grpc.max_receive_message_length", MAX_BODY_BYTES),
                                           ("grpc.max_send_message_length", MAX_BODY_BYTES)])
        module = prediction_service_pb2_grpc if service == "prediction" else \
            model_service_pb2_grpc
        stub = (module.PredictionServiceStub if service == "prediction"
                else module.ModelServiceStub)
        return stub(self._channel)

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(f"{error.code().name}: {error.details()}") from None

    def grpc_metadata(self, model, version=None, label=None) -> dict:
        """``PredictionService.GetModelMetadata``: ``{signature: SignatureDef proto}``."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = checks.positive_int(version, "version")
        if label is not None:
            request.model_spec.version_label = checks.name(label, "label")
        response = self._call(self._stub("prediction").GetModelMetadata, request)
        definitions = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(definitions)
        return dict(definitions.signature_def)

    def grpc_status(self, model, version=None) -> list:
        """``ModelService.GetModelStatus``: ``[(version, state name)]``."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        if version is not None:
            request.model_spec.version.value = checks.positive_int(version, "version")
        response = self._call(self._stub("model").GetModelStatus, request)
        return [(entry.version, get_model_status_pb2.ModelVersionStatus.State.Name(entry.state))
                for entry in response.model_version_status]

    def grpc_predict(self, model, inputs, signature_name=DEFAULT_SIGNATURE, version=None,
                     output_filter=(), label=None):
        """``PredictionService.Predict`` over gRPC; returns ``{output name: numpy array}``.

        Inputs are cast to the signature's dtypes from ``GetModelMetadata`` (cached).
        """
        import tensorflow as tf

        key = ("grpc", model, version, label)
        if key not in self._dtypes:
            self._dtypes[key] = {
                signature: {alias: tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
                            for alias, info in definition.inputs.items()}
                for signature, definition in self.grpc_metadata(model, version, label).items()}
        dtypes = self._dtypes[key].get(signature_name or DEFAULT_SIGNATURE)
        request = self.predict_request(model, inputs, signature_name, version, dtypes,
                                       output_filter, label)
        response = self._call(self._stub("prediction").Predict, request)
        return {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
