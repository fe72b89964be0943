"""Loading any supported weights file into a built model, chosen by its extension."""

from __future__ import annotations

import logging
import os
import zipfile

import keras

from keras_resnet.constants import WEIGHTS_EXTENSIONS
from keras_resnet.modeling.state_dict import is_torch_file, read_state_dict
from keras_resnet.modeling.stats import leaf_layers
from keras_resnet.modeling.torch_weights import LoadResult, load_state_dict

logger = logging.getLogger(__name__)


def _is_keras_applications(model):
    conv = next((layer for layer in leaf_layers(model) if layer.name == "conv1_conv"), None)
    return conv is not None and conv.use_bias


def _check_keras_zip(path: str) -> None:
    """A ``.keras`` file is a zip archive: refuse one that is not, before Keras opens it."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"weights file {path!r} is not a readable .keras (zip) file; it may be "
                         "cut short (an interrupted download or copy): save or copy it again")


def _load_keras_file(model, path, kind):
    try:
        model.load_weights(path)
    except zipfile.BadZipFile as error:  # a damaged member (bad CRC) inside a complete archive
        raise ValueError(f"weights file {path!r} is not a readable .keras (zip) file; it may be "
                         f"cut short or corrupt ({error}): save or copy it again") from None
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(f"weights file {path!r} ({kind}) does not fit model {model.name!r}: "
                         f"{error}") from error
    logger.info("%s: loaded %s weights into model %r", path, kind, model.name)
    return LoadResult(path=path, format="keras")


def load_weights(model: keras.Model, path: str | os.PathLike) -> LoadResult:
    """Loads a weights file of any supported kind into ``model``, chosen by its extension.

    ``.safetensors`` / ``.pth`` / ``.pt`` / ``.bin``: a torchvision / timm ResNet checkpoint
    (``load_torch_weights``); ``.keras``: the weights of a saved keras_resnet model;
    ``.weights.h5``: Keras weights; ``.h5``: keras.applications' published files, which only
    fit ``compat="keras.applications"`` models.

    Args:
        model: the model to load into.
        path: the file.

    Returns:
        A ``LoadResult``.

    Raises:
        ValueError: for another extension, a missing file, a ``.keras`` file that is not a
            readable zip archive (cut short or corrupt), or weights that do not fit.
        ImportError: for a torch pickle without torch installed.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {model!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"weights must be a file path; got {path!r}")
    path = os.fspath(path)
    lower = path.lower()
    if not lower.endswith(WEIGHTS_EXTENSIONS):
        raise ValueError(f"weights file {path!r} must end with one of "
                         f"{', '.join(WEIGHTS_EXTENSIONS)}")
    if not os.path.isfile(path):
        raise ValueError(f"weights file {path!r} does not exist")
    if is_torch_file(path):
        return load_state_dict(model, read_state_dict(path), path)
    if lower.endswith(".keras"):
        _check_keras_zip(path)
        return _load_keras_file(model, path, ".keras model")
    if lower.endswith(".weights.h5"):
        return _load_keras_file(model, path, "Keras .weights.h5")
    if not _is_keras_applications(model):
        raise ValueError(
            f"weights file {path!r} is a legacy .h5 file such as keras.applications publishes; "
            f"model {model.name!r} is not built like keras.applications: load it into "
            "keras_resnet.ResNet50/101/152(compat='keras.applications', weights=PATH)")
    return _load_keras_file(model, path, "keras.applications .h5")
