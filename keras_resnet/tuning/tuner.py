"""The pieces of a search that the tuner's process and each trial process share.

``make_config`` (the ``TuneConfig`` from ``tune``'s options), ``load_data``, ``make_hypermodel``,
``make_tuner`` (the KerasTuner tuner, recording each trial beside its ``trial.json``) and
``run_search`` (this process's part of the search: single, chief or worker). ``search.tune``
drives them in the tuner's process, ``trial_process`` in each trial process.
"""

from __future__ import annotations

import dataclasses
import os
import time

from keras_resnet.constants import DEFAULT_TUNE_BATCH_SIZE, TUNE_METRICS
from keras_resnet.tuning import chief_worker
from keras_resnet.tuning import results as results_module
from keras_resnet.tuning.config import TuneConfig

# KerasTuner infers the direction of loss and accuracy from Keras' metric names; our top-5
# metric's name is not one Keras knows, so its direction is given.
_GIVEN_DIRECTIONS = {"top5_accuracy": "max", "val_top5_accuracy": "max"}


def objective_names(classes, has_validation):
    """The metrics a ``HyperResNet`` reports, i.e. the objectives ``tune`` accepts."""
    names = [m for m in TUNE_METRICS if m != "top5_accuracy" or classes > 5]
    return names + ([f"val_{m}" for m in names] if has_validation else [])


def make_config(data, options):
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


def check_hyperparameters_type(hyperparameters):
    import keras_tuner

    if hyperparameters is not None and not isinstance(hyperparameters,
                                                      keras_tuner.HyperParameters):
        raise TypeError(f"hyperparameters must be a keras_tuner.HyperParameters or None; got "
                        f"{hyperparameters!r}")


def load_data(config, data):
    """The data, loaded once; checks that the model reports the objective on it."""
    from keras_resnet.data import Dataset, load_dataset

    dataset = data if isinstance(data, Dataset) else load_dataset(
        config.data, batch_size=DEFAULT_TUNE_BATCH_SIZE, seed=config.seed, **config.data_options)
    names = objective_names(dataset.num_classes, dataset.validation is not None)
    if config.objective not in names:
        raise ValueError(f"objective must be a metric this model reports on {dataset.name!r} "
                         f"({', '.join(names)}); got {config.objective!r}")
    return dataset


def make_hypermodel(config, dataset, hyperparameters):
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


def make_tuner(config, hypermodel, hyperparameters, role, max_runs=None):
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


def run_search(config, search, oracle, role, log):
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
