"""A Kubeflow Training Operator ``TFJob`` for multi-worker GPU training on Kubernetes.

The operator starts one ``Chief`` pod and ``workers`` ``Worker`` pods, writes each pod's
``TF_CONFIG`` (the same cluster/task JSON as the two-machine recipe) and restarts a failed pod;
every pod runs ``keras-resnet train --strategy multi-worker`` on the same shared volume, so the
chief's run directory, backups and export are where a restarted job resumes from. Only the
chief writes there (``keras_resnet.distribute.fit``).

    keras-resnet manifest resnet50 --workers 3 --gpus-per-worker 4 \\
        --image registry.example.com/keras-resnet:latest --volume-claim training-data \\
        --out resnet50.tfjob.yaml [-- keras-resnet train --strategy multi-worker ...]
    kubectl apply -f resnet50.tfjob.yaml

The YAML is written without a YAML library (block style, strings JSON-quoted, which YAML
reads as they are); ``keras-resnet manifest`` writes it atomically (``keras_resnet.files``).
"""

from __future__ import annotations

import json
import re

from keras_resnet import checks
from keras_resnet.constants import (DEFAULT_TFJOB_IMAGE as DEFAULT_IMAGE,
                                    DEFAULT_TFJOB_MOUNT as DEFAULT_MOUNT,
                                    DEFAULT_TFJOB_VOLUME_CLAIM)
CONTAINER = "tensorflow"  # the container name the TFJob operator looks for
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def default_command(mount_path: str = DEFAULT_MOUNT) -> list:
    """``keras-resnet train --strategy multi-worker`` on CIFAR-10, runs and export on the
    shared volume (global batch 256 at the linearly scaled rate of 0.1 per 128)."""
    return ["keras-resnet", "train", "--data", "cifar10", "--strategy", "multi-worker",
            "--batch-size", "256", "--lr-batch-size", "128",
            "--out", f"{mount_path}/runs", "--export", f"{mount_path}/saved_models"]


def tfjob_manifest(name: str, *, workers: int = 1, gpus_per_worker: int = 1,
                   image: str = DEFAULT_IMAGE, command=None,
                   volume_claim: str = DEFAULT_TFJOB_VOLUME_CLAIM,
                   mount_path: str = DEFAULT_MOUNT, namespace: str | None = None) -> str:
    """The YAML text of a ``kubeflow.org/v1`` ``TFJob``: one chief and ``workers`` workers.

    Args:
        name: the job's name (a Kubernetes name: lower-case letters, digits, ``-``).
        workers: ``Worker`` replicas besides the ``Chief`` (the job trains on
            ``workers + 1`` machines).
        gpus_per_worker: ``nvidia.com/gpu`` each pod requests (0: CPU only).
        image: the container image with ``keras-resnet`` installed.
        command: the command every pod runs (default ``default_command(mount_path)``); it
            should train with ``--strategy multi-worker`` and write under ``mount_path``.
        volume_claim: the ``PersistentVolumeClaim`` (``ReadWriteMany``) mounted on every pod.
        mount_path: where the volume is mounted.
        namespace: the job's namespace (default: kubectl's).

    Returns:
        The manifest as YAML text.

    Raises:
        TypeError, ValueError: a bad argument (named, with what is accepted).
    """
    for value, argument in ((name, "name"), (volume_claim, "volume_claim")) + \
            (((namespace, "namespace"),) if namespace is not None else ()):
        _k8s_name(value, argument)
    workers = checks.positive_int(workers, "workers")
    gpus_per_worker = checks.positive_int(gpus_per_worker, "gpus_per_worker", minimum=0)
    if not isinstance(image, str) or not image or any(c.isspace() for c in image):
        raise ValueError(f"image must be a container image reference (e.g. "
                         f"'registry.example.com/keras-resnet:1.0'); got {image!r}")
    if not isinstance(mount_path, str) or not mount_path.startswith("/"):
        raise ValueError(f"mount_path must be an absolute path (e.g. '/shared'); got "
                         f"{mount_path!r}")
    command = default_command(mount_path) if command is None else command
    if isinstance(command, str) or not isinstance(command, (list, tuple)) or not command \
            or not all(isinstance(part, str) for part in command):
        raise TypeError(f"command must be a non-empty list of strings (e.g. "
                        f"{default_command(mount_path)[:4]!r}); got {command!r}")
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    replica = _replica(image, list(command), gpus_per_worker, volume_claim, mount_path)
    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": metadata,
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None", "backoffLimit": 3},
            "tfReplicaSpecs": {"Chief": {"replicas": 1, **replica},
                               "Worker": {"replicas": workers, **replica}},
        },
    }
    header = (f"# TFJob {name}: 1 chief + {workers} worker(s) x {gpus_per_worker} GPU(s); the "
              f"operator sets TF_CONFIG.\n# Volume claim {volume_claim!r} (ReadWriteMany) is "
              f"mounted at {mount_path} on every pod.\n")
    return header + to_yaml(job)


def _k8s_name(value, argument):
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a Kubernetes name (lower-case letters, digits and "
                        f"'-', at most 63); got {value!r}")
    if not _K8S_NAME.match(value):
        raise ValueError(f"{argument} must be a Kubernetes name (lower-case letters, digits and "
                         f"'-', at most 63); got {value!r}")
    return value


def _replica(image, command, gpus, volume_claim, mount_path):
    container = {"name": CONTAINER, "image": image, "command": command,
                 "volumeMounts": [{"name": "shared", "mountPath": mount_path}]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return {
        "restartPolicy": "OnFailure",  # a failed pod restarts; training resumes from backup
        "template": {"spec": {
            "containers": [container],
            "volumes": [{"name": "shared",
                         "persistentVolumeClaim": {"claimName": volume_claim}}],
        }},
    }


def to_yaml(value, indent: int = 0) -> str:
    """Block-style YAML of dicts, lists, strings, ints and bools (strings JSON-quoted)."""
    pad = " " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}\n")
        return "".join(lines)
    lines = []
    for item in value:
        if isinstance(item, (dict, list)) and item:
            nested = to_yaml(item, indent + 2)
            lines.append(f"{pad}- {nested[indent + 2:]}")
        else:
            lines.append(f"{pad}- {_scalar(item)}\n")
    return "".join(lines)


def _scalar(value):
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)


if __name__ == "__main__":  # the 0.1 way in: say where it went (exit status 1)
    raise SystemExit("python -m keras_resnet.distribute.manifest is now `keras-resnet manifest` "
                     "(the same arguments)")
