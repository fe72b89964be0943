"""``TrainConfig``: one validated, immutable value holding every setting of a training run.

``train`` builds it from its keyword arguments, checks it before anything expensive happens and
writes it into ``metrics.json`` (``"config"``), so a run can be repeated from its own record:
``train(config=TrainConfig.from_dict(metrics["config"]))``.
"""

from __future__ import annotations

import dataclasses
import os

from keras_resnet import checks, constants
from keras_resnet.constants import (DEFAULT_BATCH_SIZE, DEFAULT_DATA, DEFAULT_DETERMINISTIC,
                                    DEFAULT_EPOCHS, DEFAULT_EXPORT_DIR, DEFAULT_INITIALIZER,
                                    DEFAULT_LABEL_SMOOTHING, DEFAULT_LEARNING_RATE,
                                    DEFAULT_FINE_TUNE_LEARNING_RATE,
                                    DEFAULT_HEAD_LEARNING_RATE, DEFAULT_MODEL, DEFAULT_MOMENTUM,
                                    DEFAULT_PRECISION, DEFAULT_RECIPE, DEFAULT_RUNS_DIR,
                                    DEFAULT_SCHEDULE, DEFAULT_SEED, DEFAULT_STRATEGY,
                                    DEFAULT_WEIGHT_DECAY, PRECISIONS, SCHEDULES, STRATEGIES)

