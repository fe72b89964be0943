"""A trial process of a search: ``python -m keras_resnet.tuning.trial_process SPEC PID RUNS``.

``fresh.py`` starts it: it joins the search as a worker of the tuner's (or the chief's) oracle,
runs up to ``RUNS`` trials and exits; it dies with the tuner (``PID``) on Linux.
"""

from __future__ import annotations

import json
import logging
import os
import sys

logger = logging.getLogger(__name__)


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


def run_one(spec_path, parent_pid=None, max_runs=1):
    """A trial process: joins the search as a worker, runs up to ``max_runs`` trials and
    returns their ids."""
    if parent_pid is not None:
        _die_with(parent_pid)
    import keras_tuner

    from keras_resnet.training import make_reproducible
    from keras_resnet.tuning import tuner as tuner_setup

    with open(spec_path) as file:
        spec = json.load(file)
    settings = dict(spec["config"])
    data, fixed = settings.pop("data"), settings.pop("fixed")
    settings.update(overwrite=False, trial_process="same", export_dir=None)
    hyperparameters = None if spec["hyperparameters"] is None \
        else keras_tuner.HyperParameters.from_config(spec["hyperparameters"])
    config = tuner_setup.make_config(data, {**settings, **fixed})
    make_reproducible(config.seed, config.deterministic)
    dataset = tuner_setup.load_data(config, data)
    hypermodel = tuner_setup.make_hypermodel(config, dataset, hyperparameters)
    tuner, _ = tuner_setup.make_tuner(config, hypermodel, hyperparameters, "worker",
                                  max_runs=max_runs)
    try:
        tuner_setup.run_search(config, tuner, None, "worker", logger.info)
    except tuner_setup.RunsDone:
        pass
    return list(type(tuner).ran)


def main(argv=None) -> int:
    """Runs ``run_one(SPEC, PID, RUNS)`` from the command line; returns the exit status."""
    spec_path, parent_pid, max_runs = (sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_one(spec_path, int(parent_pid), int(max_runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
