"""The report's PNG plots: per-class P/R/F1 bars, ROC curves and the confusion matrix.

Drawn with matplotlib's ``Figure`` API on an Agg canvas: pyplot and its global state are
never touched, so plotting is safe in a server or a test run. Each function draws from the
JSON-ready dicts of :mod:`metrics.classification` and writes one PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_confusion", "plot_prf", "plot_roc"]

DPI = 120


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # attaches the non-interactive canvas; pyplot is never imported
    return figure


def plot_confusion(metrics: Mapping[str, Any], codes: Sequence[str], path: Path) -> None:
    """The row-normalised confusion matrix of a single-label classification section."""
    matrix = np.asarray(metrics["confusion_matrix"]["normalised"], dtype=np.float64)
    size = 2.0 + 0.7 * len(codes)
    figure = _new_figure(size + 1.0, size)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, label="fraction of true class")
    ticks = np.arange(len(codes))
    axes.set_xticks(ticks, labels=list(codes), rotation=45, ha="right")
    axes.set_yticks(ticks, labels=list(codes))
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Normalised confusion matrix")
    for (row, col), value in np.ndenumerate(matrix):
        colour = "white" if value > 0.5 else "black"
        axes.text(col, row, f"{value:.2f}", ha="center", va="center", color=colour, fontsize=8)
    figure.savefig(path, dpi=DPI)


def plot_roc(roc: Mapping[str, Any], legend: Mapping[str, str], path: Path) -> None:
    """One-vs-rest ROC curves (code → ``{"fpr", "tpr"}``), each labelled ``legend[code]``."""
    from matplotlib import colormaps

    figure = _new_figure(7.0, 6.0)
    axes = figure.add_subplot()
    palette = colormaps["tab10" if len(roc) <= 10 else "tab20"]
    for i, (code, curve) in enumerate(roc.items()):
        # tab20 comes in dark/light pairs: take all the dark shades first.
        colour = palette(i % 10) if len(roc) <= 10 else palette((2 * i) % 20 + (2 * i) // 20 % 2)
        axes.plot(
            curve["fpr"],
            curve["tpr"],
            color=colour,
            linewidth=1.5,
            label=legend.get(code, code),
        )
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.0, 1.02)
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_title("ROC curves (one vs rest)")
    axes.legend(loc="lower right", fontsize=8)
    figure.savefig(path, dpi=DPI)


def plot_prf(per_class: Mapping[str, Any], path: Path) -> None:
    """Grouped bars of precision, recall and F1 per class."""
    codes = list(per_class)
    x = np.arange(len(codes))
    width = 0.27
    figure = _new_figure(max(6.0, 0.8 * len(codes) + 2.0), 4.5)
    axes = figure.add_subplot()
    for offset, (key, label) in zip(
        (-width, 0.0, width),
        (("precision", "precision"), ("recall", "recall"), ("f1", "F1")),
        strict=True,
    ):
        axes.bar(x + offset, [per_class[c][key] for c in codes], width, label=label)
    axes.set_xticks(x, labels=codes, rotation=45, ha="right")
    axes.set_ylim(0.0, 1.0)
    axes.set_ylabel("score")
    axes.set_title("Per-class precision, recall and F1")
    figure.legend(loc="outside lower center", ncols=3)
    figure.savefig(path, dpi=DPI)