VERBOSITIES = ("auto", 0, 1, 2)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a ``train`` run (the fields are ``train``'s keyword arguments).

    Attributes:
        model: a model name (``keras_resnet.modeling.presets.MODEL_PRESETS``); for a ``keras.Model``
            passed to ``train``, its name (a record only).
        data: ``"digits"``, ``"cifar10"``, ``"synthetic"`` or a folder; for a ``Dataset`` passed
            to ``train``, its name (a record only).
        epochs: training epochs.
        batch_size: images per batch (None: 32, or the ``Dataset``'s own).
        learning_rate: initial learning rate (the paper's 0.1).
        momentum, weight_decay, label_smoothing, jit_compile: see ``compile_model``.
        schedule: ``"step"`` (÷10 at 50% and 75% of training), ``"cosine"`` or ``"constant"``.
        warmup: the paper's warm-up (0.01 until the training error is below 80%).
        warmup_steps: ``schedule="cosine"`` only: a linear ramp from 0 over this many steps
            before the cosine decay (Keras' ``CosineDecay(warmup_steps=...)``).
        initializer: kernel initializer of a named model (any ``keras.initializers.get`` name).
        precision: ``"float32"``, ``"mixed_bfloat16"`` or ``"mixed_float16"``.
        early_stopping: None, or the patience in epochs of ``keras.callbacks.EarlyStopping`` on
            the validation loss (restoring the best weights).
        out_dir: parent of the run directory.
        export_dir: SavedModel base directory; None to skip the export.
        name: run name (``train`` defaults it to ``<model>-<data>``).
        seed: seeds the weights, the data split, shuffling and augmentation.
        deterministic: also make TensorFlow's ops deterministic
            (``tf.config.experimental.enable_op_determinism``), so the same seed gives the same
            run. Process-global: once on, it stays on for the process.
        verbose: ``model.fit`` verbosity (``"auto"``, 0, 1 progress bar, 2 one line per epoch).
        model_options: keyword options for ``build_model`` (e.g. ``{"preact": True}``).
        data_options: keyword options for ``load_dataset`` (e.g. ``{"augment": False}``,
            ``{"image_size": 64, "crop": "inception"}``).
        recipe: the name of the recipe (``keras_resnet.modeling.presets.RECIPES``) the values were
            resolved from (a record: ``train(recipe=...)`` resolves it).
        warmup_epochs: ``schedule="cosine"`` only: a linear warm-up over this many epochs
            (``warmup_steps`` counted at run time from the data's steps per epoch).
        backup_every_steps: None (back up at every epoch end) or N: ``BackupAndRestore``
            writes the training state every N steps.
        weights: a weights file to start from (``keras_resnet.modeling.weight_files.load_weights``'
            formats; a torchvision / timm checkpoint builds its own network): the run
            fine-tunes it in two phases (``keras_resnet.training.fine_tuning.fine_tune``).
        fine_tune_from: with ``weights``: the lowest stage (``"conv4"`` or 4) unfrozen in
            phase 2; None trains the head alone.
        head_epochs: with ``weights``: epochs of phase 1, the head alone (default ``epochs``,
            or half of them with ``fine_tune_from``); phase 2 trains the rest.
        head_lr, fine_tune_lr: with ``weights``: Adam learning rates of phase 1 and phase 2.
        strategy: ``tf.distribute`` strategy (``keras_resnet.distribute.make_strategy``):
            ``"auto"``, ``"one-device"``, ``"mirrored"`` or ``"multi-worker"``. On the JAX
            backend, ``"mirrored"`` is ``keras.distribution.DataParallel`` over the local
            devices (``keras_resnet.distribute.jax_parallel``).
        sync_bn: batch normalization with cross-replica statistics (on JAX they already are:
            a no-op).
        lr_batch_size: the batch ``learning_rate`` is given for; the rate used is scaled
            linearly to the (global) batch size. None: used as given.
        step_boundaries: ``schedule="step"``: fractions of training where the rate is divided
            by 10 (None: 0.5 and 0.75; the ``imagenet-step`` recipe: epochs 30, 60, 80 of 90).
        worker_timeout: multi-worker: seconds to wait for every task of ``TF_CONFIG`` to start
            before stopping with an error naming the missing ones.

    Raises:
        TypeError, ValueError: on construction, for a bad value (``keras_resnet.checks``'
            messages), before any data is loaded.
    """

    model: str = DEFAULT_MODEL
    data: str = DEFAULT_DATA
    epochs: int = DEFAULT_EPOCHS
    batch_size: int | None = None
    learning_rate: float = DEFAULT_LEARNING_RATE
    momentum: float = DEFAULT_MOMENTUM
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    schedule: str = DEFAULT_SCHEDULE
    warmup: bool = False
    warmup_steps: int = 0
    label_smoothing: float = DEFAULT_LABEL_SMOOTHING
    initializer: object = DEFAULT_INITIALIZER
    precision: str = DEFAULT_PRECISION
    jit_compile: object = "auto"
    early_stopping: int | None = None
    out_dir: str = DEFAULT_RUNS_DIR
    export_dir: str | None = DEFAULT_EXPORT_DIR
    name: str | None = None
    seed: int = DEFAULT_SEED
    deterministic: bool = DEFAULT_DETERMINISTIC
    verbose: object = "auto"
    model_options: dict = dataclasses.field(default_factory=dict)
    data_options: dict = dataclasses.field(default_factory=dict)
    recipe: str = DEFAULT_RECIPE
    warmup_epochs: int = 0
    backup_every_steps: int | None = None
    weights: str | None = None
    fine_tune_from: object = None
    head_epochs: int | None = None
    head_lr: float = DEFAULT_HEAD_LEARNING_RATE
    fine_tune_lr: float = DEFAULT_FINE_TUNE_LEARNING_RATE
    strategy: str = DEFAULT_STRATEGY
    sync_bn: bool = False
    lr_batch_size: int | None = None
    step_boundaries: tuple | None = None
    worker_timeout: float = constants.DEFAULT_TRAIN_WORKER_TIMEOUT

    def __post_init__(self):
        self._check_numbers()
        self._check_choices()
        self._check_fine_tuning()
        self._check_paths()

    def _check_numbers(self):
        checks.positive_int(self.epochs, "epochs")
        checks.optional_positive_int(self.batch_size, "batch_size")
        checks.positive_number(self.learning_rate, "learning_rate", example="0.1")
        checks.positive_number(self.worker_timeout, "worker_timeout", example="600")
        checks.optional_positive_int(self.early_stopping, "early_stopping")
        checks.positive_int(self.seed, "seed", minimum=0)
        checks.positive_int(self.warmup_steps, "warmup_steps", minimum=0)
        checks.positive_int(self.warmup_epochs, "warmup_epochs", minimum=0)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be less than epochs ({self.epochs}); got "
                             f"{self.warmup_epochs} (recipe {self.recipe!r}); pass a smaller "
                             "warmup_epochs (--warmup-epochs) or more epochs")
        checks.optional_positive_int(self.backup_every_steps, "backup_every_steps")

    def _check_choices(self):
        from keras_resnet.modeling.block_options import resolve_initializer
        from keras_resnet.modeling.recipe import check_compile_arguments

        check_compile_arguments(momentum=self.momentum, weight_decay=self.weight_decay,
                                label_smoothing=self.label_smoothing,
                                jit_compile=self.jit_compile)
        checks.one_of(self.schedule, "schedule", SCHEDULES)
        from keras_resnet.training.recipe_options import check_step_boundaries

        object.__setattr__(self, "step_boundaries",
                           check_step_boundaries(self.step_boundaries, self.schedule))
        for argument in ("warmup_steps", "warmup_epochs"):
            if getattr(self, argument) and self.schedule not in ("cosine", "step"):
                raise ValueError(f"{argument} must be 0 unless schedule is 'cosine' or 'step'; "
                                 f"got "
                                 f"{getattr(self, argument)!r} with schedule {self.schedule!r}")
        if self.warmup_steps and self.warmup_epochs:
            raise ValueError(f"give warmup_steps or warmup_epochs, not both; got "
                             f"warmup_steps={self.warmup_steps}, "
                             f"warmup_epochs={self.warmup_epochs}")
        from keras_resnet.training.recipe_options import recipe_values

        recipe_values(self.recipe)
        checks.one_of(self.precision, "precision", PRECISIONS)
        checks.boolean(self.warmup, "warmup")
        checks.boolean(self.deterministic, "deterministic")
        checks.one_of(self.verbose, "verbose", VERBOSITIES)
        checks.one_of(self.strategy, "strategy", STRATEGIES)
        checks.boolean(self.sync_bn, "sync_bn")
        checks.optional_positive_int(self.lr_batch_size, "lr_batch_size")
        resolve_initializer(self.initializer, "initializer")
        for argument in ("model_options", "data_options"):
            if not isinstance(getattr(self, argument), dict):
                raise TypeError(f"{argument} must be a dict of keyword options; got "
                                f"{getattr(self, argument)!r}")
        if not isinstance(self.data, str):
            raise TypeError(f"data must be a data set name or folder (a str); got {self.data!r}")

    def _check_fine_tuning(self):
        if self.weights is None:
            for argument in ("fine_tune_from", "head_epochs"):
                if getattr(self, argument) is not None:
                    raise ValueError(f"{argument} fine-tunes pretrained weights: it needs "
                                     f"weights=PATH; got {argument}="
                                     f"{getattr(self, argument)!r} without weights")
            return
        if not isinstance(self.weights, str):
            raise TypeError(f"weights must be a weights file path (a str) or None; "
                            f"got {self.weights!r}")
        if not os.path.isfile(self.weights):
            raise ValueError(f"weights must be an existing weights file; {self.weights!r} "
                             "does not exist")
        if self.fine_tune_from is not None and not isinstance(self.fine_tune_from, (str, int)):
            raise TypeError(f"fine_tune_from must be a stage name ('conv4') or number (4); "
                            f"got {self.fine_tune_from!r}")
        most = self.epochs - (self.fine_tune_from is not None)
        if most < 1:
            raise ValueError(f"epochs must be at least 2 with fine_tune_from (one epoch per "
                             f"phase); got {self.epochs}")
        checks.optional_positive_int(self.head_epochs, "head_epochs", maximum=most)
        checks.positive_number(self.head_lr, "head_lr", example="1e-3")
        checks.positive_number(self.fine_tune_lr, "fine_tune_lr", example="1e-4")

    @property
    def phase_epochs(self) -> tuple:
        """With ``weights``: ``(head epochs, fine-tune epochs)``, summing to ``epochs``."""
        if self.fine_tune_from is None:
            return (self.head_epochs or self.epochs, 0)
        head = self.head_epochs or max(1, self.epochs // 2)
        return (head, self.epochs - head)

    def _check_paths(self):
        if self.name is not None:
            checks.name(self.name, "name")
        checks.writable_dir(self.out_dir, "out_dir")
        if self.name is not None:
            checks.writable_dir(self.run_dir, "run directory")
        if self.export_dir is not None:
            checks.writable_dir(self.export_dir, "export_dir")

    @property
    def run_dir(self) -> str:
        """``out_dir/name``."""
        return os.path.join(os.fspath(self.out_dir), self.name)

    def to_dict(self) -> dict:
        """The fields as JSON-ready values (what ``metrics.json`` records)."""
        values = dataclasses.asdict(self)
        for key in ("out_dir", "export_dir"):
            if values[key] is not None:
                values[key] = os.fspath(values[key])
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from ``to_dict``'s output (e.g. ``metrics.json``'s ``"config"``).

        Raises:
            TypeError: for a key that is not a field.
        """
        fields = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise TypeError(f"TrainConfig has no field(s) {', '.join(unknown)}; fields: "
                            f"{', '.join(sorted(fields))}")
        return cls(**values)


def default_batch_size(config: TrainConfig) -> int:
    """The batch size data is loaded at: the configured one, else ``DEFAULT_BATCH_SIZE``."""
    return config.batch_size or DEFAULT_BATCH_SIZE


def make_reproducible(seed: int, deterministic: bool) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras; with ``deterministic``, also makes TF's ops
    deterministic (``tf.config.experimental.enable_op_determinism``).

    Op determinism is process-global and TensorFlow offers no public way to turn it off again:
    once a run asked for it, later runs in the same process are deterministic too.

    Args:
        seed: the seed (``keras.utils.set_random_seed``).
        deterministic: enable op determinism.
    """
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def is_torch_checkpoint(path) -> bool:
    """Whether ``path`` names a torchvision / timm checkpoint (by its extension)."""
    from keras_resnet.constants import TORCH_CHECKPOINT_EXTENSIONS

    return path is not None and os.fspath(path).lower().endswith(TORCH_CHECKPOINT_EXTENSIONS)
