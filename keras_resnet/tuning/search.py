"""``tune(...)``: a KerasTuner search over ``HyperResNet``, resumable and distributable.

The jobs, in order: the configuration (``TuneConfig``: validation and naming), seeding, the data
(which decides the input shape, the classes and the objectives), the hypermodel, the tuner and
its resume state, the chief/worker/single dispatch, and the report (``results.csv``,
``results.png``, the best model's export).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keras_resnet import files
from keras_resnet.tuning import chief_worker, fresh, kt_internals, tuner
from keras_resnet.tuning import results as results_module
from keras_resnet.tuning.config import TuneConfig

if TYPE_CHECKING:
    import keras_tuner

logger = logging.getLogger(__name__)

__all__ = ["TuneConfig", "TuneResult", "tune"]


@dataclasses.dataclass
class TuneResult:
    """What ``tune`` produced.

    Attributes:
        role: ``"single"``, ``"chief"`` or ``"worker"``.
        project_dir: the search directory (``directory/project_name``).
        results_csv, results_png: the report files (None on a worker).
        rows: one dict per finished trial (see ``results.csv``); columns: their order.
        best: the best completed row (``oracle.get_best_trials``), or None.
        export_path: the best model's SavedModel version directory, or None.
        ran: trials this process ran.
        resumed: the search continued an existing project.
        already_finished: the project had all its trials before this call.
        tuner: the KerasTuner tuner.
        direction: the objective's direction (``"min"`` or ``"max"``), as the oracle has it.
        config: the search's ``TuneConfig``.
        distribution: the trials' strategy (``keras_resnet.distribute.describe``: name,
            replicas, devices), also in ``tune_config.json``.
    """

    role: str
    project_dir: str
    results_csv: str | None
    results_png: str | None
    rows: list
    columns: list
    best: dict | None
    export_path: str | None
    ran: list
    resumed: bool
    already_finished: bool
    tuner: object = None
    direction: str | None = None
    config: TuneConfig | None = None
    distribution: dict | None = None


@dataclasses.dataclass(frozen=True)
class _State:
    """Where an existing search stands before this call."""

    role: str
    resumed: bool
    finished_before: int
    already_finished: bool


def tune(data: str | os.PathLike | Any = "digits", *,
         hyperparameters: keras_tuner.HyperParameters | None = None,
         log: Callable[[str], Any] | None = None, **options) -> TuneResult:
    """Searches ResNet depth, initializers and the rest of ``HyperResNet``'s space.

    Trials train with the recipe of ``keras-resnet train``; the search lives in
    ``directory/project_name``. Running the same call again resumes it (a trial that was killed
    runs again; finished trials are kept) and ends with exactly ``max_trials`` trials. With
    ``KERASTUNER_TUNER_ID``/``KERASTUNER_ORACLE_IP``/``KERASTUNER_ORACLE_PORT`` set, this process
    is the chief (id containing ``chief``: serves the oracle, then writes the report and the
    export) or a worker (runs trials) of KerasTuner's gRPC protocol over the shared directory.
    Trials run where ``trial_process`` says (default ``"auto"``: in processes of up to
    ``trials_per_process`` trials when ``data`` is a name or a path, so the memory of a long
    search stays flat; see ``fresh.py``), on a worker too. With ``deterministic`` (the
    default) the same seed gives the same trials and scores; it turns TensorFlow's op
    determinism on for the whole process.

    Args:
        data: ``"digits"``, ``"cifar10"``, ``"synthetic"``, a folder of class sub-folders, or a
            ``keras_resnet.data.Dataset``.
        hyperparameters: a ``keras_tuner.HyperParameters`` whose entries fix or narrow the
            space (KerasTuner's own mechanism); names must be ``HyperResNet``'s.
        log: a ``print``-like function for progress messages (default: this module's logger).
        **options: the fields of ``TuneConfig`` (``family``, ``tuner``, ``max_trials``,
            ``epochs``, ``objective`` (a name or a ``keras_tuner.Objective``), ``directory``,
            ``project_name``, ``seed``, ``deterministic``, ``overwrite``, ``export_dir``,
            ``export_name``, ``steps_per_epoch``, ``data_options``, ``worker_timeout``,
            ``verbose``, ``strategy``, ``devices``, ``trial_process``,
            ``trials_per_process``); any other keyword is a
            hyperparameter to fix (a scalar) or narrow (a list), e.g. ``depth=[8, 14]``.

    Returns:
        A ``TuneResult``.

    Raises:
        ValueError, TypeError: for a bad argument, before the first trial.
        RuntimeError: a distributed chief left without live workers (the state is saved).
    """
    from keras_resnet.training import make_reproducible

    log = log or logger.info
    config = tuner.make_config(data, options)
    tuner.check_hyperparameters_type(hyperparameters)
    role = chief_worker.role()
    if config.overwrite and role == "worker":
        raise ValueError("overwrite=True on a worker would delete the chief's search; pass "
                         "--overwrite to the chief only")
    mode = fresh.resolve(config, data, hyperparameters, role, log)
    make_reproducible(config.seed, config.deterministic)
    dataset = tuner.load_data(config, data)
    hypermodel = tuner.make_hypermodel(config, dataset, hyperparameters)
    state = _state(config, role, log)
    if state.already_finished and role == "worker":
        return TuneResult(role, config.project_dir, None, None, [], [], None, None, [],
                          state.resumed, True, config=config)
    if role == "worker" and mode != "same":
        ran = fresh.run_worker_trials(config, hyperparameters, log,
                                      fresh.per_process(config, mode))
        return TuneResult(role, config.project_dir, None, None, [], [], None, None, ran,
                          state.resumed, False, config=config)
    search, distribution = tuner.make_tuner(config, hypermodel, hyperparameters, role)
    oracle = kt_internals.local_oracle(search)
    oracle.max_trials = config.max_trials
    if role != "worker":
        _announce_resume(config, state, oracle, log)
        record = dict(config.to_dict(), distribution=distribution)
        files.write_text(os.path.join(config.project_dir, "tune_config.json"),
                         json.dumps(record, indent=2, default=repr))
    if not state.already_finished:
        if role == "single" and mode != "same":
            search.save()  # tuner0.json: a re-run of this command reloads the search
            ran = fresh.run_trials(config, oracle, hyperparameters, log,
                                   fresh.per_process(config, mode))
        else:
            ran = tuner.run_search(config, search, oracle, role, log)
        if role == "worker":
            return TuneResult(role, config.project_dir, None, None, [], [], None, None, ran,
                              state.resumed, False, search, config=config)
    result = _report(config, search, oracle, hypermodel, dataset, state, log)
    result.distribution = distribution
    if role == "single" and mode != "same" and not state.already_finished:
        result.ran = ran
    return result


def _state(config, role, log):
    resumed = not config.overwrite and os.path.exists(
        os.path.join(config.project_dir, "oracle.json"))
    finished = len(chief_worker.finished_trials(config.project_dir)) if resumed else 0
    already_finished = finished >= config.max_trials
    if already_finished:
        log(f"Search {config.project_dir} already finished its {finished} trials "
            f"(max_trials={config.max_trials}); nothing is re-run. Pass overwrite=True "
            "(--overwrite) to start again, or raise max_trials to continue.")
    return _State(role, resumed, finished, already_finished)


def _announce_resume(config, state, oracle, log):
    stale = chief_worker.stale_retries(oracle)
    if stale:
        log(f"Trial(s) {', '.join(stale)} had finished but KerasTuner queued them to run "
            "again (its re-run-the-last-trial issue); they are kept as they are.")
    if state.resumed and not state.already_finished:
        log(f"Resuming {config.project_dir}: {state.finished_before} of {config.max_trials} "
            "trials finished; an interrupted trial runs again.")


def _report(config, search, oracle, hypermodel, dataset, state, log):
    project_dir = config.project_dir
    rows, columns = results_module.collect_rows(oracle, project_dir, hypermodel.family,
                                                hypermodel.names)
    csv_path = results_module.write_csv(rows, columns, os.path.join(project_dir, "results.csv"))
    png_path = results_module.plot(rows, os.path.join(project_dir, "results.png"),
                                   config.objective,
                                   title=f"{os.path.basename(project_dir)}: {len(rows)} trials")
    best_trials = [t for t in oracle.get_best_trials(1) if str(t.status) == "COMPLETED"]
    best = next((r for r in rows if best_trials and r["trial_id"] == best_trials[0].trial_id),
                None)
    export_path = _export_best(search, oracle, best, dataset, project_dir, config.export_dir,
                               config.export_name or config.project_name, log)
    return TuneResult(state.role, project_dir, csv_path, png_path, rows, columns, best,
                      export_path, list(type(search).ran), state.resumed,
                      state.already_finished, search, oracle.objective.direction, config)


def _export_best(search, oracle, best, dataset, project_dir, export_dir, name, log):
    """Exports the best trial's checkpoint once per best trial (a re-run does not re-export)."""
    if best is None or export_dir is None:
        return None
    record = os.path.join(project_dir, "export.json")
    if os.path.exists(record):
        with open(record) as file:
            previous = json.load(file)
        if previous.get("trial_id") == best["trial_id"] and os.path.isdir(previous["path"]):
            return previous["path"]
    from keras_resnet.export import export_saved_model

    trial = oracle.trials[best["trial_id"]]
    with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model = search.load_model(trial)
    path = os.fspath(export_saved_model(model, base_dir=export_dir, name=name,
                                        class_names=list(dataset.class_names)))
    files.write_text(record, json.dumps({"trial_id": best["trial_id"], "path": path}))
    log(f"Exported trial {best['trial_id']} to {path}")
    return path
