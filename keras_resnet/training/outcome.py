"""The end of a run: evaluate, save, record, then the optional steps (plot, export).

The order keeps a trained run whole whatever fails after training: ``model.keras`` and
``metrics.json`` are written first, and only then is the backup removed (until then a re-run
resumes instead of training again); the curves and the export come last, each guarded, so that
their failure is one line and leaves the run's files in place (``keras-resnet export
RUN/model.keras`` finishes an export that failed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shlex
import shutil
import time

import keras

from keras_resnet import files
from keras_resnet.training.history import plot_history, read_history

logger = logging.getLogger(__name__)

# TFRecord shards without a test-* split evaluate on the validation split (keras_resnet.data)
_VALIDATION_AS_TEST = "validation (TFRecord data has no test split)"


@dataclasses.dataclass
class TrainResult:
    """What ``train`` produced: the model, the run's files and its metrics.

    Attributes:
        model: the trained ``keras.Model`` (final weights).
        run_dir: ``runs/<name>``.
        model_path, best_model_path, history_path, curves_path, metrics_path, logs_dir: the
            files in it (``best.keras`` is the best-validation checkpoint).
        export_path: the SavedModel version directory, or None when not exported.
        metrics: the content of ``metrics.json`` (``metrics["config"]`` is the ``TrainConfig``).
        history: per-epoch lists read from ``history.csv`` (every epoch, resumed runs too).
    """

    model: object
    run_dir: str
    model_path: str
    best_model_path: str
    history_path: str
    curves_path: str
    metrics_path: str
    logs_dir: str
    export_path: str | None
    metrics: dict
    history: dict


class ExportFailedError(ValueError):
    """The run is trained and saved, but its export failed (the message says how to redo it)."""


def finish_run(config, net, dataset, run_files, *, resumed_from, started, history=None,
               test=None, distribution=None, **extra):
    """Evaluates, saves and records a fitted run, then plots and exports it.

    Only the chief of a multi-worker run (every single-machine run is its own chief) writes
    the run directory and the export.

    Returns:
        The run's ``TrainResult``.

    Raises:
        ValueError: the loss became NaN (nothing is saved, the backup is removed).
        ExportFailedError: the export failed; the run's files are written and complete.
    """
    from keras_resnet.data import explain_errors

    history = read_history(run_files.path("history")) if history is None else history
    chief = distribution is None or distribution["is_chief"]
    losses = history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        shutil.rmtree(run_files.path("backup"), ignore_errors=True)  # a re-run starts anew
        raise ValueError(f"training diverged (loss {losses[-1] if losses else 'missing'} at "
                         f"epoch {len(losses)}); lower learning_rate (got "
                         f"{config.learning_rate}) or use warmup=True. Nothing was saved.")
    if test is None:
        with explain_errors(dataset):
            test = net.evaluate(dataset.test, verbose=0, return_dict=True)
    metrics = _metrics(config, net, dataset, history, test, resumed_from=resumed_from,
                       seconds=time.perf_counter() - started, distribution=distribution,
                       **extra)
    export_path = None
    if chief:
        _save(net, metrics, run_files)
        title = f"{extra.get('model', config.model)} on {dataset.name}"
        _plot(history, run_files.path("curves"), title)
        export_path = _export_or_explain(net, config, dataset, run_files)
        if export_path is not None:
            metrics["export_path"] = export_path
            files.write_text(run_files.path("metrics"), json.dumps(metrics, indent=2))
    return TrainResult(model=net, run_dir=config.run_dir, model_path=run_files.path("model"),
                       best_model_path=run_files.path("best"),
                       history_path=run_files.path("history"),
                       curves_path=run_files.path("curves"),
                       metrics_path=run_files.path("metrics"), logs_dir=run_files.path("logs"),
                       export_path=export_path, metrics=metrics, history=history)


def _save(net, metrics, run_files):
    """``model.keras`` and ``metrics.json``; then the backup (and fine-tuning's finished head)
    go: the run is complete."""
    with files.atomic_path(run_files.path("model")) as temporary:
        net.save(temporary)
    files.write_text(run_files.path("metrics"), json.dumps(metrics, indent=2))
    shutil.rmtree(run_files.path("backup"), ignore_errors=True)
    head_weights = run_files.phase_markers()[-1]
    if os.path.exists(head_weights):
        os.remove(head_weights)


def _plot(history, path, title):
    try:
        plot_history(history, path, title=title)
    except Exception as error:  # noqa: BLE001 -- an optional file: the run stands without it
        logger.warning("curves not written to %s: %s", path, _one_line(error))


def _export_or_explain(net, config, dataset, run_files):
    """The export's path; on failure one line saying that the run is saved and how to export
    it (``keras-resnet export``)."""
    try:
        return _export(net, config, dataset, run_files.path("model"))
    except Exception as error:  # noqa: BLE001 -- whatever failed, the run's files stay
        labels = os.path.join(config.run_dir, "labels.txt")
        files.write_text(labels, "".join(f"{name}\n" for name in dataset.class_names))
        command = " ".join(["keras-resnet export", shlex.quote(run_files.path("model")),
                            "--name", shlex.quote(config.name), "--out",
                            shlex.quote(os.fspath(config.export_dir)), "--labels",
                            shlex.quote(labels)])
        if dataset.crop_fraction not in (None, 1.0):
            command += f" --crop-fraction {dataset.crop_fraction:g}"
        raise ExportFailedError(
            f"the run is trained and saved in {config.run_dir} (model.keras, metrics.json), "
            f"but its export to {config.export_dir} failed: {_one_line(error)}; export it with "
            f"`{command}`") from None


def _one_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def test_split_name(dataset) -> str:
    """The split ``test_accuracy`` was measured on: ``"test"``, or the validation split of
    TFRecord shards without ``test-*`` shards (``keras_resnet.data`` tests on it then)."""
    from keras_resnet.data.tfrecord import find_shards

    name = dataset.name
    if not isinstance(name, (str, os.PathLike)) or not os.path.isdir(name):
        return "test"
    shards = find_shards(os.fspath(name))
    if "train" in shards and "test" not in shards and "validation" in shards:
        return _VALIDATION_AS_TEST
    return "test"


def _metrics(config, net, dataset, history, test, *, resumed_from, seconds,
             warmup_ended_at_step=None, **extra):
    """The content of ``metrics.json``: the results and data sizes, and the run's
    ``TrainConfig`` once (``"config"``)."""
    return {
        "model": config.model, "data": dataset.name,
        "test_accuracy": float(test["accuracy"]), "test_loss": float(test["loss"]),
        "test_split": test_split_name(dataset),
        "parameters": int(net.count_params()),
        "trainable_parameters": int(sum(math.prod(v.shape) for v in net.trainable_weights)),
        "epochs": len(history["loss"]), "resumed_from_epoch": resumed_from,
        "wall_time_seconds": round(seconds, 2),
        "final_train_accuracy": history["accuracy"][-1],
        "best_validation_accuracy": max(history["val_accuracy"]) if "val_accuracy" in history
        else None,
        "train_size": dataset.train_size, "validation_size": dataset.validation_size,
        "test_size": dataset.test_size, "batch_size": dataset.batch_size,
        "warmup_ended_at_step": warmup_ended_at_step, "export_path": None,
        "keras_version": keras.__version__, "backend": keras.backend.backend(),
        "config": config.to_dict(), **extra,
    }


def _export(model, config, dataset, model_path=None):
    if config.export_dir is None:
        return None
    if keras.backend.backend() != "tensorflow":
        from keras_resnet.training.tf_export import export_in_tensorflow

        return export_in_tensorflow(model_path, config.export_dir, name=config.name,
                                    class_names=list(dataset.class_names),
                                    crop_fraction=dataset.crop_fraction)
    from keras_resnet.export import export_saved_model

    # serving_bytes applies the data's own evaluation crop: served = evaluated
    return os.fspath(export_saved_model(model, base_dir=config.export_dir, name=config.name,
                                        class_names=list(dataset.class_names),
                                        crop_fraction=dataset.crop_fraction))
