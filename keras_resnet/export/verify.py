"""Checks an export the way TF Serving loads it: a fresh TensorFlow-only process, the C++ loader.

`verify_export` starts ``python -I`` with Keras and keras_resnet made unimportable (TensorFlow
imports Keras eagerly when it is installed, so merely not importing it proves nothing), loads the
version with ``tf.compat.v1.saved_model.loader.load`` into a Session and runs every signature by
its tensor names on the warmup requests and on the export's test inputs, comparing with the
outputs the Keras model gave for the same inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import logging
from typing import TYPE_CHECKING

import numpy as np

from keras_resnet import checks
from keras_resnet.export import layout

if TYPE_CHECKING:  # this module imports no Keras: the check runs without it
    import keras

logger = logging.getLogger(__name__)

_MARKER = "VERIFY-RESULT "
# TensorFlow's `saved_model_cli` (its console script runs this module's main) with this
# interpreter, so the table comes from the TensorFlow the export was written with.
_SAVED_MODEL_CLI = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]

# Runs in the child. Blocks keras/keras_resnet before TensorFlow is imported.
_CHILD = r'''
import json, sys
BLOCKED = ("keras", "keras_resnet", "tf_keras")
for _name in BLOCKED:
    sys.modules[_name] = None  # `import keras` now fails as if Keras were not installed
import os
import numpy as np
import tensorflow as tf
tf.get_logger().setLevel("ERROR")
from tensorflow_serving.apis import prediction_log_pb2

path, reference_path, atol = sys.argv[1], sys.argv[2], float(sys.argv[3])
info = json.load(open(os.path.join(path, "assets.extra", "keras_resnet_export.json"),
                      encoding="utf-8"))
reference = np.load(reference_path, allow_pickle=True)
warmup = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
          tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests"))]
results = []
with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
    def run(signature_name, inputs):
        signature = meta.signature_def[signature_name]
        (input_key, input_info), = signature.inputs.items()
        fetches = {k: v.name for k, v in signature.outputs.items()}
        return session.run(fetches, feed_dict={input_info.name: inputs})

    def compare(case, outputs, label):
        worst = 0.0
        for output, value in outputs.items():
            expected = reference[f"{case['index']}/{output}"]
            if output in ("probabilities", "scores"):
                if value.dtype != np.float32:
                    raise SystemExit(f"{label}: output {output} is {value.dtype}, not float32")
                worst = max(worst, float(np.max(np.abs(value - expected))))
            elif not np.array_equal(value, expected):
                raise SystemExit(f"{label}: output {output} differs: {value} vs {expected}")
        results.append({"case": label, "signature": case["signature"],
                        "batch": case["batch"], "max_abs_diff": worst})
        if worst > atol:
            raise SystemExit(f"{label}: max |served - keras| = {worst:.3g} > {atol}")

    warmup_cases = [c for c in info["cases"] if c["kind"] == "warmup"]
    if len(warmup) != len(warmup_cases):
        raise SystemExit(f"{len(warmup)} warmup records, expected {len(warmup_cases)}")
    for number, (log, case) in enumerate(zip(warmup, warmup_cases)):
        request = getattr(log, log.WhichOneof("log_type")).request
        if request.model_spec.signature_name != case["signature"]:
            raise SystemExit(f"warmup record {number} is for {request.model_spec.signature_name}")
        if log.HasField("classify_log"):  # TF Serving's RunClassify: the examples serialized
            inputs = np.array([e.SerializeToString() for e in request.input.example_list.examples],
                              dtype=object)
        else:
            (tensor,) = request.inputs.values()
            inputs = tf.make_ndarray(tensor)
        compare(case, run(case["signature"], inputs), f"warmup {number}")
    for case in info["cases"]:
        if case["kind"] == "test":
            inputs = reference[f"{case['index']}/input"]
            compare(case, run(case["signature"], inputs), f"test {case['index']}")
leaked = sorted(m for m, module in sys.modules.items()
                if m.split(".")[0] in BLOCKED and module is not None)
if leaked:
    raise SystemExit(f"modules that must not load were imported: {leaked[:5]}")
signatures = sorted(k for k in meta.signature_def if not k.startswith("__"))
print("VERIFY-RESULT " + json.dumps({"cases": results, "tensorflow": tf.__version__,
                                     "keras_imported": False, "signatures": signatures}))
'''


class ExportVerificationError(RuntimeError):
    """The served outputs differ from the Keras model's, or the export does not load."""


