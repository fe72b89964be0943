"""``TF_CONFIG``: read and check the cluster description a multi-worker job runs from.

Pure Python (no TensorFlow import), so a bad ``TF_CONFIG`` is reported before TensorFlow starts
a server or a collective waits for a peer that will never come.

``TF_CONFIG`` is TensorFlow's JSON cluster description, one per process::

    {"cluster": {"worker": ["host1:12345", "host2:12345"]},
     "task": {"type": "worker", "index": 0}}

The chief is the ``"chief"`` task when the cluster has one, otherwise worker 0 (TensorFlow's
rule); it alone writes the run directory and the export.
"""

from __future__ import annotations

import dataclasses
import json
import os

from keras_resnet.constants import TASK_TYPES

ENVIRONMENT_VARIABLE = "TF_CONFIG"


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The checked content of ``TF_CONFIG``.

    Attributes:
        tasks: ``{task type: (address, ...)}``.
        task_type: this process's task type (``"chief"`` or ``"worker"``).
        task_index: this process's index within its type.
    """

    tasks: dict
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        """Processes that train (chief and workers)."""
        return sum(len(addresses) for addresses in self.tasks.values())

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run directory and the export."""
        if "chief" in self.tasks:
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_index == 0


def read_cluster(environ=None) -> Cluster | None:
    """The cluster ``TF_CONFIG`` describes, or None when it is unset or names no cluster.

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        A ``Cluster``, or None for an unset or empty ``TF_CONFIG`` (or one without
        ``"cluster"``).

    Raises:
        ValueError: malformed JSON, an unsupported task type, a task missing from the
            cluster, an index out of range or an address that is not ``host:port``.
    """
    text = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG must be JSON like {{\"cluster\": {{\"worker\": "
                         f"[\"host:port\", ...]}}, \"task\": {{\"type\": \"worker\", \"index\": "
                         f"0}}}}; got {text!r} ({error.msg} at character {error.pos})") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object with \"cluster\" and \"task\"; "
                         f"got {text!r}")
    if not config.get("cluster"):
        return None
    tasks = _tasks(config["cluster"])
    task_type, task_index = _task(config.get("task"), tasks)
    return Cluster(tasks=tasks, task_type=task_type, task_index=task_index)


def _tasks(cluster) -> dict:
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG's \"cluster\" must map task types to address lists "
                         f"(e.g. {{\"worker\": [\"host1:12345\", \"host2:12345\"]}}); "
                         f"got {cluster!r}")
    tasks = {}
    for task_type, addresses in cluster.items():
        if task_type not in TASK_TYPES:
            raise ValueError(f"TF_CONFIG's cluster task types must be among "
                             f"{', '.join(TASK_TYPES)} (MultiWorkerMirroredStrategy); "
                             f"got {task_type!r}")
        if isinstance(addresses, str) or not isinstance(addresses, list) or not addresses:
            raise ValueError(f"TF_CONFIG's cluster[{task_type!r}] must be a non-empty list of "
                             f"\"host:port\" addresses; got {addresses!r}")
        for address in addresses:
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit():
                raise ValueError(f"TF_CONFIG's cluster[{task_type!r}] addresses must be "
                                 f"\"host:port\"; got {address!r}")
        tasks[task_type] = tuple(addresses)
    if len(tasks.get("chief", ())) > 1:
        raise ValueError(f"TF_CONFIG's cluster may have one chief; got {tasks['chief']!r}")
    return tasks


def _task(task, tasks) -> tuple:
    if not isinstance(task, dict) or "type" not in task:
        raise ValueError(f"TF_CONFIG must name this process's task as {{\"type\": \"worker\", "
                         f"\"index\": 0}} next to its cluster; got task {task!r}")
    task_type, task_index = task["type"], task.get("index", 0)
    if task_type not in tasks:
        raise ValueError(f"TF_CONFIG's task type must be one of the cluster's "
                         f"({', '.join(tasks)}); got {task_type!r}")
    count = len(tasks[task_type])
    if not isinstance(task_index, int) or isinstance(task_index, bool) \
            or not 0 <= task_index < count:
        raise ValueError(f"TF_CONFIG's task index must be an int in [0, {count - 1}] (the "
                         f"cluster has {count} {task_type} address(es)); got {task_index!r}")
    return task_type, task_index
