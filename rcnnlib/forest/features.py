"""Light-curve features for the random-forest baseline, computed with the ``light-curve`` package.

FATS-style features (as in the HiTS variable-star catalogue): amplitude and
percentile ratios, Lomb-Scargle periodogram peaks, Stetson K, eta, skewness,
kurtosis, Anderson-Darling normality, linear trend, reduced chi-square and so
on. Every feature that ``light-curve`` provides comes from it (Rust, parallel
over light curves); only two detection statistics it lacks are computed here.

Why more than FATS: trained on simulations, the forest is judged on real
objects, and the FATS set leans on brightness and signal-to-noise, where the
real labelled objects differ from the simulated ones by selection (per class
and feature, the two-sample KS statistic real vs simulated reaches 0.9 for the
mean magnitude, the largest S/N and the reduced chi-square of eclipsing
binaries and non-variables). So the forest ignores the pure brightness
features (:data:`SELECTION_FEATURES`) and gets scale-free shape features of
the nightly light curve (:func:`shape_features`) and the concentration of the
stamps (:data:`STAMP_NAMES`), which tells a supernova on its host from a star.

Why asinh magnitudes: the light curves are fluxes measured at a fixed
position, so faint epochs (a supernova before explosion, an asteroid's other
epochs, a faint star at bad seeing) have fluxes near zero or negative, where
magnitudes are undefined and dropping those epochs would discard exactly what
tells the classes apart. Features of raw fluxes, on the other hand, scale with
brightness (an amplitude in microjansky means nothing without the mean).
Asinh magnitudes (Lupton, Gunn & Szalay 1999) are both: ordinary magnitudes
for bright epochs, linear in flux (and defined for negative flux) within a
few times the softening :data:`SOFTENING_UJY`, the 1-sigma noise of a HiTS
epoch. The reduced chi-square and the detection statistics are computed on
the fluxes themselves, where "consistent with zero" is meaningful.

Masked epochs (and any epoch without a finite flux or error) are dropped per
light curve; features that cannot be computed (too few epochs) are NaN, which
the forest handles natively (:mod:`rcnnlib.forest.baseline`).
"""

from __future__ import annotations

from functools import lru_cache

import light_curve as lc
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from rcnnlib.dataset import SequenceDataset
from rcnnlib.photometry import concentration, psf_light_curve
from rcnnlib.stamps import MAD_TO_SIGMA, night_of

SOFTENING_UJY = 0.28
"""Asinh-magnitude softening ``b`` (microjansky): the 1-sigma flux noise of an epoch at the HiTS 2015
median 5-sigma depth (23.55 mag over the real sequences' epochs), ``10**((23.9 - 23.55) / 2.5) / 5``."""
AB_ZERO_POINT_UJY = 23.9
MIN_EPOCHS = 5
"""Light curves with fewer usable epochs get NaN features (periodogram and moments need a few)."""
DETECTION_SIGMA = 3.0
PERIODOGRAM_MAX_FREQ_FACTOR = 12.0
"""Highest periodogram frequency in units of the "average Nyquist" frequency (N / 2 baseline): HiTS
sequences of ~27 epochs over ~25 nights have an average Nyquist period of ~2 d, too long for RR Lyrae
(0.3-0.9 d) and most eclipsing binaries; up to 4 epochs a night make shorter periods measurable."""
_LN10 = np.log(10.0)


def asinh_magnitude(flux_ujy: np.ndarray, err_ujy: np.ndarray, softening: float = SOFTENING_UJY):
    """Asinh magnitude and its error from a flux and error in microjansky (Lupton et al. 1999).

    ``m = 23.9 - 2.5 / ln 10 * (asinh(f / 2b) + ln b)``; equals the AB magnitude to
    better than 0.01 mag above ~10 b, and stays finite for zero and negative flux.
    """
    flux = np.asarray(flux_ujy, dtype=np.float64)
    err = np.asarray(err_ujy, dtype=np.float64)
    mag = AB_ZERO_POINT_UJY - 2.5 / _LN10 * (np.arcsinh(flux / (2.0 * softening)) + np.log(softening))
    mag_err = 2.5 / _LN10 * err / np.sqrt(flux**2 + 4.0 * softening**2)
    return mag, mag_err


