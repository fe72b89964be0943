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

import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time

from keras_resnet.constants import TASK_TYPES

ENVIRONMENT_VARIABLE = "TF_CONFIG"
# seconds between two probes of a peer that does not answer yet, and between two log lines
PROBE_INTERVAL = 0.5
LOG_INTERVAL = 30.0

logger = logging.getLogger(__name__)


class WorkerTimeoutError(ValueError):
    """Peers of a multi-worker job did not start within ``worker_timeout``.

    A ``ValueError``, so the CLI shows it as one line (exit status 2).
    """


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

    def peers(self) -> list:
        """``(task type, index, "host:port")`` of every other task of the cluster."""
        return [(task_type, index, address)
                for task_type, addresses in self.tasks.items()
                for index, address in enumerate(addresses)
                if (task_type, index) != (self.task_type, self.task_index)]

    @property
    def address(self) -> str:
        """This process's own ``host:port``."""
        return self.tasks[self.task_type][self.task_index]


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


def wait_for_peers(cluster: Cluster, timeout: float) -> None:
    """Waits until every other task of ``cluster`` accepts TCP connections on its port.

    ``MultiWorkerMirroredStrategy`` waits for its peers without a deadline, silently, and from
    then on TensorFlow's own SIGTERM handler keeps the process alive; this wait comes first,
    says which peers it waits for (``"waiting for worker 1 at host:12345"``), ends after
    ``timeout`` seconds and stops at SIGTERM or SIGINT. Meanwhile this process listens on its
    own port (closed before TensorFlow's server takes it) so that peers waiting likewise see
    it.

    Args:
        cluster: the ``TF_CONFIG`` cluster (``read_cluster``).
        timeout: seconds to wait for every peer.

    Raises:
        WorkerTimeoutError: naming the peers (``HOST:PORT``) still not answering at the
            deadline.
        SystemExit: SIGTERM or SIGINT during the wait (status 128 + the signal number).
    """
    deadline = time.monotonic() + timeout
    waiting = cluster.peers()
    next_log = 0.0
    with _listening(cluster.address), _signals() as received:
        while waiting:
            waiting = [peer for peer in waiting if not received and not _answers(peer[2])]
            _stop_if(received)
            now = time.monotonic()
            if not waiting:
                break
            if now >= deadline:
                names = ", ".join(f"{task} {index} at {address}"
                                  for task, index, address in waiting)
                raise WorkerTimeoutError(
                    f"{cluster.task_type} {cluster.task_index} waited {timeout:g} s "
                    f"(worker_timeout) for {names}; start every task of TF_CONFIG's cluster, "
                    "check the addresses and firewalls, or raise --worker-timeout")
            if now >= next_log:
                for task, index, address in waiting:
                    logger.info("waiting for %s %d at %s", task, index, address)
                next_log = now + LOG_INTERVAL
            time.sleep(min(PROBE_INTERVAL, max(deadline - now, 0.0)))
            _stop_if(received)
    logger.debug("every peer of %s %d answers", cluster.task_type, cluster.task_index)


def _stop_if(received: list) -> None:
    if received:
        name = signal.Signals(received[0]).name
        logger.warning("stopped by %s while waiting for the cluster's other tasks", name)
        raise SystemExit(128 + received[0])


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_INTERVAL):
            return True
    except OSError:  # refused, unreachable, a name not resolving yet, a timeout
        return False


@contextlib.contextmanager
def _listening(address: str):
    """Listens on this task's port (the kernel completes peers' connections; nothing is
    accepted) and closes it on exit; where the port is taken, waits without."""
    port = int(address.rpartition(":")[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("", port))
        listener.listen(64)
    except OSError as error:
        logger.debug("cannot listen on port %d while waiting for peers: %s", port, error)
        listener.close()
        listener = None
    try:
        yield
    finally:
        if listener is not None:
            listener.close()


@contextlib.contextmanager
def _signals():
    """Yields the list of SIGTERM / SIGINT numbers received meanwhile, whoever handled them
    before (TensorFlow's preemption notifier takes SIGTERM). The handler only records: an
    exception raised from it could land in ``logging``'s emit, which swallows it."""
    received = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {signum: signal.signal(signum, lambda number, _frame: received.append(number))
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
