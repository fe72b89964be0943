"""Chief/worker search over KerasTuner's own gRPC oracle, with the known hangs guarded.

KerasTuner runs a distributed search when ``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP`` and
``KERASTUNER_ORACLE_PORT`` are set: the process whose id contains ``chief`` serves the oracle,
the others (``tuner0``, ``tuner1``, ...) ask it for trials and share the search directory.
Two of its failure modes are guarded here:

* its chief waits for every worker to report back, forever: a worker that died mid-trial keeps
  it alive. Workers here touch a heartbeat file in the shared directory; the chief hands the
  trial of a worker silent for ``worker_timeout`` seconds back to the queue (another worker runs
  it), and exits with a clear message when no live worker is left while trials remain.
* its chief saves the oracle before it forgets the last finished trial, so re-running a
  finished search re-runs that trial: ``stale_retries`` finds such trials and they are dropped
  (the search is reported as finished instead).

Workers wait at most ``worker_timeout`` for a chief that does not answer (KerasTuner: an hour).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

from keras_resnet.constants import DEFAULT_WORKER_TIMEOUT
from keras_resnet.tuning import kt_internals

logger = logging.getLogger(__name__)

ENV_TUNER_ID = "KERASTUNER_TUNER_ID"
ENV_ORACLE_IP = "KERASTUNER_ORACLE_IP"
ENV_ORACLE_PORT = "KERASTUNER_ORACLE_PORT"
HEARTBEAT_SECONDS = 2.0
_FINISHED = ("COMPLETED", "FAILED")


def role():
    """``"chief"``, ``"worker"`` or ``"single"`` from KerasTuner's environment variables.

    Raises:
        ValueError: when only some of the three variables are set.
    """
    present = [v for v in (ENV_TUNER_ID, ENV_ORACLE_IP, ENV_ORACLE_PORT) if os.environ.get(v)]
    if not present or present == [ENV_TUNER_ID]:
        return "single"
    if len(present) != 3:
        missing = sorted({ENV_TUNER_ID, ENV_ORACLE_IP, ENV_ORACLE_PORT} - set(present))
        raise ValueError(f"a distributed search needs {ENV_TUNER_ID}, {ENV_ORACLE_IP} and "
                         f"{ENV_ORACLE_PORT}; {', '.join(missing)} not set")
    port = os.environ[ENV_ORACLE_PORT]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{ENV_ORACLE_PORT} must be a port number (1-65535); got {port!r}")
    return "chief" if "chief" in os.environ[ENV_TUNER_ID] else "worker"


def read_state(project_dir):
    """The saved oracle state and trials of a project: ``(state dict or None, {id: trial})``."""
    path = os.path.join(project_dir, "oracle.json")
    if not os.path.exists(path):
        return None, {}
    with open(path) as file:
        state = json.load(file)
    trials = {}
    for name in sorted(os.listdir(project_dir)):
        trial_file = os.path.join(project_dir, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(trial_file):
            with open(trial_file) as file:
                trial = json.load(file)
            trials[trial["trial_id"]] = trial
    return state, trials


def finished_trials(project_dir):
    """Ids of the trials a project has finished (completed or failed), in end order."""
    state, trials = read_state(project_dir)
    if state is None:
        return []
    return [t for t in state.get("end_order", []) if trials.get(t, {}).get("status") in _FINISHED]


def stale_retries(oracle):
    """Drops finished trials from a reloaded oracle's retry queue; returns their ids.

    KerasTuner's chief saves the oracle before it pops the last ongoing trial, so on reload that
    (finished) trial is queued to run again.
    """
    queue = kt_internals.retry_queue(oracle)
    stale = [t for t in queue if oracle.trials[t].status in _FINISHED and t in oracle.end_order]
    kt_internals.set_retry_queue(oracle, [t for t in queue if t not in stale])
    return stale


class Heartbeat:
    """A daemon thread touching ``<project>/heartbeats/<tuner_id>`` every few seconds."""

    def __init__(self, project_dir, tuner_id, interval=HEARTBEAT_SECONDS):
        self.path = os.path.join(project_dir, "heartbeats", tuner_id)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def _run(self):
        while not self._stop.is_set():
            with open(self.path, "a"):
                os.utime(self.path)
            self._stop.wait(self.interval)

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        if os.path.exists(self.path):
            os.remove(self.path)


def heartbeat_age(project_dir, tuner_id):
    """Seconds since ``tuner_id`` last touched its heartbeat; None when it has none."""
    path = os.path.join(project_dir, "heartbeats", tuner_id)
    try:
        return time.time() - os.path.getmtime(path)
    except OSError:
        return None


def _fresh_heartbeats(project_dir, worker_timeout):
    folder = os.path.join(project_dir, "heartbeats")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return [n for n in names if (heartbeat_age(project_dir, n) or worker_timeout + 1)
            <= worker_timeout]


def bound_worker_wait(seconds):
    """Makes a worker's gRPC calls to the chief give up after ``seconds`` (KerasTuner: 1 h)."""
    kt_internals.set_client_timeout(seconds)


