"""Trials in separate processes, so the tuner's memory stays flat (``trial_process``).

A process that builds and trains many models keeps some of each (TensorFlow's and Keras'
caches): ~15 MiB per tiny trial, more for real ones. Here the tuner's process keeps only
KerasTuner's oracle and serves it on 127.0.0.1 with KerasTuner's own gRPC protocol (the one
of the chief/worker mode, ``chief_worker.py``); it starts a Python process that joins as a
worker, asks the oracle for trials, trains and reports up to ``per_process`` of them and exits
(``"fresh"``: one trial per process; ``"recycled"``: ``trials_per_process``, which amortizes
the start of TensorFlow while the growth of a process stays bounded), then the next one. The
trials and their order are the oracle's, as in one process; a trial process that dies leaves
its trial queued again and the search stops with a message (run it again to resume).

A worker of a chief/worker search (``role == "worker"``) does the same against the chief's
oracle: its trial processes join the chief as workers ``<tuner id>-p0``, ``-p1``, ...
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

from keras_resnet import files
from keras_resnet.tuning import chief_worker, kt_internals
from keras_resnet.tuning import results as results_module

SPEC = "trial_process.json"
_HOST = "127.0.0.1"
# the trial process: keras_resnet/tuning/trial_process.py
_CHILD_MODULE = "keras_resnet.tuning.trial_process"


def resolve(config, data, hyperparameters, role, log) -> str:
    """Where this process's trials run: ``"same"``, ``"fresh"`` or ``"recycled"``.

    ``"auto"`` is ``"recycled"`` where a trial process can rebuild the search (data by name or
    path, settings that are JSON data), else ``"same"`` (logged); a chief runs no trials.

    Raises:
        ValueError: ``"fresh"`` or ``"recycled"`` was asked for and a trial process cannot
            rebuild the search; before any work.
    """
    mode = config.trial_process
    if role == "chief":
        return "same"  # the chief serves the oracle; its workers choose for themselves
    problem = _problem(config, data, hyperparameters)
    if mode == "auto":
        if problem is None:
            return "recycled"
        log(f"Trials run in this process (trial_process='auto'): {problem}")
        return "same"
    if mode != "same" and problem is not None:
        raise ValueError(f"trial_process={mode!r} {problem}: pass trial_process='same'")
    return mode


def per_process(config, mode) -> int:
    """Trials one trial process runs before the next one takes over."""
    return 1 if mode == "fresh" else config.trials_per_process


def _problem(config, data, hyperparameters):
    if not isinstance(data, (str, os.PathLike)):
        return (f"needs data a trial process can load (a data set name or a folder); got "
                f"{data!r}")
    try:
        json.dumps(_spec(config, hyperparameters))
    except TypeError as error:
        return f"passes the settings to each trial process as JSON; {error}"
    return None


def _spec(config, hyperparameters):
    settings = config.to_dict()
    return {"config": settings, "hyperparameters": None if hyperparameters is None
            else hyperparameters.get_config()}


def run_trials(config, oracle, hyperparameters, log, runs_per_process=1):
    """Serves ``oracle`` and runs trial processes until the search is done.

    Args:
        runs_per_process: trials each process runs before it exits.

    Returns:
        The ids of the trials the processes ran, in order.

    Raises:
        RuntimeError: a trial process failed (its trial stays queued; the state is saved).
    """
    project_dir = config.project_dir
    spec_path = os.path.join(project_dir, SPEC)
    files.write_text(spec_path, json.dumps(_spec(config, hyperparameters), indent=2))
    for tuner_id in list(oracle.ongoing_trials):  # processes of a previous, killed run
        chief_worker.release(oracle, tuner_id)
    chief_worker.stale_retries(oracle)
    server, _, port = chief_worker.start_oracle_server(oracle, f"{_HOST}:0")
    ran, run_id = [], uuid.uuid4().hex[:8]
    try:
        for number in range(_limit(config)):
            if _finished(oracle, config.max_trials):
                break
            tuner_id = f"trial-process-{run_id}-{number}"
            code, runs = _run_process(spec_path, project_dir, runs_per_process,
                                      _environment(tuner_id, _HOST, port))
            queued = chief_worker.release(oracle, tuner_id)
            state = os.path.join(project_dir, f"{tuner_id}.json")  # KerasTuner's tuner state
            if os.path.exists(state):
                os.remove(state)
            if code != 0:
                raise RuntimeError(
                    f"the process of trial {queued or '?'} exited with status {code}; the "
                    f"search state is saved in {project_dir}: run the same command again to "
                    "resume (that trial runs again)")
            ran.extend(_log_runs(runs, log))
            if not runs:  # the oracle gave no trial: the search is over
                break
    finally:
        oracle.save()
        server.stop(grace=1)
    return ran


def run_worker_trials(config, hyperparameters, log, runs_per_process=1):
    """A worker of a chief/worker search: its trials run in trial processes that join the
    chief's oracle as workers ``<tuner id>-p<n>``, until one runs fewer than
    ``runs_per_process`` trials (the chief has none left).

    Returns:
        The ids of the trials its processes ran, in order.

    Raises:
        RuntimeError: a trial process failed (the chief hands its trial to another worker
            once its heartbeat stops).
    """
    import tempfile

    from keras_resnet.constants import WORKER_TEMP_DIR

    project_dir = config.project_dir
    tuner_id = os.environ[chief_worker.ENV_TUNER_ID]
    # Staged on this machine, not in the shared project: a killed worker's is removed by the
    # next worker here (its pid is this machine's).
    parent = os.path.join(tempfile.gettempdir(), WORKER_TEMP_DIR)
    files.remove_stale_temporaries(parent)
    staging = files.make_temp_dir(parent, f"tune-{tuner_id}-")
    spec_path = os.path.join(staging, SPEC)
    ran = []
    try:
        files.write_text(spec_path, json.dumps(_spec(config, hyperparameters), indent=2))
        for number in range(_limit(config)):
            environment = _environment(f"{tuner_id}-p{number}",
                                       os.environ[chief_worker.ENV_ORACLE_IP],
                                       os.environ[chief_worker.ENV_ORACLE_PORT])
            code, runs = _run_process(spec_path, project_dir, runs_per_process, environment)
            ran.extend(_log_runs(runs, log))
            if code != 0:
                raise RuntimeError(
                    f"trial process {number} of worker {tuner_id} exited with status {code}; "
                    "the chief hands its trial to another worker: start this worker again to "
                    "go on")
            if len(runs) < runs_per_process:
                break
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ran


def _run_process(spec_path, project_dir, runs_per_process, environment):
    """Runs one trial process; returns its exit status and the trial runs it recorded."""
    process = subprocess.Popen(
        [sys.executable, "-m", _CHILD_MODULE, spec_path, str(os.getpid()),
         str(runs_per_process)], env=environment)
    code = process.wait()
    runs = [run for run in results_module.read_trial_runs(project_dir)
            if run.get("pid") == process.pid]
    return code, runs


def _log_runs(runs, log):
    for run in runs:
        log(f"trial {run['trial_id']} done in process {run['pid']} ({run['seconds']:g} s)")
    return [run["trial_id"] for run in runs]


def _limit(config):
    # every trial can fail and be retried; the oracle stops the search well before
    return 4 * config.max_trials + 4


def _finished(oracle, max_trials):
    return len(oracle.end_order) >= max_trials and not oracle.ongoing_trials \
        and not kt_internals.retry_queue(oracle)


def _environment(tuner_id, host, port):
    environment = dict(os.environ)
    # the folder holding this keras_resnet package, so that the child imports the same one
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    environment["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p])
    environment.update({chief_worker.ENV_TUNER_ID: tuner_id, chief_worker.ENV_ORACLE_IP: host,
                        chief_worker.ENV_ORACLE_PORT: str(port)})
    return environment
