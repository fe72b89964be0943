"""``tune(...)``: a KerasTuner search over ``HyperResNet``, resumable and distributable."""

from __future__ import annotations

import dataclasses
import os
import re
import time
import warnings

from keras_resnet.tuning import distributed
from keras_resnet.tuning import results as results_module

TUNERS = ("random", "bayesian", "hyperband", "grid")
METRICS = ("loss", "accuracy", "top5_accuracy")
# The defaults of `keras-resnet tune`: on the embedded digits, 8 trials of 3 epochs over depth
# 8/14/20 x 7 initializers x the rest of the space finish in a few minutes on 2 CPU cores.
DEFAULT_MAX_TRIALS = 8
DEFAULT_EPOCHS = 3
DEFAULT_DIRECTORY = "tuning"
DEFAULT_WORKER_TIMEOUT = 120.0


@dataclasses.dataclass
class TuneResult:
    """What ``tune`` produced.

    Attributes:
        role: ``"single"``, ``"chief"`` or ``"worker"``.
        project_dir: the search directory (``directory/project_name``).
        results_csv, results_png: the report files (None on a worker).
        rows: one dict per finished trial (see ``results.csv``); columns: their order.
        best: the best completed row, or None.
        export_path: the best model's SavedModel version directory, or None.
        ran: trials this process ran.
        resumed: the search continued an existing project.
        already_finished: the project had all its trials before this call.
        tuner: the KerasTuner tuner.
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


def _tuner_class(kind):
    import keras_tuner

    base = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization,
            "hyperband": keras_tuner.Hyperband, "grid": keras_tuner.GridSearch}[kind]

    class ResNetTuner(base):
        """Records each trial's parameters, seconds, runner and reason beside its trial.json."""

        ran = []

        def run_trial(self, trial, *args, **kwargs):
            self._started = time.perf_counter()
            self.hypermodel.last_fit = {}
            return super().run_trial(trial, *args, **kwargs)

        def on_trial_end(self, trial):
            info = dict(self.hypermodel.last_fit)
            info.update(trial_id=trial.trial_id, tuner_id=self.tuner_id, pid=os.getpid(),
                        status=str(trial.status),
                        seconds=round(time.perf_counter() - self._started, 2))
            results_module.write_trial_info(self.get_trial_dir(trial.trial_id), info)
            results_module.log_trial_run(self.project_dir, info)
            type(self).ran.append(trial.trial_id)
            super().on_trial_end(trial)

    ResNetTuner.__name__ = f"ResNet{base.__name__}"
    ResNetTuner.ran = []
    return ResNetTuner


def _check(value, argument, kind, low=None):
    if isinstance(value, bool) or not isinstance(value, kind) or (low is not None and value < low):
        accepted = f"an int >= {low}" if kind is int else f"a number >= {low}"
        raise ValueError(f"{argument} must be {accepted}; got {value!r}")
    return value


def objective_names(classes, has_validation):
    """The metrics a ``HyperResNet`` reports, i.e. the objectives ``tune`` accepts."""
    names = [m for m in METRICS if m != "top5_accuracy" or classes > 5]
    return names + ([f"val_{m}" for m in names] if has_validation else [])


