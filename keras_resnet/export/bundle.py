"""The TF Serving bundle: versioned SavedModels that appear atomically, plus what serving needs.

Layout of ``base_dir``::

    base_dir/
      models.config                 model_config_list, one entry per model, version policy
      batching_parameters.txt       for --enable_batching, tuned for a GPU
      docker-run.sh                 the tensorflow/serving:latest-gpu command for this bundle
      <name>.inferenceservice.yaml  KServe InferenceService with a GPU request
      <name>/<version>/             saved_model.pb, variables/, assets.extra/
      .staging/                     versions being written (never under a model's base path;
                                    removed when no export is writing)

A version is written under ``.staging`` (same file system), flushed to disk and renamed into
``<name>/<version>`` (`keras_resnet.export.layout`); TF Serving polls ``<name>/`` and only ever
sees complete versions. Temporaries of writers that died (``.tmp-<pid>-*``, in ``.staging`` and
beside the config files) are removed by the next export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # keras is imported where a model is exported, not with this module
    import keras

from keras_resnet import checks, files
from keras_resnet.constants import (BYTES_INPUT, BYTES_SIGNATURE, CLASSIFY_INPUT,
                                    CLASSIFY_SIGNATURE, DEFAULT_EXPORT_DIR,
                                    DEFAULT_MAX_BATCH_SIZE, DEFAULT_MODEL_BASE_PATH,
                                    DEFAULT_WARMUP_BATCH_SIZES, IMAGES_INPUT, IMAGES_SIGNATURE)
from keras_resnet.export.deployment import (BATCHING_PARAMETERS, DOCKER_RUN, MODELS_CONFIG,
                                            write_batching_parameters, write_deployment,
                                            write_models_config)
from keras_resnet.export.layout import (EXPORT_INFO, REFERENCE, STAGING, WARMUP_FILE,
                                        model_names, new_staging_dir, publish,
                                        remove_staging_if_empty, versions)

__all__ = ["BATCHING_PARAMETERS", "DOCKER_RUN", "EXPORT_INFO", "MODELS_CONFIG", "REFERENCE",
           "STAGING", "WARMUP_FILE", "export_saved_model", "find_xla_attributes", "model_names",
           "versions"]

logger = logging.getLogger(__name__)

XLA_ATTRIBUTES = ("_XlaMustCompile", "_XlaCompile", "_XlaScope")


def find_xla_attributes(saved_model_dir) -> list[str]:
    """Returns ``["<function or graph>/<node>: <attr>", ...]`` for every XLA compile attribute.

    TF Serving on GPU fails on functions marked for XLA compilation (``jit_compile=True``); an
    export must have none. Scans the graph, every function's attributes and every node.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    found = []
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        for node in graph.node:
            found += [f"graph/{node.name}: {a}" for a in node.attr if a in XLA_ATTRIBUTES]
        for function in graph.library.function:
            fname = function.signature.name
            found += [f"{fname}: {a}" for a in function.attr if a in XLA_ATTRIBUTES]
            for node in function.node_def:
                found += [f"{fname}/{node.name}: {a}" for a in node.attr if a in XLA_ATTRIBUTES]
    return found


