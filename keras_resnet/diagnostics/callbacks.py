"""Keras callbacks: gradient flow during ``fit`` and the training error on the whole set."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import csv
import os

import keras
import numpy as np
import tensorflow as tf

from keras_resnet import checks
from keras_resnet.diagnostics.measure import _check_batch, _resolve_loss, gradient_flow


class GradientFlowLogger(keras.callbacks.Callback):
    """Records per-unit gradient norms and branch/shortcut ratios during ``fit``.

    Every ``every_n_batches`` training batches (and at the end of every epoch) it measures
    ``gradient_flow`` on a fixed batch and appends one row per unit to ``csv_path``
    (``epoch, step, depth, unit, gradient_norm, branch_ratio``) and writes TensorBoard scalars
    ``gradient_norm/{unit}`` and ``branch_ratio/{unit}`` under ``log_dir``. The latest
    measurement is kept in ``self.history`` (a list of ``(step, rows)``).

    Args:
        x: a fixed batch of training inputs (a few dozen examples are enough).
        y: its targets.
        loss: a Keras loss name or callable; None uses the loss the model was compiled with.
        csv_path: CSV file to write, or None.
        log_dir: TensorBoard log directory, or None.
        every_n_batches: also measure every this many batches; None measures per epoch only.
    """

    def __init__(self, x: Any, y: Any, loss: str | Callable | None = None,
                 csv_path: str | os.PathLike | None = None,
                 log_dir: str | os.PathLike | None = None,
                 every_n_batches: int | None = None) -> None:
        super().__init__()
        checks.optional_positive_int(every_n_batches, "every_n_batches")
        if loss is not None:
            _resolve_loss(loss)
        self.x, self.y = np.asarray(x, dtype="float32"), np.asarray(y)
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"y must have one target per example of x ({self.x.shape[0]}); "
                             f"got {self.y.shape[0]}")
        self.loss, self.csv_path, self.log_dir = loss, csv_path, log_dir
        self.every_n_batches = every_n_batches
        self.history = []
        self._writer = None
        self._epoch = 0
        self._step = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        _check_batch(self.model, self.x, self.y)
        if self.loss is None:
            self.loss = getattr(self.model, "loss", None)
            if self.loss is None:
                raise ValueError("GradientFlowLogger needs loss=... when the model was compiled "
                                 "without a loss")
        if self.csv_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.csv_path)), exist_ok=True)
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(["epoch", "step", "depth", "unit", "gradient_norm",
                                        "branch_ratio"])
        if self.log_dir:
            self._writer = tf.summary.create_file_writer(os.fspath(self.log_dir))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._step += 1
        if self.every_n_batches and self._step % self.every_n_batches == 0:
            self._measure()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.history or self.history[-1][0] != self._step:
            self._measure()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._writer is not None:
            self._writer.close()

    def _measure(self):
        rows = gradient_flow(self.model, self.x, self.y, self.loss)
        self.history.append((self._step, rows))
        if self.csv_path:
            with open(self.csv_path, "a", newline="") as f:
                writer = csv.writer(f)
                for row in rows:
                    ratio = "" if row["branch_ratio"] is None else f"{row['branch_ratio']:.6g}"
                    writer.writerow([self._epoch, self._step, row["depth"], row["unit"],
                                     f"{row['gradient_norm']:.6g}", ratio])
        if self._writer is not None:
            with self._writer.as_default(step=self._step):
                for row in rows:
                    tf.summary.scalar(f"gradient_norm/{row['unit']}", row["gradient_norm"])
                    if row["branch_ratio"] is not None:
                        tf.summary.scalar(f"branch_ratio/{row['unit']}", row["branch_ratio"])
            self._writer.flush()


class TrainingError(keras.callbacks.Callback):
    """Measures the error on the (un-augmented) training set at the end of every epoch.

    Unlike the running accuracy ``fit`` reports (averaged over an epoch of changing weights, in
    training mode), this evaluates the model as it stands, in inference mode, on every training
    example. The values go into the epoch logs as ``train_error`` and into ``self.errors``.

    Args:
        data: a ``tf.data.Dataset`` of ``(images, integer labels)`` batches (without
            augmentation), or a tuple ``(images, labels)`` of arrays.
        batch_size: evaluation batch size for arrays.
    """

    def __init__(self, data: tf.data.Dataset | tuple, batch_size: int = 512) -> None:
        super().__init__()
        if isinstance(data, tuple):
            if len(data) != 2 or len(data[0]) != len(data[1]):
                raise ValueError("data must be (images, labels) with one label per image; got "
                                 f"a tuple of {len(data)} items")
            data = tf.data.Dataset.from_tensor_slices(
                (np.asarray(data[0], "float32"), np.asarray(data[1]))).batch(batch_size)
        elif not isinstance(data, tf.data.Dataset):
            raise TypeError(f"data must be a tf.data.Dataset or (images, labels); got "
                            f"{type(data).__name__}")
        self.data = data
        self.errors = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        wrong = total = 0
        for images, labels in self.data:
            predicted = np.argmax(self.model.predict_on_batch(images), axis=-1)
            labels = np.asarray(labels).reshape(predicted.shape)
            wrong += int(np.sum(predicted != labels))
            total += len(labels)
        error = wrong / max(total, 1)
        self.errors.append(error)
        if logs is not None:
            logs["train_error"] = error


# ----------------------------------------------------------------------------- plots
