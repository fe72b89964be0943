"""keras.applications' weights for ``ResNet``: argument checks, the ImageNet download
(checked against its published MD5 digests) and loading a weights file into a model."""

from __future__ import annotations

import os

import keras

from keras_resnet import checks, constants
from keras_resnet.modeling import presets
from keras_resnet.modeling.weight_files import load_weights as load_file


def check_weights(weights: str | os.PathLike | None, depth: int, compat: str | None,
                  include_top: bool, classes: int) -> None:
    """Checks ``ResNet``'s ``weights`` argument before anything is built.

    Raises:
        TypeError: ``weights`` is not None, a str or a path.
        ValueError: ``"imagenet"`` without keras.applications' network, or a missing file.
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"weights must be None, 'imagenet' or a file path; got {weights!r}")
    if weights == "imagenet":
        if compat is None or depth not in presets.KERAS_APPLICATIONS_WEIGHTS_MD5:
            raise ValueError("weights='imagenet' loads keras.applications' published file and "
                             "needs compat='keras.applications' (ResNet50/101/152)")
        if include_top and classes != 1000:
            raise ValueError(f"weights='imagenet' with include_top=True needs classes=1000; "
                             f"got classes={classes}")
    elif weights is not None and not os.path.isfile(weights):
        raise ValueError(f"weights must be None, 'imagenet' or an existing weights file; "
                         f"{os.fspath(weights)!r} does not exist")
    elif weights is not None and not os.fspath(weights).lower().endswith(
            constants.WEIGHTS_EXTENSIONS):
        raise ValueError(f"weights file {os.fspath(weights)!r} must end with one of "
                         f"{', '.join(constants.WEIGHTS_EXTENSIONS)}")


def imagenet_weights_path(depth: int, include_top: bool = True,
                          cache_dir: str | None = None) -> str:
    """Downloads (once) keras.applications' ImageNet weights file and checks its MD5 digest.

    Args:
        depth: 50, 101 or 152.
        include_top: the file with the classifier (else the ``_notop`` file).
        cache_dir: where Keras caches downloads (default: Keras' own, ``~/.keras``).

    Returns:
        The local path of the verified file.

    Raises:
        ValueError: for another depth, or a download whose digest does not match.
        OSError: when the file cannot be downloaded.
    """
    checks.one_of(depth, "depth", presets.KERAS_APPLICATIONS_WEIGHTS_MD5)
    url = presets.KERAS_APPLICATIONS_WEIGHTS_URL.format(
        depth=depth, notop="" if include_top else "_notop")
    digest = presets.KERAS_APPLICATIONS_WEIGHTS_MD5[depth][0 if include_top else 1]
    if cache_dir is not None:
        # Keras falls back to /tmp/.keras for a cache directory that does not exist yet.
        os.makedirs(cache_dir, exist_ok=True)
    try:
        return keras.utils.get_file(os.path.basename(url), url, cache_subdir="models",
                                    file_hash=digest, cache_dir=cache_dir)
    except ValueError as error:  # the digest does not match
        raise ValueError(f"weights='imagenet': the file downloaded from {url} is not "
                         f"keras.applications' file: {error}") from error
    except Exception as error:  # Keras raises a bare Exception when the fetch fails
        raise OSError(f"weights='imagenet': could not download {url}: {error}") from error


def load_weights(model: keras.Model, weights: str | os.PathLike, depth: int,
                 include_top: bool) -> None:
    """Loads ``weights`` (a file path or ``"imagenet"``) into ``model``.

    Any supported file (torchvision/timm checkpoints, ``.keras``, ``.weights.h5``,
    keras.applications' ``.h5`` for compat models) is chosen by its extension
    (``keras_resnet.modeling.weight_files.load_weights``).

    Raises:
        ValueError: the file does not fit the model.
    """

    if weights == "imagenet":
        weights = imagenet_weights_path(depth, include_top)
    load_file(model, os.fspath(weights))