@lru_cache(maxsize=1)
def magnitude_extractor() -> lc.Extractor:
    """The FATS-style features computed on asinh magnitudes."""
    return lc.Extractor(
        lc.Amplitude(),
        lc.AndersonDarlingNormal(),
        lc.BeyondNStd(1.0),
        lc.Cusum(),
        lc.Eta(),
        lc.EtaE(),
        lc.InterPercentileRange(0.1),
        lc.Kurtosis(),
        lc.LinearTrend(),
        lc.MagnitudePercentageRatio(0.4, 0.05),
        lc.MagnitudePercentageRatio(0.25, 0.05),
        lc.MaximumSlope(),
        lc.MedianAbsoluteDeviation(),
        lc.MedianBufferRangePercentage(0.1),
        lc.PercentAmplitude(),
        lc.Skew(),
        lc.StandardDeviation(),
        lc.StetsonK(),
        lc.WeightedMean(),
        lc.Periodogram(peaks=2, resolution=10.0, max_freq_factor=PERIODOGRAM_MAX_FREQ_FACTOR, fast=True),
    )


@lru_cache(maxsize=1)
def flux_extractor() -> lc.Extractor:
    """Features computed on fluxes: variability significance where zero flux is meaningful."""
    return lc.Extractor(lc.ReducedChi2(), lc.StetsonK())


HANDMADE_NAMES: tuple[str, ...] = ("flux_max_snr", "flux_detected_fraction")
"""Not in ``light-curve``: the largest per-epoch S/N and the fraction of epochs above 3 sigma."""
SHAPE_NAMES: tuple[str, ...] = (
    "night_sign_change_fraction",
    "night_eta",
    "night_intra_to_inter_scatter",
    "flux_baseline_fraction",
    "flux_relative_amplitude",
    "mag_scatter_to_error",
)
"""Scale-free shape features, most of them of the nightly means (see :func:`shape_features`)."""
STAMP_NAMES: tuple[str, ...] = ("stamp_concentration",)
"""Not of the light curve but of the stamps it was measured on: :func:`rcnnlib.photometry.concentration`,
outer over inner aperture flux, ~1.1 for a point source and more for a transient on its host galaxy
(supernovae are otherwise confused with slow variables such as Cepheids). NaN when only light curves
are given (:class:`LightCurveFeatures`)."""
SELECTION_FEATURES: tuple[str, ...] = ("mag_weighted_mean", "flux_max_snr", "flux_chi2")
"""Features that measure how bright an object is rather than how it varies. The real labelled HiTS
objects are far brighter than the simulated ones (median 16.9 vs 21.8 mag for eclipsing binaries,
18.5 vs 21.9 for non-variables), a selection of the catalogues, not a property of the classes, so the
forest ignores them (:class:`rcnnlib.forest.baseline.LightCurveForest`); the book still draws them."""
EXTREME_EPOCHS = 3
"""Epochs averaged for a light curve's robust minimum (baseline) and maximum (peak) flux."""
BASELINE_LEVEL = 0.2
"""An epoch is "at baseline" below baseline + this fraction of the peak-to-baseline range."""


def feature_names() -> list[str]:
    """Names of the columns of :func:`extract_features`, in order."""
    return (
        [f"mag_{n}" for n in magnitude_extractor().names]
        + [f"flux_{n}" for n in flux_extractor().names]
        + list(HANDMADE_NAMES)
        + list(SHAPE_NAMES)
        + list(STAMP_NAMES)
    )


