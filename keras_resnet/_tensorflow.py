"""What needs TensorFlow, in one place: the error a TensorFlow-only feature raises without it.

The modelling core (blocks, models, presets, stats, the recipe's compile/fit pieces, pretrained
``.safetensors`` loading) runs on every Keras 3 backend with no TensorFlow installed. The data
pipelines (``tf.data``), export (SavedModel, TF Serving files), serving, tuning, training runs and
``tf.distribute`` need TensorFlow: they call ``require_tensorflow(feature)`` first, so a user
without it gets one line naming the feature and the extra to install, not a traceback from deep
inside. A feature that needs TensorFlow *as the Keras backend* (its graph is a TensorFlow graph)
calls ``require_tensorflow_backend(feature)``, whose message names ``KERAS_BACKEND``.

This module imports neither Keras nor TensorFlow at import.
"""

from __future__ import annotations

import importlib.util
import os
import sys

EXTRA = "tensorflow"
INSTALL = f"pip install 'keras_resnet[{EXTRA}]'"


# Top-level modules of what the extra installs (pyproject.toml's `tensorflow` extra).
EXTRA_MODULES = ("tensorflow", "tensorflow_serving", "keras_tuner", "tensorboard", "sklearn",
                 "matplotlib", "PIL", "grpc")


class TensorFlowRequired(ImportError):
    """A TensorFlow-only feature was used where TensorFlow cannot be imported (an ImportError,
    so ``except ImportError`` keeps working); the message names the feature and the extra."""


class TensorFlowBackendRequired(RuntimeError):
    """A feature that needs TensorFlow as the Keras backend was used on another backend."""


def tensorflow_available() -> bool:
    """Whether TensorFlow is installed (found on the path; not imported, so a package that
    imports it lazily stays light to import)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"] is not None
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        return False


def require_tensorflow(feature: str) -> None:
    """Raises ``TensorFlowRequired`` naming ``feature`` unless TensorFlow is installed.

    Args:
        feature: what the user asked for, as they would name it (e.g. ``"data pipelines
            (keras_resnet.data)"``).

    Raises:
        TensorFlowRequired: TensorFlow is not installed.
    """
    if not tensorflow_available():
        raise TensorFlowRequired(missing_message(feature, "tensorflow"))


def missing_message(feature: str, module: str) -> str:
    """The one-line message for ``feature`` when ``module`` (of the extra) cannot be imported."""
    return (f"{feature} needs TensorFlow, but {module!r} is not installed; install it with: "
            f"{INSTALL}")


def as_tensorflow_required(error: ImportError, feature: str):
    """``error`` as a ``TensorFlowRequired`` for ``feature`` when it is a missing module of the
    ``tensorflow`` extra (e.g. a lazy ``import tensorflow`` deep inside); otherwise None."""
    if isinstance(error, TensorFlowRequired):
        return error
    module = (getattr(error, "name", None) or "").split(".")[0]
    if isinstance(error, ModuleNotFoundError) and module in EXTRA_MODULES:
        return TensorFlowRequired(missing_message(feature, module))
    return None


def keras_backend() -> str:
    """The Keras backend in use (Keras is imported to ask it)."""
    import keras

    return keras.backend.backend()


def require_tensorflow_backend(feature: str) -> None:
    """Raises unless Keras runs on TensorFlow (and TensorFlow is importable).

    Args:
        feature: what the user asked for.

    Raises:
        TensorFlowRequired: TensorFlow is not installed.
        TensorFlowBackendRequired: Keras runs on another backend.
    """
    require_tensorflow(feature)
    backend = keras_backend()
    if backend != "tensorflow":
        raise TensorFlowBackendRequired(
            f"{feature} needs the TensorFlow backend of Keras, but Keras runs on {backend!r} "
            f"(KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')!r}); run it with "
            "KERAS_BACKEND=tensorflow")


FROZEN_WEIGHTS_ENV = "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"


def assume_frozen_weights() -> bool:
    """Lets TensorFlow's oneDNN kernels keep their reordered weights from call to call.

    For processes that only serve (``keras-resnet serve``): by default every oneDNN
    convolution reorders its weights into its blocked layout on every call; with
    ``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1`` it does so once. ResNet-50 at batch 1 on an AVX-512
    CPU served 1.52x (bfloat16) and 1.05x (float32) the images per second (docs/benchmarks.md).
    TensorFlow reads the variable once, at the first oneDNN convolution, so this must run before
    one; a process that trains must never set it (its convolutions would keep using stale
    weights). A value the user already set is kept.

    Returns:
        Whether the variable is now on.
    """
    os.environ.setdefault(FROZEN_WEIGHTS_ENV, "1")
    return os.environ[FROZEN_WEIGHTS_ENV].strip().lower() in ("1", "true")
