"""Every trial in a fresh process, so the tuner's memory stays flat (``trial_process="fresh"``).

A process that builds and trains many models keeps some of each (TensorFlow's and Keras'
caches): ~16 MiB per tiny trial, more for real ones. Here the tuner's process keeps only
KerasTuner's oracle and serves it on 127.0.0.1 with KerasTuner's own gRPC protocol (the one
of the chief/worker mode, ``distributed.py``); for each trial it starts a Python process that
joins as a worker, asks the oracle for one trial, trains it, reports it and exits. The trials and
their order are the oracle's, as in one process; a trial process that dies
leaves its trial queued again and the search stops with a message (run it again to resume).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

from keras_resnet import files
from keras_resnet.tuning import distributed, kt_internals
from keras_resnet.tuning import results as results_module

SPEC = "trial_process.json"
_HOST = "127.0.0.1"
_CHILD = ("import sys; from keras_resnet.tuning.fresh import run_one; "
          "run_one(sys.argv[1], int(sys.argv[2]))")


def check(config, data, hyperparameters, role):
    """Refuses what a fresh trial process cannot rebuild; before any work.

    Raises:
        ValueError: ``data`` is a ``Dataset`` object, or a setting is not JSON data, or this
            process is a chief/worker of a distributed search.
    """
    if role != "single":
        raise ValueError(f"trial_process='fresh' runs the trials of a single-process search; "
                         f"this process is a distributed {role} (KERASTUNER_TUNER_ID is set): "
                         "start one worker process per trial instead, or pass "
                         "trial_process='same'")
    if not isinstance(data, (str, os.PathLike)):
        raise ValueError(f"trial_process='fresh' needs data a trial process can load (a data "
                         f"set name or a folder); got {data!r}: pass trial_process='same'")
    try:
        json.dumps(_spec(config, hyperparameters))
    except TypeError as error:
        raise ValueError(f"trial_process='fresh' passes the settings to each trial process as "
                         f"JSON; {error}: pass trial_process='same'") from None


def _spec(config, hyperparameters):
    settings = config.to_dict()
    return {"config": settings, "hyperparameters": None if hyperparameters is None
            else hyperparameters.get_config()}


def run_trials(config, oracle, hyperparameters, log):
    """Serves ``oracle`` and runs one fresh process per trial until the search is done.

    Returns:
        The ids of the trials the processes ran, in order.

    Raises:
        RuntimeError: a trial process failed (its trial stays queued; the state is saved).
    """
    project_dir = config.project_dir
    spec_path = os.path.join(project_dir, SPEC)
    files.write_text(spec_path, json.dumps(_spec(config, hyperparameters), indent=2))
    for tuner_id in list(oracle.ongoing_trials):  # processes of a previous, killed run
        distributed.release(oracle, tuner_id)
    distributed.stale_retries(oracle)
    server, _, port = distributed.start_oracle_server(oracle, f"{_HOST}:0")
    ran, run_id = [], uuid.uuid4().hex[:8]
    try:
        for number in range(_limit(config)):
            if _finished(oracle, config.max_trials):
                break
            tuner_id = f"trial-process-{run_id}-{number}"
            before = len(results_module.read_trial_runs(project_dir))
            code = subprocess.call(
                [sys.executable, "-c", _CHILD, spec_path, str(os.getpid())],
                env=_environment(tuner_id, port))
            queued = distributed.release(oracle, tuner_id)
            state = os.path.join(project_dir, f"{tuner_id}.json")  # KerasTuner's tuner state
            if os.path.exists(state):
                os.remove(state)
            runs = results_module.read_trial_runs(project_dir)[before:]
            if code != 0:
                raise RuntimeError(
                    f"the process of trial {queued or '?'} exited with status {code}; the "
                    f"search state is saved in {project_dir}: run the same command again to "
                    "resume (that trial runs again)")
            if not runs:  # the oracle gave no trial: the search is over
                break
            ran.extend(run["trial_id"] for run in runs)
            log(f"trial {runs[-1]['trial_id']} done in process {runs[-1]['pid']} "
                f"({runs[-1]['seconds']:g} s)")
    finally:
        oracle.save()
        server.stop(grace=1)
    return ran


def _limit(config):
    # every trial can fail and be retried; the oracle stops the search well before
    return 4 * config.max_trials + 4


def _finished(oracle, max_trials):
    return len(oracle.end_order) >= max_trials and not oracle.ongoing_trials \
        and not kt_internals.retry_queue(oracle)


def _environment(tuner_id, port):
    import keras_resnet

    environment = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(keras_resnet.__file__)))
    environment["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p])
    environment.update({distributed.ENV_TUNER_ID: tuner_id, distributed.ENV_ORACLE_IP: _HOST,
                        distributed.ENV_ORACLE_PORT: str(port)})
    return environment


def _die_with(parent_pid):
    """Linux: this process gets SIGKILL when the tuner dies (``PR_SET_PDEATHSIG``), so a
    killed search leaves no trial running behind it."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the tuner died before prctl took effect
        os._exit(1)


def run_one(spec_path, parent_pid=None):
    """A trial process: joins the search as a worker, runs one trial and returns its ids."""
    if parent_pid is not None:
        _die_with(parent_pid)
    import keras_tuner

    from keras_resnet.training import make_reproducible
    from keras_resnet.tuning import search

    with open(spec_path) as file:
        spec = json.load(file)
    settings = dict(spec["config"])
    data, fixed = settings.pop("data"), settings.pop("fixed")
    settings.update(overwrite=False, trial_process="same", export_dir=None)
    hyperparameters = None if spec["hyperparameters"] is None \
        else keras_tuner.HyperParameters.from_config(spec["hyperparameters"])
    config = search._make_config(data, {**settings, **fixed})
    make_reproducible(config.seed, config.deterministic)
    dataset = search._load_data(config, data)
    hypermodel = search._hypermodel(config, dataset, hyperparameters)
    tuner, _ = search._make_tuner(config, hypermodel, hyperparameters, "worker", max_runs=1)
    try:
        tuner.search(epochs=config.epochs, verbose=config.verbose)
    except search.RunsDone:
        pass
    return list(type(tuner).ran)

