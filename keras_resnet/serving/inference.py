"""TF Serving's Classify, Regress and MultiInference on tf.Examples over a `Repository`.

The signature checks of ``servables/tensorflow/classifier.cc`` (PreProcessClassification),
``regressor.cc`` (PreProcessRegression) and ``multi_inference.cc``, with TF Serving's default
of no method-name check (``--enable_signature_method_name_check=false``); the examples are read
after the checks, as TF Serving reads its ``Input`` only then.
"""

from __future__ import annotations

import numpy as np

from keras_resnet.constants import IMAGES_SIGNATURE
from keras_resnet.serving.repository import BadRequest, ServingStatus

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def check_classification(signature) -> list[str]:
    """TF Serving's PreProcessClassification (method-name check off, its default for TF2).

    Returns:
        The output aliases to fetch (``classes`` and/or ``scores``).
    """
    if len(signature.inputs) != 1:
        raise BadRequest("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise BadRequest(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if "inputs" not in signature.inputs:
        raise BadRequest(f"No classification inputs found in SignatureDef: {signature}")
    found = [alias for alias in ("classes", "scores") if alias in signature.outputs]
    if not found:
        raise BadRequest('Expected classification signature outputs to contain at least one of '
                         f'"classes" or "scores". Signature was: {signature}')
    return found


def check_regression(signature) -> list[str]:
    """TF Serving's PreProcessRegression (method-name check off): one input, one output."""
    if len(signature.inputs) != 1:
        raise BadRequest("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise BadRequest("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise BadRequest(f"No regression inputs found in SignatureDef: {signature}")
    if "outputs" not in signature.outputs:
        raise BadRequest(f"No regression outputs found in SignatureDef: {signature}")
    return ["outputs"]


def classify_or_regress(repository, method, name, serialized, signature_name="", version=None,
                        label=None):
    """Runs serialized tf.Examples through a classification/regression signature.

    Args:
        method: ``"classify"`` or ``"regress"``.
        serialized: a list of serialized ``tf.train.Example`` protos, or a function returning
            one, called after the signature checks (TF Serving reads the input after them).

    Returns:
        ``(served version, {output alias: NumPy array})``.
    """
    served = repository.get(name, version, label)
    key = signature_name or IMAGES_SIGNATURE
    if key not in served.signature_defs:
        raise BadRequest(f"No signature was found with the name: {key}")
    check = check_classification if method == "classify" else check_regression
    aliases = check(served.signature_defs[key])
    if callable(serialized):
        serialized = serialized()
    inputs = {"inputs": np.array(serialized, dtype=object)}
    return repository.run(served, inputs, key, tuple(aliases))


def multi_inference(repository, request, serialized):
    """MultiInference: every task's classification or regression on the same examples.

    Args:
        repository: the `Repository`.
        request: a ``MultiInferenceRequest``.
        serialized: a function returning the serialized examples (called after the checks).

    Returns:
        ``(served version, [(task, {output alias: NumPy array}), ...])``.
    """
    spec = request.tasks[0].model_spec if request.tasks else None
    version = spec.version.value if spec is not None and spec.HasField("version") else None
    label = spec.version_label if spec is not None and spec.HasField("version_label") else None
    served = repository.get(spec.name if spec is not None else "", version, label)
    plans = _plans(request, served)
    inputs = {"inputs": np.array(serialized(), dtype=object)}
    return served, [(task, repository.run(served, inputs, key, tuple(aliases))[1])
                    for task, key, aliases in plans]


def _plans(request, served):
    """TensorFlowMultiInferenceRunner::Infer's checks: ``[(task, signature key, aliases)]``."""
    model_name, seen, plans = "", set(), []
    for task in request.tasks:
        if not task.model_spec.name:
            raise BadRequest("Found ModelSpec with an empty model name.")
        if model_name and model_name != task.model_spec.name:
            raise BadRequest("All ModelSpecs in a MultiInferenceRequest must access the same "
                             "model name.")
        model_name = task.model_spec.name
        key = task.model_spec.signature_name or IMAGES_SIGNATURE
        if key in seen:
            raise BadRequest(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        if key not in served.signature_defs:
            raise BadRequest(f"Requested signature not found in model graph: {key}")
        if task.method_name == CLASSIFY_METHOD:
            aliases = check_classification(served.signature_defs[key])
        elif task.method_name == REGRESS_METHOD:
            aliases = check_regression(served.signature_defs[key])
        else:
            raise ServingStatus(f"Unsupported signature method_name: {task.method_name}",
                                "UNIMPLEMENTED")
        plans.append((task, key, aliases))
    return plans
