"""What ``evaluate`` reads: a model (``.keras`` file, run directory or ``keras.Model``), the data
it was trained on (from the run's ``metrics.json``) and where the report goes."""

from __future__ import annotations

import dataclasses
import json
import os

import keras

from keras_resnet import checks

SPLITS = ("test", "validation")


@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved evaluation: the model's path (None for a model object), the data and options
    ``load_dataset`` takes, the report directory and the run's name (served-model default)."""

    model_path: str | None
    data: object
    data_options: dict
    out_dir: str
    name: str


def resolve(model, data, out_dir, batch_size) -> Source:
    """Checks the arguments (before anything loads) and fills the defaults from a run directory.

    Raises:
        TypeError, ValueError, FileNotFoundError: naming the argument, value and what is accepted.
    """
    record = {}
    if isinstance(model, keras.Model):
        path, name = None, model.name
        if out_dir is None:
            raise ValueError("out_dir is needed when model is a keras.Model; got None")
    elif isinstance(model, (str, os.PathLike)):
        path, record, name = _model_file(os.fspath(model))
    else:
        raise TypeError(f"model must be a .keras file, a run directory or a keras.Model; got "
                        f"{model!r}")
    config = record.get("config", {})
    run_data = config.get("data", record.get("data"))
    if data is None:
        data = run_data
        if data is None:
            raise ValueError(f"data is needed for {model!r}: pass a source train accepts "
                             "('digits', 'cifar10', 'synthetic', a folder, TFRecord shards) or a "
                             "run directory whose metrics.json names it")
    options = {}
    if record:
        # the run's seed fixes its split: its test images are the ones it never trained on
        options["seed"] = config.get("seed", record.get("seed", 0))
        if isinstance(data, (str, os.PathLike)) and os.fspath(data) == run_data:
            options.update(config.get("data_options") or {})
    if not isinstance(data, (str, os.PathLike)) and not hasattr(data, "test"):
        raise TypeError(f"data must be a data set name, a directory or a keras_resnet.data."
                        f"Dataset; got {data!r}")
    if isinstance(data, (str, os.PathLike)):
        from keras_resnet.data.loading import check_source

        check_source(data)  # an unknown name or a missing path fails before the model loads
    if batch_size is not None:
        options["batch_size"] = checks.positive_int(batch_size, "batch_size")
    elif config.get("batch_size") or record.get("batch_size"):
        options["batch_size"] = config.get("batch_size") or record["batch_size"]
    if out_dir is None:
        out_dir = _default_out_dir(os.fspath(model), path)
    return Source(path, data, options, os.fspath(out_dir), name)


def _model_file(location: str):
    """(model path, run record, name) for a ``.keras`` file or a run directory."""
    if os.path.isdir(location):
        path = os.path.join(location, "model.keras")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model {location!r} is a directory without model.keras; "
                                    "pass a run directory (runs/NAME) or a .keras file")
        record = {}
        metrics = os.path.join(location, "metrics.json")
        if os.path.isfile(metrics):
            with open(metrics, encoding="utf-8") as handle:
                record = json.load(handle)
        return path, record, record.get("name") or os.path.basename(os.path.normpath(location))
    if not location.endswith(".keras"):
        raise ValueError(f"model must be a .keras file or a run directory; got {location!r}")
    if not os.path.isfile(location):
        raise FileNotFoundError(f"model {location!r} does not exist")
    return location, {}, os.path.splitext(os.path.basename(location))[0]


def _default_out_dir(location, path):
    if os.path.isdir(location):
        return os.path.join(location, "evaluation")
    return os.path.splitext(path)[0] + "-evaluation"


def load_split(source: Source, split: str):
    """The ``Dataset`` and its ``split`` pipeline (unaugmented, batched)."""
    from keras_resnet.data import load_dataset

    dataset = source.data if hasattr(source.data, "test") else load_dataset(
        source.data, **{**source.data_options, "augment": False})
    pipeline = getattr(dataset, split)
    if pipeline is None:
        raise ValueError(f"split={split!r}: data {dataset.name!r} has no {split} split; pass "
                         f"one of {', '.join(s for s in SPLITS if getattr(dataset, s) is not None)}")
    return dataset, pipeline