def tune(data="digits", *, family="cifar", tuner="random", max_trials=DEFAULT_MAX_TRIALS,
         epochs=DEFAULT_EPOCHS, objective="val_accuracy", directory=DEFAULT_DIRECTORY,
         project_name=None, seed=0, overwrite=False, export_dir="saved_models",
         export_name=None, hyperparameters=None, steps_per_epoch=None, data_options=None,
         worker_timeout=DEFAULT_WORKER_TIMEOUT, verbose=0, log=print, **fixed):
    """Searches ResNet depth, initializers and the rest of ``HyperResNet``'s space.

    Trials train with the recipe of ``keras-resnet train``; the search lives in
    ``directory/project_name``. Running the same call again resumes it (a trial that was killed
    runs again; finished trials are kept) and ends with exactly ``max_trials`` trials. With
    ``KERASTUNER_TUNER_ID``/``KERASTUNER_ORACLE_IP``/``KERASTUNER_ORACLE_PORT`` set, this process
    is the chief (id containing ``chief``: serves the oracle, then writes the report and the
    export) or a worker (runs trials) of KerasTuner's gRPC protocol over the shared directory.

    Args:
        data: ``"digits"``, ``"cifar10"``, ``"synthetic"``, a folder of class sub-folders, or a
            ``keras_resnet.data.Dataset``.
        family: ``"cifar"`` or ``"imagenet"`` (see ``HyperResNet``).
        tuner: ``"random"``, ``"bayesian"``, ``"hyperband"`` or ``"grid"``.
        max_trials: trials of the search (Hyperband stops at its own count if smaller).
        epochs: training epochs per trial (Hyperband's ``max_epochs``).
        objective: a metric the model reports (``val_accuracy``, ``val_loss``, ``accuracy``,
            ...) or a ``keras_tuner.Objective``.
        directory: parent of the search directory.
        project_name: the search directory's name (default ``<family>-<data>-<tuner>``).
        seed: seeds the oracle (the hyperparameter sequence), the data and every trial.
        overwrite: start over instead of resuming.
        export_dir: SavedModel base directory for the best model; None to skip the export.
        export_name: its serving name (default ``project_name``).
        hyperparameters: a ``keras_tuner.HyperParameters`` whose entries fix or narrow the
            space (KerasTuner's own mechanism); names must be ``HyperResNet``'s.
        steps_per_epoch: at most this many batches per epoch (quick searches).
        data_options: keyword options of ``load_dataset``.
        worker_timeout: seconds after which a silent worker counts as dead (distributed), and
            the longest a worker waits for the chief.
        verbose: ``model.fit`` verbosity in trials.
        log: a ``print``-like function for progress messages.
        **fixed: hyperparameters to fix (a scalar) or narrow (a list), e.g. ``depth=[8, 14]``.

    Returns:
        A ``TuneResult``.

    Raises:
        ValueError, TypeError: for a bad argument, before the first trial.
        RuntimeError: a distributed chief left without live workers (the state is saved).
    """
    import keras_tuner

    from keras_resnet.data import Dataset, load_dataset
    from keras_resnet.tuning.space import FAMILIES, HyperResNet

    if tuner not in TUNERS:
        raise ValueError(f"tuner must be one of {TUNERS}; got {tuner!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}; got {family!r}")
    _check(max_trials, "max_trials", int, 1)
    _check(epochs, "epochs", int, 1)
    _check(seed, "seed", int, 0)
    _check(worker_timeout, "worker_timeout", (int, float), 1)
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False; got {overwrite!r}")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(f"directory {os.fspath(directory)!r} is a file; pass a directory")
    if hyperparameters is not None and not isinstance(hyperparameters,
                                                      keras_tuner.HyperParameters):
        raise TypeError(f"hyperparameters must be a keras_tuner.HyperParameters or None; got "
                        f"{hyperparameters!r}")
    if isinstance(objective, keras_tuner.Objective):
        objective_name = objective.name
    elif isinstance(objective, str):
        objective_name = objective
    else:
        raise TypeError(f"objective must be a metric name or a keras_tuner.Objective; got "
                        f"{objective!r}")
    role = distributed.role()
    if project_name is None:
        data_name = data.name if isinstance(data, Dataset) else os.fspath(data)
        project_name = f"{family}-{os.path.basename(os.path.normpath(data_name))}-{tuner}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", project_name):
        raise ValueError(f"project_name must be letters, digits, '.', '_' or '-' (a directory "
                         f"name); got {project_name!r}")

    # The data decides the input shape, the classes and which objectives exist.
    import keras

    keras.utils.set_random_seed(seed)  # tf.data's shuffle draws from the global seed too
    dataset = data if isinstance(data, Dataset) else load_dataset(
        data, batch_size=32, seed=seed, **(data_options or {}))
    names = objective_names(dataset.num_classes, dataset.validation is not None)
    if objective_name not in names:
        raise ValueError(f"objective {objective_name!r} is not a metric this model reports on "
                         f"{dataset.name!r}; valid objectives: {', '.join(names)}")
    hypermodel = HyperResNet(dataset.input_shape, dataset.num_classes, family,
                             data=data if isinstance(data, Dataset) else os.fspath(data),
                             seed=seed, data_options=data_options,
                             steps_per_epoch=steps_per_epoch, **fixed)
    if not isinstance(data, Dataset):
        hypermodel._datasets[32] = hypermodel._datasets[None] = dataset
    if hyperparameters is not None:
        unknown = [hp.name for hp in hyperparameters.space if hp.name not in hypermodel.names]
        if unknown:
            raise ValueError(f"hyperparameters has unknown name(s) {', '.join(unknown)}; valid "
                             f"names: {', '.join(hypermodel.names)}")

    project_dir = os.path.join(os.fspath(directory), project_name)
    if overwrite and role == "worker":
        raise ValueError("overwrite=True on a worker would delete the chief's search; pass "
                         "--overwrite to the chief only")
    resumed = not overwrite and os.path.exists(os.path.join(project_dir, "oracle.json"))
    finished_before = distributed.finished_trials(project_dir) if resumed else []
    already_finished = len(finished_before) >= max_trials
    if already_finished:
        log(f"Search {project_dir} already finished its {len(finished_before)} trials "
            f"(max_trials={max_trials}); nothing is re-run. Pass overwrite=True (--overwrite) "
            "to start again, or raise max_trials to continue.")
        if role == "worker":
            return TuneResult(role, project_dir, None, None, [], [], None, None, [], resumed,
                              True)

    if role == "worker":
        distributed.bound_worker_wait(worker_timeout)
    oracle_options = dict(objective=keras_tuner.Objective(objective_name, _direction(
        objective, objective_name)), seed=seed, hyperparameters=hyperparameters,
        max_consecutive_failed_trials=max_trials + 1)
    if tuner == "hyperband":
        oracle_options.update(max_epochs=epochs, factor=3, hyperband_iterations=1)
    else:
        oracle_options["max_trials"] = max_trials
    os.makedirs(directory, exist_ok=True)
    search = _tuner_class(tuner)(hypermodel, directory=os.fspath(directory),
                                 project_name=project_name, overwrite=overwrite,
                                 **oracle_options)
    local_oracle = search.oracle if role != "worker" else search.oracle._oracle
    local_oracle.max_trials = max_trials
    if role != "worker":
        stale = distributed.stale_retries(local_oracle)
        if stale:
            log(f"Trial(s) {', '.join(stale)} had finished but KerasTuner queued them to run "
                "again (its re-run-the-last-trial issue); they are kept as they are.")
        if resumed and not already_finished:
            log(f"Resuming {project_dir}: {len(finished_before)} of {max_trials} trials "
                "finished; an interrupted trial runs again.")

    if role == "chief":
        if not already_finished:
            search.save()  # chief.json: a re-run of this command reloads the search
            try:
                distributed.serve_chief(local_oracle, project_dir, max_trials=max_trials,
                                        worker_timeout=worker_timeout, log=log)
            finally:
                search.save()
    elif not already_finished:
        try:
            if role == "worker":
                with distributed.Heartbeat(project_dir, search.tuner_id):
                    search.search(epochs=epochs, verbose=verbose)
                return TuneResult(role, project_dir, None, None, [], [], None, None,
                                  list(type(search).ran), resumed, False, search)
            search.search(epochs=epochs, verbose=verbose)
        except Exception as error:
            if type(error).__name__ in ("_InactiveRpcError", "RpcError"):
                raise RuntimeError(
                    f"the chief at {os.environ.get(distributed.ENV_ORACLE_IP)}:"
                    f"{os.environ.get(distributed.ENV_ORACLE_PORT)} did not answer within "
                    f"{worker_timeout:g} s; start it (KERASTUNER_TUNER_ID=chief) first") from None
            raise
    return _report(search, local_oracle, hypermodel, dataset, project_dir, role, objective_name,
                   export_dir, export_name or project_name, resumed, already_finished, log)


