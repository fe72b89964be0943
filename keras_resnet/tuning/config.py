"""``TuneConfig``: one validated, immutable value holding every setting of a search.

``tune`` builds it from its keyword arguments, checks it before the first trial and writes it to
``<project>/tune_config.json``, so a search can be repeated from its own record.
"""

from __future__ import annotations

import dataclasses
import os

from keras_resnet import checks
from keras_resnet.constants import (DEFAULT_DATA, DEFAULT_DETERMINISTIC, DEFAULT_EXPORT_DIR,
                                    DEFAULT_FAMILY, DEFAULT_MAX_TRIALS, DEFAULT_OBJECTIVE,
                                    DEFAULT_SEED, DEFAULT_TUNE_EPOCHS, DEFAULT_TUNER,
                                    DEFAULT_TRIAL_PROCESS, DEFAULT_TRIALS_PER_PROCESS,
                                    DEFAULT_TUNE_STRATEGY,
                                    DEFAULT_TUNING_DIR, DEFAULT_WORKER_TIMEOUT, FAMILIES,
                                    TRIAL_PROCESSES, TUNE_STRATEGIES, TUNERS)

DIRECTIONS = ("min", "max")


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """Every setting of a ``tune`` search (the fields are ``tune``'s keyword arguments).

    Attributes:
        data: ``"digits"``, ``"cifar10"``, ``"synthetic"`` or a folder; for a ``Dataset`` passed
            to ``tune``, its name (a record only).
        family: ``"cifar"`` or ``"imagenet"`` (see ``HyperResNet``).
        tuner: ``"random"``, ``"bayesian"``, ``"hyperband"`` or ``"grid"``.
        max_trials: trials of the search (Hyperband stops at its own count if smaller).
        epochs: training epochs per trial (Hyperband's ``max_epochs``).
        objective: the metric to optimize (``val_accuracy``, ``val_loss``, ...).
        direction: ``"min"`` or ``"max"``; None lets KerasTuner infer it from the metric.
        directory: parent of the search directory.
        project_name: the search directory's name (``tune`` defaults it to
            ``<family>-<data>-<tuner>``).
        seed: seeds the oracle (the hyperparameter sequence), the data and every trial.
        deterministic: TensorFlow op determinism (process-global), so the same seed gives the
            same trial scores.
        overwrite: start over instead of resuming.
        export_dir: SavedModel base directory for the best model; None to skip the export.
        export_name: its serving name (default ``project_name``).
        steps_per_epoch: at most this many batches per epoch (quick searches).
        data_options: keyword options of ``load_dataset``.
        worker_timeout: seconds after which a silent worker counts as dead (distributed), and
            the longest a worker waits for the chief.
        verbose: ``model.fit`` verbosity in trials.
        strategy: ``"auto"``, ``"one-device"`` or ``"mirrored"``: the ``tf.distribute``
            strategy every trial trains under (``keras_resnet.distribute.make_strategy``, given
            to KerasTuner as its ``distribution_strategy``); ``"auto"`` is ``"mirrored"`` when
            more than one GPU is visible. A trial's ``batch_size`` is the global batch.
        devices: device names for ``"mirrored"`` (``["/gpu:0", "/gpu:1"]``, or logical CPUs);
            None: every GPU (else the CPU).
        trial_process: ``"same"`` (trials run in this process, whose memory grows with every
            trial), ``"fresh"`` (each trial runs in a new Python process that asks this one's
            oracle for it over KerasTuner's gRPC protocol), ``"recycled"`` (a trial process
            runs up to ``trials_per_process`` trials, then a new one takes over: flat memory,
            TensorFlow's start paid once per process) or ``"auto"`` (``"recycled"`` where a
            trial process can rebuild the search, i.e. ``data`` is a name or a path; else
            ``"same"``). A worker of a chief/worker search runs its trials the same way.
        trials_per_process: trials one ``"recycled"`` trial process runs.
        fixed: hyperparameters to fix (a scalar) or narrow (a list), e.g. ``{"depth": [8, 14]}``.

    Raises:
        TypeError, ValueError: on construction, for a bad value (``keras_resnet.checks``'
            messages), before any data is loaded.
    """

    data: str = DEFAULT_DATA
    family: str = DEFAULT_FAMILY
    tuner: str = DEFAULT_TUNER
    max_trials: int = DEFAULT_MAX_TRIALS
    epochs: int = DEFAULT_TUNE_EPOCHS
    objective: str = DEFAULT_OBJECTIVE
    direction: str | None = None
    directory: str = DEFAULT_TUNING_DIR
    project_name: str | None = None
    seed: int = DEFAULT_SEED
    deterministic: bool = DEFAULT_DETERMINISTIC
    overwrite: bool = False
    export_dir: str | None = DEFAULT_EXPORT_DIR
    export_name: str | None = None
    steps_per_epoch: int | None = None
    data_options: dict = dataclasses.field(default_factory=dict)
    worker_timeout: float = DEFAULT_WORKER_TIMEOUT
    verbose: object = 0
    strategy: str = DEFAULT_TUNE_STRATEGY
    devices: tuple | None = None
    trial_process: str = DEFAULT_TRIAL_PROCESS
    trials_per_process: int = DEFAULT_TRIALS_PER_PROCESS
    fixed: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        checks.one_of(self.tuner, "tuner", TUNERS)
        checks.one_of(self.family, "family", FAMILIES)
        checks.positive_int(self.max_trials, "max_trials")
        checks.positive_int(self.epochs, "epochs")
        checks.positive_int(self.seed, "seed", minimum=0)
        checks.optional_positive_int(self.steps_per_epoch, "steps_per_epoch")
        checks.number(self.worker_timeout, "worker_timeout", minimum=1, example="120")
        checks.boolean(self.overwrite, "overwrite")
        checks.boolean(self.deterministic, "deterministic")
        checks.one_of(self.verbose, "verbose", ("auto", 0, 1, 2))
        checks.one_of(self.strategy, "strategy", TUNE_STRATEGIES)
        checks.one_of(self.trial_process, "trial_process", TRIAL_PROCESSES)
        checks.positive_int(self.trials_per_process, "trials_per_process")
        if self.devices is not None:
            if isinstance(self.devices, str) or not isinstance(self.devices, (list, tuple)) \
                    or not self.devices or not all(isinstance(d, str) and d
                                                   for d in self.devices):
                raise TypeError(f"devices must be a non-empty list of device names (e.g. "
                                f"['/gpu:0', '/gpu:1']) or None; got {self.devices!r}")
            object.__setattr__(self, "devices", tuple(self.devices))
            if self.strategy == "one-device" and len(self.devices) != 1:
                raise ValueError(f"strategy 'one-device' takes one device; got devices="
                                 f"{list(self.devices)!r}")
        if not isinstance(self.objective, str):
            raise TypeError(f"objective must be a metric name or a keras_tuner.Objective; got "
                            f"{self.objective!r}")
        if self.direction is not None:
            checks.one_of(self.direction, "direction", DIRECTIONS)
        for argument in ("data_options", "fixed"):
            if not isinstance(getattr(self, argument), dict):
                raise TypeError(f"{argument} must be a dict; got {getattr(self, argument)!r}")
        checks.writable_dir(self.directory, "directory")
        if self.project_name is not None:
            checks.name(self.project_name, "project_name")
        if self.export_name is not None:
            checks.name(self.export_name, "export_name")
        if self.export_dir is not None:
            checks.writable_dir(self.export_dir, "export_dir")

    @property
    def project_dir(self) -> str:
        """``directory/project_name``."""
        return os.path.join(os.fspath(self.directory), self.project_name)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values."""
        values = dataclasses.asdict(self)
        for key in ("directory", "export_dir"):
            if values[key] is not None:
                values[key] = os.fspath(values[key])
        if values["devices"] is not None:
            values["devices"] = list(values["devices"])
        return values
