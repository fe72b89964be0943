"""TF Serving's gRPC services over a `Repository`: PredictionService and ModelService.

``Predict`` feeds the request's tensors as they come (TF's own dtype check, the graph's checks),
honours ``output_filter`` and ``version_label``, and answers with the typed ``*_val`` fields as TF
Serving does (``Tensor::AsProtoField``); ``GetModelMetadata`` and ``GetModelStatus`` answer as
``get_model_metadata_impl.cc`` and ``get_model_status_impl.cc``. ``Classify``, ``Regress`` and
``MultiInference`` run tf.Examples through signatures that fit TF Serving's classification or
regression contract (the export's ``classify`` signature). ``HandleReloadConfigRequest``, which
this server lacks, answers UNIMPLEMENTED.
"""

from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from keras_resnet.serving import examples
from keras_resnet.serving.inference import REGRESS_METHOD, classify_or_regress, multi_inference
from keras_resnet.serving.repository import BadRequest, ServingStatus

SIGNATURE_DEF = "signature_def"

# dtype -> the TensorProto field TF fills for it (tensor.cc: AsProtoField)
_VALUE_FIELDS = {tf.float32: "float_val", tf.float64: "double_val", tf.int64: "int64_val",
                 tf.string: "string_val", tf.bool: "bool_val", tf.int32: "int_val",
                 tf.int16: "int_val", tf.int8: "int_val", tf.uint8: "int_val",
                 tf.uint32: "uint32_val", tf.uint64: "uint64_val"}


def as_proto_field(array) -> tensor_pb2.TensorProto:
    """A TensorProto with the values in the typed ``*_val`` field, as TF Serving answers."""
    dtype = tf.string if array.dtype == object or array.dtype.kind == "S" else \
        tf.dtypes.as_dtype(array.dtype)
    proto = tensor_pb2.TensorProto(
        dtype=dtype.as_datatype_enum,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape]))
    values = array.ravel()
    getattr(proto, _VALUE_FIELDS[dtype]).extend(
        values.tolist() if dtype != tf.string else [bytes(v) for v in values])
    return proto


def _spec(request):
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label if spec.HasField("version_label") else None
    return spec.name, version, label


def _model_spec(response, request, served):
    response.model_spec.name = request.model_spec.name
    # util.cc's MakeModelSpec: an empty signature name is answered as serving_default
    response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
    response.model_spec.version.value = served.version


def _abort(context, status):
    context.abort(getattr(grpc.StatusCode, status.code, grpc.StatusCode.UNKNOWN), status.message)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService``: Predict and GetModelMetadata."""

    def __init__(self, repository):
        self.repository = repository

    def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
        """TF Serving's Predict (servables/tensorflow/predict_util.cc: RunPredict)."""
        name, version, label = _spec(request)
        signature = request.model_spec.signature_name
        try:
            inputs = {}
            for alias, proto in request.inputs.items():
                try:
                    inputs[alias] = tf.make_ndarray(proto)
                except (TypeError, ValueError):
                    raise BadRequest(f"tensor parsing error: {alias}") from None
            served, outputs = self.repository.predict(name, inputs, signature, version, label,
                                                      tuple(request.output_filter))
        except ServingStatus as status:
            _abort(context, status)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = name
        response.model_spec.signature_name = signature or "serving_default"
        response.model_spec.version.value = served.version
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(as_proto_field(np.asarray(value)))
        return response

    def Classify(self, request, context):  # noqa: N802
        """TF Serving's Classify on tf.Examples (classifier.cc), via a classify signature."""
        served, outputs = self._examples("classify", request, context)
        response = classification_pb2.ClassificationResponse()
        _model_spec(response, request, served)
        for row in examples.pairs(outputs):
            classifications = response.result.classifications.add()
            for label, score in row:
                classifications.classes.add(label=label, score=score)
        return response

    def Regress(self, request, context):  # noqa: N802
        """TF Serving's Regress on tf.Examples (regressor.cc)."""
        served, outputs = self._examples("regress", request, context)
        response = regression_pb2.RegressionResponse()
        _model_spec(response, request, served)
        for value in outputs["outputs"].reshape(-1):
            response.result.regressions.add(value=float(value))
        return response

    def MultiInference(self, request, context):  # noqa: N802
        """TF Serving's MultiInference (multi_inference.cc): classify/regress tasks at once."""
        try:
            served, results = multi_inference(self.repository, request,
                                              lambda: examples.from_input(request.input))
        except ServingStatus as status:
            _abort(context, status)
        response = inference_pb2.MultiInferenceResponse()
        for task, outputs in results:
            result = response.results.add()
            result.model_spec.name = task.model_spec.name
            result.model_spec.signature_name = task.model_spec.signature_name or "serving_default"
            result.model_spec.version.value = served.version
            if task.method_name == REGRESS_METHOD:
                for value in outputs["outputs"].reshape(-1):
                    result.regression_result.regressions.add(value=float(value))
                continue
            for row in examples.pairs(outputs):
                classifications = result.classification_result.classifications.add()
                for label, score in row:
                    classifications.classes.add(label=label, score=score)
        return response

    def _examples(self, method, request, context):
        name, version, label = _spec(request)
        try:
            serialized = lambda: examples.from_input(request.input)  # noqa: E731
            return classify_or_regress(self.repository, method, name, serialized,
                                       request.model_spec.signature_name, version, label)
        except ServingStatus as status:
            _abort(context, status)

    def GetModelMetadata(self, request, context):  # noqa: N802
        """TF Serving's GetModelMetadata: the signature_def field only."""
        name, version, label = _spec(request)
        try:
            if not request.HasField("model_spec"):
                raise BadRequest("Missing ModelSpec")
            if not request.metadata_field:
                raise BadRequest("GetModelMetadataRequest must specify at least one "
                                 "metadata_field")
            for field in request.metadata_field:
                if field != SIGNATURE_DEF:
                    raise BadRequest(f"Metadata field {field} is not supported")
            served = self.repository.get(name, version, label)
        except ServingStatus as status:
            _abort(context, status)
        definitions = get_model_metadata_pb2.SignatureDefMap()
        for key, value in served.all_signature_defs.items():
            definitions.signature_def[key].CopyFrom(value)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = served.version
        response.metadata[SIGNATURE_DEF].Pack(definitions)
        return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: GetModelStatus."""

    def __init__(self, repository):
        self.repository = repository

    def GetModelStatus(self, request, context):  # noqa: N802
        """Every version's state (LOADING, AVAILABLE, END) and status, newest first."""
        try:
            if not request.HasField("model_spec"):
                raise BadRequest("Missing ModelSpec")
            name, version, _ = _spec(request)
            states = self.repository.version_states(name, version)
        except ServingStatus as status:
            _abort(context, status)
        from tensorflow.core.protobuf import error_codes_pb2

        response = get_model_status_pb2.GetModelStatusResponse()
        for number, state, code, message in states:
            entry = response.model_version_status.add()
            entry.version = number
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            entry.status.error_code = error_codes_pb2.Code.Value(code)
            entry.status.error_message = message
        return response
