"""The models a local server serves, loaded and run the way TF Serving runs them.

Each version is loaded with TensorFlow's C++ SavedModel loader into a Session
(``tf.compat.v1.saved_model.loader.load``) and run with ``Session.run`` on the signature's tensor
names, as TF Serving's ``RunPredict`` does (``servables/tensorflow/predict_util.cc``): the
request's tensors are fed whatever their shape, so the checks that hold are those in the exported
graph (and TF's own dtype check), on this server and on TF Serving alike. This module adds only
what TF Serving itself checks before the Session: the signature, the input names, the dtypes, the
batching limit of ``batching_parameters.txt``, ``output_filter``. Errors carry TF Serving's status
code and message (`ServingStatus`).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from keras_resnet.constants import IMAGES_SIGNATURE

logger = logging.getLogger(__name__)

# TF Serving's status codes -> HTTP (model_servers/http_server.cc: ToHTTPStatusCode).
HTTP_STATUS = {"OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
               "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
               "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
               "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
               "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401}


class ServingStatus(Exception):
    """A non-OK TF Serving status: ``code`` (e.g. ``"INVALID_ARGUMENT"``) and ``message``."""

    code = "UNKNOWN"

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    @property
    def http_status(self) -> int:
        """The HTTP status TF Serving's REST API answers this status with."""
        return HTTP_STATUS.get(self.code, 500)


class BadRequest(ServingStatus, ValueError):
    """INVALID_ARGUMENT (HTTP 400): the request does not fit the model's signature."""

    code = "INVALID_ARGUMENT"


class NotFound(ServingStatus, LookupError):
    """NOT_FOUND (HTTP 404): no such model or version."""

    code = "NOT_FOUND"


class LoadedVersion:
    """One SavedModel version in its own Session, run by signature name like TF Serving."""

    def __init__(self, name, version, path):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.name, self.version, self.path = name, version, path
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
            proto.ParseFromString(handle.read())
        # every SignatureDef, ``__saved_model_init_op`` included, as TF Serving's metadata lists
        # them; the servable ones exclude the internal ``__*`` entries
        self.all_signature_defs = dict(proto.meta_graphs[0].signature_def)
        self.signature_defs = {key: value for key, value in self.all_signature_defs.items()
                               if not key.startswith("__")}
        self.graph = tf.Graph()
        with self.graph.as_default():
            # Unshaped placeholders stand in for the signature inputs: a request's tensor is fed
            # as it is, as in TF Serving's Session::Run, so only in-graph checks apply.
            self.feeds = {}
            for key, signature in self.signature_defs.items():
                for alias, info in signature.inputs.items():
                    self.feeds[info.name] = tf.compat.v1.placeholder(
                        tf.dtypes.as_dtype(info.dtype), shape=None)
            self.session = tf.compat.v1.Session(graph=self.graph)
            tf_logger, level = tf.get_logger(), tf.get_logger().level
            tf_logger.setLevel(logging.ERROR)  # the loader's deprecation notice, once per load
            try:
                tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path,
                                                     input_map=dict(self.feeds))
            finally:
                tf_logger.setLevel(level)

    def signature(self, signature_name):
        """The SignatureDef for a name ('' means ``serving_default``), or FAILED_PRECONDITION."""
        key = signature_name or IMAGES_SIGNATURE
        if key not in self.signature_defs:
            raise ServingStatus(f'Serving signature key "{key}" not found.',
                                "FAILED_PRECONDITION")
        return self.signature_defs[key]

    def input_dtypes(self, signature_name) -> dict:
        """``{input alias: NumPy dtype}`` of a signature (object for strings)."""
        import tensorflow as tf

        return {alias: tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
                for alias, info in self.signature(signature_name).inputs.items()}

    def run(self, signature_name, inputs, output_filter=()):
        """Runs a signature on ``{alias: NumPy array}`` (TF Serving's PreProcessPrediction).

        Returns:
            ``{output alias: NumPy array}``.

        Raises:
            ServingStatus: TF Serving's status for the request.
        """
        import tensorflow as tf
        from tensorflow.core.protobuf import error_codes_pb2

        signature = self.signature(signature_name)
        _check_input_names(signature, inputs)
        feed = {}
        for position, (alias, value) in enumerate(inputs.items()):
            info = signature.inputs[alias]
            wanted = tf.dtypes.as_dtype(info.dtype)
            given = tf.dtypes.as_dtype(value.dtype) if value.dtype != object else tf.string
            if given != wanted:  # TF's own message for a fed tensor of the wrong dtype
                raise BadRequest(f"Expects arg[{position}] to be {_type_name(wanted)} but "
                                 f"{_type_name(given)} is provided")
            feed[self.feeds[info.name]] = value
        fetches = {alias: signature.outputs[alias].name
                   for alias in _output_aliases(signature, output_filter)}
        try:
            return self.session.run(fetches, feed)
        except tf.errors.OpError as error:
            # TF Serving answers with the C++ status message; Python prefixes this one
            message = error.message.removeprefix("Graph execution error:\n\n")
            raise ServingStatus(message, error_codes_pb2.Code.Name(error.error_code)) from None


