"""Figures and summaries of the light-curve forest chapter: photometry check, feature shift, importances.

They lived as cells of chapter 5; here they are tested, and the chapter reads as
narrative, figures and tables. Every function returns a Figure drawn without
pyplot (see :mod:`rcnnlib.book.figures`) or a typed summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from rcnnlib.book.figures import book_figure, compare_histograms, new_figure, shrink_legend

SHOWN_FEATURES: tuple[str, ...] = (
    "mag_weighted_mean",
    "mag_amplitude",
    "mag_periodogram_period_0",
    "mag_stetson_K",
    "flux_chi2",
    "flux_max_snr",
)
"""Features compared real vs simulated in chapter 5: brightness, variability, period, noise level."""
LOG_FEATURES = frozenset({"mag_periodogram_period_0", "flux_chi2", "flux_max_snr"})
"""Features spanning decades: histogrammed on a log axis."""


@dataclass(frozen=True)
class KronAgreement:
    """How our PSF magnitudes agree with the HiTS pipeline's Kron magnitudes, epoch by epoch [mag]."""

    n_epochs: int
    n_objects: int
    median_abs_dmag: float
    p90_abs_dmag: float
    median_err_psf: float
    median_err_kron: float
    offset_median: float
    offset_spread: float

    @classmethod
    def of(cls, kron: pd.DataFrame) -> KronAgreement:
        """Summarise a :func:`rcnnlib.hits.kron.kron_comparison` table."""
        offsets = kron.groupby("id")["offset"].first()
        dmag = np.abs(kron["dmag"].to_numpy(dtype=float))
        return cls(
            n_epochs=len(kron),
            n_objects=int(kron["id"].nunique()),
            median_abs_dmag=float(np.median(dmag)),
            p90_abs_dmag=float(np.percentile(dmag, 90)),
            median_err_psf=float(kron["err_psf"].median()),
            median_err_kron=float(kron["err_kron"].median()),
            offset_median=float(offsets.median()),
            offset_spread=float(offsets.std()),
        )


def most_variable_object(kron: pd.DataFrame) -> str:
    """The object with the widest 10-90 % Kron magnitude range (robust to one outlying epoch)."""
    spread = kron.groupby("id")["mag_kron"].quantile([0.1, 0.9]).unstack()
    return str((spread[0.9] - spread[0.1]).idxmax())


@book_figure
def plot_kron_comparison(kron: pd.DataFrame, limit: float = 0.3) -> Figure:
    """PSF − Kron − offset against Kron magnitude and seeing; the light curve of the most variable star."""
    fig = new_figure(14, 4)
    ax_mag, ax_seeing, ax_lc = fig.subplots(1, 3)
    for k, (name, group) in enumerate(kron.groupby("class")):
        ax_mag.scatter(group["mag_kron"], group["dmag"], s=3, alpha=0.4, color=f"C{k}", label=name)
    ax_mag.legend(markerscale=4)
    ax_seeing.scatter(kron["seeing"], kron["dmag"], s=3, alpha=0.4, color="0.3")
    for ax, xlabel in ((ax_mag, "Kron magnitude [mag]"), (ax_seeing, "seeing [arcsec]")):
        ax.axhline(0, color="k", lw=0.8)
        ax.set(xlabel=xlabel, ylabel="PSF − Kron − offset [mag]", ylim=(-limit, limit))
    example = most_variable_object(kron)
    one = kron[kron["id"] == example]
    t0 = one["mjd"].min()
    ax_lc.errorbar(one["mjd"] - t0, one["mag_kron"], one["err_kron"], fmt="o", ms=4, label="Kron (HiTS)")
    ax_lc.errorbar(
        one["mjd"] - t0,
        one["mag_psf"] - one["offset"],
        one["err_psf"],
        fmt="x",
        ms=5,
        label="PSF (ours) − offset",
    )
    ax_lc.invert_yaxis()
    ax_lc.set(xlabel=f"days since MJD {t0:.1f}", ylabel="g [mag]", title=f"{one['class'].iloc[0]} {example}")
    ax_lc.legend()
    return fig


def _bins(values: np.ndarray, log: bool, n: int = 30) -> np.ndarray | None:
    values = values[np.isfinite(values)]
    if log:
        values = values[values > 0]
    if values.size < 2:
        return None
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        return None
    return np.geomspace(lo, hi, n) if log else np.linspace(lo, hi, n)


@book_figure
def plot_feature_distributions(
    sim_features: np.ndarray,
    sim_labels: np.ndarray,
    real_features: np.ndarray,
    real_labels: np.ndarray,
    feature_names: Sequence[str],
    class_names: Sequence[str],
    classes: Sequence[str],
    shown: Sequence[str] = SHOWN_FEATURES,
) -> Figure:
    """Per class (columns) and feature (rows): real (black outline) and simulated (orange fill) histograms.

    One set of bins per feature, shared by all classes and both sets, so shifts
    between simulated and real light curves read directly.
    """
    fig = new_figure(3.2 * len(classes), 2.0 * len(shown))
    axes = np.atleast_2d(fig.subplots(len(shown), len(classes), squeeze=False))
    for row, feature in enumerate(shown):
        j = list(feature_names).index(feature)
        log = feature in LOG_FEATURES
        bins = _bins(np.concatenate([sim_features[:, j], real_features[:, j]]), log)
        for col, name in enumerate(classes):
            ax = axes[row, col]
            label = list(class_names).index(name)
            sim_values = sim_features[sim_labels == label, j]
            real_values = real_features[real_labels == label, j]
            if bins is not None:
                keep = (lambda v: v[np.isfinite(v) & (v > 0)]) if log else (lambda v: v[np.isfinite(v)])
                compare_histograms(ax, keep(sim_values), keep(real_values), bins, log)
                if (row, col) != (0, 0):
                    ax.get_legend().remove()
            ax.set_xlabel("")
            ax.set_ylabel("")
            ax.set_yticks([])
            ax.tick_params(which="both", labelsize=7)
            if row == 0:
                ax.set_title(name)
            if col == 0:
                ax.set_ylabel(feature.removeprefix("mag_"), fontsize=8)
    shrink_legend(axes[0, 0], 7)
    return fig


@book_figure
def plot_feature_importance(importance: pd.Series, top: int = 20) -> Figure:
    """The ``top`` features by mean decrease in impurity, largest at the top."""
    fig = new_figure(7, 0.25 * top + 1)
    ax = fig.subplots()
    shown = importance.sort_values().tail(top)
    ax.barh(shown.index, shown.to_numpy(), color="C0")
    ax.set_xlabel("mean decrease in impurity")
    ax.tick_params(axis="y", labelsize=8)
    return fig
