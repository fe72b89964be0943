"""The files beside the models that tell TF Serving how to serve them.

``models.config`` (``--model_config_file``), ``batching_parameters.txt``
(``--batching_parameters_file``), ``docker-run.sh`` and a KServe ``InferenceService``. Each is
written atomically (`keras_resnet.files`), so a server polling the directory never reads half of
one.
"""

from __future__ import annotations

import os
import re

from keras_resnet import checks, files
from keras_resnet.constants import (DEFAULT_GRPC_PORT, DEFAULT_MAX_BATCH_SIZE,
                                    DEFAULT_MODEL_BASE_PATH, DEFAULT_REST_PORT)
from keras_resnet.export.layout import model_names, versions

MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
DOCKER_RUN = "docker-run.sh"
_MAX_BATCH_SIZE = re.compile(r"^\s*max_batch_size\s*\{\s*value:\s*(\d+)\s*\}", re.M)


def write_batching_parameters(base_dir, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                              batch_timeout_micros: int = 1000, num_batch_threads: int = 4,
                              max_enqueued_batches: int = 100) -> str:
    """Writes ``batching_parameters.txt`` for ``--enable_batching`` (text BatchingParameters).

    GPU defaults: batches up to 64, padded to the allowed sizes (powers of two from 8, ending at
    ``max_batch_size``) so the GPU sees few distinct shapes; 1 ms timeout; 4 threads to overlap
    host work with the device. TF Serving refuses a request of more than ``max_batch_size``
    instances (and so does `keras_resnet.serving.serve`, which reads this file).

    Returns:
        The path written.
    """
    max_batch_size = checks.positive_int(max_batch_size, "max_batch_size")
    allowed = [size for size in (8, 16, 32, 64, 128, 256, 512) if size < max_batch_size]
    allowed.append(max_batch_size)
    text = (f"max_batch_size {{ value: {max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
            f"num_batch_threads {{ value: {num_batch_threads} }}\n"
            f"max_enqueued_batches {{ value: {max_enqueued_batches} }}\n"
            + "".join(f"allowed_batch_sizes: {size}\n" for size in allowed)
            + "pad_variable_length_inputs: false\n")
    return files.write_text(os.path.join(base_dir, BATCHING_PARAMETERS), text)


def read_max_batch_size(base_dir) -> int | None:
    """``max_batch_size`` of the bundle's ``batching_parameters.txt``, or None without one.

    The text format's ``max_batch_size { value: N }`` field is read with a pattern: the
    BatchingParameters proto is not part of the ``tensorflow-serving-api`` package.
    """
    path = os.path.join(base_dir, BATCHING_PARAMETERS)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    found = _MAX_BATCH_SIZE.search(text)
    return int(found.group(1)) if found else None


def write_models_config(base_dir, model_base_path: str | None = DEFAULT_MODEL_BASE_PATH,
                        num_versions: int = 1, labels: dict | None = None) -> str:
    """Writes ``models.config``: a model_config_list entry for every model in ``base_dir``.

    Version labels already in the file are kept (and moved by ``labels``); labels of versions
    that no longer exist are dropped. A model with labels gets the ``specific`` policy listing
    its labelled versions and its ``num_versions`` newest, since TF Serving only lets a label
    name a loaded version; other models get ``latest { num_versions }``.

    Args:
        base_dir: the bundle directory.
        model_base_path: where ``base_dir`` is mounted in the serving container (``/models`` in
            the docker command); None writes absolute host paths for a natively installed server.
        num_versions: how many of the newest versions TF Serving keeps loaded.
        labels: ``{model name: {label: version}}`` to set, e.g. ``{"digits": {"stable": 3}}``.

    Returns:
        The path written.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as config_pb2

    num_versions = checks.positive_int(num_versions, "num_versions")
    previous = _read_labels(base_dir)
    config = config_pb2.ModelServerConfig()
    root = os.path.abspath(base_dir) if model_base_path is None else model_base_path
    for name in model_names(base_dir):
        available = versions(os.path.join(base_dir, name))
        wanted = {**previous.get(name, {}), **(labels or {}).get(name, {})}
        wanted = {label: v for label, v in wanted.items() if v in available}
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{root.rstrip('/')}/{name}"
        entry.model_platform = "tensorflow"
        if wanted:
            served = sorted(set(wanted.values()) | set(available[-num_versions:]))
            entry.model_version_policy.specific.versions.extend(served)
            for label, version in sorted(wanted.items()):
                entry.version_labels[label] = version
        else:
            entry.model_version_policy.latest.num_versions = num_versions
    return files.write_text(os.path.join(base_dir, MODELS_CONFIG),
                            text_format.MessageToString(config))


def read_models_config(base_dir) -> dict:
    """``{model name: ModelConfig}`` of ``models.config`` ({} without a readable one)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2 as config_pb2

    try:
        with open(os.path.join(base_dir, MODELS_CONFIG), encoding="utf-8") as handle:
            config = text_format.Parse(handle.read(), config_pb2.ModelServerConfig())
    except (FileNotFoundError, text_format.ParseError):
        return {}
    return {entry.name: entry for entry in config.model_config_list.config}


