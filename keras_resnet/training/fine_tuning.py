"""Fine-tuning: the two-phase ``fine_tune`` (library) and ``train(weights=PATH)`` (a run).

Fine-tuning a pretrained ResNet in two phases, as Keras' transfer-learning guide recommends.

Phase 1 trains the new head alone: every other layer is frozen, and a frozen
``BatchNormalization`` layer runs in inference mode in Keras 3, so its moving statistics (the
pretrained ones) neither move nor get replaced by the new data's batch statistics (the classic
pitfall, keras-team/keras#9214). Phase 2, optional, unfreezes the convolutions of the top stages
from ``fine_tune_from`` on and trains them with the head at a lower learning rate; the BN layers
stay in inference mode unless ``train_batch_norm=True``.

``train(weights=PATH)``: fine-tune pretrained weights in one run directory.

The model: a torchvision / timm checkpoint builds its own network
(``keras_resnet.modeling.checkpoints.from_torch_checkpoint`` with torchvision's input normalization inside,
a new head for the data's classes); any other weights file is loaded into the named network
``build_model`` makes (``keras_resnet.modeling.weight_files.load_weights``). Training is
``keras_resnet.training.fine_tuning.fine_tune``'s two phases, each the run's one resuming
``fit`` (``keras_resnet.training.fitting``) with the run's callbacks
(history, curves, best checkpoint, TensorBoard, ``BackupAndRestore``); the evaluation, the
saved model, ``metrics.json`` and the export are those of every run.

Resuming: each phase backs up into its own directory (``backup/head``, ``backup/fine_tune``:
the phases' optimizers differ), and the head's final weights are kept as ``head.weights.h5``
until the run ends, so a run killed in phase 2 does not train the head again.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras

from keras_resnet import checks
from keras_resnet.modeling.torch_weights import HEAD_LAYER
from keras_resnet.modeling.stats import leaf_layers
from keras_resnet import files
from keras_resnet.modeling.recipe import build_model
from keras_resnet.training.config import is_torch_checkpoint
from keras_resnet.training.fitting import fit, run_callbacks
from keras_resnet.training.outcome import finish_run
from keras_resnet.training.run_files import RunFiles

logger = logging.getLogger(__name__)

_STAGE = re.compile(r"^(conv\d+)_block\d+_")
_LAYER_STAGE = re.compile(r"^conv(\d+)_")


@dataclasses.dataclass
class FineTuneResult:
    """The histories of both phases.

    Attributes:
        head: ``keras.callbacks.History`` of phase 1 (the head alone).
        fine_tune: ``History`` of phase 2 (top stages unfrozen), or None if it did not run.
    """

    head: keras.callbacks.History | None
    fine_tune: keras.callbacks.History | None = None


def model_stages(model: keras.Model) -> tuple[str, ...]:
    """The residual stages of a keras_resnet model, bottom to top (``conv2`` ... ``conv5``)."""
    stages = []
    for layer in leaf_layers(model):
        match = _STAGE.match(layer.name)
        if match and match[1] not in stages:
            stages.append(match[1])
    return tuple(stages)


def _stage_name(model, fine_tune_from):
    stages = model_stages(model)
    name = f"conv{fine_tune_from}" if isinstance(fine_tune_from, int) and \
        not isinstance(fine_tune_from, bool) else fine_tune_from
    if name not in stages:
        raise ValueError(f"fine_tune_from must be a stage of model {model.name!r} "
                         f"({', '.join(stages)}, or its number); got {fine_tune_from!r}")
    return name


def freeze_backbone(model: keras.Model, unfreeze_from: str | None = None,
                    train_batch_norm: bool = False) -> list[str]:
    """Freezes every layer but the head (and the stages from ``unfreeze_from`` on).

    Args:
        model: a keras_resnet model with a ``predictions`` head.
        unfreeze_from: None (head only) or a stage name (``"conv4"``): that stage and everything
            above it train too.
        train_batch_norm: let the unfrozen stages' BN layers train (batch statistics) too.

    Returns:
        The names of the layers left trainable.
    """
    first = None if unfreeze_from is None else int(unfreeze_from[len("conv"):])
    trainable = []
    for layer in leaf_layers(model):
        match = _LAYER_STAGE.match(layer.name)
        # Layers outside every stage and the stem are the top: post_bn of a pre-activation net.
        above = first is not None and (int(match[1]) >= first if match else True)
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        train = layer.name == HEAD_LAYER or (above and (train_batch_norm or not is_bn))
        layer.trainable = train
        if train and layer.weights:
            trainable.append(layer.name)
    return trainable


def _loss(model):
    activation = getattr(model.get_layer(HEAD_LAYER), "activation", None)
    logits = getattr(activation, "__name__", "") != "softmax"
    return keras.losses.SparseCategoricalCrossentropy(from_logits=logits)


def _check_arguments(model, head_epochs, fine_tune_from, fine_tune_epochs, head_lr,
                     fine_tune_lr, train_batch_norm, batch_size, optimizer, initial_epoch):
    """Validates ``fine_tune``'s arguments; returns (stage or None, total epochs, start epoch)."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model; got {model!r}")
    if HEAD_LAYER not in {layer.name for layer in model.layers}:
        raise ValueError(f"model {model.name!r} has no {HEAD_LAYER!r} head to fine-tune; build "
                         "it with include_top=True and classes=N")
    head_epochs = checks.positive_int(head_epochs, "head_epochs")
    fine_tune_epochs = checks.positive_int(fine_tune_epochs, "fine_tune_epochs", minimum=0)
    head_lr = checks.positive_number(head_lr, "head_lr")
    fine_tune_lr = checks.positive_number(fine_tune_lr, "fine_tune_lr")
    checks.boolean(train_batch_norm, "train_batch_norm")
    checks.positive_int(batch_size, "batch_size")
    stage = None if fine_tune_from is None else _stage_name(model, fine_tune_from)
    if (stage is None) != (fine_tune_epochs == 0):
        raise ValueError("fine_tune_from and fine_tune_epochs go together: phase 2 needs a stage "
                         f"and epochs >= 1; got fine_tune_from={fine_tune_from!r}, "
                         f"fine_tune_epochs={fine_tune_epochs}")
    total = head_epochs + fine_tune_epochs
    initial_epoch = checks.positive_int(initial_epoch, "initial_epoch", minimum=0,
                                        maximum=total - 1)
    if optimizer is not None and not callable(optimizer):
        raise TypeError(f"optimizer must be None or a callable learning_rate -> optimizer; got "
                        f"{optimizer!r}")
    return stage, total, initial_epoch


