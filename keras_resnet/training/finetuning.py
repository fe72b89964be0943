"""``train(weights=PATH)``: fine-tune pretrained weights in one run directory.

The model: a torchvision / timm checkpoint builds its own network
(``keras_resnet.pretrained.from_torch_checkpoint`` with torchvision's input normalization inside,
a new head for the data's classes); any other weights file is loaded into the named network
``build_model`` makes (``keras_resnet.pretrained.load_weights``). Training is
``keras_resnet.pretrained.fine_tune``'s two phases, each a ``fit`` with the run's callbacks
(history, curves, best checkpoint, TensorBoard, ``BackupAndRestore``); the evaluation, the
saved model, ``metrics.json`` and the export are those of every run.

Resuming: each phase backs up into its own directory (``backup/head``, ``backup/fine_tune``:
the phases' optimizers differ), and the head's final weights are kept as ``head.weights.h5``
until the run ends, so a run killed in phase 2 does not train the head again.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time

import keras

from keras_resnet import files
from keras_resnet.recipe import build_model
from keras_resnet.training.run import is_torch_checkpoint, RunFiles, finish_run, run_callbacks

logger = logging.getLogger(__name__)


def pretrained_model(config, model, dataset) -> keras.Model:
    """The network a fine-tuning run starts from, its weights loaded.

    Raises:
        ValueError: weights that do not fit, or ``fine_tune_from`` naming a stage the model
            does not have (before any training).
    """
    from keras_resnet.pretrained import from_torch_checkpoint, load_weights

    if is_torch_checkpoint(config.weights) and not isinstance(model, keras.Model):
        if config.model_options:
            raise ValueError("model_options do not apply to a torchvision / timm checkpoint "
                             "(it describes its own network); got "
                             f"{config.model_options!r}")
        stem = os.path.basename(config.weights).split(".")[0]
        net = from_torch_checkpoint(config.weights, input_shape=dataset.input_shape,
                                    classes=dataset.num_classes, preprocessing="torch",
                                    name=re.sub(r"[^A-Za-z0-9_]", "_", stem) or "resnet")
    else:
        net = build_model(model if isinstance(model, keras.Model) else config.model, dataset,
                          initializer=config.initializer, **config.model_options)
        load_weights(net, config.weights)
    check_stage(net, config.fine_tune_from)
    return net


def check_stage(model, fine_tune_from):
    """Raises ``ValueError`` unless ``fine_tune_from`` is None or a stage of ``model``."""
    from keras_resnet.pretrained.finetune import model_stages

    if fine_tune_from is None:
        return
    stages = model_stages(model)
    value = fine_tune_from
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    name = f"conv{value}" if isinstance(value, int) and not isinstance(value, bool) else value
    if name not in stages:
        raise ValueError(f"fine_tune_from must be a stage of model {model.name!r} "
                         f"({', '.join(stages)}, or its number); got {fine_tune_from!r}")


def run_fine_tuning(config, model, dataset):
    """Builds the pretrained model, fine-tunes it in two phases and records the run.

    Returns:
        The ``TrainResult``; ``metrics["phase_epochs"]`` is ``[head, fine-tune]``.
    """
    from keras_resnet.data import explain_errors
    from keras_resnet.pretrained import fine_tune

    net = pretrained_model(config, model, dataset)
    started = time.perf_counter()
    run_files = RunFiles(config.run_dir)
    resumed_from = run_files.prepare()
    head_epochs, tune_epochs = config.phase_epochs
    head_weights = os.path.join(config.run_dir, "head.weights.h5")
    backups = {phase: os.path.join(run_files.path("backup"), phase)
               for phase in ("head", "fine_tune")}
    common = dict(head_epochs=head_epochs, head_lr=config.head_lr,
                  fine_tune_lr=config.fine_tune_lr, batch_size=dataset.batch_size)
    with explain_errors(dataset):
        if os.path.exists(head_weights):
            logger.info("Resuming %s: the head is trained (%s)", config.run_dir, head_weights)
            net.load_weights(head_weights)
        else:
            if resumed_from is not None:
                logger.info("Resuming %s in phase 1 (the head)", config.run_dir)
            fine_tune(net, dataset.train, dataset.validation, **common,
                      callbacks=_callbacks(config, dataset, run_files, resumed_from is not None,
                                           backups["head"], 1))
            if tune_epochs:
                with files.atomic_path(head_weights) as temporary:
                    net.save_weights(temporary)
        if tune_epochs:
            fine_tune(net, dataset.train, dataset.validation, **common,
                      fine_tune_from=_stage_value(config.fine_tune_from),
                      fine_tune_epochs=tune_epochs, initial_epoch=head_epochs,
                      callbacks=_callbacks(config, dataset, run_files, True,
                                           backups["fine_tune"], 2))
    extra = {"phase_epochs": [head_epochs, tune_epochs], "pretrained_model": net.name}
    if is_torch_checkpoint(config.weights) and not isinstance(model, keras.Model):
        extra["model"] = net.name  # the checkpoint's network, not config.model
    result = finish_run(config, net, dataset, run_files, resumed_from=resumed_from,
                        started=started, **extra)
    if os.path.exists(head_weights):
        os.remove(head_weights)
    shutil.rmtree(run_files.path("backup"), ignore_errors=True)
    return result


class EpochLog(keras.callbacks.Callback):
    """Logs one line per epoch (``fine_tune`` fits silently): ``epoch 2/3 (phase 2): loss ...``.

    Args:
        epochs: the run's epochs (both phases).
        phase: 1 or 2.
    """

    def __init__(self, epochs, phase):
        super().__init__()
        self.epochs = epochs
        self.phase = phase

    def on_epoch_end(self, epoch, logs=None):
        values = " - ".join(f"{key} {float(value):.4g}" for key, value in (logs or {}).items())
        logger.info("epoch %d/%d (phase %d): %s", epoch + 1, self.epochs, self.phase, values)


def _callbacks(config, dataset, run_files, resuming, backup_dir, phase):
    callbacks = run_callbacks(config, dataset, run_files, resuming, backup_dir)
    if config.verbose != 0:
        callbacks.append(EpochLog(config.epochs, phase))
    return callbacks


def _stage_value(value):
    return int(value) if isinstance(value, str) and value.isdigit() else value
