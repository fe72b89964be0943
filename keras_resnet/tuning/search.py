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
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from keras_resnet import files
from keras_resnet.constants import (DEFAULT_MAX_TRIALS, DEFAULT_TUNE_BATCH_SIZE,
                                    DEFAULT_TUNE_EPOCHS, TUNE_METRICS, TUNERS)
from keras_resnet.tuning import chief_worker, fresh, kt_internals
from keras_resnet.tuning import results as results_module
from keras_resnet.tuning.config import TuneConfig

if TYPE_CHECKING:
    import keras_tuner

logger = logging.getLogger(__name__)

# Kept for compatibility: keras_resnet.tuning exported these names.
DEFAULT_EPOCHS = DEFAULT_TUNE_EPOCHS
METRICS = TUNE_METRICS
# KerasTuner infers the direction of loss and accuracy from Keras' metric names; our top-5
# metric's name is not one Keras knows, so its direction is given.
_GIVEN_DIRECTIONS = {"top5_accuracy": "max", "val_top5_accuracy": "max"}

__all__ = ["DEFAULT_EPOCHS", "DEFAULT_MAX_TRIALS", "TUNERS", "TuneConfig", "TuneResult",
           "objective_names", "tune"]


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


def objective_names(classes, has_validation):
    """The metrics a ``HyperResNet`` reports, i.e. the objectives ``tune`` accepts."""
    names = [m for m in TUNE_METRICS if m != "top5_accuracy" or classes > 5]
    return names + ([f"val_{m}" for m in names] if has_validation else [])


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
    config = _make_config(data, options)
    _check_hyperparameters_type(hyperparameters)
    role = chief_worker.role()
    if config.overwrite and role == "worker":
        raise ValueError("overwrite=True on a worker would delete the chief's search; pass "
                         "--overwrite to the chief only")
    mode = fresh.resolve(config, data, hyperparameters, role, log)
    make_reproducible(config.seed, config.deterministic)
    dataset = _load_data(config, data)
    hypermodel = _hypermodel(config, dataset, hyperparameters)
    state = _state(config, role, log)
    if state.already_finished and role == "worker":
        return TuneResult(role, config.project_dir, None, None, [], [], None, None, [],
                          state.resumed, True, config=config)
    if role == "worker" and mode != "same":
        ran = fresh.run_worker_trials(config, hyperparameters, log,
                                      fresh.per_process(config, mode))
        return TuneResult(role, config.project_dir, None, None, [], [], None, None, ran,
                          state.resumed, False, config=config)
    search, distribution = _make_tuner(config, hypermodel, hyperparameters, role)
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
            ran = _search(config, search, oracle, role, log)
        if role == "worker":
            return TuneResult(role, config.project_dir, None, None, [], [], None, None, ran,
                              state.resumed, False, search, config=config)
    result = _report(config, search, oracle, hypermodel, dataset, state, log)
    result.distribution = distribution
    if role == "single" and mode != "same" and not state.already_finished:
        result.ran = ran
    return result


def _make_config(data, options):
    """The search's ``TuneConfig``: options that are its fields, the rest are hyperparameters."""
    import keras_tuner

    from keras_resnet.data import source_name

    fields = {field.name for field in dataclasses.fields(TuneConfig)} - {"data", "fixed"}
    settings = {key: value for key, value in options.items() if key in fields}
    fixed = {key: value for key, value in options.items() if key not in fields}
    objective = settings.get("objective")
    if isinstance(objective, keras_tuner.Objective):
        settings.update(objective=objective.name, direction=objective.direction)
    data_name = source_name(data)
    if settings.get("project_name") is None:
        family, tuner = settings.get("family", "cifar"), settings.get("tuner", "random")
        settings["project_name"] = \
            f"{family}-{os.path.basename(os.path.normpath(data_name))}-{tuner}"
    settings["data_options"] = dict(settings.get("data_options") or {})
    return TuneConfig(data=data_name, fixed=fixed, **settings)


def _check_hyperparameters_type(hyperparameters):
    import keras_tuner

    if hyperparameters is not None and not isinstance(hyperparameters,
                                                      keras_tuner.HyperParameters):
        raise TypeError(f"hyperparameters must be a keras_tuner.HyperParameters or None; got "
                        f"{hyperparameters!r}")


def _load_data(config, data):
    """The data, loaded once; checks that the model reports the objective on it."""
    from keras_resnet.data import Dataset, load_dataset

    dataset = data if isinstance(data, Dataset) else load_dataset(
        config.data, batch_size=DEFAULT_TUNE_BATCH_SIZE, seed=config.seed, **config.data_options)
    names = objective_names(dataset.num_classes, dataset.validation is not None)
    if config.objective not in names:
        raise ValueError(f"objective must be a metric this model reports on {dataset.name!r} "
                         f"({', '.join(names)}); got {config.objective!r}")
    return dataset


def _hypermodel(config, dataset, hyperparameters):
    from keras_resnet.tuning.space import HyperResNet

    hypermodel = HyperResNet(dataset.input_shape, dataset.num_classes, config.family,
                             data=dataset, seed=config.seed,
                             steps_per_epoch=config.steps_per_epoch,
                             deterministic=config.deterministic, **config.fixed)
    if hyperparameters is not None:
        unknown = [hp.name for hp in hyperparameters.space if hp.name not in hypermodel.names]
        if unknown:
            raise ValueError(f"hyperparameters has unknown name(s) {', '.join(unknown)}; valid "
                             f"names: {', '.join(hypermodel.names)}")
    return hypermodel


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