def _direction(objective, name):
    if hasattr(objective, "direction"):
        return objective.direction
    return "min" if name.endswith("loss") else "max"


def _report(search, oracle, hypermodel, dataset, project_dir, role, objective, export_dir,
            export_name, resumed, already_finished, log):
    rows, columns = results_module.collect_rows(oracle, project_dir, hypermodel.family,
                                                hypermodel.names)
    csv_path = results_module.write_csv(rows, columns, os.path.join(project_dir, "results.csv"))
    png_path = results_module.plot(rows, os.path.join(project_dir, "results.png"), objective,
                                   title=f"{os.path.basename(project_dir)}: {len(rows)} trials")
    completed = [r for r in rows if r["score"] is not None]
    best = None
    if completed:
        best = max(completed, key=lambda r: -r["score"] if objective.endswith("loss")
                   else r["score"])
    export_path = _export_best(search, oracle, best, dataset, project_dir, export_dir,
                               export_name, already_finished, log)
    return TuneResult(role, project_dir, csv_path, png_path, rows, columns, best, export_path,
                      list(type(search).ran), resumed, already_finished, search)


def _export_best(search, oracle, best, dataset, project_dir, export_dir, name, already_finished,
                 log):
    """Exports the best trial's checkpoint once per best trial (a re-run does not re-export)."""
    import json

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
    with open(record, "w") as file:
        json.dump({"trial_id": best["trial_id"], "path": path}, file)
    return path
