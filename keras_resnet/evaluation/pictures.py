"""The report's pictures (matplotlib, Agg): confusion matrix, reliability diagram, per-class
accuracy and the error gallery with Grad-CAM heat maps. Each function writes one PNG."""

from __future__ import annotations

import math

import numpy as np

# a class count above which cells carry no numbers and ticks shrink
_TEXT_CLASSES = 20


def _subplots(rows=1, columns=1, **options):
    """A figure outside pyplot's global state: nothing changes the caller's backend."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=options.pop("figsize"), layout="constrained")
    return figure, figure.subplots(rows, columns, **options)


def confusion_matrix(confusion, class_names, path: str) -> str:
    """Row-normalised confusion matrix (each true class sums to 1) with class names on the axes."""
    confusion = np.asarray(confusion, np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    n = len(class_names)
    size = min(max(5.0, 0.16 * n + 3), 18.0)
    figure, axes = _subplots(figsize=(size + 1, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    font = 9 if n <= _TEXT_CLASSES else max(3.0, 9 - n / 20)
    axes.set_xticks(range(n), labels=class_names, rotation=90, fontsize=font)
    axes.set_yticks(range(n), labels=class_names, fontsize=font)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix (normalised by true class)")
    if n <= _TEXT_CLASSES:
        for (i, j), value in np.ndenumerate(normalised):
            if value > 0:
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                          color="white" if value > 0.5 else "black")
    return _save(figure, path)


def reliability_diagram(calibration: dict, path: str) -> str:
    """Accuracy against confidence per bin, the diagonal and the ECE."""
    bins = [b for b in calibration["bins"] if b["images"]]
    width = calibration["bins"][0]["upper"] - calibration["bins"][0]["lower"]
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    figure, axes = _subplots(figsize=(5.5, 5))
    axes.bar(centres, [b["accuracy"] for b in bins], width=width * 0.92, color="tab:blue",
             label="accuracy of the bin's images")
    axes.scatter(centres, [b["confidence"] for b in bins], marker="_", s=260, linewidths=2.5,
                 color="tab:red", zorder=3, label="their mean confidence")
    axes.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("confidence (top-1 probability)")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability (ECE {calibration['expected_calibration_error']:.4f})")
    axes.legend(loc="upper left")
    return _save(figure, path)


def class_accuracy(per_class: list, path: str) -> str:
    """Per-class accuracy (recall: the share of each true class answered right) as bars."""
    names = [row["class"] for row in per_class]
    recall = [row["recall"] for row in per_class]
    n = len(names)
    figure, axes = _subplots(figsize=(min(max(6.0, 0.18 * n + 2), 24.0), 4))
    axes.bar(range(n), recall, color="tab:green")
    axes.set_xticks(range(n), labels=names, rotation=90,
                    fontsize=9 if n <= _TEXT_CLASSES else max(3.0, 9 - n / 20))
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("accuracy (recall)")
    axes.set_title("Accuracy per class")
    return _save(figure, path)


def error_gallery(mistakes: list, cams, class_names, path: str) -> str:
    """The most confident mistakes: each image, its Grad-CAM for the predicted class on top."""
    count = max(len(mistakes), 1)
    columns = min(4, count)
    rows = math.ceil(count / columns)
    figure, grid = _subplots(rows, columns, figsize=(3 * columns, 3.3 * rows), squeeze=False)
    for axes in grid.flat:
        axes.axis("off")
    if not mistakes:
        grid[0, 0].text(0.5, 0.5, "no mistakes", ha="center", va="center")
    for axes, mistake, cam in zip(grid.flat, mistakes, cams):
        image = _displayable(mistake["image"])
        height, width = image.shape[:2]
        axes.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest",
                    extent=(0, width, height, 0))
        if cam is not None:
            axes.imshow(cam, cmap="jet", alpha=0.45, interpolation="bilinear",
                        extent=(0, width, height, 0), vmin=0, vmax=1)
        axes.set_title(f"true: {class_names[mistake['true']]}\n"
                       f"predicted: {class_names[mistake['predicted']]} "
                       f"({mistake['confidence']:.2f})", fontsize=9)
    figure.suptitle("Most confident mistakes (Grad-CAM of the predicted class)")
    return _save(figure, path)


def _displayable(image):
    """Raw 0..255 pixels -> uint8 [h, w] (grayscale) or [h, w, 3]."""
    image = np.clip(np.asarray(image, np.float64), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        return image[..., 0]
    return image[..., :3] if image.ndim == 3 else image


def _save(figure, path):
    figure.savefig(path, dpi=100)  # the PNG goes through Agg whatever pyplot's backend is
    return path