def verify_export(path: str | os.PathLike, model: keras.Model | None = None, *,
                  atol: float = 1e-5, timeout: float = 600, verbose: bool = True) -> dict:
    """Loads an exported version like TF Serving does and checks it against the Keras model.

    Args:
        path: a version directory returned by `export_saved_model`.
        model: optional Keras model to recompute the expected outputs with; by default the
            outputs the exported model gave at export time (stored in the bundle) are used.
            Where the export folded BatchNormalization (``batch_norm_folded`` in its record),
            the outputs come from ``fold_batch_norm(model)``, as at export time.
        atol: tolerance on ``probabilities`` and ``scores`` (``classes``/``labels`` must match).
        timeout: seconds the child processes may take.
        verbose: log the signature table and the result at INFO level (``keras-resnet export
            --verify`` prints them).

    Returns:
        A dict: ``cases`` (each with ``max_abs_diff``), ``max_abs_diff``, ``signatures``,
        ``table`` (``saved_model_cli show --all``'s output for the version), ``seconds``.

    Raises:
        FileNotFoundError: ``path`` is not an exported version.
        ExportVerificationError: loading failed or the outputs differ.
    """
    path = os.path.abspath(os.fspath(path))  # the children run in a scratch directory
    info_path = os.path.join(path, layout.EXPORT_INFO)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")) or not os.path.isfile(info_path):
        raise FileNotFoundError(f"path {path!r} is not a version directory written by "
                                "export_saved_model (saved_model.pb and "
                                f"{layout.EXPORT_INFO} expected)")
    atol = checks.non_negative(atol, "atol", example="1e-5")
    started = time.perf_counter()
    environment = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with tempfile.TemporaryDirectory(prefix="keras-resnet-verify-") as scratch:
        reference_path = os.path.join(path, layout.REFERENCE)
        if model is not None:
            reference_path = _recompute_reference(path, model, scratch)
        # TF's own signature table, in parallel with the check (each is a fresh TF process).
        table = subprocess.Popen(_SAVED_MODEL_CLI + ["show", "--dir", path, "--all"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=environment, cwd=scratch)
        process = subprocess.run(
            [sys.executable, "-I", "-c", _CHILD, path, reference_path, repr(atol)],
            capture_output=True, text=True, timeout=timeout, env=environment, cwd=scratch)
        table_text, table_error = table.communicate(timeout=timeout)
    output = process.stdout
    if process.returncode != 0 or _MARKER not in output:
        detail = (process.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ExportVerificationError(f"verification of {path} failed in the TensorFlow-only "
                                      f"process (exit {process.returncode}): {detail}")
    report = json.loads(output.rpartition(_MARKER)[2])
    report["table"] = table_text.strip() if table.returncode == 0 else (
        f"(saved_model_cli failed: {(table_error.strip().splitlines() or ['?'])[-1]})")
    report["max_abs_diff"] = max(c["max_abs_diff"] for c in report["cases"])
    report["seconds"] = time.perf_counter() - started
    if verbose:
        logger.info("%s", report["table"])
        logger.info("%s", summary(path, report, atol))
    return report


def summary(path, report, atol) -> str:
    """One line saying what `verify_export` checked and how close the outputs were."""
    return (f"verified {path}: {len(report['cases'])} runs over {report['signatures']} in a "
            f"TensorFlow-only process (C++ loader, Session), max |served - keras| = "
            f"{report['max_abs_diff']:.2g} (tolerance {atol:g}), {report['seconds']:.1f} s")


def _recompute_reference(path, model, scratch):
    """Expected outputs from ``model`` for the export's recorded inputs, into a scratch npz."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    from keras_resnet.export import signatures as sig

    with open(os.path.join(path, layout.EXPORT_INFO), encoding="utf-8") as handle:
        info = json.load(handle)
    spec_data = dict(info["spec"])
    spec_data["class_names"] = tuple(spec_data["class_names"] or ()) or None
    spec = sig.ServingSpec(**spec_data)
    if info.get("batch_norm_folded"):  # the export served the folded copy: compare with it
        from keras_resnet.modeling.folding import fold_batch_norm

        model = fold_batch_norm(model, weights_in_compute_dtype=True)
    stored = np.load(os.path.join(path, layout.REFERENCE), allow_pickle=True)
    warmup = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
              tf.data.TFRecordDataset(os.path.join(path, layout.WARMUP_FILE))]
    warmup_inputs = [warmup_inputs_of(log) for log in warmup]
    arrays = {}
    for case in info["cases"]:
        index = case["index"]
        inputs = (stored[f"{index}/input"] if case["kind"] == "test"
                  else warmup_inputs[[c["index"] for c in info["cases"]
                                      if c["kind"] == "warmup"].index(index)])
        if case["kind"] == "test":
            arrays[f"{index}/input"] = inputs
        for output, value in sig.keras_reference(model, spec, case["signature"],
                                                 inputs).items():
            arrays[f"{index}/{output}"] = value
    reference_path = os.path.join(scratch, "reference.npz")
    np.savez(reference_path, **arrays)
    return reference_path


def warmup_inputs_of(log):
    """The input batch of one warmup ``PredictionLog``: a tensor, or serialized Examples."""
    import tensorflow as tf

    if log.HasField("classify_log"):
        return np.array([example.SerializeToString()
                         for example in log.classify_log.request.input.example_list.examples],
                        dtype=object)
    return tf.make_ndarray(next(iter(log.predict_log.request.inputs.values())))
