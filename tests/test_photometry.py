"""Aperture and PSF-weighted photometry recover known fluxes, give honest errors, respect masks,
and agree with the real HiTS Kron light curves."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.hits.kron import kron_comparison
from rcnnlib.hits.loader import load_hits
from rcnnlib.photometry import (
    aperture_photometry,
    aperture_weights,
    concentration,
    flux_to_mag,
    flux_to_microjansky,
    mag_error,
    psf_light_curve,
    psf_model,
    psf_photometry,
    psf_weighted_flux,
)
from rcnnlib.psf import moffat_psf
from rcnnlib.stamps import ring_background

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


# --------------------------------------------------------------------------- PSF-weighted photometry
def moffat_star(flux: np.ndarray, seeing: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """Stars (m, 21, 21) of the photometry's own PSF model, finely pixel-integrated (5x5 sub-pixels)."""
    fwhm, beta = psf_model(np.asarray(seeing, dtype=float))
    m = np.size(flux)
    psf = moffat_psf(fwhm, beta, 0.0, 0.0, np.full(m, dx), np.full(m, dy), size=SIZE, oversample=5)
    return np.asarray(flux, dtype=float)[:, None, None] * psf.astype(float)


def star_dataset(stamps: np.ndarray, seeing: np.ndarray, sky: float) -> SequenceDataset:
    """One-epoch-per-row (n, 1) dataset of given stamps (without sky) on a flat ``sky``."""
    n = stamps.shape[0]
    conditions = np.zeros((n, 1, len(CONDITION_NAMES)))
    conditions[..., CONDITION_NAMES.index("seeing")] = np.asarray(seeing).reshape(n, 1)
    conditions[..., CONDITION_NAMES.index("sky")] = sky
    conditions[..., CONDITION_NAMES.index("zero_point")] = 25.0
    conditions[..., CONDITION_NAMES.index("exp_time")] = 86.0
    return SequenceDataset(
        stamps=(stamps + sky)[:, None],
        mjd=np.zeros((n, 1)),
        conditions=conditions,
        mask=np.ones((n, 1), bool),
        labels=np.zeros(n, int),
        ids=[f"s{i}" for i in range(n)],
    )


def test_psf_photometry_recovers_noiseless_flux_at_any_seeing():
    seeing = np.array([1.0, 1.35, 1.8, 2.5])
    flux = np.array([5e3, 5e4, 2e5, 2e5])
    stamps = moffat_star(flux, seeing)
    measured, err, sky, _ = psf_weighted_flux(stamps + 120.0, seeing)
    # At 2.5" the star's wings lift the border sky noticeably; the wing correction must undo it.
    assert sky[-1] > 120.5
    np.testing.assert_allclose(measured, flux, rtol=0.01)
    assert np.all(err > 0)


def test_psf_photometry_unbiased_with_errors_matching_scatter():
    rng = np.random.default_rng(3)
    n = 600
    for true_flux, seeing in [(400.0, 1.3), (2e4, 1.6)]:  # S/N ~ 5 and ~ 150
        clean = moffat_star(np.full(n, true_flux), np.full(n, seeing)) + 130.0
        electrons = rng.poisson(clean * GAIN) + rng.normal(0.0, READ_NOISE, clean.shape)
        ds = star_dataset(electrons / GAIN - 130.0, np.full(n, seeing), 130.0)
        phot = psf_photometry(ds, gain=GAIN)
        flux, err = phot.flux[:, 0], phot.flux_err[:, 0]
        scatter = flux.std()
        assert abs(flux.mean() - true_flux) < 4 * scatter / np.sqrt(n)
        assert np.median(err) == pytest.approx(scatter, rel=0.12)
        # PSF weights beat the 2 x seeing aperture on a faint star: that is their purpose.
        if true_flux < 1e3:
            ap, _ = aperture_photometry(ds, gain=GAIN)
            assert scatter < 0.8 * ap[:, 0].std()


def test_psf_photometry_recentres_offset_objects():
    seeing = np.full(4, 1.2)
    stamps = moffat_star(np.full(4, 3e4), seeing, dx=0.8, dy=-0.6)
    merged = star_dataset(stamps, seeing, 100.0)  # 4 single epochs -> 2 objects of 2 epochs
    merged = SequenceDataset(
        stamps=merged.stamps.reshape(2, 2, SIZE, SIZE),
        mjd=np.zeros((2, 2)),
        conditions=merged.conditions.reshape(2, 2, -1),
        mask=np.ones((2, 2), bool),
        labels=[0, 0],
        ids=["a", "b"],
    )
    phot = psf_photometry(merged)
    np.testing.assert_allclose(phot.centre, [[10.8, 9.4], [10.8, 9.4]], atol=0.1)
    np.testing.assert_allclose(phot.flux, 3e4, rtol=0.01)
    uncentred = psf_photometry(merged, recentre=False)
    assert np.all(uncentred.flux < 0.97 * 3e4)  # what recentring buys