def fine_tune(model: keras.Model, train_data: Any, val_data: Any = None, *, head_epochs: int,
              fine_tune_from: str | int | None = None, fine_tune_epochs: int = 0,
              head_lr: float = 1e-3, fine_tune_lr: float = 1e-4, train_batch_norm: bool = False,
              batch_size: int = 32, callbacks: Sequence[keras.callbacks.Callback] = (),
              optimizer: Callable[[float], keras.optimizers.Optimizer] | None = None,
              initial_epoch: int = 0) -> FineTuneResult:
    """Trains a pretrained model on a new task: the head first, then optionally the top stages.

    Both phases use Adam (as Keras' guide does; see ``optimizer``) and sparse categorical
    cross-entropy (from logits when the head has no softmax) with an ``accuracy`` metric; phase
    2's epochs are numbered after phase 1's, so the two histories form one curve, and a run
    resumed at ``initial_epoch`` skips what is done (phase 1 entirely past ``head_epochs``).

    Args:
        model: a keras_resnet model with a ``predictions`` head, e.g. from
            ``from_torch_checkpoint(path, classes=N)``.
        train_data: a ``tf.data.Dataset`` of ``(images, labels)`` batches, or an
            ``(images, labels)`` tuple of arrays.
        val_data: validation data in the same form, or None.
        head_epochs: epochs of phase 1 (backbone frozen, BN in inference mode).
        fine_tune_from: None, or the lowest stage to unfreeze in phase 2 (``"conv4"`` or 4).
        fine_tune_epochs: epochs of phase 2; needs ``fine_tune_from``.
        head_lr: Adam learning rate of phase 1.
        fine_tune_lr: Adam learning rate of phase 2 (lower: the pretrained features move little).
        train_batch_norm: let the unfrozen stages' BN layers train in phase 2.
        batch_size: batch size for array inputs.
        callbacks: Keras callbacks for both phases.
        optimizer: None (Adam) or a callable ``learning_rate -> keras optimizer``, called once
            per phase (e.g. ``lambda lr: keras.optimizers.SGD(lr, momentum=0.9)``).
        initial_epoch: the epoch to start from when resuming (0 .. head_epochs +
            fine_tune_epochs - 1).

    Returns:
        A ``FineTuneResult`` with both histories (``head`` is None when a resumed run starts
        after phase 1); the model is left as phase 2 (or 1) left it.

    Raises:
        ValueError: for a stage the model does not have, a model without a head or a bad number,
            before any training.
        TypeError: for an argument of the wrong type.
    """
    stage, total, initial_epoch = _check_arguments(
        model, head_epochs, fine_tune_from, fine_tune_epochs, head_lr, fine_tune_lr,
        train_batch_norm, batch_size, optimizer, initial_epoch)
    make = optimizer or keras.optimizers.Adam
    head = tuned = None
    if initial_epoch < head_epochs:
        freeze_backbone(model)
        model.compile(optimizer=make(head_lr), loss=_loss(model), metrics=["accuracy"])
        logger.info("phase 1: training the head of %r for %d epochs", model.name,
                    head_epochs - initial_epoch)
        head = fit(model, train_data, val_data, epochs=head_epochs, initial_epoch=initial_epoch,
                   batch_size=batch_size, callbacks=callbacks, verbose=0)
    if stage is not None:
        trainable = freeze_backbone(model, stage, train_batch_norm)
        model.compile(optimizer=make(fine_tune_lr), loss=_loss(model), metrics=["accuracy"])
        start = max(initial_epoch, head_epochs)
        logger.info("phase 2: training %d layers from %s up for %d epochs at learning rate %g",
                    len(trainable), stage, total - start, fine_tune_lr)
        tuned = fit(model, train_data, val_data, epochs=total, initial_epoch=start,
                    batch_size=batch_size, callbacks=callbacks, verbose=0)
    return FineTuneResult(head=head, fine_tune=tuned)



def pretrained_model(config, model, dataset) -> keras.Model:
    """The network a fine-tuning run starts from, its weights loaded.

    Raises:
        ValueError: weights that do not fit, or ``fine_tune_from`` naming a stage the model
            does not have (before any training).
    """
    from keras_resnet.modeling.checkpoints import from_torch_checkpoint
    from keras_resnet.modeling.weight_files import load_weights

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
            try:
                fine_tune(net, dataset.train, dataset.validation, **common,
                          callbacks=_callbacks(config, dataset, run_files,
                                               resumed_from is not None, backups["head"], 1))
            except BaseException:
                run_files.discard_untrained()
                raise
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
    # finish_run removes the backups and the head's weights once the run is saved
    return finish_run(config, net, dataset, run_files, resumed_from=resumed_from,
                      started=started, **extra)


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