def _objective(config):
    import keras_tuner

    direction = config.direction or _GIVEN_DIRECTIONS.get(config.objective)
    if direction is None:
        return config.objective  # KerasTuner infers the direction
    return keras_tuner.Objective(config.objective, direction)


def _strategy(config):
    """KerasTuner's ``distribution_strategy`` for the trials (None: TF's default) and its
    description."""
    from keras_resnet.distribute import choose_strategy, describe, make_strategy

    gpus = None if config.devices is None else len(config.devices)
    chosen = choose_strategy(config.strategy, environ={}, gpus=gpus)  # TF_CONFIG: not ours
    strategy, description = make_strategy(chosen, devices=config.devices)
    import tensorflow as tf

    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return None, description
    return strategy, describe(strategy, chosen)


def _make_tuner(config, hypermodel, hyperparameters, role, max_runs=None):
    """The KerasTuner tuner and the description of its trials' strategy."""
    strategy, description = _strategy(config)
    if role == "worker":
        chief_worker.bound_worker_wait(config.worker_timeout)
    oracle_options = dict(objective=_objective(config), seed=config.seed,
                          hyperparameters=hyperparameters,
                          max_consecutive_failed_trials=config.max_trials + 1)
    if config.tuner == "hyperband":
        oracle_options.update(max_epochs=config.epochs, factor=3, hyperband_iterations=1)
    else:
        oracle_options["max_trials"] = config.max_trials
    os.makedirs(config.directory, exist_ok=True)
    search = _tuner_class(config.tuner, max_runs)(
        hypermodel, directory=os.fspath(config.directory), project_name=config.project_name,
        overwrite=config.overwrite, distribution_strategy=strategy, **oracle_options)
    return search, description


def _announce_resume(config, state, oracle, log):
    stale = chief_worker.stale_retries(oracle)
    if stale:
        log(f"Trial(s) {', '.join(stale)} had finished but KerasTuner queued them to run "
            "again (its re-run-the-last-trial issue); they are kept as they are.")
    if state.resumed and not state.already_finished:
        log(f"Resuming {config.project_dir}: {state.finished_before} of {config.max_trials} "
            "trials finished; an interrupted trial runs again.")


def _search(config, search, oracle, role, log):
    """Runs this process's part of the search; returns the trials it ran."""
    if role == "chief":
        search.save()  # chief.json: a re-run of this command reloads the search
        try:
            chief_worker.serve_chief(oracle, config.project_dir, max_trials=config.max_trials,
                                    worker_timeout=config.worker_timeout, log=log)
        finally:
            search.save()
        return list(type(search).ran)
    try:
        if role == "worker":
            with chief_worker.Heartbeat(config.project_dir, search.tuner_id):
                search.search(epochs=config.epochs, verbose=config.verbose)
        else:
            search.search(epochs=config.epochs, verbose=config.verbose)
    except Exception as error:
        if type(error).__name__ in ("_InactiveRpcError", "RpcError"):
            raise RuntimeError(
                f"the chief at {os.environ.get(chief_worker.ENV_ORACLE_IP)}:"
                f"{os.environ.get(chief_worker.ENV_ORACLE_PORT)} did not answer within "
                f"{config.worker_timeout:g} s; start it (KERASTUNER_TUNER_ID=chief) "
                "first") from None
        raise
    return list(type(search).ran)


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


class RunsDone(Exception):
    """A tuner made with ``max_runs`` ran that many trials (a trial process's share)."""


def _tuner_class(kind, max_runs=None):
    import keras_tuner

    base = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization,
            "hyperband": keras_tuner.Hyperband, "grid": keras_tuner.GridSearch}[kind]

    class ResNetTuner(base):
        """Records each trial's parameters, seconds, runner and reason beside its trial.json."""

        ran = []

        def pre_create_trial(self):
            if max_runs is not None and len(type(self).ran) >= max_runs:
                raise RunsDone(f"ran {max_runs} trial(s)")
            super().pre_create_trial()

        def run_trial(self, trial, *args, **kwargs):
            self._started = time.perf_counter()
            self.hypermodel.last_fit = {}  # HyperResNet's public record of the trial's fit
            return super().run_trial(trial, *args, **kwargs)

        def on_trial_end(self, trial):
            info = dict(self.hypermodel.last_fit)
            info.update(trial_id=trial.trial_id, tuner_id=self.tuner_id, pid=os.getpid(),
                        status=str(trial.status), rss_mib=results_module.rss_mib(),
                        seconds=round(time.perf_counter() - self._started, 2),
                        # KerasTuner's gRPC protocol does not carry the message to the chief
                        reason=results_module.failure_reason(trial))
            results_module.write_trial_info(self.get_trial_dir(trial.trial_id), info)
            results_module.log_trial_run(self.project_dir, info)
            type(self).ran.append(trial.trial_id)
            super().on_trial_end(trial)

    ResNetTuner.__name__ = f"ResNet{base.__name__}"
    ResNetTuner.ran = []
    return ResNetTuner


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
