"""A run's history files: ``history.csv`` (``CSVLogger``) read back, and its curves plotted."""

from __future__ import annotations

import csv
import os

from keras_resnet import files


def read_history(path):
    """Reads a ``CSVLogger`` file into ``{column: [float per epoch]}`` (``epoch`` as ints).

    Args:
        path: the ``history.csv`` of a run.

    Returns:
        A dict of lists, one entry per epoch; ``{}`` when the file does not exist.
    """
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    # A resumed run may repeat the epoch it was killed in: keep the last row per epoch.
    rows = list({row["epoch"]: row for row in rows}.values())
    columns = rows[0].keys() if rows else ()
    return {c: [int(r[c]) if c == "epoch" else float(r[c]) for r in rows] for c in columns}


def plot_history(history, path, title=None):
    """Plots training/validation loss and accuracy per epoch (matplotlib) to ``path``.

    Args:
        history: ``{column: values}`` as ``read_history`` returns or ``History.history``.
        path: the image file (``.png``).
        title: figure title.

    Returns:
        ``path`` (written atomically).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = range(1, len(history.get("loss", [])) + 1)
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for axis, metric in zip(axes, ("loss", "accuracy")):
        for prefix, label in (("", "training"), ("val_", "validation")):
            if prefix + metric in history:
                axis.plot(epochs, history[prefix + metric], label=label)
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format=os.path.splitext(path)[1][1:] or "png")
    plt.close(figure)
    return path
