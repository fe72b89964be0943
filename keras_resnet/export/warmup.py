"""What an export carries besides the graph: TF Serving warmup requests and reference outputs.

The same deterministic inputs serve both: warmup cases (model-size images at the warmup batch
sizes, and encoded PNGs) are written as ``PredictionLog`` records TF Serving replays on load;
test cases (odd sizes, JPEGs) are kept with the Keras model's outputs so `verify_export` can
compare the served graph with the model it came from.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_resnet.constants import (BYTES_INPUT, BYTES_SIGNATURE, CLASSIFY_SIGNATURE,
                                    IMAGES_INPUT, IMAGES_SIGNATURE)
from keras_resnet.export import signatures as sig


def make_cases(spec: sig.ServingSpec, warmup_batch_sizes: tuple, seed: int) -> list:
    """Deterministic ``(kind, signature, inputs)`` cases: warmup first, then test cases.

    Args:
        spec: the serving spec of the export.
        warmup_batch_sizes: batch sizes of the ``serving_default`` warmup requests; the
            ``serving_bytes`` and ``classify`` warmups use the smallest and min(largest, 8).
        seed: seed of the random pixels.

    Returns:
        A list of ``("warmup" | "test", signature name, NumPy inputs)``.
    """
    rng = np.random.default_rng(seed)
    dtype = np.uint8 if spec.input_dtype == "uint8" else np.float32

    def images(batch, height=spec.height, width=spec.width):
        return rng.integers(0, 256, (batch, height, width, spec.channels)).astype(np.uint8)

    def encoded(batch, encoder, height=spec.height, width=spec.width):
        encode = tf.io.encode_png if encoder == "png" else tf.io.encode_jpeg
        return np.array([encode(image).numpy()
                         for image in images(batch, height, width)], dtype=object)

    cases = []
    for batch in warmup_batch_sizes:
        cases.append(("warmup", IMAGES_SIGNATURE, images(batch).astype(dtype)))
    small = sorted({min(warmup_batch_sizes), min(max(warmup_batch_sizes), 8)})
    for batch in small:
        cases.append(("warmup", BYTES_SIGNATURE, encoded(batch, "png")))
    for batch in small:  # TF Serving replays a ClassificationRequest through RunClassify
        cases.append(("warmup", CLASSIFY_SIGNATURE, sig.image_examples(encoded(batch, "png"))))
    odd = (spec.height + 3, spec.width + 5) if spec.resize else (spec.height, spec.width)
    cases.append(("test", IMAGES_SIGNATURE, images(3, *odd).astype(dtype)))
    cases.append(("test", BYTES_SIGNATURE, encoded(2, "png", spec.height + 3, spec.width + 5)))
    cases.append(("test", CLASSIFY_SIGNATURE,
                  sig.image_examples(encoded(2, "png", spec.height + 1, spec.width + 2))))
    if spec.channels != 4:  # JPEG has no alpha channel
        cases.append(("test", BYTES_SIGNATURE, encoded(2, "jpeg", spec.height + 5, spec.width)))
    return cases


def write_warmup(path: str, model_name: str, cases: list) -> int:
    """Writes the warmup cases as TF Serving ``PredictionLog`` records; returns their number.

    ``serving_default`` and ``serving_bytes`` as ``predict_log`` (PredictRequest), ``classify``
    as ``classify_log`` (ClassificationRequest with an ``example_list``).
    """
    from tensorflow_serving.apis import (classification_pb2, model_pb2, predict_pb2,
                                         prediction_log_pb2)

    written = 0
    with tf.io.TFRecordWriter(path) as writer:
        for kind, signature, inputs in cases:
            if kind != "warmup":
                continue
            if signature == CLASSIFY_SIGNATURE:
                request = classification_pb2.ClassificationRequest(
                    model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
                for serialized in inputs:
                    request.input.example_list.examples.add().ParseFromString(bytes(serialized))
                log = prediction_log_pb2.PredictionLog(
                    classify_log=prediction_log_pb2.ClassifyLog(request=request))
                writer.write(log.SerializeToString())
                written += 1
                continue
            name = BYTES_INPUT if signature == BYTES_SIGNATURE else IMAGES_INPUT
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            values = list(inputs) if signature == BYTES_SIGNATURE else inputs
            request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
            written += 1
    return written


def write_reference(path: str, model, spec: sig.ServingSpec, cases: list) -> list:
    """Saves the Keras outputs for every case (and the test inputs) as ``.npz``.

    Returns:
        The manifest: one ``{"index", "kind", "signature", "batch"}`` per case.
    """
    arrays, manifest = {}, []
    for index, (kind, signature, inputs) in enumerate(cases):
        for output, value in sig.keras_reference(model, spec, signature, inputs).items():
            arrays[f"{index}/{output}"] = value
        if kind == "test":
            arrays[f"{index}/input"] = inputs
        manifest.append({"index": index, "kind": kind, "signature": signature,
                         "batch": int(len(inputs))})
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return manifest
