"""Figures of the book: survey conditions, cadence, and galleries of image sequences.

Every function returns a :class:`matplotlib.figure.Figure` built without
pyplot (no global figure state, no GUI backend: the Agg canvas is attached
directly), so they work headless, in tests and in notebooks alike, and never
leak figures. In a notebook, leaving the figure as a cell's last expression
displays it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import matplotlib as mpl
import numpy as np
import pandas as pd
from astropy.visualization import AsinhStretch, ImageNormalize, ManualInterval
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from matplotlib.typing import RcKeyType

from rcnnlib.dataset import SequenceDataset
from rcnnlib.photometry import light_curve
from rcnnlib.sim.survey import Survey
from rcnnlib.stamps import night_of

P = ParamSpec("P")
R = TypeVar("R")

CONDITION_LABELS: dict[str, str] = {
    "seeing": "seeing FWHM [arcsec]",
    "sky": "sky level [ADU]",
    "limit_mag_5sigma": "5σ limiting mag",
    "zero_point": "zero point [mag]",
    "airmass": "airmass",
}
# Colour-blind-safe palette (Okabe & Ito), the colour cycle of every book figure: "C0" is blue,
# "C1" orange, "C2" green, "C3" vermillion... Use these (or "C<k>") rather than other colours.
OKABE_ITO: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#D55E00",  # vermillion
    "#56B4E9",  # sky blue
    "#CC79A7",  # reddish purple
    "#F0E442",  # yellow
    "#000000",  # black
)
BOOK_STYLE: dict[RcKeyType, Any] = {
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "image.cmap": "viridis",  # perceptually uniform, readable in grey and by colour-blind readers
}


def book_style() -> contextlib.AbstractContextManager:
    """The book's figure style (palette, colour map) for the figures drawn inside the ``with`` block."""
    return mpl.rc_context(BOOK_STYLE)


