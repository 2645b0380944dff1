"""Photometry on image sequences: aperture (book figures, realism) and PSF-weighted (the forest).

The network never sees a light curve; these functions exist to show what the
stamps contain (book gallery) and to build the light curves of the random-forest
baseline. Everything is vectorised over sequences and epochs: one aperture or
one PSF template per (sequence, epoch), sized from that epoch's seeing, so a
whole dataset is measured in a few array operations, with the same code for
simulated and real stamps.

:func:`psf_photometry` is the estimator of the baseline (the paper's
"PSF-weighted photometry ... radius ~2 x seeing"): optimal weights for a
sky-dominated stamp, a local sky from the stamp's border corrected for the
star's own wings, per-object recentring, and errors from the measured
background noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from rcnnlib.dataset import STAMP_SIZE, SequenceDataset
from rcnnlib.psf import moffat_psf, psf_shape_model
from rcnnlib.stamps import border_ring, ring_background


def _hits_camera() -> dict[str, float]:
    """The typical DECam CCD of data/surveys/hits2015.yaml, read directly: photometry sits below the
    simulator (it serves the loader, the realism checks and the forest alike)."""
    import yaml

    from rcnnlib.paths import data_dir

    camera = yaml.safe_load((data_dir() / "surveys" / "hits2015.yaml").read_text())["camera"]
    return {k: float(camera[k]) for k in ("pixel_scale", "gain", "read_noise")}


_HITS_CAMERA = _hits_camera()
DECAM_PIXEL_SCALE = _HITS_CAMERA["pixel_scale"]  # arcsec / pixel
DECAM_GAIN = _HITS_CAMERA["gain"]  # e- / ADU
DECAM_READ_NOISE = _HITS_CAMERA["read_noise"]  # e-
AB_ZERO_POINT_UJY = 23.9  # AB magnitude of 1 microjansky
_CHUNK = 1024  # sequences measured at once


def aperture_weights(radius_px: np.ndarray, size: int) -> np.ndarray:
    """Fraction of each pixel inside a circle of ``radius_px`` centred on the stamp.

    The fraction uses the linear edge approximation ``clip(r - d + 0.5, 0, 1)``
    (``d`` = distance of the pixel centre): exact for the aperture area to
    within a few tenths of a pixel, smooth in ``r`` and cheap to broadcast.
    Returns an array of shape ``radius_px.shape + (size, size)``.
    """
    centre = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    dist = np.hypot(yy - centre, xx - centre)
    r = np.asarray(radius_px, dtype=np.float64)[..., None, None]
    return np.clip(r - dist + 0.5, 0.0, 1.0)


def aperture_photometry(
    ds: SequenceDataset,
    radius_seeing: float = 2.0,
    pixel_scale: float = DECAM_PIXEL_SCALE,
    gain: float = DECAM_GAIN,
    read_noise: float = DECAM_READ_NOISE,
) -> tuple[np.ndarray, np.ndarray]:
    """Sky-subtracted flux in a seeing-scaled circular aperture at the stamp centre.

    The aperture radius is ``radius_seeing * seeing / pixel_scale`` pixels for
    each epoch (about 2 x FWHM captures essentially all of a stellar profile);
    it is clipped to the stamp's half-width, so at very bad seeing the aperture
    is the inscribed circle of the 21x21 stamp. The sky is the epoch's
    ``sky`` condition (the image's background level). Errors combine the
    Poisson noise of source plus sky (``gain`` e-/ADU) and the read noise
    (``read_noise`` e-) of every pixel in the aperture; they ignore the error of
    the sky level itself.

    Returns ``(flux, flux_err)``, both (N, T) ADU, NaN at masked epochs.
    """
    if radius_seeing <= 0 or pixel_scale <= 0 or gain <= 0:
        raise ValueError("radius_seeing, pixel_scale and gain must be positive")
    n, t = ds.mask.shape
    flux = np.full((n, t), np.nan)
    flux_err = np.full((n, t), np.nan)
    seeing = ds.condition("seeing")
    sky = ds.condition("sky")
    # Chunks of sequences bound the memory of the (chunk, T, 21, 21) weight cube.
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        flux[part], flux_err[part] = _measure(
            ds.stamps[part], sky[part], seeing[part], radius_seeing / pixel_scale, gain, read_noise
        )
    flux[~ds.mask] = np.nan
    flux_err[~ds.mask] = np.nan
    return flux, flux_err


def _measure(
    stamps: np.ndarray,
    sky: np.ndarray,
    seeing: np.ndarray,
    radius_per_arcsec: float,
    gain: float,
    read_noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Flux and error of a block of stamps (n, T, S, S); see :func:`aperture_photometry`."""
    size = stamps.shape[-1]
    radius = np.minimum(radius_per_arcsec * seeing.astype(np.float64), (size - 1) / 2.0)
    weights = aperture_weights(radius, size)
    stamps = stamps.astype(np.float64)
    flux = np.einsum("ntij,ntij->nt", weights, stamps - sky.astype(np.float64)[..., None, None])
    w2 = weights**2
    # Variance in ADU^2: photon noise (counts in electrons, / gain^2) plus read noise per pixel.
    photon = np.einsum("ntij,ntij->nt", w2, np.clip(stamps, 0.0, None)) / gain
    read = w2.sum(axis=(-2, -1)) * (read_noise / gain) ** 2
    return flux, np.sqrt(photon + read)


def flux_to_mag(flux: np.ndarray, zero_point: np.ndarray, exp_time: np.ndarray) -> np.ndarray:
    """Magnitude of a flux in ADU, with ``zero_point`` the magnitude giving 1 ADU/s.

    Non-positive (and NaN) fluxes give NaN: a non-detection has no magnitude.
    """
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = flux / np.asarray(exp_time, dtype=np.float64)
        return np.where(
            rate > 0, np.asarray(zero_point) - 2.5 * np.log10(np.where(rate > 0, rate, 1.0)), np.nan
        )


def mag_error(flux: np.ndarray, flux_err: np.ndarray) -> np.ndarray:
    """First-order magnitude error ``2.5 / ln 10 * flux_err / flux`` (NaN for non-positive flux)."""
    flux = np.asarray(flux, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(flux > 0, 2.5 / np.log(10.0) * np.asarray(flux_err) / flux, np.nan)


def flux_to_microjansky(flux: np.ndarray, zero_point: np.ndarray, exp_time: np.ndarray) -> np.ndarray:
    """Calibrated flux density in microjansky (AB), defined for negative fluxes too.

    Epochs differ in zero point and exposure time, so raw ADU are not
    comparable along a light curve; microjansky are, and unlike magnitudes
    they keep non-detections and difference fluxes meaningful.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.asarray(flux, dtype=np.float64) / np.asarray(exp_time, dtype=np.float64)
    return rate * 10.0 ** ((AB_ZERO_POINT_UJY - np.asarray(zero_point, dtype=np.float64)) / 2.5)


def light_curve(
    ds: SequenceDataset, radius_seeing: float = 2.0, **kwargs: float
) -> tuple[np.ndarray, np.ndarray]:
    """Aperture light curves of every sequence in microjansky: ``(flux_ujy, err_ujy)``, (N, T)."""
    flux, err = aperture_photometry(ds, radius_seeing=radius_seeing, **kwargs)
    zp, texp = ds.condition("zero_point"), ds.condition("exp_time")
    return flux_to_microjansky(flux, zp, texp), flux_to_microjansky(err, zp, texp)


# --------------------------------------------------------------------------- PSF-weighted photometry
PSF_RADIUS_SEEING = 2.0
"""Radius of the PSF-weighted aperture in units of the seeing (the paper's ~2 x seeing)."""
CENTROID_WINDOW_PX = 2.0
"""Gaussian window (sigma, px) of the per-object centroid on the stacked stamps."""
MAX_CENTRE_SHIFT_PX = 1.5
"""Largest recentring from the stamp centre: objects are catalogued near it, neighbours are further."""
PSF_OVERSAMPLE = 3
"""Sub-pixel samples per axis of the PSF template: the one-sample approximation biases fluxes by up to
+0.9 % at the best HiTS seeing, 3 x 3 sub-pixels by < 0.2 %."""
_MEDIAN_VARIANCE_FACTOR = np.pi / 2.0  # variance of a Gaussian sample's median over that of its mean
_PSF_CHUNK = 256  # sequences measured at once (keeps the float64 template cube ~100 MB)


@dataclass(frozen=True)
class PsfPhotometry:
    """PSF-weighted fluxes of a dataset, (N, T) ADU with NaN at masked epochs, and what they used.

    ``sky`` and ``sky_sigma`` are the local background level and per-pixel noise
    (ADU) from the stamp border; ``centre`` (N, 2) the ``(x, y)`` pixel each
    object was measured at.
    """

    flux: np.ndarray
    flux_err: np.ndarray
    sky: np.ndarray
    sky_sigma: np.ndarray
    centre: np.ndarray


@lru_cache(maxsize=1)
def _psf_shape_vs_seeing() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median (FWHM / seeing, beta) of the real-star PSF table in seeing bins: the photometry's PSF model."""
    model = psf_shape_model()
    if model.source == "default" or model.seeing is None:
        return np.array([1.0]), np.array([0.8]), np.array([3.5])
    edges = np.quantile(model.seeing, np.linspace(0.0, 1.0, 11))
    bins = np.clip(np.searchsorted(edges, model.seeing, side="right") - 1, 0, 9)
    seeing = np.array([np.median(model.seeing[bins == b]) for b in range(10)])
    ratio = np.array([np.median(model.fwhm_ratio[bins == b]) for b in range(10)])
    beta = np.array([np.median(model.beta[bins == b]) for b in range(10)])
    return seeing, ratio, beta


def psf_model(seeing: np.ndarray, pixel_scale: float = DECAM_PIXEL_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """Circular Moffat ``(fwhm_px, beta)`` of an epoch of given seeing (arcsec).

    The catalogue seeing is not exactly the PSF's FWHM (real HiTS stars have
    FWHM ~0.8 x seeing, rising with seeing), so the template follows the
    median measured shape at that seeing (``data/psf/hits_psf_shape.csv``).
    """
    table_seeing, ratio, beta = _psf_shape_vs_seeing()
    seeing = np.asarray(seeing, dtype=np.float64)
    fwhm = seeing * np.interp(seeing, table_seeing, ratio) / pixel_scale
    return fwhm, np.interp(seeing, table_seeing, beta)


def object_centres(residual: np.ndarray, mask: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Per-object ``(x, y)`` centre from the stack of sky-subtracted stamps (N, T, S, S).

    A Gaussian-windowed centroid of the positive part of the stack, started at
    the stamp centre and clipped to :data:`MAX_CENTRE_SHIFT_PX`: simulated
    objects sit up to half a pixel off centre (and real ones similarly), which
    would cost a PSF-weighted flux a few per cent; one centre per object keeps
    the epoch-to-epoch noise of faint epochs out of it.
    """
    size = residual.shape[-1]
    c = (size - 1) / 2.0
    stack = np.clip(np.einsum("ntij,nt->nij", residual, mask.astype(np.float64)), 0.0, None)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    x = np.full(stack.shape[0], c)
    y = np.full(stack.shape[0], c)
    for _ in range(iterations):
        w = np.exp(
            -((xx - x[:, None, None]) ** 2 + (yy - y[:, None, None]) ** 2) / (2 * CENTROID_WINDOW_PX**2)
        )
        w *= stack
        total = w.sum(axis=(1, 2))
        ok = total > 0
        safe = np.where(ok, total, 1.0)
        x = np.where(ok, (w * xx).sum(axis=(1, 2)) / safe, c)
        y = np.where(ok, (w * yy).sum(axis=(1, 2)) / safe, c)
        x = np.clip(x, c - MAX_CENTRE_SHIFT_PX, c + MAX_CENTRE_SHIFT_PX)
        y = np.clip(y, c - MAX_CENTRE_SHIFT_PX, c + MAX_CENTRE_SHIFT_PX)
    return np.stack([x, y], axis=-1)


def psf_weighted_flux(
    stamps: np.ndarray,
    seeing: np.ndarray,
    centre: np.ndarray | None = None,
    radius_seeing: float = PSF_RADIUS_SEEING,
    pixel_scale: float = DECAM_PIXEL_SCALE,
    gain: float = DECAM_GAIN,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """PSF-weighted flux of stamps (..., S, S) at epochs of given seeing (...); the estimator itself.

    Weights ``w = P A / sum(P^2 A)`` with ``P`` the unit-flux PSF template
    (:func:`psf_model`) at ``centre`` (..., 2) (default: the stamp centre) and
    ``A`` a circular aperture of ``radius_seeing`` x seeing: the minimum-variance
    linear estimator when the noise is the sky's (HiTS sky is ~500 e- per
    pixel), and unbiased for any flux since ``sum(w P) = 1``. The flux is the
    total of the PSF, wings beyond the stamp included. The sky is the border
    ring's clipped median; a star's own wings raise it by ``F p_ring``, which is
    solved for exactly (``F = sum(w (D - s)) / (1 - p_ring sum(w))``).
    Errors: measured background noise plus the source's photon noise
    (``gain`` e-/ADU) inside the weights, plus the sky level's own error.
    Returns ``(flux, flux_err, sky, sky_sigma)`` in ADU.
    """
    stamps = np.asarray(stamps, dtype=np.float64)
    lead, size = stamps.shape[:-2], stamps.shape[-1]
    flat = stamps.reshape(-1, size, size)
    seeing = np.broadcast_to(np.asarray(seeing, dtype=np.float64), lead).ravel()
    c = (size - 1) / 2.0
    if centre is None:
        dx = dy = np.zeros(flat.shape[0])
    else:
        cen = np.broadcast_to(np.asarray(centre, dtype=np.float64), (*lead, 2)).reshape(-1, 2)
        dx, dy = cen[:, 0] - c, cen[:, 1] - c
    good = np.isfinite(seeing) & (seeing > 0)
    fwhm, beta = psf_model(np.where(good, seeing, 1.0), pixel_scale)
    psf = moffat_psf(fwhm, beta, 0.0, 0.0, dx, dy, size=size, oversample=PSF_OVERSAMPLE).astype(np.float64)
    radius = np.minimum(radius_seeing * np.where(good, seeing, 1.0) / pixel_scale, c)
    aperture = aperture_weights(radius, size)
    weights = psf * aperture
    weights /= np.einsum("mij,mij->m", weights, psf)[:, None, None]
    sum_w = weights.sum(axis=(1, 2))
    sky, sky_sigma, n_ring = ring_background(flat)
    p_ring = border_ring(psf).mean(axis=-1)
    denom = np.clip(1.0 - p_ring * sum_w, 0.5, 1.0)
    flux = np.einsum("mij,mij->m", weights, flat - sky[:, None, None]) / denom
    w2 = weights**2
    source = np.clip(flux, 0.0, None) * np.einsum("mij,mij->m", w2, psf) / gain
    background = sky_sigma**2 * (
        w2.sum(axis=(1, 2)) + sum_w**2 * _MEDIAN_VARIANCE_FACTOR / np.maximum(n_ring, 1)
    )
    err = np.sqrt(background + source) / denom
    flux = np.where(good, flux, np.nan)
    err = np.where(good, err, np.nan)
    return tuple(a.reshape(lead) for a in (flux, err, sky, sky_sigma))  # type: ignore[return-value]


def psf_photometry(
    ds: SequenceDataset,
    radius_seeing: float = PSF_RADIUS_SEEING,
    pixel_scale: float = DECAM_PIXEL_SCALE,
    gain: float = DECAM_GAIN,
    recentre: bool = True,
) -> PsfPhotometry:
    """PSF-weighted photometry of every epoch of every sequence (see :func:`psf_weighted_flux`).

    Objects are measured at one centre each (:func:`object_centres`) when
    ``recentre``, else at the stamp centre. Masked epochs give NaN.
    """
    if radius_seeing <= 0 or pixel_scale <= 0 or gain <= 0:
        raise ValueError("radius_seeing, pixel_scale and gain must be positive")
    n, t = ds.mask.shape
    out = {k: np.full((n, t), np.nan) for k in ("flux", "flux_err", "sky", "sky_sigma")}
    centres = np.full((n, 2), (STAMP_SIZE - 1) / 2.0)
    seeing = ds.condition("seeing")
    for start in range(0, n, _PSF_CHUNK):
        part = slice(start, start + _PSF_CHUNK)
        stamps = ds.stamps[part].astype(np.float64)
        mask = ds.mask[part]
        if recentre:
            sky, _, _ = ring_background(stamps)
            centres[part] = object_centres(stamps - sky[..., None, None], mask)
        cen = np.broadcast_to(centres[part][:, None, :], (*mask.shape, 2))
        values = psf_weighted_flux(stamps, seeing[part], cen, radius_seeing, pixel_scale, gain)
        for key, value in zip(("flux", "flux_err", "sky", "sky_sigma"), values, strict=True):
            out[key][part] = np.where(mask, value, np.nan)
    return PsfPhotometry(centre=centres, **out)


def psf_light_curve(ds: SequenceDataset, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """PSF-weighted light curves in microjansky, ``(flux_ujy, err_ujy)`` (N, T), NaN where masked."""
    phot = psf_photometry(ds, **kwargs)
    zp, texp = ds.condition("zero_point"), ds.condition("exp_time")
    return flux_to_microjansky(phot.flux, zp, texp), flux_to_microjansky(phot.flux_err, zp, texp)


# --------------------------------------------------------------------------- concentration
CONCENTRATION_RADII_SEEING = (1.0, 2.0)
"""Inner and outer aperture radii (x seeing) of :func:`concentration`."""


def concentration(
    ds: SequenceDataset,
    radii_seeing: tuple[float, float] = CONCENTRATION_RADII_SEEING,
    pixel_scale: float = DECAM_PIXEL_SCALE,
) -> np.ndarray:
    """Flux in the outer aperture over that in the inner one, summed over each sequence's epochs, (N,).

    Why: a point source gives the same ratio whatever its light curve (~1.1 for HiTS PSFs with
    radii of 1 and 2 x seeing), a transient on a galaxy more (the host spreads beyond the PSF),
    which a light curve alone cannot show. Centred apertures, the stamp border's clipped median
    as the sky (as :func:`psf_weighted_flux`), radii clipped to the stamp. NaN when the inner
    flux is not positive or no epoch is usable.
    """
    inner, outer = radii_seeing
    if not 0 < inner < outer:
        raise ValueError(f"radii must satisfy 0 < inner < outer, got {radii_seeing}")
    n = len(ds)
    sums = np.zeros((n, 2))
    seeing = ds.condition("seeing").astype(np.float64)
    half = (STAMP_SIZE - 1) / 2.0
    for start in range(0, n, _PSF_CHUNK):
        part = slice(start, start + _PSF_CHUNK)
        stamps = ds.stamps[part].astype(np.float64)
        sky, _, _ = ring_background(stamps)
        residual = stamps - sky[..., None, None]
        usable = ds.mask[part] & np.isfinite(seeing[part]) & (seeing[part] > 0)
        see = np.where(usable, seeing[part], 1.0)
        for k, radius in enumerate((inner, outer)):
            weights = aperture_weights(np.minimum(radius * see / pixel_scale, half), STAMP_SIZE)
            flux = np.einsum("ntij,ntij->nt", weights, residual)
            sums[part, k] = np.where(usable, flux, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 0] > 0, sums[:, 1] / sums[:, 0], np.nan)
