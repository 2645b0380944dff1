"""Figures of the real-data evaluation beyond the paper: learning curves and reliability diagrams.

Drawn without pyplot, like every book figure (:func:`rcnnlib.book.figures.new_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from rcnnlib.book.figures import book_figure, new_figure
from rcnnlib.calibration import Calibration
from rcnnlib.protocol import DrawSummary, Recall


@book_figure
def plot_learning_curve(
    curves: Mapping[str, Mapping[int, DrawSummary | Recall]],
    classes: Sequence[str],
    xlabel: str = "real sequences per class",
    symlog: bool = True,
) -> Figure:
    """Macro and per-class recall against real sequences per class used to adapt, one line per method.

    ``curves`` maps a method's name to ``{real sequences per class: scores over draws}``;
    the band is the mean ± standard deviation over draws (none for a plain :class:`Recall`).
    The x axis is symmetric-log so that 0, 1 and 2 stay apart from 10 and 20; with
    ``xlabel`` and ``symlog=False`` the same panels show recall after ``k`` epochs.
    """
    panels = ["macro recall", *classes]
    fig = new_figure(2.3 * len(panels), 2.6)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for method, points in curves.items():
        n = np.array(sorted(points))
        for ax, panel in zip(axes, panels, strict=True):
            if panel == "macro recall":
                mean = np.array([points[k].macro_recall for k in n])
                std = np.array([getattr(points[k], "macro_recall_std", 0.0) for k in n])
            else:
                mean = np.array([points[k].recall[panel] for k in n])
                std = np.array([getattr(points[k], "recall_std", {}).get(panel, 0.0) for k in n])
            (line,) = ax.plot(n, mean, marker="o", markersize=3, label=method)
            ax.fill_between(n, mean - std, np.minimum(mean + std, 1.0), color=line.get_color(), alpha=0.2)
    for ax, panel in zip(axes, panels, strict=True):
        if symlog:
            ax.set_xscale("symlog", linthresh=1)
        ticks = sorted({k for points in curves.values() for k in points})
        ax.set_xticks(ticks, [str(k) for k in ticks], fontsize=7)
        ax.set_title(panel, fontsize=9)
        ax.margins(x=0.06)  # whole markers at the first and last point
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("recall on real sequences")
    axes[0].legend(fontsize=7, loc="lower right")
    return fig


@book_figure
def plot_reliability(calibrations: Mapping[str, Calibration]) -> Figure:
    """Reliability diagrams: accuracy against confidence per bin, one panel per method.

    The dotted diagonal is perfect calibration; points below it are over-confident
    bins. A point's area follows the share of test objects in its bin; the title
    gives the ECE (all objects) and the ECE with every class weighted alike.
    """
    fig = new_figure(2.6 * len(calibrations), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(calibrations), sharey=True))
    for ax, (name, c) in zip(axes, calibrations.items(), strict=True):
        r = c.reliability
        conf, acc, weight = (np.asarray(v, dtype=float) for v in (r.confidence, r.accuracy, r.weight))
        seen = weight > 0
        ax.plot([0, 1], [0, 1], ":", color="0.4", linewidth=1)
        ax.plot(conf[seen], acc[seen], "-", color="C0", linewidth=1)
        ax.scatter(conf[seen], acc[seen], s=10 + 400 * weight[seen], color="C0", alpha=0.7, zorder=3)
        ax.set_title(f"{name}\nECE {c.ece:.3f} (classes alike {c.balanced_ece:.3f})", fontsize=8)
        ax.set_xlim(-0.05, 1.05)  # room for a whole marker at accuracy 0 or 1
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("confidence (top probability)")
        ax.set_aspect("equal")
    axes[0].set_ylabel("accuracy")
    return fig