def _read_labels(base_dir):
    return {name: dict(entry.version_labels)
            for name, entry in read_models_config(base_dir).items()}


def write_deployment(base_dir, name: str, storage_uri: str | None = None) -> tuple[str, str]:
    """Writes ``docker-run.sh`` and ``<name>.inferenceservice.yaml``; returns their paths."""
    return _write_docker_run(base_dir), _write_inference_service(base_dir, name, storage_uri)


def _write_docker_run(base_dir):
    host_dir = os.path.abspath(base_dir)
    docker = (
        "#!/bin/sh\n"
        "# TF Serving on a GPU for every model in this directory (needs the NVIDIA container\n"
        f"# toolkit). REST on :{DEFAULT_REST_PORT}, gRPC on :{DEFAULT_GRPC_PORT}. Warmup requests "
        "run before the first call.\n"
        "exec docker run --gpus all --rm "
        f"-p {DEFAULT_REST_PORT}:{DEFAULT_REST_PORT} "
        f"-p {DEFAULT_GRPC_PORT}:{DEFAULT_GRPC_PORT} \\\n"
        f"  -v \"{host_dir}:/models:ro\" \\\n"
        "  tensorflow/serving:latest-gpu \\\n"
        f"  --model_config_file=/models/{MODELS_CONFIG} \\\n"
        "  --model_config_file_poll_wait_seconds=60 \\\n"
        "  --enable_batching=true \\\n"
        f"  --batching_parameters_file=/models/{BATCHING_PARAMETERS} \\\n"
        "  --enable_model_warmup=true\n")
    path = os.path.join(base_dir, DOCKER_RUN)
    with files.atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(docker)
        os.chmod(temporary, 0o755)
    return path


def _write_inference_service(base_dir, name, storage_uri):
    host_dir = os.path.abspath(base_dir)
    service = name.lower().replace("_", "-").replace(".", "-")
    uri = storage_uri or f"pvc://saved-models/{name}"
    manifest = (
        "# KServe InferenceService: TF Serving on one GPU. storageUri must hold the version\n"
        f"# directories of {name}/ and {BATCHING_PARAMETERS} (copy {host_dir}/{name}/* and\n"
        f"# {host_dir}/{BATCHING_PARAMETERS} there; TF Serving skips non-numeric entries).\n"
        f"# KServe serves the model under the service name: /v1/models/{service}:predict\n"
        f"# (docker-run.sh: /v1/models/{name}:predict).\n"
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
        f"        - --batching_parameters_file=/mnt/models/{BATCHING_PARAMETERS}\n"
        "      resources:\n"
        "        requests:\n"
        "          cpu: \"2\"\n"
        "          memory: 4Gi\n"
        "          nvidia.com/gpu: \"1\"\n"
        "        limits:\n"
        "          memory: 8Gi\n"
        "          nvidia.com/gpu: \"1\"\n")
    return files.write_text(os.path.join(base_dir, f"{name}.inferenceservice.yaml"), manifest)
