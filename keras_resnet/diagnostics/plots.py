"""Plots of a measurement against depth (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import os


def plot_by_depth(curves: Mapping[str, Sequence], path: str | os.PathLike | None = None, *,
                  ylabel: str = "gradient norm", title: str | None = None,
                  log_scale: bool = True, xlabel: str = "depth (block)",
                  ax: Any = None) -> str | os.PathLike | Any:
    """Plots one line per curve of a value against depth and saves it as an image.

    Args:
        curves: ``{label: sequence of values}`` (one value per unit, shallowest first), or
            ``{label: rows}`` with rows from ``gradient_flow`` (their ``gradient_norm`` is used).
        path: the image file to write (``.png``, ``.svg``, ...); None with ``ax``.
        ylabel, title, xlabel: axis labels and title.
        log_scale: logarithmic y axis (norms span orders of magnitude).
        ax: a matplotlib Axes to draw into (for figures with several panels); the caller then
            saves the figure.

    Returns:
        ``path`` (or ``ax`` when drawing into one).

    Raises:
        ValueError: for empty curves, or neither ``path`` nor ``ax``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not isinstance(curves, dict) or not curves:
        raise ValueError(f"curves must be a non-empty dict {{label: values}}; got {curves!r}")
    if path is None and ax is None:
        raise ValueError("plot_by_depth needs path=... (an image file) or ax=... (an Axes)")
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for label, values in curves.items():
        values = [v["gradient_norm"] if isinstance(v, dict) else v for v in values]
        if not values:
            raise ValueError(f"curve {label!r} has no values")
        ax.plot(range(1, len(values) + 1), values, marker="." if len(values) < 60 else None,
                label=label)
    if log_scale:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if not own_figure:
        return ax
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