def _reclaim(oracle, project_dir, worker_timeout, log):
    """Returns the trials of silent workers to the queue; the live tuner ids."""
    @kt_internals.synchronized
    def locked(oracle):
        live = set()
        for tuner_id in sorted(set(oracle.tuner_ids) | set(oracle.ongoing_trials)):
            age = heartbeat_age(project_dir, tuner_id)
            if age is not None and age <= worker_timeout:
                live.add(tuner_id)
                continue
            trial = oracle.ongoing_trials.pop(tuner_id, None)
            oracle.tuner_ids.discard(tuner_id)
            if trial is not None:
                kt_internals.retry_queue(oracle).append(trial.trial_id)
                log(f"worker {tuner_id} stopped responding (no heartbeat for "
                    f"{worker_timeout:g} s): trial {trial.trial_id} goes back to the queue")
            else:
                log(f"worker {tuner_id} stopped responding; forgetting it")
            oracle.save()
        return live

    return locked(oracle)


def start_oracle_server(oracle, address):
    """Serves ``oracle`` with KerasTuner's ``OracleServicer`` on ``address`` (``host:port``;
    port 0 picks a free one).

    Returns:
        ``(server, servicer, port)``: the started ``grpc.Server``, the servicer and the port.

    Raises:
        ValueError: when the address cannot be listened on.
    """
    from concurrent import futures

    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = kt_internals.add_oracle_servicer(server, oracle)
    port = server.add_insecure_port(address)
    if not port:
        raise ValueError(f"cannot listen on {address} ({ENV_ORACLE_IP}/{ENV_ORACLE_PORT}); is "
                         "the port in use?")
    server.start()
    return server, servicer, port


def release(oracle, tuner_id):
    """Forgets ``tuner_id`` (a process that ended); its unfinished trial goes back to the
    queue. Returns that trial's id, or None."""
    @kt_internals.synchronized
    def locked(oracle):
        trial = oracle.ongoing_trials.pop(tuner_id, None)
        oracle.tuner_ids.discard(tuner_id)
        if trial is not None:
            kt_internals.retry_queue(oracle).append(trial.trial_id)
        oracle.save()
        return None if trial is None else trial.trial_id

    return locked(oracle)


def serve_chief(oracle, project_dir, *, max_trials, worker_timeout=DEFAULT_WORKER_TIMEOUT,
                poll=1.0, log=None):
    """Serves ``oracle`` over gRPC until the search is done; never waits unboundedly.

    Returns when ``max_trials`` trials have finished (or the oracle stopped giving trials) and
    every worker has been told to stop or has gone silent; raises when trials remain but no
    worker has been alive for ``worker_timeout`` seconds.

    Args:
        oracle: the chief's ``keras_tuner.Oracle`` (reloaded when resuming).
        project_dir: the shared search directory.
        max_trials: trials of the search.
        worker_timeout: seconds without a heartbeat after which a worker counts as dead.
        poll: seconds between checks.
        log: a ``print``-like function for progress messages (default: this module's logger).

    Raises:
        RuntimeError: when no worker is alive and trials remain.
    """
    log = log or logger.info
    address = f"{os.environ[ENV_ORACLE_IP]}:{os.environ[ENV_ORACLE_PORT]}"
    server, servicer, _ = start_oracle_server(oracle, address)
    log(f"chief: serving the oracle on {address}; waiting for workers "
        f"(KERASTUNER_TUNER_ID=tuner0, tuner1, ...)")
    last_alive = time.monotonic()
    try:
        while True:
            time.sleep(poll)
            live = _reclaim(oracle, project_dir, worker_timeout, log)
            finished = len(oracle.end_order)
            done = (finished >= max_trials or kt_internals.stop_triggered(servicer)) \
                and not oracle.ongoing_trials and not kt_internals.retry_queue(oracle)
            if done and not oracle.tuner_ids:
                break
            if live or _fresh_heartbeats(project_dir, worker_timeout):  # incl. still starting
                last_alive = time.monotonic()
            elif time.monotonic() - last_alive > worker_timeout:
                if done:
                    break
                raise RuntimeError(
                    f"no live worker for {worker_timeout:g} s and {max_trials - finished} of "
                    f"{max_trials} trials left; the search state is saved in {project_dir}: "
                    "start workers (KERASTUNER_TUNER_ID=tuner0, ...) with the same command to "
                    "continue, or raise --worker-timeout")
    finally:
        oracle.save()  # after the last trial was popped: a re-run does not repeat it
        server.stop(grace=1)
