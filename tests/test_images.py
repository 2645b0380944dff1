"""Tests of the PSF model and the stamp renderer (rcnnlib.psf, rcnnlib.sim.images)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rcnnlib.psf import fit_moffat, measure_fwhm, moffat_psf, psf_shape_model, star_share
from rcnnlib.sim import images
from rcnnlib.sim.images import host_images, render_stamps, standard_normal_f32

PIXEL_SCALE = 0.27
GAIN, READ_NOISE, SATURATION = 4.1, 6.1, 40000.0


def conditions(n: int, t: int, seeing: float = 1.2, sky: float = 117.0, zp: float = 25.0) -> np.ndarray:
    """Constant HiTS-like conditions (seeing, sky, zero point, depth, exposure, airmass)."""
    row = np.array([seeing, sky, zp, 24.0, 86.0, 1.2])
    return np.broadcast_to(row, (n, t, 6)).copy()


def render(
    mag: np.ndarray,
    cond: np.ndarray,
    has_host: np.ndarray | None = None,
    seed: int = 0,
    read_noise: float = READ_NOISE,
    saturation: float = SATURATION,
):
    n = mag.shape[0]
    return render_stamps(
        mag,
        cond,
        PIXEL_SCALE,
        np.full(n, GAIN),
        np.full(n, read_noise),
        np.full(n, saturation),
        np.zeros(n, bool) if has_host is None else has_host,
        np.random.default_rng(seed),
    )


def test_psf_flux_conserved_and_enclosed_fraction_falls_with_fwhm() -> None:
    fwhm = np.array([3.5, 4.5, 5.5, 7.5])
    args = (fwhm, np.full(4, 2.5), np.full(4, 0.08), np.full(4, 0.7), np.full(4, 0.3), np.full(4, -0.2))
    big = moffat_psf(*args, size=301)
    assert big.dtype == np.float32
    np.testing.assert_allclose(big.sum(axis=(1, 2)), 1.0, atol=0.01)
    enclosed = moffat_psf(*args).sum(axis=(1, 2))
    assert np.all(enclosed < 1.0) and np.all(np.diff(enclosed) < 0)


def test_fast_pixel_integration_matches_subsampling() -> None:
    args = ([3.6, 5.0], [2.5, 4.0], [0.1, 0.0], [0.3, 0.0], [0.5, 0.1], [-0.4, 0.0])
    fast, slow = moffat_psf(*args), moffat_psf(*args, oversample=7)
    assert np.abs(fast - slow).max() < 0.01 * slow.max()


def test_fit_recovers_moffat_parameters() -> None:
    psf = moffat_psf([4.0, 6.0], [2.7, 4.0], [0.1, 0.05], [0.4, 2.0], [0.2, -0.3], [0.1, 0.4], oversample=5)
    fit = fit_moffat(psf * 2e4 + 100.0)
    assert fit["ok"].all()
    np.testing.assert_allclose(fit["fwhm"], [4.0, 6.0], rtol=0.03)
    np.testing.assert_allclose(fit["ellipticity"], [0.1, 0.05], atol=0.01)
    np.testing.assert_allclose(fit["x0"], [10.2, 9.7], atol=0.02)
    np.testing.assert_allclose(fit["background"], 100.0, rtol=0.01)


def test_measured_fwhm_of_noiseless_stars_matches_seeing(monkeypatch: pytest.MonkeyPatch) -> None:
    # the default shape model puts FWHM = seeing (the measured table may scale it)
    monkeypatch.setattr(images, "psf_shape_model", lambda: psf_shape_model("/nonexistent.csv"))
    seeing = np.array([1.0, 1.3, 1.6, 2.0])
    cond = conditions(len(seeing), 1)
    cond[:, 0, 0] = seeing
    # effectively noiseless: a very bright star (photon noise ~0.2 % at the peak), no read noise
    out = render(np.full((len(seeing), 1), 14.0), cond, read_noise=0.0, saturation=1e12)
    fwhm = measure_fwhm(out.stamps[:, 0])
    np.testing.assert_allclose(fwhm * PIXEL_SCALE, seeing, rtol=0.05)


def test_measured_fwhm_follows_the_drawn_psf() -> None:
    cond = conditions(20, 1)
    cond[:, 0, 0] = np.linspace(0.9, 2.0, 20)
    out = render(np.full((20, 1), 14.0), cond, read_noise=0.0, saturation=1e12)
    np.testing.assert_allclose(measure_fwhm(out.stamps[:, 0]), out.params["psf_fwhm"][:, 0], rtol=0.05)


def test_sky_only_stamps_have_poisson_plus_read_noise() -> None:
    for sky in (117.0, 5.0):  # Gaussian regime and exact-Poisson regime (sky * gain < 50 e-)
        out = render(np.full((200, 10), np.inf), conditions(200, 10, sky=sky))
        pix = out.stamps.astype(np.float64)
        assert abs(pix.mean() - sky) < 0.01 * sky
        expected = np.sqrt(sky * GAIN + READ_NOISE**2) / GAIN
        assert abs(pix.std() / expected - 1) < 0.03


def test_normal_table_sampler_is_standard_normal() -> None:
    z = standard_normal_f32(np.random.default_rng(3), 2_000_000).astype(np.float64)
    assert abs(z.mean()) < 0.003 and abs(z.std() - 1) < 0.003
    assert abs(np.mean(z**4) - 3) < 0.03
    assert np.abs(z).max() > 4.33  # tails are redrawn exactly, not truncated at the table edge


def test_counts_scale_with_magnitude() -> None:
    out = render(np.array([[16.0], [17.0]]), conditions(2, 1, sky=0.0), read_noise=0.0, saturation=1e12)
    counts = out.params["source_counts"][:, 0]
    assert counts[0] / counts[1] == pytest.approx(10**0.4, rel=1e-6)
    assert counts[1] == pytest.approx(86.0 * 10 ** (-0.4 * (17.0 - 25.0)), rel=1e-6)
    flux = out.stamps.sum(axis=(1, 2, 3))  # ~97 % of the light falls on the stamp
    assert flux[0] / flux[1] == pytest.approx(10**0.4, rel=0.03)


def test_peak_ratio_for_identical_psf() -> None:
    """Same seed, same PSF draw: the stamp of a star 1 mag brighter peaks 2.512x higher."""
    cond = conditions(1, 1, sky=0.0)
    a = render(np.array([[16.0]]), cond, read_noise=0.0, saturation=1e12, seed=5).stamps.max()
    b = render(np.array([[17.0]]), cond, read_noise=0.0, saturation=1e12, seed=5).stamps.max()
    assert a / b == pytest.approx(10**0.4, rel=0.02)


def test_saturation_clips_exactly() -> None:
    out = render(np.full((3, 2), 8.0), conditions(3, 2), saturation=30000.0)
    assert out.stamps.max() == np.float32(30000.0)
    assert (out.stamps == np.float32(30000.0)).any(axis=(2, 3)).all()
    assert out.stamps.min() >= 0.0


def test_no_source_for_infinite_magnitude() -> None:
    mag = np.full((50, 4), np.inf)
    mag[:, 2] = 15.0
    out = render(mag, conditions(50, 4))
    centre = out.stamps[:, :, 8:13, 8:13].mean(axis=(2, 3))
    edge = out.stamps[:, :, :3, :].mean(axis=(2, 3))
    assert np.all(out.params["source_counts"][:, [0, 1, 3]] == 0)
    assert np.abs(centre[:, [0, 1, 3]] - edge[:, [0, 1, 3]]).max() < 6.0  # sky only, noise ~ 3 ADU / sqrt(25)
    assert np.all(centre[:, 2] - edge[:, 2] > 1000)


def test_host_only_where_requested() -> None:
    n = 400
    has_host = np.arange(n) % 2 == 0
    out = render(np.full((n, 3), np.inf), conditions(n, 3), has_host=has_host)
    excess = out.stamps.mean(axis=(1, 2, 3)) - 117.0
    assert np.isnan(out.params["host_mag"][~has_host]).all()
    assert np.isfinite(out.params["host_mag"][has_host]).all()
    # sky only: the mean of 3 x 21 x 21 pixels of Poisson + read noise, within 5 sigma
    pixel_sigma = np.sqrt(117.0 * GAIN + READ_NOISE**2) / GAIN
    assert np.abs(excess[~has_host]).max() < 5 * pixel_sigma / np.sqrt(3 * 21 * 21)
    assert np.median(excess[has_host]) > 2.0


def test_host_images_have_unit_flux_and_follow_the_offset() -> None:
    hosts = {
        "host_mag": np.array([20.0]),
        "host_re_disc": np.array([1.0]),
        "host_re_bulge": np.array([0.4]),
        "host_bulge_fraction": np.array([0.3]),
        "host_axis_ratio": np.array([0.6]),
        "host_angle": np.array([0.4]),
        "host_offset_x": np.array([0.54]),
        "host_offset_y": np.array([-0.27]),
    }
    img = np.fft.fftshift(host_images(hosts, PIXEL_SCALE)[0])  # transient at pixel (16, 16)
    assert img.sum() == pytest.approx(1.0, abs=1e-4)
    y, x = np.unravel_index(np.argmax(img), img.shape)
    assert (x - 16, y - 16) == (-2, 1)  # host centre = transient - offset / pixel scale


def test_deterministic_dtype_and_shape() -> None:
    mag = np.random.default_rng(1).uniform(18, 23, (7, 5))
    host = np.array([True, False, True, False, False, True, False])
    a = render(mag, conditions(7, 5), has_host=host, seed=42)
    b = render(mag, conditions(7, 5), has_host=host, seed=42)
    c = render(mag, conditions(7, 5), has_host=host, seed=43)
    assert a.stamps.shape == (7, 5, 21, 21) and a.stamps.dtype == np.float32
    np.testing.assert_array_equal(a.stamps, b.stamps)
    assert not np.array_equal(a.stamps, c.stamps)
    for key, value in a.params.items():
        np.testing.assert_array_equal(value, b.params[key])
        assert value.shape in ((7,), (7, 5)), key


def test_padding_epochs_render_as_zeros() -> None:
    cond = conditions(2, 3)
    cond[:, 2] = 0.0
    out = render(np.full((2, 3), 18.0), cond, has_host=np.array([True, False]))
    assert np.all(out.stamps[:, 2] == 0) and np.all(out.stamps[:, :2] > 0)


# ----------------------------------------------------- registration and epoch offsets
def test_registration_resample_moves_light_and_correlates_noise():
    from rcnnlib.psf import moffat_psf
    from rcnnlib.sim.images import registration_resample

    one = np.ones(1)
    star = moffat_psf(one * 4.0, one * 3.5, one * 0.0, one * 0.0, one * 0.0, one * 0.0) * 1e4
    zero = registration_resample(star, np.zeros(1), np.zeros(1))
    np.testing.assert_allclose(zero, star, atol=1e-3 * star.max())  # no shift, no change
    moved = registration_resample(star, np.full(1, 0.5), np.zeros(1))
    grid = np.arange(21)
    centroid = lambda img: (img.sum(axis=0) * grid).sum() / img.sum()  # noqa: E731
    assert abs(abs(centroid(moved[0]) - centroid(star[0])) - 0.5) < 0.05
    assert moved.sum() == pytest.approx(star.sum(), rel=0.02)

    noise = np.random.default_rng(1).standard_normal((400, 21, 21)).astype(np.float32)
    shifts = np.random.default_rng(2).uniform(-0.5, 0.5, (2, 400))
    out = registration_resample(noise, shifts[0], shifts[1])[:, 3:-3, 3:-3]
    corr = np.corrcoef(out[:, :, :-1].ravel(), out[:, :, 1:].ravel())[0, 1]
    white = np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]
    assert abs(white) < 0.02 and corr > 0.05
    assert 0.7 < out.std() < 1.0  # interpolation lowers the per-pixel noise


def test_epoch_offsets_are_shared_seeded_and_grow_with_seeing():
    from rcnnlib.sim.images import epoch_mag_offsets

    seeing = np.repeat([1.0, 1.9], 2000)
    a = epoch_mag_offsets(seeing, np.random.default_rng(3))
    b = epoch_mag_offsets(seeing, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == seeing.shape and np.isfinite(a).all()
    assert np.median(a[seeing > 1.5]) > np.median(a[seeing < 1.5]) + 0.02
    assert np.abs(a).max() < 0.5


def test_star_share_separates_per_star_from_per_epoch_scatter() -> None:
    rng = np.random.default_rng(3)
    star = np.repeat(np.arange(400), 20)
    offset = rng.normal(0.0, 0.03, 400)[star]  # per star: variance 9e-4
    jitter = rng.normal(0.0, 0.02, star.size)  # per epoch: variance 4e-4
    assert star_share(offset + jitter, star) == pytest.approx(9 / 13, abs=0.04)
    assert star_share(jitter, star) < 0.1


def test_a_star_keeps_its_psf_width_offset_across_epochs() -> None:
    """On the real table two thirds of the ratio's variance is per star; draws keep it along time."""
    model = psf_shape_model()
    assert model.source != "default", "the measured PSF table ships with the package"
    assert 0.4 < model.ratio_star_share < 0.9
    rng = np.random.default_rng(0)
    seeing = np.full((3000, 25), 1.3)
    ratio, *_ = model.sample(rng, seeing.shape, seeing=seeing)
    within = ratio.std(axis=1).mean()
    independent = dataclasses.replace(model, ratio_star_share=0.0)
    ratio_independent, *_ = independent.sample(rng, seeing.shape, seeing=seeing)
    # the total spread is the table's either way; the epoch-to-epoch jitter of one star shrinks
    assert ratio.std() == pytest.approx(ratio_independent.std(), rel=0.1)
    assert within == pytest.approx(
        np.sqrt(1 - model.ratio_star_share) * ratio_independent.std(axis=1).mean(), rel=0.1
    )
