"""Where an export's pieces live in a bundle, and how a version appears there atomically.

``base_dir/<name>/<version>/`` holds a complete SavedModel; ``base_dir/.staging/`` holds the
versions being written (same file system, never under a model's base path, removed when the last
one is published); inside a version, ``assets.extra/`` holds the warmup requests, the Keras
reference outputs and the export record. `versions` and `model_names` read the layout;
`new_staging_dir`, `publish` and `remove_staging_if_empty` write it.
"""

from __future__ import annotations

import contextlib
import os

from keras_resnet import files

STAGING = ".staging"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
EXPORT_INFO = os.path.join("assets.extra", "keras_resnet_export.json")
REFERENCE = os.path.join("assets.extra", "keras_reference.npz")


def versions(model_dir) -> list[int]:
    """Returns the sorted integer versions under ``model_dir`` that hold a ``saved_model.pb``."""
    if not os.path.isdir(model_dir):
        return []
    found = []
    for entry in os.listdir(model_dir):
        if entry.isdigit() and os.path.isfile(os.path.join(model_dir, entry, "saved_model.pb")):
            found.append(int(entry))
    return sorted(found)


def model_names(base_dir) -> list[str]:
    """Returns the names of the models in ``base_dir`` that have at least one complete version."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(name for name in os.listdir(base_dir)
                  if not name.startswith(".") and versions(os.path.join(base_dir, name)))


def new_staging_dir(base_dir, name) -> str:
    """A fresh ``.staging/.tmp-<pid>-<name>…`` after sweeping those of dead exports."""
    staging_root = os.path.join(base_dir, STAGING)
    for _ in range(9):
        try:
            return _make_staging_dir(staging_root, name)
        except FileNotFoundError:
            pass  # a concurrent export removed the empty staging root in between: again
    return _make_staging_dir(staging_root, name)


def _make_staging_dir(staging_root, name):
    os.makedirs(staging_root, exist_ok=True)
    files.remove_stale_temporaries(staging_root)
    return files.make_temp_dir(staging_root, f"{name}-")


def remove_staging_if_empty(base_dir) -> None:
    """Removes ``base_dir/.staging`` unless an export is writing there (rmdir refuses a
    non-empty directory, so a concurrent export's version is never touched)."""
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(base_dir, STAGING))


def publish(staging, model_dir, version) -> str:
    """Renames the finished version into place; with version=None retries on a lost race."""
    for _ in range(100):
        number = version if version is not None else next_version(model_dir)
        target = os.path.join(model_dir, str(number))
        if os.path.exists(target):
            if version is not None:
                raise FileExistsError(f"version {version} appeared at {target} during the export;"
                                      " versions are never overwritten")
            continue
        try:
            # rename(2) refuses a non-empty target and is atomic within one file system.
            os.rename(staging, target)
            return target
        except OSError:
            if version is not None or not os.path.exists(target):
                raise
    raise RuntimeError(f"could not find a free version under {model_dir}")


def next_version(model_dir) -> int:
    """One more than the largest numeric entry of ``model_dir`` (1 when there is none)."""
    taken = [int(e) for e in os.listdir(model_dir) if e.isdigit()] if os.path.isdir(model_dir) \
        else []
    return max(taken, default=0) + 1
