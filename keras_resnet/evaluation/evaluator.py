"""``evaluate``: stream a split through a model batch by batch and write a report directory."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from typing import TYPE_CHECKING

import keras
import numpy as np

from keras_resnet import checks, files
from keras_resnet.evaluation import grad_cam, pictures, report, sources
from keras_resnet.evaluation.metrics import StreamingMetrics

if TYPE_CHECKING:
    from keras_resnet.data import Dataset

logger = logging.getLogger(__name__)


def evaluate(model: str | os.PathLike | keras.Model, data: str | os.PathLike | Dataset | None = None, *,
             split: str = "test", out_dir: str | os.PathLike | None = None,
             batch_size: int | None = None,
             mistakes: int = 16, server: str | None = None, served_model: str | None = None,
             grpc: str | None = None, verbose: int = 1) -> dict:
    """Evaluates a model on a data split and writes a report directory.

    The split streams through the model one batch at a time; memory holds fixed-size sums
    (confusion counts, calibration bins, summed loss) and the ``mistakes`` most confident
    mistakes, whatever the split's size. The directory (``metrics.json``, ``report.html`` and
    the PNGs) is written beside its final place and renamed onto it, replacing an earlier one.

    Args:
        model: a ``.keras`` file, a run directory (``runs/NAME`` with ``model.keras`` and the
            ``metrics.json`` naming its data) or a ``keras.Model``.
        data: what ``keras_resnet.data.load_dataset`` takes (``"digits"``, a folder, shards) or
            a ``Dataset``; default: the run's data, with its options and seed.
        split: ``"test"`` or ``"validation"``.
        out_dir: the report directory (default ``RUN/evaluation``, or ``<file>-evaluation``
            beside a ``.keras`` file; required for a ``keras.Model``).
        batch_size: images per batch (default: the run's, else load_dataset's).
        mistakes: how many of the most confident mistakes the gallery shows.
        server: a TF Serving (or ``keras-resnet serve``) REST URL: each batch is also sent to
            ``served_model`` and the largest difference between served and local probabilities
            is reported.
        served_model: the served model's name (default: the run's or file's name).
        grpc: ``host:port`` of the server's gRPC API, used instead of REST.
        verbose: 1 shows a ``keras.utils.Progbar``, 2 one line at the end (for logs that are
            not a terminal), 0 nothing.

    Returns:
        The content of ``metrics.json`` with ``out_dir`` added.

    Raises:
        TypeError, ValueError, FileNotFoundError: a bad argument, before anything loads.
    """
    checks.one_of(split, "split", sources.SPLITS)
    mistakes = checks.positive_int(mistakes, "mistakes", minimum=0, maximum=256)
    checks.one_of(verbose, "verbose", (0, 1, 2))
    source = sources.resolve(model, data, out_dir, batch_size)
    if (grpc or served_model) and server is None:
        raise ValueError(f"grpc and served_model need server=URL; got grpc={grpc!r}, "
                         f"served_model={served_model!r}")
    comparison = None
    if server is not None:
        from keras_resnet.evaluation.served import ServedComparison

        comparison = ServedComparison(server, served_model or source.name, grpc)
    net = model if source.model_path is None else keras.models.load_model(
        source.model_path, compile=False)
    dataset, pipeline = sources.load_split(source, split)
    head = _head(net)
    started = time.perf_counter()
    sums = _stream(net, pipeline, dataset, split, head, mistakes, comparison, verbose)
    seconds = time.perf_counter() - started
    record = {"model": source.model_path or net.name, "data": dataset.name, "split": split,
              "class_names": [str(c) for c in dataset.class_names],
              **sums.summary(dataset.class_names),
              "server": comparison.summary() if comparison else None,
              "seconds": round(seconds, 3), "images_per_second": round(sums.count / seconds, 1),
              "backend": keras.backend.backend()}
    _write(record, sums.mistakes(), head, dataset.class_names, source.out_dir)
    return {**record, "out_dir": source.out_dir}


def _head(net):
    try:
        return grad_cam.split_head(net)
    except ValueError as error:
        logger.warning("no Grad-CAM heat maps: %s", error)
        return None


def _stream(net, pipeline, dataset, split, head, mistakes, comparison, verbose):
    sums = StreamingMetrics(dataset.num_classes, mistakes)
    size = getattr(dataset, f"{split}_size", None)
    steps = math.ceil(size / dataset.batch_size) if size else None
    progress = keras.utils.Progbar(steps, verbose=verbose, unit_name="batch")
    activation = head.activation if head is not None else "softmax"
    done = 0
    for images, labels in pipeline:
        images, labels = np.asarray(images), np.asarray(labels)
        if labels.ndim == 2:  # one-hot labels (a run trained with mixup/cutmix)
            labels = labels.argmax(axis=-1)
        probabilities = grad_cam.probabilities_from(net.predict_on_batch(images), activation)
        sums.update(labels, probabilities, images)
        if comparison is not None:
            sent = comparison.to_send(images)
            local = probabilities if np.array_equal(sent, images) else \
                grad_cam.probabilities_from(net.predict_on_batch(sent.astype("float32")),
                                            activation)
            comparison.compare(sent, local)
        done += 1
        progress.update(done, values=[("accuracy", np.trace(sums.confusion) / sums.count)])
    if steps is None or done < steps:  # Progbar ends its line itself on reaching the target
        progress.update(done, finalize=True)
    return sums


def _write(record, mistakes, head, class_names, out_dir):
    """Writes the report into a temporary directory beside ``out_dir``, then renames it."""
    parent = os.path.dirname(os.path.abspath(out_dir))
    files.remove_stale_temporaries(parent)
    staging = files.make_temp_dir(parent, os.path.basename(out_dir))
    try:
        pngs = _pictures(record, mistakes, head, [str(c) for c in class_names], staging)
        with open(os.path.join(staging, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        report.write_report(record, pngs, os.path.join(staging, "report.html"))
        files.fsync_tree(staging)
        _replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _pictures(record, mistakes, head, names, directory) -> dict:
    """Draws the four PNGs into ``directory``; the gallery's heat maps are the predicted class's
    Grad-CAM."""
    cams = [None] * len(mistakes)
    if head is not None and mistakes:
        cams = head.cam(np.stack([m["image"] for m in mistakes]),
                        [m["predicted"] for m in mistakes])
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    return {
        "confusion": pictures.confusion_matrix(record["confusion_matrix"], names,
                                               path("confusion_matrix.png")),
        "reliability": pictures.reliability_diagram(record["calibration"],
                                                    path("reliability.png")),
        "per_class": pictures.class_accuracy(record["per_class"], path("class_accuracy.png")),
        "gallery": pictures.error_gallery(mistakes, cams, names, path("error_gallery.png")),
    }


def _replace(staging, out_dir):
    """Renames ``staging`` onto ``out_dir``; an earlier report is moved aside, then removed."""
    old = None
    if os.path.exists(out_dir):
        old = staging + ".old"
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    files.fsync_dir(os.path.dirname(os.path.abspath(out_dir)))
    if old:
        shutil.rmtree(old, ignore_errors=True)