def extract_features(
    mjd: np.ndarray,
    flux_ujy: np.ndarray,
    err_ujy: np.ndarray,
    mask: np.ndarray | None = None,
    n_jobs: int = 1,
    stamp_concentration: np.ndarray | None = None,
) -> np.ndarray:
    """Features (N, F) of N light curves (N, T); columns named by :func:`feature_names`.

    Epochs that are masked or lack a finite, positive error are dropped; light
    curves with fewer than :data:`MIN_EPOCHS` usable epochs get a row of NaN.
    ``stamp_concentration`` (N,) fills the :data:`STAMP_NAMES` column (NaN without it).
    """
    mjd, flux, err = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (mjd, flux_ujy, err_ujy))
    if not (mjd.shape == flux.shape == err.shape):
        raise ValueError(f"mjd, flux and err shapes differ: {mjd.shape}, {flux.shape}, {err.shape}")
    usable = np.isfinite(mjd) & np.isfinite(flux) & np.isfinite(err) & (err > 0)
    if mask is not None:
        usable &= np.asarray(mask, dtype=bool).reshape(mjd.shape)
    mag, mag_err = asinh_magnitude(flux, err)
    n = mjd.shape[0]
    out = np.full((n, len(feature_names())), np.nan)
    rows = np.flatnonzero(usable.sum(axis=1) >= MIN_EPOCHS)
    if rows.size == 0:
        return out
    mag_curves, flux_curves = [], []
    for i in rows:  # ragged light curves: one cheap slice per object, the work is in Rust
        keep = usable[i]
        order = np.argsort(mjd[i, keep], kind="stable")
        t = np.ascontiguousarray(mjd[i, keep][order])
        mag_curves.append(
            (t, np.ascontiguousarray(mag[i, keep][order]), np.ascontiguousarray(mag_err[i, keep][order]))
        )
        flux_curves.append(
            (t, np.ascontiguousarray(flux[i, keep][order]), np.ascontiguousarray(err[i, keep][order]))
        )
    n_mag = len(magnitude_extractor().names)
    n_flux = len(flux_extractor().names)
    out[rows, :n_mag] = magnitude_extractor().many(mag_curves, fill_value=np.nan, sorted=True, n_jobs=n_jobs)
    out[rows, n_mag : n_mag + n_flux] = flux_extractor().many(
        flux_curves, fill_value=np.nan, sorted=True, n_jobs=n_jobs
    )
    column = {name: j for j, name in enumerate(feature_names())}
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(usable, flux / err, np.nan)[rows]
        out[rows, column["flux_max_snr"]] = np.nanmax(snr, axis=1)
        detected = (snr > DETECTION_SIGMA).sum(axis=1) / usable[rows].sum(axis=1)
        out[rows, column["flux_detected_fraction"]] = detected
    shape = shape_features(mjd[rows], flux[rows], mag[rows], mag_err[rows], usable[rows])
    out[np.ix_(rows, np.array([column[name] for name in SHAPE_NAMES]))] = shape
    if stamp_concentration is not None:
        stamp = np.asarray(stamp_concentration, dtype=np.float64).reshape(n)
        out[rows, column["stamp_concentration"]] = stamp[rows]
    return out


