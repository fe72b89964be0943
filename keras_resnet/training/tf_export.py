"""The end-of-run SavedModel export of a run trained on another Keras backend (JAX).

The serving signatures (``keras_resnet.export``) wrap the network in TensorFlow ops (decoding,
crop, shape check, top-k), which run only around a TensorFlow-backend model. A run trained on
JAX has just written its ``model.keras``, which loads on any backend: a fresh Python process on
the TensorFlow backend loads it and exports it with the same ``export_saved_model`` call as a
TensorFlow run, so the served model is the trained one. That process is this module:
``python -m keras_resnet.training.tf_export REQUEST.json`` (``main``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile

logger = logging.getLogger(__name__)



def export_in_tensorflow(model_path, base_dir, *, name, class_names, crop_fraction) -> str:
    """Exports the ``.keras`` file ``model_path`` from a TensorFlow-backend process.

    Args:
        model_path: the run's ``model.keras``.
        base_dir, name, class_names, crop_fraction: as ``export_saved_model`` takes them.

    Returns:
        The path of the new SavedModel version directory.

    Raises:
        RuntimeError: the export process failed (its last error line is in the message).
    """
    # The export runs on the CPU: the training process may still hold the accelerators' memory.
    environ = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="-1")
    environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logger.info("Exporting %s from a TensorFlow-backend process (the serving signatures are "
                "TensorFlow graphs)", model_path)
    with tempfile.TemporaryDirectory(prefix="keras-resnet-export-") as directory:
        request_path = os.path.join(directory, "request.json")
        with open(request_path, "w", encoding="utf-8") as stream:
            json.dump({"model_path": os.fspath(model_path), "base_dir": os.fspath(base_dir),
                       "name": name, "class_names": list(class_names),
                       "crop_fraction": crop_fraction,
                       "result_path": os.path.join(directory, "result.json")}, stream)
        done = subprocess.run([sys.executable, "-m", "keras_resnet.training.tf_export",
                               request_path], env=environ, capture_output=True, text=True,
                              check=False)
        try:
            with open(os.path.join(directory, "result.json"), encoding="utf-8") as stream:
                return json.load(stream)["path"]
        except (OSError, ValueError, KeyError):
            errors = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(f"the SavedModel export of {model_path} in a TensorFlow-backend "
                               f"process failed (exit {done.returncode}): "
                               f"{errors[-1] if errors else 'no output'}") from None


def main(argv=None) -> int:
    """The export process: loads ``model_path`` of the request file, exports it and writes
    ``{"path": ...}`` to the request's ``result_path``; returns the exit status."""
    import keras

    from keras_resnet import files
    from keras_resnet.export import export_saved_model

    (request_path,) = sys.argv[1:] if argv is None else argv
    with open(request_path, encoding="utf-8") as stream:
        request = json.load(stream)
    result_path = request.pop("result_path")
    model = keras.models.load_model(request.pop("model_path"), compile=False)
    path = os.fspath(export_saved_model(model, **request))
    files.write_text(result_path, json.dumps({"path": path}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
