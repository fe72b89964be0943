"""The TF Serving bundle: versioned SavedModels that appear atomically, plus what serving needs.

Layout of ``base_dir``::

    base_dir/
      models.config                 model_config_list, one entry per model, version policy
      batching_parameters.txt       for --enable_batching, tuned for a GPU
      docker-run.sh                 the tensorflow/serving:latest-gpu command for this bundle
      <name>.inferenceservice.yaml  KServe InferenceService with a GPU request
      <name>/<version>/             saved_model.pb, variables/, assets.extra/
      .staging/                     versions being written (never under a model's base path)

A version is written under ``.staging`` (same file system), flushed to disk and renamed into
``<name>/<version>``; TF Serving polls ``<name>/`` and only ever sees complete versions.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import numpy as np

from keras_resnet.export import signatures as sig

STAGING = ".staging"
MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
DOCKER_RUN = "docker-run.sh"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
EXPORT_INFO = os.path.join("assets.extra", "keras_resnet_export.json")
REFERENCE = os.path.join("assets.extra", "keras_reference.npz")
XLA_ATTRIBUTES = ("_XlaMustCompile", "_XlaCompile", "_XlaScope")


def versions(model_dir):
    """Returns the sorted integer versions under ``model_dir`` that hold a ``saved_model.pb``."""
    if not os.path.isdir(model_dir):
        return []
    found = []
    for entry in os.listdir(model_dir):
        if entry.isdigit() and os.path.isfile(os.path.join(model_dir, entry, "saved_model.pb")):
            found.append(int(entry))
    return sorted(found)


def model_names(base_dir):
    """Returns the names of the models in ``base_dir`` that have at least one complete version."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(name for name in os.listdir(base_dir)
                  if not name.startswith(".") and versions(os.path.join(base_dir, name)))


def _next_version(model_dir):
    taken = [int(e) for e in os.listdir(model_dir) if e.isdigit()] if os.path.isdir(model_dir) \
        else []
    return max(taken, default=0) + 1


def _fsync_tree(path):
    """Flushes every file and directory under ``path`` so a crash after the rename keeps it."""
    for root, _, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(root)


def _fsync_dir(path):
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomic(path, text):
    """Writes a small text file by temp file + rename, so readers never see half of it."""
    directory = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def _clean_stale_staging(base_dir):
    """Removes staging directories left by exports whose process is gone (e.g. SIGKILLed)."""
    staging = os.path.join(base_dir, STAGING)
    if not os.path.isdir(staging):
        return
    for entry in os.listdir(staging):
        pid = entry.rsplit("-pid", 1)[-1].split("-")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(staging, entry), ignore_errors=True)
        except PermissionError:
            pass


def find_xla_attributes(saved_model_dir):
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


def _cases(spec, warmup_batch_sizes, seed):
    """Deterministic inputs: warmup cases (model-size images) then test cases (odd sizes)."""
    import tensorflow as tf

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
        cases.append(("warmup", sig.IMAGES_SIGNATURE, images(batch).astype(dtype)))
    for batch in sorted({min(warmup_batch_sizes), min(max(warmup_batch_sizes), 8)}):
        cases.append(("warmup", sig.BYTES_SIGNATURE, encoded(batch, "png")))
    odd = (spec.height + 3, spec.width + 5) if spec.resize else (spec.height, spec.width)
    cases.append(("test", sig.IMAGES_SIGNATURE, images(3, *odd).astype(dtype)))
    cases.append(("test", sig.BYTES_SIGNATURE, encoded(2, "png", spec.height + 3, spec.width + 5)))
    if spec.channels != 4:  # JPEG has no alpha channel
        cases.append(("test", sig.BYTES_SIGNATURE,
                      encoded(2, "jpeg", spec.height + 5, spec.width)))
    return cases


def _warmup_records(model_name, cases):
    """TF Serving warmup: one PredictionLog per warmup case, as serialized protos."""
    import tensorflow as tf
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    records = []
    for kind, signature, inputs in cases:
        if kind != "warmup":
            continue
        name = sig.BYTES_INPUT if signature == sig.BYTES_SIGNATURE else sig.IMAGES_INPUT
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
        values = list(inputs) if signature == sig.BYTES_SIGNATURE else inputs
        request.inputs[name].CopyFrom(tf.make_tensor_proto(values))
        log = prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))
        records.append(log.SerializeToString())
    return records


def _write_reference(path, model, spec, cases):
    """Keras outputs for every case (and the test inputs), for `verify_export` to compare with."""
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


