"""Aperture photometry on image sequences, for light curves and the random-forest baseline.

The network never sees a light curve; these functions exist to show what the
stamps contain (book gallery) and to build the light-curve features of the
baseline. Everything is vectorised over sequences and epochs: one aperture per
(sequence, epoch), sized from that epoch's seeing, so a whole dataset is
measured in a few array operations.
"""

from __future__ import annotations

import numpy as np

from rcnnlib.dataset import SequenceDataset
from rcnnlib.survey import preset_camera

_HITS_CAMERA = preset_camera("hits2015")  # the typical DECam CCD of data/surveys/hits2015.yaml
DECAM_PIXEL_SCALE = _HITS_CAMERA.pixel_scale  # arcsec / pixel
DECAM_GAIN = _HITS_CAMERA.gain  # e- / ADU
DECAM_READ_NOISE = _HITS_CAMERA.read_noise  # e-
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
