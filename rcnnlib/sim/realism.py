"""How realistic are the simulated sequences? Statistics measured identically on real and simulated data.

The network is trained on simulations and tested on real HiTS sequences, so any
systematic difference between the two (noise level, PSF width, brightness
scale, variability, cadence) is a domain shift the classifier must survive.
Every function here takes any :class:`~rcnnlib.dataset.SequenceDataset` and
runs **one code path** whatever its origin: a difference between the real and
the simulated table is a difference of the data, never of the measurement.

Each statistic returns a tidy :class:`pandas.DataFrame`, one row per observed
(sequence, epoch) or per sequence, with the sequence ``id`` and ``class_name``,
so the book can plot and tabulate them directly and :func:`compare` can put a
real and a simulated column side by side (medians and a two-sample KS test).

Statistics (all vectorised over sequences and epochs):

- :func:`background_noise` -- robust level and standard deviation of the
  stamp's outer pixels next to the epoch's sky and the noise expected from it
  (Poisson sky + read noise): tests gain, read noise and sky handling.
- :func:`psf_fwhm` -- FWHM of bright central sources (Moffat fit of
  :func:`rcnnlib.psf.fit_moffat`) next to the seeing: tests the PSF scale.
- :func:`peak_counts` -- central peak against aperture magnitude: tests the
  zero point / flux scale and how the peak falls with seeing.
- :func:`light_curve_variability` -- amplitude, scatter, reduced chi2 and
  detections of aperture light curves: tests the light-curve models.
- :func:`cadence` / :func:`epoch_gaps` -- epochs per sequence and time between them.
- :func:`noise_ratio_at_sky` -- simulated / real background noise in bins of sky.
- :func:`difference_noise` -- noise level and texture of the difference of consecutive epochs.
- :func:`night_gaps` -- nights, epochs per night and gaps between nights per sequence.

:func:`scorecard` puts the statistics that matter to a classifier in one table (real, simulated,
their difference, a tolerance bootstrapped over sequences, pass) for a simulation made in the
real objects' fields (:func:`simulate_like`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.photometry import (
    DECAM_GAIN,
    DECAM_PIXEL_SCALE,
    DECAM_READ_NOISE,
    aperture_photometry,
    flux_to_mag,
    flux_to_microjansky,
)
from rcnnlib.sim.simulate import ShardTask, simulate_shard
from rcnnlib.sim.survey import Survey
from rcnnlib.stamps import night_of, sigma_clip

__all__ = [
    "Check",
    "background_noise",
    "cadence",
    "compare",
    "difference_noise",
    "epoch_gaps",
    "epoch_table",
    "field_of",
    "light_curve_variability",
    "night_gaps",
    "noise_ratio_at_sky",
    "peak_counts",
    "peak_slope",
    "psf_fwhm",
    "robust_std",
    "scorecard",
    "seeing_cut",
    "simulate_like",
]

RING_INNER_RADIUS = 8.0
"""Default inner radius (px) of the background ring. A Moffat (beta = 3) of 1.2 arcsec FWHM
(4.4 px, the median HiTS seeing) is at 0.1 % of its peak at 8 px, so the ring of the 21x21
stamp (r >= 8 px: 213 pixels, the corners included) is sky for all but the brightest
sources; sigma clipping removes neighbours and cosmic rays."""
RISE_BASELINE_EPOCHS = 3
"""Faintest epochs averaged as the baseline of :func:`light_curve_variability`'s ``rise_mag``."""
_FIT_CHUNK = 2048  # stamps per Moffat-fit call: bounds the (chunk, 441, 8) Jacobian