def _type_name(dtype):
    """TF's DataTypeString: ``float``, ``double``, ``uint8``, ``string``."""
    from tensorflow.core.framework import types_pb2

    return types_pb2.DataType.Name(dtype.as_datatype_enum)[len("DT_"):].lower()


def _check_input_names(signature, inputs):
    wanted, given = set(signature.inputs), set(inputs)
    if len(given) != len(wanted):
        raise BadRequest(
            f"input size does not match signature: {len(given)}!={len(wanted)} "
            f"len({{{','.join(sorted(given))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(given - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - given))}}}.")
    for alias in inputs:
        if alias not in wanted:
            raise BadRequest(f"input tensor alias not found in signature: {alias}. Inputs "
                             f"expected to be in the set {{{','.join(sorted(wanted))}}}.")


def _output_aliases(signature, output_filter):
    seen = []
    for alias in output_filter:
        if alias not in signature.outputs:
            raise BadRequest(f"output tensor alias not found in signature: {alias} Outputs "
                             f"expected to be in the set "
                             f"{{{','.join(sorted(signature.outputs))}}}.")
        if alias in seen:
            raise BadRequest(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or sorted(signature.outputs)


class Repository:
    """The served versions of every model under ``base_dir``, kept in step with the directory.

    Like TF Serving's file-system source under the bundle's ``models.config``: the versions its
    policy names are loaded (``latest {n}``: the n newest; ``specific``: those listed; no config:
    the newest), deleted ones are unloaded, and a version directory replaced under the same
    number is reloaded, never served stale. ``version_labels`` are read from the same file.
    """

    def __init__(self, base_dir):
        if not os.path.isdir(base_dir):
            raise FileNotFoundError(f"base_dir {base_dir!r} is not a directory of exported "
                                    "models (write one with `keras-resnet export`)")
        self.base_dir = base_dir
        self.models = {}  # name -> {version: LoadedVersion}
        # name -> {version: (state, error code, message)}: every version ever aspired, as TF
        # Serving's ServableStateMonitor keeps them (unloaded and failed ones END, never forgotten)
        self.states = {}
        self._failed = {}  # (name, version) -> identity of a version whose load failed
        self.max_batch_size = None
        self.version_labels = {}
        self.lock = threading.Lock()

    def _identity(self, name, version):
        # A version directory's identity: a re-export under a deleted number has a new inode.
        stat = os.stat(os.path.join(self.base_dir, name, str(version), "saved_model.pb"))
        return stat.st_ino, stat.st_mtime_ns

    def scan(self) -> list[str]:
        """Loads new and replaced versions, unloads removed ones; returns the changes as text."""
        from keras_resnet.export.layout import model_names, versions
        from keras_resnet.export.deployment import read_max_batch_size

        self.max_batch_size = read_max_batch_size(self.base_dir)
        policies, self.version_labels = _read_models_config(self.base_dir)
        # TF Serving with --model_config_file serves the models the file lists, no others
        names = sorted(policies) or model_names(self.base_dir)
        changes = []
        for name in names:
            available = versions(os.path.join(self.base_dir, name))
            wanted = _wanted_versions(policies.get(name), available)
            loaded = dict(self.models.get(name, {}))
            for version in wanted:
                identity = self._identity(name, version)
                if version in loaded and loaded[version].identity == identity or \
                        self._failed.get((name, version)) == identity:
                    continue
                served = self._load(name, version, identity)
                if served is not None:
                    loaded[version] = served
                    changes.append(f"{name} version {version}")
            unaspired = sorted(set(loaded) - set(wanted))
            if wanted and not set(wanted) & set(loaded):
                # AvailabilityPreservingPolicy: while no aspired version is serving (a failed
                # load), the newest serving one stays
                unaspired = unaspired[:-1]
            for version in unaspired:
                del loaded[version]
                self._set_state(name, version, "END")
                changes.append(f"{name} version {version} unloaded")
            with self.lock:
                self.models[name] = loaded
        for name in set(self.models) - set(names):
            with self.lock:
                versions_gone = self.models.pop(name)
            for version in versions_gone:
                self._set_state(name, version, "END")
            changes.append(f"{name} removed")
        return changes

    def _set_state(self, name, version, state, code="OK", message=""):
        with self.lock:
            self.states.setdefault(name, {})[version] = (state, code, message)

    def _load(self, name, version, identity):
        """Loads one version (LOADING, then AVAILABLE, or END with the error, not retried)."""
        self._set_state(name, version, "LOADING")
        try:
            served = LoadedVersion(name, version, os.path.join(self.base_dir, name, str(version)))
        except Exception as error:  # noqa: BLE001 (a broken version must not stop the others)
            code = getattr(error, "error_code", None)
            if code is not None:
                from tensorflow.core.protobuf import error_codes_pb2

                code = error_codes_pb2.Code.Name(code)
            self._failed[(name, version)] = identity
            self._set_state(name, version, "END", code or "UNKNOWN",
                            getattr(error, "message", None) or str(error))
            logger.warning("%s version %s failed to load: %s", name, version, error)
            return None
        served.identity = identity
        self._failed.pop((name, version), None)
        self._set_state(name, version, "AVAILABLE")
        return served

    def watch(self, poll_seconds: float) -> threading.Thread:
        """Rescans every ``poll_seconds`` in a daemon thread (TF Serving polls the same way)."""
        def loop():
            while True:
                time.sleep(poll_seconds)
                try:
                    for change in self.scan():
                        logger.info("serving %s", change)
                # a half-copied or broken model must not kill the server
                except Exception as error:  # noqa: BLE001
                    logger.warning("rescan failed: %s", error)

        thread = threading.Thread(target=loop, name="saved-models-watcher", daemon=True)
        thread.start()
        return thread

    def get(self, name, version=None, label=None) -> LoadedVersion:
        """A loaded version: the newest, or by number or label (ServerCore's ModelSpec rules)."""
        if not name:  # ServerCore::ServableRequestFromModelSpec
            raise BadRequest("ModelSpec has no name specified.")
        if version is not None and label is not None:
            raise BadRequest(f"Both model version ({version}) and model version label ({label}) "
                             "cannot be supplied.")
        if label is not None:
            labels = self.version_labels.get(name, {})
            if label not in labels:
                raise BadRequest(f"Unrecognized servable version label: {label}")
            version = labels[label]
        loaded = self.models.get(name) or {}
        if version is None:
            if not loaded:
                raise NotFound(f"Servable not found for request: Latest({name})")
            return loaded[max(loaded)]
        if int(version) not in loaded:
            raise NotFound(f"Servable not found for request: Specific({name}, {version})")
        return loaded[int(version)]

    def predict(self, name, inputs, signature_name="", version=None, label=None,
                output_filter=()):
        """TF Serving's Predict on ``{alias: NumPy array}``; returns (version, outputs)."""
        return self.run(self.get(name, version, label), inputs, signature_name, output_filter)

    def run(self, served, inputs, signature_name="", output_filter=()):
        """Runs a loaded version after the batching limit check; returns (version, outputs)."""
        batch_limit = self.max_batch_size
        for value in inputs.values():
            if batch_limit is not None and value.ndim and value.shape[0] > batch_limit:
                # the batching scheduler's check (--enable_batching with the bundle's file)
                raise BadRequest(f"Task size {value.shape[0]} is larger than maximum input "
                                 f"batch size {batch_limit}")
        return served, served.run(signature_name, inputs, output_filter)

    def version_states(self, name, version=None) -> list[tuple]:
        """GetModelStatus's ``(version, state, error code, message)``, newest first.

        As get_model_status_impl.cc reads the ServableStateMonitor: every version ever loaded
        or tried, AVAILABLE, LOADING, or END once unloaded (error OK) or failed (its error).
        """
        with self.lock:
            states = dict(self.states.get(name) or {})
        if version is not None:
            if int(version) not in states:
                raise NotFound(f"Could not find version {version} of model {name}")
            return [(int(version), *states[int(version)])]
        if not states:
            raise NotFound(f"Could not find any versions of model {name}")
        return [(number, *states[number]) for number in sorted(states, reverse=True)]

    def status(self, name, version=None, label=None) -> dict:
        """TF Serving's GetModelStatusResponse as JSON (``GET /v1/models/<name>``).

        Like TF Serving, a label in the path is accepted and ignored here.
        """
        return {"model_version_status": [
            {"version": str(number), "state": state,
             "status": {"error_code": code, "error_message": message}}
            for number, state, code, message in self.version_states(name, version)]}

    def metadata(self, name, version=None, label=None) -> dict:
        """TF Serving's GetModelMetadataResponse as JSON (``GET .../metadata``)."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        served = self.get(name, version, label)
        definitions = get_model_metadata_pb2.SignatureDefMap()
        for key, value in served.all_signature_defs.items():
            definitions.signature_def[key].CopyFrom(value)
        return {"model_spec": {"name": name, "signature_name": "",
                               "version": str(served.version)},
                # http_rest_api_util.cc's ToJsonString: always_print_fields_with_no_presence
                "metadata": {"signature_def": json_format.MessageToDict(
                    definitions, preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True)}}


def _wanted_versions(entry, available):
    """The versions a ``models.config`` entry's policy loads (default: the newest)."""
    if entry is None or not available:
        return available[-1:]
    policy = entry.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "specific":
        return sorted(set(policy.specific.versions) & set(available))
    if which == "all":
        return list(available)
    count = policy.latest.num_versions if which == "latest" else 1
    return available[-max(count, 1):]


def _read_models_config(base_dir):
    """``({model: ModelConfig}, {model: {label: version}})`` from ``models.config``."""
    from keras_resnet.export.deployment import read_models_config

    entries = read_models_config(base_dir)
    return entries, {name: dict(entry.version_labels) for name, entry in entries.items()}