def test_psf_photometry_masks_and_calibrates():
    ds = make_dataset(np.full((2, 3), 1e4), np.full((2, 3), 1.2), np.full((2, 3), 100.0))
    ds.mask[0, 2] = False
    phot = psf_photometry(ds)
    assert np.isnan(phot.flux[0, 2]) and np.isnan(phot.flux_err[0, 2])
    assert np.isfinite(phot.flux[ds.mask]).all()
    flux_ujy, err_ujy = psf_light_curve(ds)
    np.testing.assert_allclose(flux_ujy[ds.mask], flux_to_microjansky(phot.flux, 25.0, 86.0)[ds.mask])
    np.testing.assert_allclose(err_ujy[ds.mask], flux_to_microjansky(phot.flux_err, 25.0, 86.0)[ds.mask])


def test_local_background_level_and_noise():
    rng = np.random.default_rng(0)
    stamps = rng.normal(200.0, 7.0, (500, SIZE, SIZE))
    stamps[:, 0, :3] = 5000.0  # a neighbour's core on the border is clipped away
    level, sigma, n_used = ring_background(stamps)
    assert abs(np.median(level) - 200.0) < 0.2
    assert np.median(sigma) == pytest.approx(7.0, rel=0.05)
    assert np.all(n_used <= 4 * SIZE - 4 - 3)


def test_psf_magnitudes_agree_with_real_kron_light_curves(hits_root):
    ds = load_hits(hits_root, classes=("RRL", "EB"))
    table = kron_comparison(ds, hits_root)
    assert table["id"].nunique() == len(ds) and len(table) > 0.9 * ds.mask.sum()  # nearly every epoch
    residual = table["dmag"].to_numpy()  # PSF - Kron, each object's median offset removed
    # Measured: median |dmag| = 0.024 mag (plain aperture photometry: 0.014, noisier on faint stars).
    assert np.median(np.abs(residual)) < 0.04
    assert np.percentile(np.abs(residual), 90) < 0.12
    # The offsets themselves: one calibration for both, so they are small and similar.
    offsets = table.groupby("id")["offset"].first()
    assert abs(offsets.median()) < 0.1 and offsets.std() < 0.1


def test_kron_comparison_refuses_missing_light_curves(tmp_path, hits_root):
    ds = load_hits(hits_root, classes=("EB",))
    with pytest.raises(InputError, match="Kron light curve"):
        kron_comparison(ds, tmp_path)


def test_concentration_tells_a_point_source_from_one_on_a_galaxy():
    """A star's outer/inner aperture ratio is its PSF's, whatever its brightness; a host galaxy raises
    it; masked epochs do not count; an empty stamp has none."""
    seeing = np.array([1.0, 1.3, 1.8])
    faint, bright = (moffat_star(np.full(3, flux), seeing) for flux in (2e3, 2e5))
    host = np.stack([gaussian_star(2e5, 2.5)] * 3)  # an extended galaxy under the bright point source
    stamps = np.stack([faint, bright, bright + host, np.zeros_like(faint)]) + 100.0
    conditions = np.zeros((4, 3, len(CONDITION_NAMES)))
    conditions[..., CONDITION_NAMES.index("seeing")] = seeing
    mask = np.ones((4, 3), bool)
    ds = SequenceDataset(
        stamps, np.tile(np.arange(3.0), (4, 1)), conditions, mask, np.zeros(4, int), list("abcd")
    )
    ratio = concentration(ds)
    assert ratio[0] == pytest.approx(ratio[1], rel=1e-6) and 1.0 < ratio[0] < 1.2
    assert ratio[2] > ratio[0] + 0.1
    assert np.isnan(ratio[3])
    garbage = stamps.copy()
    garbage[0, 1] = host[0] * 10 + 100.0
    mask[0, 1] = False
    masked = concentration(SequenceDataset(garbage, ds.mjd, conditions, mask, ds.labels, ds.ids))
    assert masked[0] == pytest.approx(ratio[0], rel=0.01)
