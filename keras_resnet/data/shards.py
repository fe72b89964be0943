"""``prepare``: a folder with one sub-folder of images per class -> sharded TFRecords.

The records follow TF Model Garden's / the ImageNet-to-TFRecord tools' format
(``keras_resnet.data.tfrecord``), so the shards also work with those tools. Each shard is one job
of a small thread pool: its images are read, checked and (only where TensorFlow's decoders cannot
read them) re-encoded, then the shard is written under a temporary name and renamed, with a small
summary beside it in ``DEST/.prepare/``; a re-run skips every shard whose summary matches the plan.
``dataset.json`` is written last, so a directory with a ``dataset.json`` is complete.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
import os
import threading
import time

import numpy as np

from keras_resnet import checks, constants, files
from keras_resnet.data import folders, tfrecord
from keras_resnet.data.dataset import DataError

log = logging.getLogger(__name__)

STATE_DIR = ".prepare"
# Formats TensorFlow decodes, and the Pillow modes it reads as they are.
_KEPT_FORMATS = {"JPEG": {"RGB", "L"}, "PNG": {"RGB", "L", "RGBA", "LA", "P"},
                 "GIF": {"P", "L", "RGB"}, "BMP": {"RGB", "L", "P"}}


@dataclasses.dataclass
class PrepareReport:
    """What ``prepare`` did.

    Attributes:
        dest: the output directory.
        counts: images written per split.
        shards: shard file names per split.
        skipped: ``(file, reason)`` of every image that could not be decoded.
        reused: shards found finished and not written again.
        reencoded: images stored re-encoded (CMYK, TIFF, WebP, ...) rather than as they were.
        seconds: wall time.
        source_bytes, shard_bytes: total size of the source images and of the shards.
    """

    dest: str
    counts: dict
    shards: dict
    skipped: list
    reused: int
    reencoded: int
    seconds: float
    source_bytes: int
    shard_bytes: int


def _plan(source, seed, validation_split, shards):
    """``{shard name: [(file, label), ...]}`` and the class names; the split comes from ``seed``."""
    class_names, paths, labels = folders.list_images(source, folders.PREPARE_FORMATS)
    _, validation = folders.holdout_sizes(len(paths), 0.0, validation_split)
    train_index, val_index = folders.split_indices(len(paths), seed, (validation,))
    rng = np.random.default_rng(seed + 1)
    plan = {}
    for split, index in (("train", train_index), ("validation", val_index)):
        if not len(index):
            continue
        count = shards if split == "train" else max(
            1, round(shards * validation_split / (1 - validation_split)))
        count = min(count, len(index))
        order = rng.permutation(index)  # each shard mixes classes
        for shard in range(count):
            name = tfrecord.shard_name(split, shard, count)
            plan[name] = [(paths[i], labels[i]) for i in order[shard::count]]
    return class_names, plan


def _target_mode(color_mode):
    return "L" if color_mode == "grayscale" else "RGB"


def _encode(path, color_mode):
    """``(bytes, format, height, width, pixels, reencoded)`` of one image file.

    Raises:
        DataError: the file does not decode (the reason in the message).
    """
    import tensorflow as tf
    from PIL import Image, UnidentifiedImageError

    with open(path, "rb") as stream:
        raw = stream.read()
    channels = 1 if color_mode == "grayscale" else 3
    try:
        with Image.open(io.BytesIO(raw)) as image:
            image_format, mode, (width, height) = image.format, image.mode, image.size
            if mode in _KEPT_FORMATS.get(image_format, ()):
                try:
                    pixels = tf.io.decode_image(raw, channels=channels, expand_animations=False)
                    return raw, image_format, height, width, pixels.numpy(), False
                except tf.errors.OpError as error:
                    if image_format == "JPEG":  # Pillow would repeat the verdict more slowly
                        raise DataError(folders.decoder_reason(error)) from None
            converted = image.convert(_target_mode(color_mode))
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DataError(folders.decoder_reason(error)) from None
    out_format = "JPEG" if image_format == "JPEG" else "PNG"
    buffer = io.BytesIO()
    converted.save(buffer, out_format, **({"quality": 95} if out_format == "JPEG" else {}))
    pixels = np.asarray(converted).reshape(height, width, channels)
    return buffer.getvalue(), out_format, height, width, pixels, True


def _fingerprint(items, class_names, label_offset, color_mode):
    text = json.dumps([[os.fspath(f), int(label)] for f, label in items] +
                      [list(class_names), label_offset, color_mode])
    return hashlib.sha256(text.encode()).hexdigest()


def _write_shard(dest, name, items, class_names, options, progress):
    """Writes one shard (atomically) and its summary; returns the summary."""
    import tensorflow as tf

    label_offset, color_mode = options["label_offset"], options["color_mode"]
    channels = 1 if color_mode == "grayscale" else 3
    summary = {"name": name, "count": 0, "per_class": [0] * len(class_names), "skipped": [],
               "sizes": [], "reencoded": 0, "sum": [0.0] * channels,
               "sum_sq": [0.0] * channels, "pixels": 0,
               "fingerprint": _fingerprint(items, class_names, label_offset, color_mode)}
    with files.atomic_path(os.path.join(dest, name)) as temporary:
        with tf.io.TFRecordWriter(temporary) as writer:
            for path, label in items:
                try:
                    raw, image_format, height, width, pixels, reencoded = _encode(path,
                                                                                  color_mode)
                except DataError as error:
                    summary["skipped"].append([path, str(error)])
                    progress(1)
                    continue
                writer.write(tfrecord.make_example(
                    raw, image_format.lower(), int(label) + label_offset, class_names[label],
                    height, width, os.path.relpath(path, options["source"])))
                _account(summary, label, height, width, pixels, reencoded)
                progress(1)
    files.write_text(os.path.join(dest, STATE_DIR, name + ".json"), json.dumps(summary))
    return summary


def _account(summary, label, height, width, pixels, reencoded):
    summary["count"] += 1
    summary["per_class"][label] += 1
    summary["sizes"].append([height, width])
    summary["reencoded"] += int(reencoded)
    flat = pixels.reshape(-1, pixels.shape[-1]).astype("float64")
    summary["sum"] = list(np.add(summary["sum"], flat.sum(0)))
    summary["sum_sq"] = list(np.add(summary["sum_sq"], (flat ** 2).sum(0)))
    summary["pixels"] += len(flat)


def _finished(dest, name, items, class_names, options):
    """The summary of a shard a previous run finished with the same plan, else None."""
    state = os.path.join(dest, STATE_DIR, name + ".json")
    if not (os.path.isfile(state) and os.path.isfile(os.path.join(dest, name))):
        return None
    try:
        with open(state, encoding="utf-8") as stream:
            summary = json.load(stream)
    except (OSError, ValueError):
        return None
    expected = _fingerprint(items, class_names, options["label_offset"], options["color_mode"])
    return summary if summary.get("fingerprint") == expected else None


def _check(source, dest, shards, validation_split, seed, label_offset, color_mode, strict,
           workers):
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a folder path; got {source!r}")
    source = os.fspath(source)
    if not folders.is_class_folder(source):
        raise ValueError(f"source must be a folder with one sub-folder of images per class; got "
                         f"{source!r}")
    dest = checks.writable_dir(dest, "dest")
    inside = os.path.commonpath([os.path.abspath(dest), os.path.abspath(source)])
    if inside == os.path.abspath(source):
        raise ValueError(f"dest must be outside source (it would become a class folder); got "
                         f"{dest!r} in {source!r}")
    checks.positive_int(shards, "shards", maximum=99999)
    checks.fraction(validation_split, "validation_split")
    checks.positive_int(seed, "seed", minimum=0)
    checks.positive_int(label_offset, "label_offset", minimum=0)
    checks.one_of(color_mode, "color_mode", constants.PREPARE_COLOR_MODES)
    checks.boolean(strict, "strict")
    checks.positive_int(workers, "workers")
    return source, dest


def prepare(source, dest, *, shards: int = constants.DEFAULT_SHARDS,
            validation_split: float = constants.DEFAULT_PREPARE_VALIDATION_SPLIT, seed: int = 0,
            label_offset: int = 0, color_mode: str = "rgb", strict: bool = False,
            workers: int = 2, progress=None) -> PrepareReport:
    """Converts a folder of class sub-folders into sharded TFRecords and a ``dataset.json``.

    Shards are ``train-00000-of-000NN`` (``shards`` of them) and ``validation-…`` (as many as
    keep shards about equally large), holding a seeded random split; labels are the sorted
    class folders' indices plus ``label_offset``. Files that are not images by their extension are
    ignored; images that do not decode are skipped and listed in the report (and in
    ``dataset.json``). Grayscale, RGBA, palette and CMYK images become RGB (``color_mode
    "grayscale"``: one channel) where TensorFlow's decoders would not read them as such;
    everything TensorFlow reads is stored as its original bytes.

    Args:
        source: the folder (``source/<class>/<image>``).
        dest: the output directory (created; finished shards of an earlier run are kept).
        shards: training shards.
        validation_split: fraction of the images in the validation split.
        seed: fixes the split and the order within shards.
        label_offset: added to every stored label (1 for the ImageNet TPU tools' convention).
        color_mode: ``"rgb"`` or ``"grayscale"``.
        strict: raise instead of skipping images that do not decode.
        workers: shards written at once (threads).
        progress: called with the number of images done, from the worker threads, one at a time.

    Returns:
        A ``PrepareReport``.

    Raises:
        ValueError: bad arguments, a source without class folders or images; ``DataError``
            (with ``strict``) listing the images that do not decode.
    """
    source, dest = _check(source, dest, shards, validation_split, seed, label_offset,
                          color_mode, strict, workers)
    start = time.monotonic()
    class_names, plan = _plan(source, seed, validation_split, shards)
    options = {"label_offset": label_offset, "color_mode": color_mode, "source": source}
    os.makedirs(os.path.join(dest, STATE_DIR), exist_ok=True)
    files.remove_stale_temporaries(dest)
    _remove_unplanned(dest, plan)
    summaries, reused = _run(dest, plan, class_names, options, workers, progress)
    skipped = [item for s in summaries.values() for item in s["skipped"]]
    if strict and skipped:  # nothing of this run stays: no state claims its shards finished
        _remove_outputs(dest, plan)
        folders.report_bad_images(skipped, source, strict=True)
    metadata = _metadata(summaries, class_names, options, seed, validation_split)
    files.write_text(os.path.join(dest, tfrecord.METADATA_FILE), json.dumps(metadata, indent=1))
    return PrepareReport(
        dest=dest, counts={k: v["count"] for k, v in metadata["splits"].items()},
        shards={k: v["shards"] for k, v in metadata["splits"].items()}, skipped=skipped,
        reused=reused, reencoded=sum(s["reencoded"] for s in summaries.values()),
        seconds=time.monotonic() - start,
        source_bytes=sum(os.path.getsize(f) for items in plan.values() for f, _ in items),
        shard_bytes=sum(os.path.getsize(os.path.join(dest, name)) for name in plan))


def _remove_outputs(dest, plan):
    """Removes the shards of ``plan`` and the ``.prepare`` state (a failed strict run)."""
    import shutil

    for name in plan:
        if os.path.exists(os.path.join(dest, name)):
            os.remove(os.path.join(dest, name))
    shutil.rmtree(os.path.join(dest, STATE_DIR), ignore_errors=True)


def _remove_unplanned(dest, plan):
    """Shards of an earlier run with another plan (shard count, split) would mix in: remove."""
    for entry in os.listdir(dest):
        if tfrecord.SHARD_PATTERN.fullmatch(entry) and entry not in plan:
            log.info("removing %s (not part of this plan)", entry)
            os.remove(os.path.join(dest, entry))
    for entry in os.listdir(os.path.join(dest, STATE_DIR)):
        if entry.removesuffix(".json") not in plan:
            os.remove(os.path.join(dest, STATE_DIR, entry))
    if os.path.exists(os.path.join(dest, tfrecord.METADATA_FILE)):
        os.remove(os.path.join(dest, tfrecord.METADATA_FILE))  # rewritten when complete


def _run(dest, plan, class_names, options, workers, progress):
    lock = threading.Lock()

    def report(count):
        if progress is not None:
            with lock:
                progress(count)

    summaries, reused, jobs = {}, 0, {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for name, items in plan.items():
            done = _finished(dest, name, items, class_names, options)
            if done is not None:
                summaries[name], reused = done, reused + 1
                report(len(items))
                continue
            jobs[pool.submit(_write_shard, dest, name, items, class_names, options,
                             report)] = name
        for job in concurrent.futures.as_completed(jobs):
            summaries[jobs[job]] = job.result()
    return dict(sorted(summaries.items())), reused


def _metadata(summaries, class_names, options, seed, validation_split):
    """The contents of ``dataset.json``."""
    splits = {}
    for name, summary in summaries.items():
        split = splits.setdefault(name.split("-")[0], {"count": 0, "per_class": {
            c: 0 for c in class_names}, "shards": []})
        split["count"] += summary["count"]
        split["shards"].append(name)
        for c, n in zip(class_names, summary["per_class"]):
            split["per_class"][c] += n
    train = [summaries[n] for n in splits.get("train", {}).get("shards", [])]
    sizes = np.array([s for summary in train for s in summary["sizes"]] or [[0, 0]])
    pixels = max(sum(s["pixels"] for s in train), 1)
    mean = np.sum([s["sum"] for s in train], axis=0) / pixels
    variance = np.maximum(np.sum([s["sum_sq"] for s in train], axis=0) / pixels - mean ** 2, 0)
    side = int(min(224, np.median(sizes.min(axis=1))))
    return {
        "format": "keras_resnet.prepare/1 (TF Model Garden image classification TFRecords)",
        "class_names": list(class_names), "label_offset": options["label_offset"],
        "color_mode": options["color_mode"], "seed": seed, "validation_split": validation_split,
        "splits": splits, "features": tfrecord.FEATURES,
        "image_size": {k: {"min": int(v.min()), "median": float(np.median(v)),
                           "max": int(v.max())}
                       for k, v in (("height", sizes[:, 0]), ("width", sizes[:, 1]))},
        "default_image_size": [side, side], "mean": list(map(float, mean)),
        "variance": list(map(float, variance)),
        "skipped": [{"file": f, "reason": r} for s in summaries.values() for f, r in s["skipped"]],
    }
