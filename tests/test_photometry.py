"""Aperture photometry recovers known fluxes, gives honest errors and respects masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset
from rcnnlib.photometry import (
    aperture_photometry,
    aperture_weights,
    flux_to_mag,
    flux_to_microjansky,
    mag_error,
)

SIZE = 21
PIXEL_SCALE = 0.27
GAIN = 4.104
READ_NOISE = 6.12


def gaussian_star(flux: float, seeing: float, size: int = SIZE) -> np.ndarray:
    """A pixel-integrated circular Gaussian of total ``flux`` and FWHM ``seeing`` arcsec, centred."""
    sigma = seeing / PIXEL_SCALE / (2 * np.sqrt(2 * np.log(2)))
    edges = np.arange(size + 1) - size / 2.0
    cdf = 0.5 * (1 + erf(edges / (np.sqrt(2) * sigma)))
    profile = np.diff(cdf)
    return flux * np.outer(profile, profile)


def make_dataset(
    fluxes: np.ndarray, seeing: np.ndarray, sky: np.ndarray, noise_seed: int | None = None
) -> SequenceDataset:
    """Sequences (N, T) of Gaussian stars on a flat sky, optionally with Poisson + read noise."""
    n, t = fluxes.shape
    stamps = np.empty((n, t, SIZE, SIZE))
    for i in range(n):
        for j in range(t):
            stamps[i, j] = gaussian_star(fluxes[i, j], seeing[i, j]) + sky[i, j]
    if noise_seed is not None:
        rng = np.random.default_rng(noise_seed)
        electrons = rng.poisson(stamps * GAIN) + rng.normal(0, READ_NOISE, stamps.shape)
        stamps = electrons / GAIN
    conditions = np.zeros((n, t, len(CONDITION_NAMES)))
    conditions[..., CONDITION_NAMES.index("seeing")] = seeing
    conditions[..., CONDITION_NAMES.index("sky")] = sky
    conditions[..., CONDITION_NAMES.index("zero_point")] = 25.0
    conditions[..., CONDITION_NAMES.index("exp_time")] = 86.0
    return SequenceDataset(
        stamps=stamps,
        mjd=np.tile(57070.0 + np.arange(t), (n, 1)),
        conditions=conditions,
        mask=np.ones((n, t), bool),
        labels=np.zeros(n, int),
        ids=[f"obj{i}" for i in range(n)],
    )


def test_noiseless_star_flux_recovered():
    fluxes = np.array([[1e3, 1e4, 5e4], [2e3, 3e4, 1e5]])
    seeing = np.array([[0.9, 1.2, 1.6], [1.0, 1.4, 1.9]])
    sky = np.array([[80.0, 120.0, 300.0], [100.0, 150.0, 90.0]])
    flux, err = aperture_photometry(make_dataset(fluxes, seeing, sky))
    assert flux.shape == err.shape == fluxes.shape
    # Good seeing: the 2xFWHM aperture holds the whole star; at 1.9" it is clipped to the stamp.
    np.testing.assert_allclose(flux[:, :2], fluxes[:, :2], rtol=0.02)
    np.testing.assert_allclose(flux, fluxes, rtol=0.05)
    assert np.all(err > 0)


def test_empty_sky_gives_zero_flux():
    fluxes = np.zeros((1, 2))
    flux, _ = aperture_photometry(make_dataset(fluxes, np.full((1, 2), 1.1), np.full((1, 2), 200.0)))
    np.testing.assert_allclose(flux, 0.0, atol=1e-6)


def test_errors_match_scatter_of_noisy_realisations():
    n, t = 400, 2
    fluxes = np.tile([2e3, 2e4], (n, 1))
    seeing = np.full((n, t), 1.2)
    sky = np.full((n, t), 150.0)
    flux, err = aperture_photometry(make_dataset(fluxes, seeing, sky, noise_seed=1), gain=GAIN)
    for j in range(t):
        scatter = flux[:, j].std()
        predicted = np.median(err[:, j])
        assert predicted == pytest.approx(scatter, rel=0.15)
        assert abs(flux[:, j].mean() - fluxes[0, j]) < 4 * scatter / np.sqrt(n)


def test_masked_epochs_are_nan():
    ds = make_dataset(np.full((2, 3), 1e4), np.full((2, 3), 1.2), np.full((2, 3), 100.0))
    ds.mask[0, 2] = False
    ds.mask[1, 0] = False
    flux, err = aperture_photometry(ds)
    assert np.isnan(flux[0, 2]) and np.isnan(err[0, 2]) and np.isnan(flux[1, 0])
    assert np.isfinite(flux[ds.mask]).all() and np.isfinite(err[ds.mask]).all()


def test_aperture_area_close_to_circle():
    weights = aperture_weights(np.array([3.0, 5.5]), SIZE)
    np.testing.assert_allclose(weights.sum(axis=(-2, -1)), np.pi * np.array([3.0, 5.5]) ** 2, rtol=0.03)


def test_magnitudes_and_microjansky():
    mag = flux_to_mag(np.array([86.0, 8600.0, -5.0, np.nan]), 25.0, 86.0)
    np.testing.assert_allclose(mag[:2], [25.0, 20.0])
    assert np.isnan(mag[2:]).all()
    np.testing.assert_allclose(mag_error(np.array([100.0]), np.array([10.0])), [2.5 / np.log(10) * 0.1])
    # 1 ADU/s at zero point 23.9 is 1 microjansky (AB); negative fluxes stay negative.
    np.testing.assert_allclose(flux_to_microjansky(np.array([86.0, -86.0]), 23.9, 86.0), [1.0, -1.0])