# ---------------------------------------------------------------- helpers
def robust_std(
    values: np.ndarray, axis: int = -1, n_sigma: float = 3.0, iterations: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped median and standard deviation along ``axis``: ``(level, sigma)``.

    Why robust: a stamp's outer pixels are sky plus the odd neighbouring star or
    cosmic ray; a plain standard deviation would report those, not the noise.
    The clipping threshold comes from the MAD; the returned sigma is the standard
    deviation of the kept pixels, corrected for the truncation at ``n_sigma`` so
    pure Gaussian noise gives an unbiased sigma. (A MAD-based sigma would be
    quantised on integer-ADU stamps: the MAD of integers takes few values.) NaNs
    are ignored (used to mark excluded pixels).
    """
    data = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    # the clip of rcnnlib.stamps, once more than the centre it reports: the kept pixels are
    # those within n_sigma of the last centre
    clipped = sigma_clip(data, n_sigma, iterations + 1)
    level, kept = clipped.level[..., None], clipped.kept
    # variance of N(0, 1) truncated to |x| <= k: 1 - 2 k phi(k) / (2 Phi(k) - 1)
    inside = 2.0 * stats.norm.cdf(n_sigma) - 1.0
    truncated_var = 1.0 - 2.0 * n_sigma * stats.norm.pdf(n_sigma) / inside
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN, as intended
        sigma = np.nanstd(kept, axis=-1) / np.sqrt(truncated_var)
    return level[..., 0], sigma


def _ring_mask(size: int, inner_radius: float) -> np.ndarray:
    """Boolean (size, size) mask of pixels at least ``inner_radius`` from the stamp centre."""
    centre = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    return np.hypot(yy - centre, xx - centre) >= inner_radius


def _class_names(ds: SequenceDataset) -> np.ndarray:
    return np.asarray(ds.class_names, dtype=object)[ds.labels]


def epoch_table(ds: SequenceDataset) -> pd.DataFrame:
    """One row per observed (sequence, epoch): id, class, epoch index, MJD and the conditions.

    The common left half of every per-epoch statistic, so the statistics can be
    plotted against any condition without a join.
    """
    seq, epoch = np.nonzero(ds.mask)
    frame = pd.DataFrame(
        {
            "id": ds.ids[seq],
            "class_name": _class_names(ds)[seq],
            "sequence": seq,
            "epoch": epoch,
            "mjd": ds.mjd[seq, epoch],
        }
    )
    for k, name in enumerate(CONDITION_NAMES):
        frame[name] = ds.conditions[seq, epoch, k].astype(np.float64)
    frame["conditions_estimated"] = ds.conditions_estimated[seq, epoch]
    return frame


def _central_peak(stamps: np.ndarray, sky: np.ndarray, half: int = 1) -> np.ndarray:
    """Maximum of the central (2 half + 1)^2 pixels minus ``sky``: the source's peak counts."""
    c = stamps.shape[-1] // 2
    core = stamps[..., c - half : c + half + 1, c - half : c + half + 1]
    return core.max(axis=(-2, -1)).astype(np.float64) - sky


def seeing_cut(ds: SequenceDataset, max_seeing: float = 2.0) -> SequenceDataset:
    """A copy of ``ds`` with epochs of seeing >= ``max_seeing`` (arcsec) masked out and zeroed.

    Why: the paper drops such epochs as bad quality and the simulator never renders
    them, while the real loader keeps every epoch; comparing like with like means
    applying the same cut to the real data. Epochs keep their position (no compaction).
    """
    bad = ds.mask & ~(ds.condition("seeing") < max_seeing)
    out = ds.subset(slice(None))
    out.mask = ds.mask & ~bad
    out.stamps = np.where(bad[..., None, None], np.float32(0.0), ds.stamps)
    out.metadata = {**ds.metadata, "seeing_cut": max_seeing}
    return out


def _neighbour_correlation(
    stamps: np.ndarray, ring: np.ndarray, level: np.ndarray, sigma: np.ndarray, n_sigma: float
) -> np.ndarray:
    """Lag-1 correlation of adjacent ring pixels (x and y pairs pooled), per stamp.

    Pairs enter only when both pixels lie in the ring and within ``n_sigma`` of the
    level, so a neighbour star or cosmic ray does not pass for correlated noise.
    """
    resid = stamps.astype(np.float64) - level[:, None, None]
    with np.errstate(invalid="ignore"):
        good = ring[None] & (np.abs(resid) <= n_sigma * sigma[:, None, None])
    num = np.zeros(len(stamps))
    den_a = np.zeros(len(stamps))
    den_b = np.zeros(len(stamps))
    for a, b, ga, gb in (
        (resid[:, :, :-1], resid[:, :, 1:], good[:, :, :-1], good[:, :, 1:]),
        (resid[:, :-1, :], resid[:, 1:, :], good[:, :-1, :], good[:, 1:, :]),
    ):
        both = ga & gb
        num += np.where(both, a * b, 0.0).sum(axis=(1, 2))
        den_a += np.where(both, a * a, 0.0).sum(axis=(1, 2))
        den_b += np.where(both, b * b, 0.0).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / np.sqrt(den_a * den_b)


# ------------------------------------------------------------- statistics
def background_noise(
    ds: SequenceDataset,
    gain: float = DECAM_GAIN,
    read_noise: float = DECAM_READ_NOISE,
    inner_radius: float = RING_INNER_RADIUS,
    n_sigma: float = 3.0,
) -> pd.DataFrame:
    """Per observed epoch: robust background level and noise of the stamp's outer ring.

    Columns added to :func:`epoch_table`:

    - ``level``: sigma-clipped median of the ring pixels (ADU), ``level_minus_sky``
      the same minus the epoch's ``sky`` condition (what sky subtraction leaves);
    - ``noise``: clipped, MAD-based standard deviation of the ring (ADU), i.e. the
      noise of the sky-subtracted stamp away from the source;
    - ``expected_noise``: ``sqrt(sky * gain + read_noise^2) / gain`` (ADU), Poisson
      noise of the sky plus read noise, and ``noise_ratio = noise / expected_noise``;
    - ``clipped_fraction``: share of ring pixels rejected (neighbours, cosmic rays);
    - ``noise_correlation``: correlation of horizontally and vertically adjacent ring
      pixels (mean of both): 0 for independent pixel noise as in a raw exposure,
      clearly positive when a stamp was resampled (interpolation spreads each
      pixel's noise over its neighbours and lowers the per-pixel noise);
    - ``peak_snr``: central 3x3 peak above ``level`` in units of ``expected_noise``,
      to select epochs whose source is faint enough not to leak into the ring. The
      expected, not the measured, noise: a stamp whose ring is polluted must not
      look faint because its measured noise is large.

    ``gain`` (e-/ADU) and ``read_noise`` (e-) default to DECam CCD25 (HiTS 2015).
    """
    table = epoch_table(ds)
    seq, epoch = table["sequence"].to_numpy(), table["epoch"].to_numpy()
    stamps = ds.stamps[seq, epoch]
    ring = _ring_mask(stamps.shape[-1], inner_radius)
    pixels = stamps[:, ring].astype(np.float64)
    level, noise = robust_std(pixels, n_sigma=n_sigma) if len(pixels) else (np.empty(0), np.empty(0))
    with np.errstate(invalid="ignore"):
        kept = np.abs(pixels - level[:, None]) <= n_sigma * noise[:, None]
    sky = table["sky"].to_numpy()
    expected = np.sqrt(np.clip(sky, 0.0, None) * gain + read_noise**2) / gain
    correlation = _neighbour_correlation(stamps, ring, level, noise, n_sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["level"] = level
        table["level_minus_sky"] = level - sky
        table["noise"] = noise
        table["expected_noise"] = expected
        table["noise_ratio"] = noise / expected
        table["clipped_fraction"] = 1.0 - kept.mean(axis=1) if len(pixels) else np.empty(0)
        table["noise_correlation"] = correlation
        table["peak_snr"] = _central_peak(stamps, level) / expected
    return table


def psf_fwhm(
    ds: SequenceDataset,
    min_snr: float = 50.0,
    max_peak: float = 25000.0,
    max_offset: float = 2.0,
    pixel_scale: float = DECAM_PIXEL_SCALE,
    max_epochs: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Measured FWHM of the central source at epochs where it is bright, next to the seeing.

    Epochs are kept when the aperture S/N (:func:`rcnnlib.photometry.aperture_photometry`)
    is at least ``min_snr`` (a faint source's width is noise) and the sky-subtracted
    peak stays below ``max_peak`` ADU (saturated or non-linear cores look wide).
    Each kept stamp is fitted with an elliptical Moffat plus background
    (:func:`rcnnlib.psf.fit_moffat`, the estimator also used to calibrate the
    simulator's PSF shapes). Columns added to :func:`epoch_table`: ``snr``,
    ``peak``, ``fwhm_px``, ``fwhm_arcsec``, ``fwhm_ratio`` (= FWHM / seeing),
    ``beta``, ``ellipticity``, ``offset_px`` (fitted centre from the stamp centre)
    and ``ok`` (a sane fit within ``max_offset`` px of the centre: a fit that
    wandered onto a neighbour measures the neighbour). The fit costs ~7 ms per
    stamp, so ``max_epochs`` keeps a random subset (``seed``) of the bright epochs.
    """
    from rcnnlib.psf import fit_moffat

    table = epoch_table(ds)
    seq, epoch = table["sequence"].to_numpy(), table["epoch"].to_numpy()
    flux, err = aperture_photometry(ds, pixel_scale=pixel_scale)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux[seq, epoch] / err[seq, epoch]
    peak = _central_peak(ds.stamps[seq, epoch], table["sky"].to_numpy())
    table["snr"] = snr
    table["peak"] = peak
    table = table[(snr >= min_snr) & (peak < max_peak)].reset_index(drop=True)
    if max_epochs is not None and len(table) > max_epochs:
        keep = np.sort(np.random.default_rng(seed).choice(len(table), max_epochs, replace=False))
        table = table.iloc[keep].reset_index(drop=True)
    stamps = ds.stamps[table["sequence"].to_numpy(), table["epoch"].to_numpy()]
    fits: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(stamps), _FIT_CHUNK):
        for key, value in fit_moffat(stamps[start : start + _FIT_CHUNK]).items():
            fits.setdefault(key, []).append(np.asarray(value))
    fit = {k: np.concatenate(v) for k, v in fits.items()} if fits else {}
    centre = (ds.stamps.shape[-1] - 1) / 2.0
    empty = np.empty(0)
    fwhm_px = fit.get("fwhm", empty)
    offset = np.hypot(fit.get("x0", empty) - centre, fit.get("y0", empty) - centre)
    table["fwhm_px"] = fwhm_px
    table["fwhm_arcsec"] = fwhm_px * pixel_scale
    table["fwhm_ratio"] = table["fwhm_arcsec"] / table["seeing"]
    table["beta"] = fit.get("beta", empty)
    table["ellipticity"] = fit.get("ellipticity", empty)
    table["offset_px"] = offset
    table["ok"] = fit.get("ok", np.zeros(0, dtype=bool)).astype(bool) & (offset <= max_offset)
    return table


def peak_counts(
    ds: SequenceDataset,
    pixel_scale: float = DECAM_PIXEL_SCALE,
    gain: float = DECAM_GAIN,
    read_noise: float = DECAM_READ_NOISE,
) -> pd.DataFrame:
    """Per observed epoch: sky-subtracted central peak (max of the 3x3 core) and aperture magnitude.

    Why: at fixed PSF the peak is proportional to the flux, so log10(peak) falls
    by 0.4 per magnitude and by 2 per decade of seeing (peak ~ flux / FWHM^2); a
    simulator with a wrong zero point, exposure time or PSF scale breaks one of
    these (see :func:`peak_slope`). Columns added to :func:`epoch_table`:
    ``peak`` (ADU), ``flux``, ``flux_err`` (ADU, aperture of 2 x seeing),
    ``snr``, ``mag`` (NaN for non-positive flux) and ``peak_fraction`` = peak / flux.
    """
    table = epoch_table(ds)
    seq, epoch = table["sequence"].to_numpy(), table["epoch"].to_numpy()
    flux, err = aperture_photometry(ds, pixel_scale=pixel_scale, gain=gain, read_noise=read_noise)
    flux, err = flux[seq, epoch], err[seq, epoch]
    peak = _central_peak(ds.stamps[seq, epoch], table["sky"].to_numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        table["peak"] = peak
        table["flux"] = flux
        table["flux_err"] = err
        table["snr"] = flux / err
        table["mag"] = flux_to_mag(flux, table["zero_point"].to_numpy(), table["exp_time"].to_numpy())
        table["peak_fraction"] = np.where(flux > 0, peak / flux, np.nan)
    return table


def peak_slope(
    table: pd.DataFrame,
    min_snr: float = 20.0,
    max_peak: float = 25000.0,
    ref_mag: float = 20.0,
    ref_seeing: float = 1.2,
) -> dict[str, float]:
    """Fit ``log10(peak) = a + b (mag - ref_mag) + c log10(seeing / ref_seeing)`` to :func:`peak_counts`.

    Expected: ``b = -0.4`` (peak proportional to flux) and ``c`` near ``-2``
    (peak ~ flux / FWHM^2, a little shallower for a pixelised PSF); ``a`` is the
    log10 peak (ADU) of a ``ref_mag`` source at ``ref_seeing`` arcsec, which moves
    with the zero point, the exposure time and the PSF's width at given seeing.
    Only epochs with aperture S/N >= ``min_snr``, a finite magnitude and an
    unsaturated peak enter (sky-dominated and saturated peaks bend the relation).
    Returns ``{"mag_slope": b, "seeing_slope": c, "log_peak_ref": a, "rms": ..., "n": ...}``.
    """
    sel = (table["snr"] >= min_snr) & (table["peak"] > 0) & (table["peak"] < max_peak)
    sel &= np.isfinite(table["mag"])
    t = table[sel]
    if len(t) < 3:
        nan = float("nan")
        return {"mag_slope": nan, "seeing_slope": nan, "log_peak_ref": nan, "rms": nan, "n": len(t)}
    design = np.column_stack([np.ones(len(t)), t["mag"] - ref_mag, np.log10(t["seeing"] / ref_seeing)])
    y = np.log10(t["peak"].to_numpy())
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    rms = float(np.sqrt(np.mean((y - design @ coef) ** 2)))
    return {
        "mag_slope": float(coef[1]),
        "seeing_slope": float(coef[2]),
        "log_peak_ref": float(coef[0]),
        "rms": rms,
        "n": len(t),
    }


def light_curve_variability(
    ds: SequenceDataset,
    detection_sigma: float = 5.0,
    min_detections: int = 3,
    pixel_scale: float = DECAM_PIXEL_SCALE,
    gain: float = DECAM_GAIN,
    read_noise: float = DECAM_READ_NOISE,
) -> pd.DataFrame:
    """Per sequence: how variable is its aperture light curve?

    From :func:`rcnnlib.photometry.aperture_photometry` (sky = the epoch's ``sky``
    condition, aperture 2 x seeing), one row per sequence with ``n_epochs``,
    ``n_detections`` (epochs with flux >= ``detection_sigma`` x its error),
    ``mean_mag`` (median magnitude of the detections), ``amplitude`` (p95 - p5 of
    the detected magnitudes), ``mag_std`` (their standard deviation) and
    ``chi2_red``: reduced chi2 of all epochs' fluxes (in microjansky, so zero-point
    changes between epochs cancel) about their weighted mean -- about 1 for a
    constant source with correct errors. Magnitude statistics need at least
    ``min_detections`` detections (else NaN). ``rise_mag`` is the AB magnitude of the
    brightest epoch's flux above the mean of the :data:`RISE_BASELINE_EPOCHS` faintest: a
    supernova's peak magnitude with its host subtracted, as a difference image would see it.
    """
    flux, err = aperture_photometry(ds, pixel_scale=pixel_scale, gain=gain, read_noise=read_noise)
    zp, texp = ds.condition("zero_point"), ds.condition("exp_time")
    with np.errstate(invalid="ignore", divide="ignore"):
        detected = ds.mask & (flux >= detection_sigma * err) & (err > 0)
        mag = np.where(detected, flux_to_mag(flux, zp, texp), np.nan)
        f_ujy = flux_to_microjansky(flux, zp, texp)
        e_ujy = flux_to_microjansky(err, zp, texp)
        valid = ds.mask & np.isfinite(f_ujy) & (e_ujy > 0)
        w = np.where(valid, 1.0 / e_ujy**2, 0.0)
        f0 = np.where(valid, f_ujy, 0.0)
        mean = (w * f0).sum(axis=1) / w.sum(axis=1)
        n_valid = valid.sum(axis=1)
        chi2 = (w * (f0 - mean[:, None]) ** 2).sum(axis=1) / (n_valid - 1)
    n_det = detected.sum(axis=1)
    enough = n_det >= min_detections
    # the rise above the faintest epochs: a transient's own peak, whatever host lies under it
    ordered = np.sort(np.where(valid, f_ujy, np.inf), axis=1)
    baseline = ordered[:, :RISE_BASELINE_EPOCHS].mean(axis=1) if ordered.shape[1] else np.empty(0)
    rise = np.nanmax(np.where(valid, f_ujy, -np.inf), axis=1, initial=-np.inf) - baseline
    with np.errstate(invalid="ignore", divide="ignore"):
        rise_mag = np.where(
            (n_valid > RISE_BASELINE_EPOCHS) & (rise > 0), 23.9 - 2.5 * np.log10(rise), np.nan
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: handled by `enough`
        p5, p95 = np.nanpercentile(mag, [5, 95], axis=1) if len(ds) else (np.empty(0), np.empty(0))
        median = np.nanmedian(mag, axis=1) if len(ds) else np.empty(0)
        std = np.nanstd(mag, axis=1, ddof=1) if len(ds) else np.empty(0)
    return pd.DataFrame(
        {
            "id": ds.ids,
            "class_name": _class_names(ds),
            "sequence": np.arange(len(ds)),
            "n_epochs": ds.mask.sum(axis=1),
            "n_detections": n_det,
            "mean_mag": np.where(enough, median, np.nan),
            "amplitude": np.where(enough, p95 - p5, np.nan),
            "mag_std": np.where(enough, std, np.nan),
            "chi2_red": np.where(n_valid >= 2, chi2, np.nan),
            "rise_mag": rise_mag,
        }
    )


def cadence(ds: SequenceDataset) -> pd.DataFrame:
    """Per sequence: number of observed epochs, nights, time span and gaps between epochs (days).

    Nights are :func:`rcnnlib.stamps.night_of`. Gaps are between consecutive observed epochs in
    time order.
    """
    mjd = np.where(ds.mask, ds.mjd, np.nan)
    ordered = np.sort(mjd, axis=1)  # NaNs last
    gaps = np.diff(ordered, axis=1)
    nights = np.where(np.isfinite(mjd), night_of(np.nan_to_num(mjd)), np.nan)
    n_nights = np.array([np.unique(row[np.isfinite(row)]).size for row in nights], dtype=int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sequences of a single epoch have no gap
        out = pd.DataFrame(
            {
                "id": ds.ids,
                "class_name": _class_names(ds),
                "sequence": np.arange(len(ds)),
                "n_epochs": ds.mask.sum(axis=1),
                "n_nights": n_nights,
                "first_mjd": np.nanmin(mjd, axis=1) if len(ds) else np.empty(0),
                "span_days": (np.nanmax(mjd, axis=1) - np.nanmin(mjd, axis=1)) if len(ds) else np.empty(0),
                "median_gap_days": np.nanmedian(gaps, axis=1) if len(ds) else np.empty(0),
                "min_gap_days": np.nanmin(gaps, axis=1) if len(ds) else np.empty(0),
                "max_gap_days": np.nanmax(gaps, axis=1) if len(ds) else np.empty(0),
            }
        )
    return out


def epoch_gaps(ds: SequenceDataset) -> pd.DataFrame:
    """One row per pair of consecutive observed epochs: ``id``, ``class_name``, ``gap_days``."""
    mjd = np.sort(np.where(ds.mask, ds.mjd, np.nan), axis=1)
    gaps = np.diff(mjd, axis=1)
    seq, k = np.nonzero(np.isfinite(gaps))
    return pd.DataFrame(
        {"id": ds.ids[seq], "class_name": _class_names(ds)[seq], "sequence": seq, "gap_days": gaps[seq, k]}
    )


# ------------------------------------------------------------- comparison
def compare(
    real: pd.DataFrame,
    sim: pd.DataFrame,
    column: str,
    by: str | Sequence[str] | None = "class_name",
    quantiles: tuple[float, float] = (0.16, 0.84),
) -> pd.DataFrame:
    """Side-by-side summary of one statistic in a real and a simulated table.

    One row per group of ``by`` present in both tables, plus an ``all`` row:
    counts, medians and the ``quantiles`` of each, the ratio of medians
    (sim / real) and the two-sample Kolmogorov-Smirnov statistic and p-value
    (:func:`scipy.stats.ks_2samp`). NaNs are dropped first. Why KS: it compares
    whole distributions, where a median ratio alone can hide a wrong spread.
    """
    keys = [by] if isinstance(by, str) else list(by or [])

    def summary(r: pd.Series, s: pd.Series) -> dict[str, float]:
        r, s = r.dropna().to_numpy(float), s.dropna().to_numpy(float)
        row: dict[str, float] = {"n_real": r.size, "n_sim": s.size}
        for name, v in (("real", r), ("sim", s)):
            row[f"median_{name}"] = float(np.median(v)) if v.size else np.nan
            for q in quantiles:
                row[f"p{round(100 * q)}_{name}"] = float(np.quantile(v, q)) if v.size else np.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            row["median_ratio"] = row["median_sim"] / row["median_real"]
        if r.size and s.size:
            test = stats.ks_2samp(r, s)
            row["ks_statistic"], row["ks_pvalue"] = float(test.statistic), float(test.pvalue)
        else:
            row["ks_statistic"] = row["ks_pvalue"] = np.nan
        return row

    rows = []
    if keys:
        groups_r = dict(tuple(real.groupby(keys)))
        groups_s = dict(tuple(sim.groupby(keys)))
        for key in sorted(set(groups_r) & set(groups_s)):
            label = key if isinstance(key, tuple) else (key,)
            rows.append(
                {
                    **dict(zip(keys, label, strict=True)),
                    **summary(groups_r[key][column], groups_s[key][column]),
                }
            )
    rows.append({**dict.fromkeys(keys, "all"), **summary(real[column], sim[column])})
    out = pd.DataFrame(rows)
    out.insert(len(keys), "statistic", column)
    return out


def noise_ratio_at_sky(
    real: SequenceDataset | pd.DataFrame,
    sim: SequenceDataset | pd.DataFrame,
    n_bins: int = 5,
    max_peak_snr: float | None = 50.0,
    max_seeing: float | None = 2.0,
    min_count: int = 10,
    gain: float = DECAM_GAIN,
    read_noise: float = DECAM_READ_NOISE,
    inner_radius: float = RING_INNER_RADIUS,
) -> pd.DataFrame:
    """Background noise of simulated vs real stamps at matched sky level.

    The noise of a sky-subtracted stamp grows as sqrt(sky), so real and
    simulated epochs are compared within bins of the ``sky`` condition: bin
    edges are quantiles of the real epochs' sky, clipped to the range both
    cover. Within a bin the sky still varies (the top bin spans 150-1800 ADU
    of moonlit epochs), so ``ratio`` compares noise normalised by the same
    formula of each epoch's own sky, ``median(noise / expected_noise)`` sim
    over real: the ratio of noises at equal sky, whatever the spread inside
    the bin. (The formula cancels; a simulator ignoring its gain still shows
    up, as its measured noise leaves the formula.)

    Left out: epochs whose central source peaks above ``max_peak_snr`` x the
    expected noise (its wings leak into the ring: on real HiTS stars the ring
    noise is within 1 % of the sky's below that, and 1.5-5x above it for bright
    stars at seeing 1.6-2"); epochs of seeing >= ``max_seeing`` (the paper's
    quality cut: never simulated, and broad wings leak the most); epochs with
    estimated conditions. ``real`` / ``sim`` are datasets or
    :func:`background_noise` tables. One row per bin with at least
    ``min_count`` epochs on both sides: sky range, counts, median sky and
    noise of each, their median ``noise_ratio`` and ``ratio`` (sim / real).
    """
    tables = []
    for data in (real, sim):
        t = (
            data
            if isinstance(data, pd.DataFrame)
            else background_noise(data, gain=gain, read_noise=read_noise, inner_radius=inner_radius)
        )
        keep = np.isfinite(t["noise"]) & ~t["conditions_estimated"].astype(bool)
        if max_peak_snr is not None:
            keep &= t["peak_snr"] <= max_peak_snr
        if max_seeing is not None:
            keep &= t["seeing"] < max_seeing
        tables.append(t[keep])
    r, s = tables
    lo = max(r["sky"].min(), s["sky"].min())
    hi = min(r["sky"].max(), s["sky"].max())
    r_in = r[(r["sky"] >= lo) & (r["sky"] <= hi)]
    edges: Sequence[float] = (
        np.unique(np.quantile(r_in["sky"], np.linspace(0.0, 1.0, n_bins + 1))).tolist() if len(r_in) else []
    )
    rows = []
    for a, b in itertools.pairwise(edges):
        last = b == edges[-1]
        in_r = (r["sky"] >= a) & ((r["sky"] <= b) if last else (r["sky"] < b))
        in_s = (s["sky"] >= a) & ((s["sky"] <= b) if last else (s["sky"] < b))
        if in_r.sum() < min_count or in_s.sum() < min_count:
            continue
        qr, qs = r.loc[in_r, "noise_ratio"].median(), s.loc[in_s, "noise_ratio"].median()
        rows.append(
            {
                "sky_min": a,
                "sky_max": b,
                "n_real": int(in_r.sum()),
                "n_sim": int(in_s.sum()),
                "sky_median_real": r.loc[in_r, "sky"].median(),
                "sky_median_sim": s.loc[in_s, "sky"].median(),
                "noise_real": r.loc[in_r, "noise"].median(),
                "noise_sim": s.loc[in_s, "noise"].median(),
                "noise_ratio_real": qr,
                "noise_ratio_sim": qs,
                "ratio": qs / qr,
            }
        )
    return pd.DataFrame(rows)


def match_magnitudes(
    real: pd.DataFrame,
    sim: pd.DataFrame,
    column: str = "mean_mag",
    quantiles: tuple[float, float] = (0.05, 0.95),
) -> pd.DataFrame:
    """Simulated rows whose ``column`` lies within the real class's central range.

    The real labelled stars are a bright selection while simulated sources follow
    the survey's full magnitude distribution; comparing variability at matched
    brightness separates the light-curve models from that selection effect.
    """
    keep = np.zeros(len(sim), dtype=bool)
    for name, group in real.groupby("class_name"):
        values = group[column].dropna()
        if values.empty:
            continue
        lo, hi = values.quantile(list(quantiles))
        keep |= ((sim["class_name"] == name) & sim[column].between(lo, hi)).to_numpy()
    return sim[keep]


def matched_pairs(
    real: pd.DataFrame, sim: pd.DataFrame, classes: Sequence[str], seed: int = 0
) -> dict[str, tuple[int, int]]:
    """Per class, a random real sequence and the simulated one closest to it in mean magnitude.

    ``real`` and ``sim`` are :func:`light_curve_variability` tables; returns
    ``{class: (real sequence, simulated sequence)}`` for the classes both hold, so a
    side-by-side figure compares like with like in brightness.
    """
    rng = np.random.default_rng(seed)
    pairs = {}
    for name in classes:
        r = real[(real["class_name"] == name) & real["mean_mag"].notna()]
        s = sim[(sim["class_name"] == name) & sim["mean_mag"].notna()]
        if r.empty or s.empty:
            continue
        i_real = int(rng.choice(r["sequence"]))
        target = r.set_index("sequence").loc[i_real, "mean_mag"]
        nearest = (s["mean_mag"] - target).abs().idxmin()
        pairs[name] = (i_real, int(s.loc[nearest, "sequence"]))
    return pairs


# ------------------------------------------------------------- difference noise
def difference_noise(
    ds: SequenceDataset,
    gain: float = DECAM_GAIN,
    read_noise: float = DECAM_READ_NOISE,
    inner_radius: float = RING_INNER_RADIUS,
    n_sigma: float = 3.0,
) -> pd.DataFrame:
    """Per pair of consecutive observed epochs: noise level and texture of the difference of the stamps.

    Why differences: a single stamp's ring holds static structure too (a host galaxy's wings,
    faint neighbours) that sigma clipping cannot remove, and that structure reads as correlated,
    extra noise. On real HiTS supernova stamps it raises the single-stamp neighbour correlation
    from 0.17 to 0.28 and the noise ratio from 0.86 to 0.93; the difference of two epochs keeps
    only what changes, the noise and how the pipeline resampled it. Columns: ``id``,
    ``class_name``, ``sequence``, ``epoch`` (the later of the pair), ``sky`` (mean of the two),
    ``noise`` and ``expected_noise`` (two epochs' sky Poisson and read noise in quadrature),
    ``noise_ratio``, ``noise_correlation`` (as in :func:`background_noise`) and ``peak_snr``
    of the central source above the later epoch's ring (to keep faint epochs), and
    ``conditions_estimated`` (either epoch).
    """
    order = np.argsort(np.where(ds.mask, ds.mjd, np.inf), axis=1, kind="stable")
    n_obs = ds.mask.sum(axis=1)
    seq, k = np.nonzero(np.arange(ds.mask.shape[1] - 1)[None, :] < (n_obs - 1)[:, None])
    first, second = order[seq, k], order[seq, k + 1]
    stamps = ds.stamps[seq, second].astype(np.float64) - ds.stamps[seq, first]
    ring = _ring_mask(ds.stamps.shape[-1], inner_radius)
    pixels = stamps[:, ring]
    level, noise = robust_std(pixels, n_sigma=n_sigma) if len(pixels) else (np.empty(0), np.empty(0))
    sky = ds.condition("sky").astype(np.float64)
    sky_a, sky_b = np.clip(sky[seq, first], 0.0, None), np.clip(sky[seq, second], 0.0, None)
    expected = np.sqrt((sky_a + sky_b) * gain + 2.0 * read_noise**2) / gain
    later = ds.stamps[seq, second].astype(np.float64)
    later_level, _ = robust_std(later[:, ring], n_sigma=n_sigma) if len(later) else (np.empty(0), None)
    single = np.sqrt(sky_b * gain + read_noise**2) / gain
    estimated = np.zeros(ds.mask.shape, bool) if ds.conditions_estimated is None else ds.conditions_estimated
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame(
            {
                "id": ds.ids[seq],
                "class_name": _class_names(ds)[seq],
                "sequence": seq,
                "epoch": second,
                "sky": 0.5 * (sky_a + sky_b),
                "noise": noise,
                "expected_noise": expected,
                "noise_ratio": noise / expected,
                "noise_correlation": _neighbour_correlation(stamps, ring, level, noise, n_sigma),
                "peak_snr": _central_peak(later, later_level) / single,
                "conditions_estimated": estimated[seq, first] | estimated[seq, second],
            }
        )


def night_gaps(ds: SequenceDataset) -> pd.DataFrame:
    """Per sequence: observed nights, epochs per night and the mean gap between consecutive nights (days).

    Nights are :func:`rcnnlib.stamps.night_of`; the gap between two nights is the time between
    their first epochs. The within-night spacing (about 0.07 d on HiTS) says nothing of the
    nights a field was observed on, which is what a light curve's shape depends on.
    """
    rows = []
    for i in range(len(ds)):
        mjd = np.sort(ds.mjd[i][ds.mask[i]])
        nights, first = np.unique(night_of(mjd), return_index=True)
        starts = mjd[first]
        rows.append(
            (
                nights.size,
                mjd.size / max(nights.size, 1),
                float(np.diff(starts).mean()) if nights.size > 1 else np.nan,
            )
        )
    values = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return pd.DataFrame(
        {
            "id": ds.ids,
            "class_name": _class_names(ds),
            "sequence": np.arange(len(ds)),
            "n_epochs": ds.mask.sum(axis=1),
            "n_nights": values[:, 0].astype(int),
            "epochs_per_night": values[:, 1],
            "night_gap_days": values[:, 2],
        }
    )


# ------------------------------------------------------------- scorecard
SCORECARD_ALPHA = 0.05
"""Chance that a perfect simulator fails any check of the scorecard: each of its m checks allows
``norm.ppf(1 - alpha / (2 m))`` standard errors of the difference (Bonferroni; 2.9 for 16 checks),
so twenty statistics do not make a false failure likely."""
N_BOOTSTRAP = 200
"""Bootstrap resamples of the sequences (enough for a standard error good to ~5 %)."""


@dataclass(frozen=True)
class Check:
    """One row of the realism scorecard: a statistic measured the same way on real and simulated data.

    ``tolerance`` is z standard errors of the difference (:data:`SCORECARD_ALPHA`), the standard errors
    bootstrapped over sequences of each set (so a statistic the few real sequences pin down
    loosely gets a loose tolerance, and a well-measured one a tight one); the check passes
    when ``|difference| <= tolerance``, whichever side the simulation errs on.
    """

    statistic: str
    group: str
    real: float
    simulated: float
    difference: float  # simulated - real
    ratio: float  # simulated / real
    tolerance: float
    passed: bool
    n_real: int
    n_sim: int


def bootstrap(
    table: pd.DataFrame, statistic: Callable[[pd.DataFrame], float], rng: np.random.Generator, n: int
) -> tuple[float, float]:
    """``(statistic(table), bootstrap standard error)``, resampling whole sequences with replacement.

    Rows of one sequence (its epochs) move together: epochs of one star are not independent draws.
    """
    value = float(statistic(table))
    groups = list(table.groupby("sequence", sort=False).indices.values())
    if len(groups) < 2:
        return value, np.nan
    draws = []
    for _ in range(n):
        pick = rng.integers(0, len(groups), len(groups))
        draws.append(statistic(table.iloc[np.concatenate([groups[i] for i in pick])]))
    return value, float(np.nanstd(draws, ddof=1))


@dataclass(frozen=True)
class _Statistic:
    """A statistic of a table and the columns it reads (bootstrap copies only those: 3x faster)."""

    columns: tuple[str, ...]
    of: Callable[[pd.DataFrame], float]


def _finite(t: pd.DataFrame, column: str) -> np.ndarray:
    values = t[column].to_numpy(np.float64)
    return values[np.isfinite(values)]


def _median(column: str, log: bool = False) -> _Statistic:
    def stat(t: pd.DataFrame) -> float:
        values = _finite(t, column)
        if log:
            values = np.log10(values[values > 0])
        return float(np.median(values)) if values.size else np.nan

    return _Statistic((column,), stat)


def _mean(column: str) -> _Statistic:
    def stat(t: pd.DataFrame) -> float:
        values = _finite(t, column)
        return float(values.mean()) if values.size else np.nan

    return _Statistic((column,), stat)


def _spread(column: str) -> _Statistic:
    """Robust spread (half the p16-p84 range) of a column."""

    def stat(t: pd.DataFrame) -> float:
        values = _finite(t, column)
        return float(np.diff(np.quantile(values, [0.16, 0.84]))[0] / 2.0) if values.size else np.nan

    return _Statistic((column,), stat)


_LOG_PEAK = _Statistic(("snr", "peak", "mag", "seeing"), lambda t: peak_slope(t)["log_peak_ref"])


def _checks(rows: list[tuple[str, str, float, float, float, float, int, int]], alpha: float) -> list[Check]:
    """Checks from ``(statistic, group, real, se_real, simulated, se_sim, n_real, n_sim)`` rows."""
    z = float(stats.norm.ppf(1.0 - alpha / (2.0 * max(len(rows), 1))))
    out = []
    for statistic, group, r, se_r, s, se_s, n_r, n_s in rows:
        tolerance = z * float(np.hypot(se_r, se_s))
        ratio = s / r if r != 0 else np.nan
        passed = bool(np.isfinite(s - r) and np.isfinite(tolerance) and abs(s - r) <= tolerance)
        out.append(Check(statistic, group, r, s, s - r, ratio, tolerance, passed, n_r, n_s))
    return out


STAR_CLASSES = ("RRL", "EB", "NV")
KNOWN_GAPS: dict[tuple[str, str], str] = {
    ("noise / expected (epoch differences)", "SN"): (
        "registration resampling: the simulator's Lanczos-3 gives 0.91 of the white level, the real "
        "supernova stamps 0.85; a Lanczos-2 kernel would give 0.83 (rcnnlib.sim.images)"
    ),
    ("neighbour noise correlation (epoch differences)", "SN"): (
        "the same: Lanczos-3 correlates neighbours by 0.12, the real supernova stamps by 0.17, "
        "Lanczos-2 by 0.15"
    ),
    ("log10 peak [ADU] at 20 mag, 1.2″", "stars"): (
        "simulated peaks about 9 % lower at given aperture magnitude and seeing (PSF core or zero point)"
    ),
    ("stamp sky − recorded sky [σ] (spread)", "stars"): (
        "real stamps' local sky departs from the recorded BACK_LEVEL by ~1-2 % (faint stars: median -1.7 %); "
        "the simulator renders the recorded sky exactly"
    ),
    ("log10 reduced χ² vs constant", "SN"): (
        "real supernova stamps' local sky departs from the recorded BACK_LEVEL by ~1 % from epoch to epoch "
        "(over an aperture, several sigma; the simulator renders the recorded sky exactly), so their "
        "aperture fluxes scatter more than their noise"
    ),
}
"""Scorecard rows known to fail, with the measured cause: the realism test requires them to fail
(so fixing one must remove it here) and every other row to pass."""


def scorecard(
    real: SequenceDataset,
    sim: SequenceDataset,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
    max_fits: int = 600,
    real_peaks: pd.DataFrame | None = None,
    alpha: float = SCORECARD_ALPHA,
) -> pd.DataFrame:
    """The realism scorecard: one :class:`Check` per row, real against simulated.

    ``real_peaks`` (:func:`difference_peaks`) adds the supernovae's peak magnitudes, compared
    with the simulated light curves' brightest epochs (``metadata["brightest_mag"]``). The
    column ``known_gap`` marks the rows of :data:`KNOWN_GAPS`.

    ``real`` are the labelled HiTS sequences after :func:`seeing_cut`; ``sim`` a simulation of
    the same classes in the same fields (:func:`simulate_like`), so that cadence compares like
    with like (a field's epochs set a sequence's epochs). Simulated sequences resampled as if
    registered (``metadata["resampled"]``) are compared with real supernova stamps (resampled by
    the difference-imaging pipeline), the others with real star stamps (raw cut-outs).
    Light-curve statistics of the stars use the simulated stars within the real class's
    magnitude range (:func:`match_magnitudes`): the real labelled stars are a bright selection.
    """
    rng = np.random.default_rng(seed)
    resampled = np.asarray(sim.metadata.get("resampled", np.zeros(len(sim), bool)), dtype=bool)
    rows: list[tuple[str, str, float, float, float, float, int, int]] = []

    def add(statistic: str, group: str, r: pd.DataFrame, s: pd.DataFrame, of: _Statistic) -> None:
        columns = ["sequence", *of.columns]
        value_r, se_r = bootstrap(r[columns], of.of, rng, n_bootstrap)
        value_s, se_s = bootstrap(s[columns], of.of, rng, n_bootstrap)
        rows.append(
            (statistic, group, value_r, se_r, value_s, se_s, r["sequence"].nunique(), s["sequence"].nunique())
        )

    # images: noise level and texture (differences of consecutive epochs), PSF width, flux scale
    diffs = difference_noise(real), difference_noise(sim)
    faint = [d[(d["peak_snr"] < 20) & ~d["conditions_estimated"]] for d in diffs]
    sim_raw = ~resampled[faint[1]["sequence"].to_numpy()]
    for label, classes, sim_rows in (("stars", STAR_CLASSES, sim_raw), ("SN", ("SN",), ~sim_raw)):
        r = faint[0][faint[0]["class_name"].isin(classes)]
        s = faint[1][faint[1]["class_name"].isin(classes) & sim_rows]
        add("noise / expected (epoch differences)", label, r, s, _median("noise_ratio"))
        add("neighbour noise correlation (epoch differences)", label, r, s, _median("noise_correlation"))
    stars = [ds.subset(np.flatnonzero(np.isin(_class_names(ds), STAR_CLASSES))) for ds in (real, sim)]
    fwhm = [psf_fwhm(ds, max_epochs=max_fits, seed=seed) for ds in stars]
    add(
        "PSF FWHM / seeing (bright stars)",
        "stars",
        fwhm[0][fwhm[0]["ok"]],
        fwhm[1][fwhm[1]["ok"]],
        _median("fwhm_ratio"),
    )
    peaks = [peak_counts(ds) for ds in stars]
    add("log10 peak [ADU] at 20 mag, 1.2″", "stars", peaks[0], peaks[1], _LOG_PEAK)

    noise = [background_noise(ds) for ds in (real, sim)]
    faint_noise = [t[(t["peak_snr"] < 20) & ~t["conditions_estimated"]] for t in noise]
    sim_raw = ~resampled[faint_noise[1]["sequence"].to_numpy()]
    for label, classes, sim_rows in (("stars", STAR_CLASSES, sim_raw), ("SN", ("SN",), ~sim_raw)):
        r = faint_noise[0][faint_noise[0]["class_name"].isin(classes)].copy()
        s = faint_noise[1][faint_noise[1]["class_name"].isin(classes) & sim_rows].copy()
        for t in (r, s):
            t["sky_offset"] = t["level_minus_sky"] / t["expected_noise"]
        add("stamp sky − recorded sky [σ] (spread)", label, r, s, _spread("sky_offset"))

    # light curves
    if real_peaks is not None:
        add(
            "peak magnitude, mean (difference image / model)",
            "SN",
            real_peaks,
            simulated_peaks(sim),
            _mean("peak_mag"),
        )
    variability = light_curve_variability(real), light_curve_variability(sim)
    matched = match_magnitudes(*variability)
    for name in ("SN", "RRL", "EB"):
        s = variability[1] if name == "SN" else matched
        add(
            "amplitude [mag]",
            name,
            variability[0][variability[0]["class_name"] == name],
            s[s["class_name"] == name],
            _median("amplitude"),
        )
    nv = [t[(t["class_name"] == "NV") & t["mean_mag"].between(17.5, 20.5)] for t in (variability[0], matched)]
    add("log10 reduced χ² vs constant (17.5–20.5 mag)", "NV", nv[0], nv[1], _median("chi2_red", log=True))
    sn = [t[t["class_name"] == "SN"] for t in variability]
    add("log10 reduced χ² vs constant", "SN", sn[0], sn[1], _median("chi2_red", log=True))

    # cadence
    nights = night_gaps(real), night_gaps(sim)
    for column, statistic in (
        ("n_epochs", "epochs per sequence (mean)"),
        ("n_nights", "nights per sequence (mean)"),
        ("epochs_per_night", "epochs per night (mean)"),
        ("night_gap_days", "gap between nights [d] (mean)"),
    ):
        add(statistic, "all", nights[0], nights[1], _mean(column))
    checks = _checks(rows, alpha)
    table = pd.DataFrame([c.__dict__ for c in checks])
    table["known_gap"] = [(c.statistic, c.group) in KNOWN_GAPS for c in checks]
    return table


SN_LIGHT_CURVES = Path("real_obs") / "real_stamps" / "SNstamps" / "LC"
"""The HiTS team's preliminary difference-image light curves of the supernovae, under the data root."""


def difference_peaks(hits_dir: Path, ids: np.ndarray, min_snr: float = 5.0) -> pd.DataFrame:
    """Per real supernova of ``ids``: the g magnitude of its brightest >= ``min_snr`` difference-image epoch.

    The supernova's own peak, free of its host: what the survey's detection saw. Read from
    ``SNstamps/LC/<name>.dat`` (columns ``ADU e_ADU mag band``; the team's calibration, 0.1 mag
    from ``ZP_PS``); supernovae without a file or a detection are left out. Columns: ``id``,
    ``class_name`` (``SN``), ``sequence`` (position in ``ids``) and ``peak_mag``.
    """
    rows = []
    for k, sequence_id in enumerate(np.asarray(ids, dtype=str)):
        path = Path(hits_dir) / SN_LIGHT_CURVES / f"{sequence_id.split('_')[0]}.dat"
        if not sequence_id.startswith("SN") or not path.is_file():
            continue
        try:
            table = pd.read_csv(path, sep=r"\s+", comment="#")
            table = table[table["band"] == "g"]
            snr = table["ADU"].to_numpy(float) / table["e_ADU"].to_numpy(float)
        except (KeyError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"unreadable difference light curve ({exc})".splitlines()[0], path) from None
        detected = table["mag"].to_numpy(float)[snr >= min_snr]
        if detected.size:
            rows.append((sequence_id, "SN", k, float(detected.min())))
    return pd.DataFrame(rows, columns=["id", "class_name", "sequence", "peak_mag"])


def simulated_peaks(sim: SequenceDataset) -> pd.DataFrame:
    """Per simulated supernova: its brightest epoch's magnitude, from the light curve it was drawn from."""
    brightest = np.asarray(sim.metadata.get("brightest_mag", np.full(len(sim), np.nan)), dtype=np.float64)
    names = _class_names(sim)
    keep = np.flatnonzero((names == "SN") & np.isfinite(brightest))
    return pd.DataFrame(
        {"id": sim.ids[keep], "class_name": "SN", "sequence": keep, "peak_mag": brightest[keep]}
    )


def field_of(ids: np.ndarray) -> np.ndarray:
    """The two-digit HiTS field of real sequence ids (stars ``<field>_<CCD>_<x>_<y>``, supernovae
    ``<name>_<field>_<CCD>_<i>_<j>``, as :func:`rcnnlib.hits.loader.load_hits` names them)."""
    parts = [str(i).split("_") for i in ids]
    return np.array([p[1] if p[0].startswith("SN") else p[0] for p in parts])


def simulate_like(
    real: SequenceDataset, survey: Survey, per_real: int = 2, seed: int = 0, mag_slope: float = 0.0
) -> SequenceDataset:
    """Simulated sequences of the real set's classes in its fields: ``per_real`` per real sequence.

    Which epochs a sequence has is set by its field, so a comparison of cadence (or of anything
    the cadence shapes, like a light curve's amplitude) must simulate the fields the real objects
    are in, in the same proportions. Fields the survey lacks (HiTS field 03) are skipped. Stars
    are flat in magnitude (``mag_slope``), so that the real classes' bright ranges are well
    sampled. ``metadata["resampled"]`` says which sequences were resampled as if registered.
    """
    names, fields = _class_names(real), field_of(real.ids)
    known = set(survey.fields)
    parts: list[SequenceDataset] = []
    for name in dict.fromkeys(names):
        counts = pd.Series(fields[names == name]).value_counts().sort_index()
        for field_name, count in counts.items():
            if field_name in known:
                task = ShardTask(len(parts), str(field_name), str(name), 0, int(count) * per_real)
                parts.append(simulate_shard(survey, task, seed=seed, mag_slope=mag_slope))
    if not parts:
        raise InputError("no real sequence lies in a field of the survey", None)
    out = SequenceDataset.concatenate(parts)
    for key in ("resampled", "brightest_mag"):
        out.metadata[key] = [r for part in parts for r in part.metadata[key]]
    return out