def write_batching_parameters(base_dir, max_batch_size=64, batch_timeout_micros=1000,
                              num_batch_threads=4, max_enqueued_batches=100):
    """Writes ``batching_parameters.txt`` for ``--enable_batching`` (text BatchingParameters).

    GPU defaults: batches up to 64, padded to the allowed sizes (powers of two from 8, ending at
    ``max_batch_size``) so the GPU sees few distinct shapes; 1 ms timeout; 4 threads to overlap
    host work with the device.
    """
    allowed = [size for size in (8, 16, 32, 64, 128, 256, 512) if size < max_batch_size]
    allowed.append(max_batch_size)
    text = (f"max_batch_size {{ value: {max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {num_batch_threads} }}\n"
            f"max_enqueued_batches {{ value: {max_enqueued_batches} }}\n"
            + "".join(f"allowed_batch_sizes: {size}\n" for size in allowed)
            + "pad_variable_length_inputs: false\n")
    path = os.path.join(base_dir, BATCHING_PARAMETERS)
    _write_atomic(path, text)
    return path


def write_models_config(base_dir, model_base_path="/models", num_versions=1):
    """Writes ``models.config``: a model_config_list entry for every model in ``base_dir``.

    ``model_base_path`` is where ``base_dir`` is mounted in the serving container (``/models`` in
    the docker command); None writes absolute host paths for a natively installed server.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as config_pb2

    config = config_pb2.ModelServerConfig()
    root = os.path.abspath(base_dir) if model_base_path is None else model_base_path
    for name in model_names(base_dir):
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{root.rstrip('/')}/{name}"
        entry.model_platform = "tensorflow"
        entry.model_version_policy.latest.num_versions = num_versions
    path = os.path.join(base_dir, MODELS_CONFIG)
    _write_atomic(path, text_format.MessageToString(config))
    return path


def write_deployment(base_dir, name, storage_uri=None):
    """Writes ``docker-run.sh`` and ``<name>.inferenceservice.yaml``; returns their paths."""
    host_dir = os.path.abspath(base_dir)
    docker = (
        "#!/bin/sh\n"
        "# TF Serving on a GPU for every model in this directory (needs the NVIDIA container\n"
        "# toolkit). REST on :8501, gRPC on :8500. Warmup requests run before the first call.\n"
        "exec docker run --gpus all --rm -p 8501:8501 -p 8500:8500 \\\n"
        f"  -v \"{host_dir}:/models:ro\" \\\n"
        "  tensorflow/serving:latest-gpu \\\n"
        "  --model_config_file=/models/models.config \\\n"
        "  --model_config_file_poll_wait_seconds=60 \\\n"
        "  --enable_batching=true \\\n"
        "  --batching_parameters_file=/models/batching_parameters.txt \\\n"
        "  --enable_model_warmup=true\n")
    docker_path = os.path.join(base_dir, DOCKER_RUN)
    _write_atomic(docker_path, docker)
    os.chmod(docker_path, 0o755)
    service = name.lower().replace("_", "-").replace(".", "-")
    uri = storage_uri or f"pvc://saved-models/{name}"
    manifest = (
        "# KServe InferenceService: TF Serving on one GPU. storageUri must hold the version\n"
        f"# directories of {name}/ (copy {host_dir}/{name} there).\n"
        "apiVersion: serving.kserve.io/v1beta1\n"
        "kind: InferenceService\n"
        "metadata:\n"
        f"  name: {service}\n"
        "spec:\n"
        "  predictor:\n"
        "    model:\n"
        "      modelFormat:\n"
        "        name: tensorflow\n"
        "      runtimeVersion: latest-gpu\n"
        f"      storageUri: {uri}\n"
        "      args:\n"
        "        - --enable_batching=true\n"
        "      resources:\n"
        "        requests:\n"
        "          cpu: \"2\"\n"
        "          memory: 4Gi\n"
        "          nvidia.com/gpu: \"1\"\n"
        "        limits:\n"
        "          memory: 8Gi\n"
        "          nvidia.com/gpu: \"1\"\n")
    manifest_path = os.path.join(base_dir, f"{name}.inferenceservice.yaml")
    _write_atomic(manifest_path, manifest)
    return docker_path, manifest_path


def _positive(value, argument):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argument} must be an int >= 1; got {value!r}")
    return value


def export_saved_model(model, base_dir="saved_models", name=None, version=None,
                       class_names=None, *, input_dtype="uint8", top_k=5, image_size=None,
                       resize=False, scale=1.0, offset=0.0, logits=None,
                       warmup_batch_sizes=(1, 8, 32), max_batch_size=64,
                       model_base_path="/models", storage_uri=None, seed=0):
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
            (see `keras_resnet.export.signatures.make_spec`).
        warmup_batch_sizes: batch sizes of the warmup requests for ``serving_default``.
        max_batch_size: the largest batch of the batching parameters file.
        model_base_path: where ``base_dir`` is mounted for TF Serving (in ``models.config``).
        storage_uri: the InferenceService's ``storageUri`` (default ``pvc://saved-models/NAME``).
        seed: seed of the warmup and test inputs.

    Returns:
        The path of the new version directory (a str).

    Raises:
        ValueError, TypeError: invalid options (raised before anything is written).
        FileExistsError: ``version`` already exists.
        RuntimeError: the saved graph carries XLA compile attributes.
    """
    import keras
    import tensorflow as tf

    name = sig.check_model_name(model.name if name is None else name)
    if version is not None:
        _positive(version, "version")
    if not isinstance(base_dir, (str, os.PathLike)) or not str(base_dir):
        raise TypeError(f"base_dir must be a path; got {base_dir!r}")
    if (isinstance(warmup_batch_sizes, (str, bytes)) or not warmup_batch_sizes
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                       for b in warmup_batch_sizes)):
        raise ValueError(f"warmup_batch_sizes must be a non-empty sequence of ints >= 1; got "
                         f"{warmup_batch_sizes!r}")
    _positive(max_batch_size, "max_batch_size")
    spec = sig.make_spec(model, input_dtype=input_dtype, top_k=top_k, class_names=class_names,
                         image_size=image_size, resize=resize, scale=scale, offset=offset,
                         logits=logits)
    base_dir = os.fspath(base_dir)
    model_dir = os.path.join(base_dir, name)
    if version is not None and os.path.exists(os.path.join(model_dir, str(version))):
        raise FileExistsError(f"version {version} of model {name!r} already exists at "
                              f"{os.path.join(model_dir, str(version))}; versions are never "
                              "overwritten: pass another version or version=None (next free)")
    started = time.perf_counter()
    os.makedirs(os.path.join(base_dir, STAGING), exist_ok=True)
    _clean_stale_staging(base_dir)
    staging = tempfile.mkdtemp(prefix=f"{name}-pid{os.getpid()}-",
                               dir=os.path.join(base_dir, STAGING))
    try:
        # Endpoints track the variables they use; track(model) would save every weight twice.
        archive = keras.export.ExportArchive()
        for signature, (function, input_signature) in sig.serving_functions(model, spec).items():
            archive.add_endpoint(signature, function, input_signature=input_signature)
        archive.write_out(staging, verbose=False)
        xla = find_xla_attributes(staging)
        if xla:
            raise RuntimeError("the serving graph carries XLA compile attributes, which break TF "
                               f"Serving on GPU: {xla[:5]}")
        cases = _cases(spec, tuple(warmup_batch_sizes), seed)
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with tf.io.TFRecordWriter(os.path.join(staging, WARMUP_FILE)) as writer:
            for record in _warmup_records(name, cases):
                writer.write(record)
        manifest = _write_reference(os.path.join(staging, REFERENCE), model, spec, cases)
        info = {"name": name, "spec": spec.to_json(), "keras_model": model.name,
                "dtype_policy": str(getattr(model.dtype_policy, "name", model.dtype_policy)),
                "cases": manifest, "seed": seed,
                "signatures": {sig.IMAGES_SIGNATURE: sig.IMAGES_INPUT,
                               sig.BYTES_SIGNATURE: sig.BYTES_INPUT}}
        with open(os.path.join(staging, EXPORT_INFO), "w") as handle:
            json.dump(info, handle, indent=1)
        for root, directories, files in os.walk(staging):
            for entry in directories:
                os.chmod(os.path.join(root, entry), 0o755)
            for entry in files:
                os.chmod(os.path.join(root, entry), 0o644)
        os.chmod(staging, 0o755)
        _fsync_tree(staging)
        os.makedirs(model_dir, exist_ok=True)
        path = _publish(staging, model_dir, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(model_dir)
    write_models_config(base_dir, model_base_path=model_base_path)
    write_batching_parameters(base_dir, max_batch_size=max_batch_size)
    write_deployment(base_dir, name, storage_uri=storage_uri)
    print(f"exported {name} version {os.path.basename(path)} to {path} in "
          f"{time.perf_counter() - started:.1f} s")
    return path


def _publish(staging, model_dir, version):
    """Renames the finished version into place; with version=None retries on a lost race."""
    for _ in range(100):
        number = version if version is not None else _next_version(model_dir)
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