def export_saved_model(model: keras.Model, base_dir: str | os.PathLike = DEFAULT_EXPORT_DIR,
                       name: str | None = None, version: int | None = None,
                       class_names: Sequence[str] | None = None, *, input_dtype: str = "uint8",
                       top_k: int | None = None,
                       image_size: int | tuple[int, int] | None = None, resize: bool = False,
                       scale: float = 1.0, offset: float = 0.0, logits: bool | None = None,
                       warmup_batch_sizes: Sequence[int] | None = None,
                       max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                       model_base_path: str = DEFAULT_MODEL_BASE_PATH,
                       storage_uri: str | None = None, seed: int = 0,
                       version_labels: Sequence[str] = (), crop_fraction: float = 1.0,
                       fold_batch_norm: bool | None = None) -> str:
    """Exports ``model`` for TF Serving as ``base_dir/<name>/<version>/`` and returns that path.

    The version is written under ``base_dir/.staging`` and renamed into place, so TF Serving
    never sees a partial version and a crash mid-export leaves no loadable directory. Afterwards
    ``models.config``, ``batching_parameters.txt``, ``docker-run.sh`` and
    ``<name>.inferenceservice.yaml`` are (re)written beside the models.

    Args:
        model: a Keras image classifier taking raw 0..255 pixels (see `make_spec`).
        base_dir: the directory TF Serving's model config points into.
        name: the model's serving name; defaults to ``model.name``.
        version: an int >= 1; None takes the next free version. Existing versions are never
            overwritten.
        class_names: optional names of the classes: adds the ``labels`` output.
        input_dtype, top_k, image_size, resize, scale, offset, logits: the serving signature
            (see `keras_resnet.export.signatures.make_spec`); ``top_k`` must be in
            ``[1, classes]`` (None: 5, or the number of classes if fewer).
        warmup_batch_sizes: batch sizes of the warmup requests, each <= ``max_batch_size``
            (TF Serving refuses to load a version whose warmup exceeds it); None: those of
            1, 8 and 32 that fit.
        max_batch_size: the largest batch TF Serving's batching (and the local server) accepts.
        model_base_path: where ``base_dir`` is mounted in the serving container; None writes
            absolute host paths into ``models.config``.
        storage_uri: the InferenceService's ``storageUri`` (default ``pvc://saved-models/NAME``).
        seed: seed of the warmup and test inputs.
        version_labels: labels for the new version in ``models.config`` (e.g. ``("canary",)``;
            TF Serving's ``/labels/<label>`` routes); a label on another version moves here.
        crop_fraction: the center crop ``serving_bytes`` takes before resizing (the training
            data's ``Dataset.crop_fraction``; ``train`` passes it), so that a served prediction
            equals ``model.evaluate``'s on the same file.
        fold_batch_norm: serve ``keras_resnet.fold_batch_norm(model,
            weights_in_compute_dtype=True)``: each BatchNormalization folded into the
            convolution before it, and a ``mixed_bfloat16`` model's weights stored in bfloat16.
            None (the default) folds every model `fold_batch_norm` takes (functional ones).
            TensorFlow's CPU graph rewrite fuses BN into the convolution itself only in float32
            and then leaves the residual add and ReLU apart; folded, the convolution, bias, add
            and ReLU run as one op in either precision, and a bfloat16 graph casts no weights
            per request (the ``bf16`` benchmark measures both). The export's reference outputs,
            and `verify_export`, use the folded model, so the check stays exact.

    Returns:
        The path of the new version directory (a str).

    Raises:
        ValueError, TypeError: invalid options (raised before anything is written), or
            ``base_dir`` cannot be created (the OS reason in the message).
        FileExistsError: ``version`` already exists.
        RuntimeError: the saved graph carries XLA compile attributes.
        TensorFlowBackendRequired: Keras runs on another backend than TensorFlow.
    """
    from keras_resnet._tensorflow import require_tensorflow_backend
    from keras_resnet.export import signatures as sig

    require_tensorflow_backend(
        "export_saved_model (its serving signatures are TensorFlow graphs around the model; "
        "save the model with model.save and export it with keras-resnet export MODEL.keras)")
    name = checks.name(model.name if name is None else name, "name")
    version = checks.optional_positive_int(version, "version")
    base_dir = _check_base_dir(base_dir)
    max_batch_size = checks.positive_int(max_batch_size, "max_batch_size")
    warmup_batch_sizes = _warmup_sizes(warmup_batch_sizes, max_batch_size)
    if isinstance(version_labels, str):
        raise TypeError(f"version_labels must be a sequence of labels such as ('stable',); got "
                        f"{version_labels!r}")
    version_labels = tuple(checks.name(label, "version_labels") for label in version_labels)
    spec = sig.make_spec(model, input_dtype=input_dtype, top_k=top_k, class_names=class_names,
                         image_size=image_size, resize=resize, scale=scale, offset=offset,
                         logits=logits, crop_fraction=crop_fraction)
    if fold_batch_norm is not None and not isinstance(fold_batch_norm, bool):
        raise TypeError(f"fold_batch_norm must be True, False or None (fold where possible); "
                        f"got {fold_batch_norm!r}")
    from keras_resnet.modeling.folding import is_foldable

    if fold_batch_norm and not is_foldable(model):
        raise TypeError(f"fold_batch_norm=True needs a functional keras.Model (or None: fold "
                        f"where possible); got {type(model).__name__} {model.name!r}")
    checks.created_dir(base_dir, "base_dir")  # after the checks, before the work
    model_dir = os.path.join(base_dir, name)
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise FileExistsError(f"version {version} of model {name!r} already exists at "
                              f"{os.path.join(model_dir, str(version))}; versions are never "
                              "overwritten: pass another version or version=None (next free)")
    started = time.perf_counter()
    served = _served_model(model, fold_batch_norm)
    staging = new_staging_dir(base_dir, name)
    try:
        _write_version(staging, served, spec, name, warmup_batch_sizes, seed,
                       keras_model=model.name, folded=served is not model)
        os.makedirs(model_dir, exist_ok=True)
        path = publish(staging, model_dir, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        remove_staging_if_empty(base_dir)
    files.fsync_dir(model_dir)
    files.remove_stale_temporaries(base_dir)
    write_models_config(base_dir, model_base_path=model_base_path, labels={
        name: {label: int(os.path.basename(path)) for label in version_labels}})
    write_batching_parameters(base_dir, max_batch_size=max_batch_size)
    write_deployment(base_dir, name, storage_uri=storage_uri)
    logger.info("exported %s version %s to %s in %.1f s", name, os.path.basename(path), path,
                time.perf_counter() - started)
    return path


def _check_base_dir(base_dir):
    if not isinstance(base_dir, (str, os.PathLike)) or not os.fspath(base_dir):
        raise TypeError(f"base_dir must be a directory path; got {base_dir!r}")
    return checks.writable_dir(os.fspath(base_dir), "base_dir")


def _warmup_sizes(warmup_batch_sizes, max_batch_size):
    """The warmup batch sizes: given ones checked against ``max_batch_size``, or the defaults."""
    if warmup_batch_sizes is None:
        fitting = [b for b in DEFAULT_WARMUP_BATCH_SIZES if b <= max_batch_size]
        return tuple(fitting) or (max_batch_size,)
    if isinstance(warmup_batch_sizes, (str, bytes)) or not hasattr(warmup_batch_sizes, "__iter__"):
        raise TypeError(f"warmup_batch_sizes must be a non-empty sequence of ints >= 1; got "
                        f"{warmup_batch_sizes!r}")
    sizes = tuple(warmup_batch_sizes)
    if not sizes:
        raise ValueError(f"warmup_batch_sizes must be a non-empty sequence of ints >= 1; got "
                         f"{warmup_batch_sizes!r}")
    return tuple(checks.positive_int(b, "warmup_batch_sizes", maximum=max_batch_size)
                 for b in sizes)


def _served_model(model, fold):
    """``model``, or its BN-folded copy where ``fold`` asks for one (None: where possible)."""
    from keras_resnet.modeling.folding import fold_batch_norm, is_foldable

    if fold is None:
        fold = is_foldable(model)
    return fold_batch_norm(model, weights_in_compute_dtype=True) if fold else model


def _write_version(staging, model, spec, name, warmup_batch_sizes, seed, *, keras_model,
                   folded):
    """The complete version in ``staging``: graph, warmup, reference outputs, export record."""
    import keras

    from keras_resnet.export import signatures as sig
    from keras_resnet.export import warmup

    # Endpoints track the variables they use; track(model) would save every weight twice.
    archive = keras.export.ExportArchive()
    for signature, (function, input_signature) in sig.serving_functions(model, spec).items():
        archive.add_endpoint(signature, function, input_signature=input_signature)
    archive.write_out(staging, verbose=False)
    xla = find_xla_attributes(staging)
    if xla:
        raise RuntimeError("the serving graph carries XLA compile attributes, which break TF "
                           f"Serving on GPU: {xla[:5]}")
    cases = warmup.make_cases(spec, warmup_batch_sizes, seed)
    os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
    warmup.write_warmup(os.path.join(staging, WARMUP_FILE), name, cases)
    manifest = warmup.write_reference(os.path.join(staging, REFERENCE), model, spec, cases)
    info = {"name": name, "spec": spec.to_json(), "keras_model": keras_model,
            "dtype_policy": str(getattr(model.dtype_policy, "name", model.dtype_policy)),
            "batch_norm_folded": folded,
            "cases": manifest, "seed": seed,
            "signatures": {IMAGES_SIGNATURE: IMAGES_INPUT, BYTES_SIGNATURE: BYTES_INPUT,
                           CLASSIFY_SIGNATURE: CLASSIFY_INPUT}}
    with open(os.path.join(staging, EXPORT_INFO), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=1, ensure_ascii=False)
    _make_readable(staging)
    files.fsync_tree(staging)


def _make_readable(path):
    """0755 directories, 0644 files: the serving container runs as another user."""
    for root, directories, names in os.walk(path):
        for entry in directories:
            os.chmod(os.path.join(root, entry), 0o755)
        for entry in names:
            os.chmod(os.path.join(root, entry), 0o644)
    os.chmod(path, 0o755)