def book_figure(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw a book figure in the book's style without changing the caller's matplotlib settings.

    Why a context and not ``rcParams.update`` on import: importing a plotting
    module must not restyle the figures of the notebook (or program) importing it.
    """

    @functools.wraps(draw)
    def in_style(*args: P.args, **kwargs: P.kwargs) -> R:
        with book_style():
            return draw(*args, **kwargs)

    in_style.book_style = True  # type: ignore[attr-defined]
    return in_style


def show_figures_in_notebooks() -> bool:
    """Make IPython display a :class:`Figure` as a PNG; importing this module does it.

    Why: the figures here are built without pyplot, and IPython only learns to
    render a Figure once matplotlib's inline backend is activated, which happens
    when pyplot is imported (or ``%matplotlib inline`` runs). A chapter that draws
    only through this module would otherwise show ``<Figure size ...>`` as text.
    Returns whether a running IPython shell was found.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import select_figure_formats
    except ImportError:  # plain Python: nothing to register
        return False
    shell = get_ipython()
    if shell is None:
        return False
    formatter = shell.display_formatter.formatters["image/png"]
    if Figure in formatter.type_printers:
        return True  # already registered (inline backend active): keep its settings
    select_figure_formats(shell, {"png"}, bbox_inches="tight")
    return True


show_figures_in_notebooks()
KEPT_COLOR = OKABE_ITO[0]
CUT_COLOR = OKABE_ITO[3]


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure on an Agg canvas, independent of pyplot."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# ------------------------------------------------------------- conditions
@book_figure
def plot_conditions(survey: Survey, columns: Sequence[str] = ("seeing", "sky", "limit_mag_5sigma")) -> Figure:
    """Conditions vs MJD for every field and epoch (left) and per-field medians with 16-84 % ranges (right).

    Epochs failing the seeing cut are drawn as vermillion crosses; the right column
    uses only the epochs that pass it, as the simulator does.
    """
    epochs = survey.epochs
    cut = epochs["seeing"] >= survey.max_seeing
    usable = epochs[~cut]
    fields = survey.fields
    fig = new_figure(13, 2.6 * len(columns))
    axes = fig.subplots(len(columns), 2, squeeze=False, width_ratios=(1, 1.3))
    for row, name in enumerate(columns):
        ax, ax_field = axes[row]
        ax.scatter(usable["mjd"], usable[name], s=6, color=KEPT_COLOR, alpha=0.5, lw=0, label="kept")
        ax.scatter(
            epochs.loc[cut, "mjd"],
            epochs.loc[cut, name],
            s=10,
            color=CUT_COLOR,
            marker="x",
            lw=0.8,
            label=f"seeing ≥ {survey.max_seeing:g}″ (cut)",
        )
        nightly = usable.groupby(night_of(usable["mjd"]))
        ax.plot(nightly["mjd"].median(), nightly[name].median(), "k-", lw=1, label="nightly median")
        ax.set_ylabel(CONDITION_LABELS.get(name, name))
        if name == "sky":  # bright-moon nights are ten times brighter than dark ones
            ax.set_yscale("log")
        if name == "seeing":
            ax.axhline(survey.max_seeing, color=CUT_COLOR, ls="--", lw=0.8)
        if name.startswith("limit_mag"):
            ax.invert_yaxis()
        stats = usable.groupby("field")[name].quantile([0.16, 0.5, 0.84]).unstack().reindex(fields)
        x = np.arange(len(fields))
        ax_field.errorbar(
            x,
            stats[0.5],
            yerr=[stats[0.5] - stats[0.16], stats[0.84] - stats[0.5]],
            fmt="o",
            ms=3,
            color="k",
            ecolor="0.6",
            lw=1,
        )
        ax_field.set_xticks(x, fields, rotation=90, fontsize=6)
        ax_field.set_xlim(-1, len(fields))
        if name.startswith("limit_mag"):
            ax_field.invert_yaxis()
    axes[0, 0].legend(fontsize=7, loc="upper left", markerscale=1.5)
    axes[0, 0].set_title(f"{survey.name}: all fields, every epoch", fontsize=10)
    axes[0, 1].set_title("per field: median and 16–84 % range of kept epochs", fontsize=10)
    axes[-1, 0].set_xlabel("MJD")
    axes[-1, 1].set_xlabel("field")
    return fig


@book_figure
def plot_seeing_cut(survey: Survey) -> Figure:
    """Seeing distribution with the quality cut, and how many epochs each field keeps."""
    epochs = survey.epochs
    cut = epochs["seeing"] >= survey.max_seeing
    fig = new_figure(13, 3.2)
    ax_hist, ax_field = fig.subplots(1, 2, width_ratios=(1, 1.6))
    bins = np.arange(0.6, max(epochs["seeing"].max(), survey.max_seeing) + 0.1, 0.05)
    ax_hist.hist(epochs.loc[~cut, "seeing"], bins=bins, color=KEPT_COLOR, label="kept")
    ax_hist.hist(epochs.loc[cut, "seeing"], bins=bins, color=CUT_COLOR, label="dropped")
    ax_hist.axvline(survey.max_seeing, color="k", ls="--", lw=0.8)
    ax_hist.set_xlabel("seeing FWHM [arcsec]")
    ax_hist.set_ylabel("epochs (all fields)")
    ax_hist.set_title(f"{int(cut.sum())} of {len(epochs)} epochs ({cut.mean():.0%}) dropped", fontsize=10)
    ax_hist.legend(fontsize=8)
    counts = (
        epochs.assign(dropped=cut).groupby("field")["dropped"].agg(["size", "sum"]).reindex(survey.fields)
    )
    x = np.arange(len(counts))
    ax_field.bar(x, counts["size"] - counts["sum"], color=KEPT_COLOR, label="kept")
    ax_field.bar(x, counts["sum"], bottom=counts["size"] - counts["sum"], color=CUT_COLOR, label="dropped")
    ax_field.set_xticks(x, counts.index, rotation=90, fontsize=6)
    ax_field.set_xlim(-1, len(x))
    ax_field.set_xlabel("field")
    ax_field.set_ylabel("epochs")
    ax_field.legend(fontsize=8, ncols=2)
    return fig


@book_figure
def plot_cadence(survey: Survey) -> Figure:
    """When each field was observed, the gaps between its epochs, and epochs per night."""
    epochs = survey.epochs.assign(cut=survey.epochs["seeing"] >= survey.max_seeing)
    usable = epochs[~epochs["cut"]]
    fields = survey.fields
    row = {f: i for i, f in enumerate(fields)}
    fig = new_figure(13, 8)
    top, bottom = fig.subfigures(2, 1, height_ratios=(1.6, 1), squeeze=False)[:, 0]
    ax_map = top.subplots()
    points = ax_map.scatter(
        usable["mjd"],
        usable["field"].map(row),
        c=usable["seeing"],
        s=9,
        cmap="viridis",
        marker="s",
        lw=0,
        vmin=0.8,
        vmax=survey.max_seeing,
    )
    dropped = epochs[epochs["cut"]]
    ax_map.scatter(dropped["mjd"], dropped["field"].map(row), s=10, color=CUT_COLOR, marker="x", lw=0.8)
    ax_map.set_yticks(range(len(fields)), fields, fontsize=5)
    ax_map.set_ylabel("field")
    ax_map.set_xlabel("MJD")
    ax_map.set_title("epochs of every field (colour: seeing; vermillion ×: dropped by the cut)", fontsize=10)
    top.colorbar(points, ax=ax_map, label="seeing [arcsec]", pad=0.01)

    ax_gap, ax_night = bottom.subplots(1, 2)
    gaps = usable.groupby("field")["mjd"].diff().dropna().to_numpy() * 24.0
    bins = np.logspace(np.log10(max(gaps.min(), 0.01)), np.log10(gaps.max()), 40)
    ax_gap.hist(gaps, bins=bins, color="0.3")
    ax_gap.set_xscale("log")
    ax_gap.set_xlabel("time between consecutive kept epochs of a field [hours]")
    ax_gap.set_ylabel("pairs of epochs")
    for hours, label in ((2.0, "2 h"), (24.0, "1 d"), (72.0, "3 d")):
        ax_gap.axvline(hours, color="0.6", ls=":", lw=0.8)
        ax_gap.text(
            hours, 0.97, label, transform=ax_gap.get_xaxis_transform(), fontsize=7, ha="left", va="top"
        )
    per_night = usable.groupby(["field", night_of(usable["mjd"])]).size()
    values, counts = np.unique(per_night.to_numpy(), return_counts=True)
    ax_night.bar(values, counts, color="0.3")
    ax_night.set_xticks(values)
    ax_night.set_xlabel("kept epochs of a field in one night")
    ax_night.set_ylabel("field-nights")
    ax_night.set_title(
        f"{len(per_night)} field-nights, median {np.median(per_night):.0f} epochs per night", fontsize=10
    )
    return fig


# --------------------------------------------------------------- sequences
def sky_subtracted(ds: SequenceDataset, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed stamps of sequence ``i`` minus each epoch's sky, and the epoch indices kept."""
    epochs = np.flatnonzero(ds.mask[i])
    sky = ds.condition("sky")[i, epochs]
    return ds.stamps[i, epochs] - sky[:, None, None], epochs


def sequence_norm(images: np.ndarray) -> ImageNormalize:
    """One colour scale for all epochs of an object: asinh stretch between robust extremes.

    The low end is the noise floor (0.5th percentile), the high end the 99.9th
    percentile of all epochs, so a supernova's rise reads as brightening rather
    than being rescaled away epoch by epoch; asinh keeps faint wings and the
    bright core visible together.
    """
    lo, hi = np.percentile(images, [0.5, 99.9])
    if hi <= lo:
        hi = lo + 1.0
    return ImageNormalize(interval=ManualInterval(lo, hi), stretch=AsinhStretch(0.1), clip=True)


def pick_epochs(n_observed: int, max_epochs: int | None) -> np.ndarray:
    """Positions of at most ``max_epochs`` epochs spread evenly over the whole sequence."""
    if max_epochs is None or n_observed <= max_epochs:
        return np.arange(n_observed)
    return np.unique(np.linspace(0, n_observed - 1, max_epochs).round().astype(int))


def draw_strip(
    axes: Sequence[Axes], ds: SequenceDataset, i: int, max_epochs: int | None = None, max_seeing: float = 2.0
) -> None:
    """Draw the sky-subtracted stamps of sequence ``i`` into a row of axes (unused axes hidden).

    Titles are days since the first epoch; ``*`` marks estimated conditions and a
    vermillion title an epoch with seeing >= ``max_seeing`` (dropped by the paper's cut).
    """
    images, epochs = sky_subtracted(ds, i)
    norm = sequence_norm(images)
    chosen = pick_epochs(len(epochs), min(len(axes), max_epochs or len(axes)))
    t0 = ds.mjd[i, epochs[0]] if len(epochs) else 0.0
    seeing = ds.condition("seeing")[i]
    for ax in axes:
        ax.set_axis_off()
    for ax, k in zip(axes, chosen, strict=False):
        e = epochs[k]
        ax.imshow(images[k], origin="lower", cmap="gray", norm=norm, interpolation="nearest")
        label = f"{ds.mjd[i, e] - t0:.1f}" + ("*" if ds.conditions_estimated[i, e] else "")
        ax.set_title(label, fontsize=6, pad=1, color=CUT_COLOR if seeing[e] >= max_seeing else "k")


@book_figure
def plot_sequence_strip(ds: SequenceDataset, i: int, max_epochs: int | None = 15) -> Figure:
    """One row of the sequence's sky-subtracted stamps, titled with days since its first epoch."""
    n = len(pick_epochs(int(ds.mask[i].sum()), max_epochs))
    fig = new_figure(0.75 * max(n, 1), 1.2)
    axes = np.atleast_1d(fig.subplots(1, max(n, 1)))
    draw_strip(list(axes), ds, i, max_epochs)
    fig.suptitle(f"{ds.ids[i]} ({ds.class_names[ds.labels[i]]})", fontsize=8)
    return fig


def draw_light_curve(ax: Axes, ds: SequenceDataset, i: int, flux: np.ndarray, flux_err: np.ndarray) -> None:
    """Error bars of one light curve (microjansky vs days); estimated-condition epochs hollow."""
    observed = ds.mask[i]
    t = ds.mjd[i] - ds.mjd[i, observed][0]
    est = ds.conditions_estimated[i] & observed
    good = observed & ~est
    ax.errorbar(t[good], flux[good], flux_err[good], fmt="o", ms=3, color="k", ecolor="0.5", lw=0.8)
    if est.any():
        ax.errorbar(
            t[est],
            flux[est],
            flux_err[est],
            fmt="o",
            ms=3,
            mfc="none",
            color="C1",
            lw=0.8,
            label="estimated conditions",
        )
        ax.legend(fontsize=6, loc="best")
    finite = flux[observed & np.isfinite(flux)]
    if finite.size and finite.min() < 0.2 * max(finite.max(), 0.0):  # zero is a useful reference here
        ax.axhline(0, color="0.7", lw=0.6)
    ax.set_xlabel("days since first epoch", fontsize=7)
    ax.set_ylabel("flux [µJy]", fontsize=7)
    ax.tick_params(labelsize=6)


@book_figure
def plot_light_curve(
    ds: SequenceDataset,
    i: int,
    flux: np.ndarray | None = None,
    flux_err: np.ndarray | None = None,
    radius_seeing: float = 2.0,
) -> Figure:
    """Aperture light curve of sequence ``i`` measured on its stamps (µJy, AB).

    ``flux``/``flux_err`` are (N, T) microjansky from :func:`rcnnlib.photometry.light_curve`;
    when omitted only sequence ``i`` is measured.
    """
    if flux is None or flux_err is None:
        one, one_err = light_curve(ds.subset([i]), radius_seeing=radius_seeing)
        flux, flux_err = np.zeros_like(ds.mjd), np.zeros_like(ds.mjd)
        flux[i], flux_err[i] = one[0], one_err[0]
    fig = new_figure(4, 2.6)
    ax = fig.subplots()
    draw_light_curve(ax, ds, i, flux[i], flux_err[i])
    ax.set_title(f"{ds.ids[i]} ({ds.class_names[ds.labels[i]]})", fontsize=8)
    return fig


def select_examples(ds: SequenceDataset, n_per_class: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``n_per_class`` random sequence indices of each class present (fewer if the class is smaller)."""
    rng = np.random.default_rng(seed)
    chosen = {}
    for label, name in enumerate(ds.class_names):
        members = np.flatnonzero(ds.labels == label)
        if members.size:
            pick = rng.choice(members, size=min(n_per_class, members.size), replace=False)
            chosen[name] = np.sort(pick)
    return chosen


@book_figure
def plot_class_gallery(
    ds: SequenceDataset,
    indices: Sequence[int],
    flux: np.ndarray,
    flux_err: np.ndarray,
    max_epochs: int | None = 15,
    title: str = "",
) -> Figure:
    """One row per sequence: its stamp strip (shared colour scale per object) and its light curve."""
    n_cols = max_epochs or int(ds.mask[list(indices)].sum(axis=1).max())
    lc_cols = 6
    fig = new_figure(0.6 * (n_cols + lc_cols) + 0.6, 1.05 * len(indices) + 0.8)
    grid = fig.add_gridspec(len(indices), n_cols + lc_cols)
    for row, i in enumerate(indices):
        axes = [fig.add_subplot(grid[row, c]) for c in range(n_cols)]
        draw_strip(axes, ds, int(i), max_epochs)
        ax_lc = fig.add_subplot(grid[row, n_cols + 1 :])
        draw_light_curve(ax_lc, ds, int(i), flux[i], flux_err[i])
        ax_lc.set_title(str(ds.ids[i]), fontsize=7, pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


@book_figure
def gallery(
    ds: SequenceDataset,
    n_per_class: int = 4,
    seed: int = 0,
    max_epochs: int | None = 15,
    radius_seeing: float = 2.0,
) -> dict[str, Figure]:
    """A :func:`plot_class_gallery` figure per class, objects drawn at random with ``seed``.

    Stamp titles are days since the object's first epoch (``*``: conditions
    estimated); light curves are aperture photometry of the same stamps.
    """
    examples = select_examples(ds, n_per_class, seed)
    if not examples:
        return {}
    picked = np.concatenate(list(examples.values()))
    sub = ds.subset(picked)
    flux, flux_err = light_curve(sub, radius_seeing=radius_seeing)
    figures = {}
    start = 0
    for name, idx in examples.items():
        rows = list(range(start, start + len(idx)))
        start += len(idx)
        total = int((ds.labels == ds.class_names.index(name)).sum())
        figures[name] = plot_class_gallery(
            sub,
            rows,
            flux,
            flux_err,
            max_epochs,
            title=f"{name}: {len(idx)} of {total} sequences (stamp titles: days since first epoch; "
            "red: seeing ≥ 2″; *: estimated conditions)",
        )
    return figures


# ------------------------------------------------------------- simulation
REAL_COLOR = "k"
SIM_COLOR = "C1"


@book_figure
def plot_model_light_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], t0: float) -> Figure:
    """Noise-free model light curves, one panel per class: ``{class: (mjd (T,), mag (k, T))}``.

    Magnitudes are drawn downwards (bright up), the astronomers' convention;
    ``inf`` (no source) leaves gaps.
    """
    names = list(curves)
    cols = min(4, len(names))
    rows = int(np.ceil(len(names) / cols))
    fig = new_figure(3.0 * cols, 2.3 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names, strict=False):
        mjd, mag = curves[name]
        for k, row in enumerate(mag):
            shown = np.where(np.isfinite(row), row, np.nan)
            ax.plot(mjd - t0, shown, lw=0.9, color=f"C{k}")
        finite = mag[np.isfinite(mag)]
        if finite.size:  # a supernova's pre-explosion rise from "infinity" would squash the panel
            ax.set_ylim(min(finite.max(), finite.min() + 4.0) + 0.2, finite.min() - 0.2)
        else:
            ax.invert_yaxis()
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("days", fontsize=7)
        ax.set_ylabel("g [mag]", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes[len(names) :]:
        ax.set_axis_off()
    return fig


@book_figure
def sequence_movie(ds: SequenceDataset, indices: dict[str, int], interval_ms: int = 300) -> str:
    """An HTML/JavaScript movie (no external files): one panel per class, one frame per epoch.

    Each panel keeps one colour scale for the whole sequence (:func:`sequence_norm`),
    so brightening and fading show as such.
    """
    from matplotlib.animation import FuncAnimation

    names = list(indices)
    frames = [sky_subtracted(ds, i)[0] for i in indices.values()]
    n_frames = max(len(f) for f in frames)
    fig = new_figure(1.6 * len(names), 1.9)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    images = []
    for ax, name, stack in zip(axes, names, frames, strict=True):
        images.append(ax.imshow(stack[0], origin="lower", cmap="gray", norm=sequence_norm(stack)))
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    label = fig.suptitle("epoch 1", fontsize=8)

    def update(k: int) -> list:
        for image, stack in zip(images, frames, strict=True):
            image.set_data(stack[min(k, len(stack) - 1)])
        label.set_text(f"epoch {k + 1} of {n_frames}")
        return [*images, label]

    movie = FuncAnimation(fig, update, frames=n_frames, interval=interval_ms, blit=False)
    return movie.to_jshtml(default_mode="loop")


@book_figure
def plot_side_by_side(
    real: SequenceDataset, sim: SequenceDataset, pairs: dict[str, tuple[int, int]], max_epochs: int = 12
) -> Figure:
    """For each class, a real sequence's strip above a simulated one's: ``{class: (i_real, i_sim)}``."""
    fig = new_figure(0.62 * max_epochs + 1.2, 1.25 * 2 * len(pairs) + 0.4)
    grid = fig.add_gridspec(2 * len(pairs), max_epochs + 1)
    for row, (name, (i_real, i_sim)) in enumerate(pairs.items()):
        for k, (ds, i, tag) in enumerate(((real, i_real, "real"), (sim, i_sim, "sim"))):
            r = 2 * row + k
            label_ax = fig.add_subplot(grid[r, 0])
            label_ax.set_axis_off()
            label_ax.text(
                0.5,
                0.5,
                f"{name}\n{tag}",
                ha="center",
                va="center",
                fontsize=8,
                color=REAL_COLOR if tag == "real" else SIM_COLOR,
            )
            draw_strip([fig.add_subplot(grid[r, c + 1]) for c in range(max_epochs)], ds, i, max_epochs)
    return fig


def _scatter_pair(
    ax: Axes, real: pd.DataFrame, sim: pd.DataFrame, x: str, y: str, max_points: int = 4000
) -> None:
    rng = np.random.default_rng(0)
    for table, color, tag in ((real, REAL_COLOR, "real"), (sim, SIM_COLOR, "simulated")):
        table = table[[x, y]].dropna()
        if len(table) > max_points:
            table = table.iloc[rng.choice(len(table), max_points, replace=False)]
        ax.scatter(table[x], table[y], s=3, alpha=0.35, color=color, label=f"{tag} ({len(table)})", lw=0)
    ax.legend(fontsize=7, markerscale=3)
    ax.tick_params(labelsize=7)


@book_figure
def plot_realism(
    noise: tuple[pd.DataFrame, pd.DataFrame],
    fwhm: tuple[pd.DataFrame, pd.DataFrame],
    peaks: tuple[pd.DataFrame, pd.DataFrame],
) -> Figure:
    """Image statistics, real vs simulated: background noise vs sky, FWHM vs seeing, peak vs magnitude."""
    fig = new_figure(12, 3.6)
    ax_noise, ax_fwhm, ax_peak = fig.subplots(1, 3)
    _scatter_pair(ax_noise, *noise, "sky", "noise")
    expected = noise[1].sort_values("sky")
    ax_noise.plot(
        expected["sky"], expected["expected_noise"], color="C0", lw=1, label="Poisson sky + read noise"
    )
    ax_noise.set(
        xscale="log",
        yscale="log",
        xlabel="sky level [ADU]",
        ylabel="background noise [ADU]",
        title="noise of the sky-subtracted stamp",
    )
    ax_noise.legend(fontsize=7, markerscale=3)
    _scatter_pair(ax_fwhm, fwhm[0], fwhm[1], "seeing", "fwhm_arcsec")
    ax_fwhm.plot([0.8, 2.0], [0.8, 2.0], color="0.6", lw=0.8, ls="--")
    ax_fwhm.set(
        xlabel="seeing (survey record) [arcsec]",
        ylabel="measured FWHM [arcsec]",
        title="PSF width of bright stars",
    )
    peak_tables = tuple(t.assign(log_peak=np.log10(t["peak"].where(t["peak"] > 0))) for t in peaks)
    _scatter_pair(ax_peak, peak_tables[0], peak_tables[1], "mag", "log_peak")
    ax_peak.set(xlabel="aperture magnitude", ylabel="log10 peak above sky [ADU]", title="peak counts")
    return fig


@book_figure
def plot_distributions(
    real: pd.DataFrame, sim: pd.DataFrame, column: str, classes: Sequence[str], xlabel: str, log: bool = False
) -> Figure:
    """Histograms of one per-sequence statistic, one panel per class: real outline over simulated fill.

    Each set is normalised on its own (density), so the shapes compare although
    the simulated set is larger.
    """
    fig = new_figure(3.0 * len(classes), 2.5)
    axes = np.atleast_1d(fig.subplots(1, len(classes)))
    for ax, name in zip(axes, classes, strict=True):
        s = sim.loc[sim["class_name"] == name, column].dropna()
        r = real.loc[real["class_name"] == name, column].dropna()
        if log:
            s, r = s[s > 0], r[r > 0]
        if s.empty and r.empty:
            ax.set_title(f"{name}: no data", fontsize=9)
            continue
        lo, hi = np.percentile(pd.concat([s, r]), [1, 99])
        bins = np.geomspace(lo, hi, 25) if log else np.linspace(lo, hi, 25)
        compare_histograms(ax, s, r, bins, log)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=7)
        ax.tick_params(which="both", labelsize=6)
        shrink_legend(ax, 6)
    return fig


def compare_histograms(
    ax: Axes,
    sim: pd.Series | np.ndarray,
    real: pd.Series | np.ndarray,
    bins: np.ndarray,
    log: bool,
) -> None:
    """Simulated and real values on one axis (seaborn ``histplot``, density): real outline, simulated fill.

    One convention for every real-vs-simulated histogram of the book (chapters 2 and 5).
    ``bins`` are edges in data units; with ``log`` seaborn bins in log10 space, so they
    are given there.
    """
    import seaborn as sns  # here, not at the top: seaborn imports pyplot, which no other figure needs

    for values, tag, colour, filled in (
        (sim, "simulated", SIM_COLOR, True),
        (real, "real", REAL_COLOR, False),
    ):
        if len(values):
            sns.histplot(
                x=np.asarray(values),
                bins=np.log10(bins) if log else bins,
                stat="density",
                element="bars" if filled else "step",
                fill=filled,
                alpha=0.5 if filled else 1.0,
                linewidth=0 if filled else 1.5,
                color=colour,
                log_scale=log,
                label=f"{tag} ({len(values)})",
                ax=ax,
            )
    if log and bins[-1] / bins[0] < 30:  # short log axes: plain numbers, minor ticks labelled at 2 and 5
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_label_2_and_5))
    elif log:  # long ones: powers of ten only, or the minor labels overprint each other
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("density", fontsize=7)
    ax.legend()


def _label_2_and_5(value: float, _position: int) -> str:
    mantissa = round(value / 10 ** np.floor(np.log10(value))) if value > 0 else 0
    return f"{value:g}" if mantissa in (2, 5) else ""


def shrink_legend(ax: Axes, size: float) -> None:
    """Seaborn builds the legend with the default size and a title; fit it to a small panel."""
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title("")
        for text in legend.get_texts():
            text.set_fontsize(size)


def bright_examples(ds: SequenceDataset, quantile: float = 0.9) -> dict[str, int]:
    """Per class, the sequence whose brightest epoch sits at ``quantile`` of the class.

    Random draws from a survey's magnitude distribution are mostly faint sources
    barely above the noise; a high quantile shows what the class looks like while
    staying typical (the very brightest are often saturated).
    """
    centre = ds.stamps[:, :, 9:12, 9:12].max(axis=(2, 3)) - ds.condition("sky")
    peak = np.where(ds.mask, centre, -np.inf).max(axis=1)
    chosen = {}
    for label, name in enumerate(ds.class_names):
        members = np.flatnonzero(ds.labels == label)
        if members.size:
            order = members[np.argsort(peak[members], kind="stable")]
            chosen[name] = int(order[min(int(quantile * members.size), members.size - 1)])
    return chosen


# --------------------------------------------------------------------------- the RCNN chapters
@book_figure
def plot_training_history(history: dict[str, list[float]], title: str = "") -> Figure:
    """Loss and per-step accuracy by epoch, training vs held-out simulations."""
    fig = new_figure(7.0, 2.6)
    axes = fig.subplots(1, 2)
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key, label in zip(
        axes, ("loss", "accuracy"), ("cross-entropy", "per-step accuracy"), strict=True
    ):
        ax.plot(epochs, history[key], "o-", label="training (augmented)")
        ax.plot(epochs, history[f"val_{key}"], "s--", label="validation (simulated)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # one epoch: no ticks at 0.96, 1.04
    axes[1].set_ylim(0, 1)  # an accuracy, on its whole scale
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


@book_figure
def plot_confusion(
    matrices: dict[str, np.ndarray], class_names: Sequence[str], true_classes: Sequence[str]
) -> Figure:
    """Confusion matrices (rows: true real classes, columns: all predicted classes), row-normalised."""
    fig = new_figure(3.6 * len(matrices), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(matrices)))
    import seaborn as sns  # here, not at the top: seaborn imports pyplot, which no other figure needs

    rows = [list(class_names).index(c) for c in true_classes]
    for ax, (title, matrix) in zip(axes, matrices.items(), strict=True):
        counts = np.asarray(matrix)[rows]
        frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)
        labels = np.where(counts > 0, np.char.mod("%.2f", frac), "")  # empty cells stay blank
        sns.heatmap(
            frac,
            vmin=0,
            vmax=1,
            cmap="Blues",
            annot=labels,
            fmt="",
            annot_kws={"fontsize": 7},
            cbar=False,
            square=True,
            xticklabels=list(class_names),
            yticklabels=list(true_classes),
            ax=ax,
        )
        ax.tick_params(labelsize=7, rotation=0)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(title, fontsize=9)
    return fig


@book_figure
def plot_early_recall(curves: dict[str, dict[str, list[float]]], epochs_per_step: int = 3) -> Figure:
    """Recall per class against the number of epochs seen, one panel per model."""
    fig = new_figure(3.6 * len(curves), 2.8)
    axes = np.atleast_1d(fig.subplots(1, len(curves), sharey=True))
    for ax, (title, early) in zip(axes, curves.items(), strict=True):
        for name, values in early.items():
            ax.plot(np.arange(len(values)) + epochs_per_step, values, marker=".", label=name)
        ax.set_xlabel("epochs seen")
        ax.set_title(title, fontsize=9)
        ax.set_ylim(-0.03, 1.03)  # whole markers at recall 0 and 1
    axes[0].set_ylabel("recall")
    axes[-1].legend(fontsize=7, loc="lower right")
    return fig


@book_figure
def plot_prediction_examples(
    ds: SequenceDataset,
    indices: Sequence[int],
    predicted: Sequence[str],
    confidence: Sequence[float],
    max_epochs: int = 12,
) -> Figure:
    """Image strips of some sequences, titled with true and predicted class."""
    n = max(len(indices), 1)
    fig = new_figure(0.62 * max_epochs + 0.4, 0.95 * n + 0.2)
    grid = np.atleast_2d(fig.subplots(n, max_epochs))
    for row, i, pred, p in zip(grid, indices, predicted, confidence, strict=False):
        draw_strip(list(row), ds, int(i), max_epochs)
        truth = ds.class_names[ds.labels[i]]
        verdict = "correct" if pred == truth else "wrong"
        row[0].text(
            -0.2,
            0.5,
            f"{truth} → {pred} ({p:.2f}, {verdict})",
            transform=row[0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
            color="k" if pred == truth else CUT_COLOR,
        )
    return fig


@book_figure
def plot_psf_matching(
    ds: SequenceDataset, config, example: int = 0, curves: dict[str, np.ndarray] | None = None
) -> Figure:
    """Left: one constant star's centre pixel against seeing; right: the scatter of every star, both ways.

    ``curves``: :func:`rcnnlib.rcnn.preprocess.psf_matching_scatter` of ``ds``, if already computed.
    """
    if curves is None:
        from rcnnlib.rcnn.preprocess import psf_matching_scatter

        curves = psf_matching_scatter(ds, config)
    fig = new_figure(7.4, 2.8)
    left, right = fig.subplots(1, 2)
    scatter = {}
    for color, name in zip(("C1", "C0"), ("unmatched", "PSF-matched"), strict=True):
        left.scatter(curves["seeing"][example], curves[name][example], s=12, color=color, label=name)
        scatter[name] = np.nanstd(curves[name], axis=1)
    left.set_xlabel("seeing [arcsec]")
    left.set_ylabel("centre pixel / its median")
    left.set_title(f"one real constant star ({ds.ids[example]})", fontsize=8)
    left.legend(fontsize=7)
    top = np.nanpercentile(scatter["unmatched"], 99)
    bins = np.linspace(0, top, 30)
    for color, name in zip(("C1", "C0"), ("unmatched", "PSF-matched"), strict=True):
        right.hist(
            scatter[name],
            bins=bins,
            color=color,
            alpha=0.6,
            label=f"{name}: median {np.nanmedian(scatter[name]):.3f}",
        )
    right.set_xlabel("relative scatter of the centre pixel")
    right.set_ylabel("stars")
    right.set_title(f"{len(ds)} real constant stars", fontsize=8)
    right.legend(fontsize=7)
    return fig