def shape_features(
    mjd: np.ndarray, flux: np.ndarray, mag: np.ndarray, mag_err: np.ndarray, usable: np.ndarray
) -> np.ndarray:
    """The :data:`SHAPE_NAMES` features (N, 6) of N light curves (N, T) with ``usable`` epochs.

    Why: the FATS-style set leans on brightness and signal-to-noise, which differ between the
    simulated and the real labelled objects for reasons of selection. These describe the shape
    alone, on the nights HiTS observed (up to 4 epochs a night, see :func:`rcnnlib.stamps.night_of`):
    how often the nightly mean changes direction and its von Neumann ratio (slow transients and
    Cepheids are smooth from night to night, short-period stars are not); the scatter within a
    night over that between nights (RR Lyrae and eclipsing binaries vary within hours); the
    fraction of epochs near the light curve's minimum and the peak-to-baseline range over their
    sum in flux (a transient sits at its host's level, then rises far above it); and the robust
    scatter of the magnitudes in units of their typical error (a non-variable's is about 1).
    Rows need at least 3 nights for the nightly features (else NaN).
    """
    n, t = mjd.shape
    rows = np.arange(n)[:, None]
    order = np.argsort(np.where(usable, mjd, np.inf), axis=1, kind="stable")  # usable epochs first, in time
    ok = np.take_along_axis(usable, order, axis=1)
    time, f, m = (np.take_along_axis(a, order, axis=1) for a in (mjd, flux, mag))
    night = night_of(np.where(ok, time, 0.0))
    first = np.ones((n, 1), dtype=bool)
    starts = ok & np.concatenate([first, night[:, 1:] != night[:, :-1]], axis=1)
    group = rows * t + np.cumsum(starts, axis=1) - 1  # night k of row i is group i * T + k
    count = np.bincount(group[ok], minlength=n * t).reshape(n, t).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        nightly = np.bincount(group[ok], weights=m[ok], minlength=n * t).reshape(n, t) / count
        step = np.diff(nightly, axis=1)  # NaN beyond the last night
        pairs = np.isfinite(step[:, 1:]) & np.isfinite(step[:, :-1])
        changes = (np.sign(step[:, 1:]) != np.sign(step[:, :-1])) & pairs
        sign_change = changes.sum(axis=1) / pairs.sum(axis=1)
        nightly_var = np.nanvar(nightly, axis=1)
        eta = np.nanmean(step**2, axis=1) / nightly_var
        within = np.where(ok, m - nightly.ravel()[np.where(ok, group, 0)], np.nan)
        repeated = ok & (count.ravel()[np.where(ok, group, 0)] > 1)
        intra = np.sqrt(np.nanmean(np.where(repeated, within, np.nan) ** 2, axis=1))
        intra_to_inter = intra / np.sqrt(nightly_var)
        n_usable = ok.sum(axis=1)
        ordered = np.sort(np.where(ok, f, np.nan), axis=1)  # NaN last
        low = ordered[:, :EXTREME_EPOCHS].mean(axis=1)
        top = np.clip(n_usable[:, None] - 1 - np.arange(EXTREME_EPOCHS), 0, None)
        high = np.take_along_axis(ordered, top, axis=1).mean(axis=1)
        span = high - low
        near_low = np.where(ok, f, np.inf) < (low + BASELINE_LEVEL * span)[:, None]
        at_baseline = near_low.sum(axis=1) / n_usable
        relative = span / (np.abs(high) + np.abs(low))
        mag_ok = np.where(usable, mag, np.nan)
        mad = np.nanmedian(np.abs(mag_ok - np.nanmedian(mag_ok, axis=1, keepdims=True)), axis=1)
        scatter_to_error = MAD_TO_SIGMA * mad / np.nanmedian(np.where(usable, mag_err, np.nan), axis=1)
    enough_nights = (count > 0).sum(axis=1) >= 3
    nightly_features = [np.where(enough_nights, a, np.nan) for a in (sign_change, eta, intra_to_inter)]
    return np.stack([*nightly_features, at_baseline, relative, scatter_to_error], axis=1)


def dataset_features(ds: SequenceDataset, n_jobs: int = 1) -> np.ndarray:
    """PSF-weighted photometry and stamp concentration of every sequence, then :func:`extract_features`."""
    flux, err = psf_light_curve(ds)
    return extract_features(ds.mjd, flux, err, ds.mask, n_jobs=n_jobs, stamp_concentration=concentration(ds))


def pack_light_curves(mjd: np.ndarray, flux_ujy: np.ndarray, err_ujy: np.ndarray) -> np.ndarray:
    """One 2-D array (N, 3T) ``[mjd | flux | err]`` (NaN where masked): light curves as a pipeline input."""
    return np.concatenate([np.asarray(a, dtype=np.float64) for a in (mjd, flux_ujy, err_ujy)], axis=1)


class LightCurveFeatures(TransformerMixin, BaseEstimator):
    """Transformer from packed light curves (:func:`pack_light_curves`) to features.

    Stateless; lets ``make_pipeline(LightCurveFeatures(), LightCurveForest())``
    classify light curves directly. Its input is three blocks of T columns,
    not a generic feature matrix, so scikit-learn's generic estimator checks
    do not apply to it (they do to the forest).
    """

    def __init__(self, n_jobs: int = 1):
        self.n_jobs = n_jobs

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> LightCurveFeatures:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] % 3:
            raise ValueError(f"expected packed light curves (N, 3T), got shape {X.shape}")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] % 3:
            raise ValueError(f"expected packed light curves (N, 3T), got shape {X.shape}")
        mjd, flux, err = np.split(X, 3, axis=1)
        return extract_features(mjd, flux, err, n_jobs=self.n_jobs)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.array(feature_names(), dtype=object)
