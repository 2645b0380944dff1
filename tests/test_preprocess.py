"""One pre-processing function for simulated and real sequences: masking, scaling, alignment, windows."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import first_per_class

from rcnnlib.classes import label_of
from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset
from rcnnlib.rcnn.preprocess import (
    Augmentation,
    PreprocessConfig,
    asinh,
    calibrate,
    fourier_filter,
    fourier_shift,
    matching_sigma,
    prepare,
)
from rcnnlib.sim.simulate import plan_shards, simulate_shard
from rcnnlib.sim.survey import Survey

SEEING = CONDITION_NAMES.index("seeing")


@pytest.fixture(scope="module")
def real(real_hits) -> SequenceDataset:
    return first_per_class(real_hits, 6)


@pytest.fixture(scope="module")
def sim() -> SequenceDataset:
    survey = Survey.preset("hits2015")
    tasks = plan_shards(survey, 6, fields=[survey.fields[0]])
    return SequenceDataset.concatenate([simulate_shard(survey, task, seed=3) for task in tasks])


def _flat_sequence(
    n_epochs: int = 26,
    sky: float = 200.0,
    flux: np.ndarray | None = None,
    seed: int = 0,
    seeing: np.ndarray | None = None,
    noise: float = 5.0,
):
    """A Gaussian star of ``flux[t]`` ADU on a flat sky with Gaussian noise, HiTS-like conditions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:21, 0:21]
    seeing = np.full(n_epochs, 1.2) if seeing is None else seeing
    sigma_px = (seeing / 0.27 / 2.3548)[:, None, None]
    psf = np.exp(-0.5 * ((yy - 10) ** 2 + (xx - 10) ** 2) / sigma_px**2)
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    flux = np.full(n_epochs, 2000.0) if flux is None else flux
    stamps = sky + flux[:, None, None] * psf + rng.normal(0, noise, (n_epochs, 21, 21))
    conditions = np.tile([1.2, sky, 25.0, 23.0, 86.0, 1.2], (n_epochs, 1))
    conditions[:, SEEING] = seeing
    return SequenceDataset(
        stamps=stamps[None],
        mjd=57070.0 + np.arange(n_epochs)[None] * 0.5,
        conditions=conditions[None],
        mask=np.ones((1, n_epochs), bool),
        labels=np.array([4]),
        ids=np.array(["flat"]),
    )


def test_shapes_and_prefix_step_mask(real, sim):
    for ds in (real, sim):
        inputs = prepare(ds)
        assert inputs.x.shape == (len(ds), 20, 21, 21, PreprocessConfig().channels)
        assert inputs.x.dtype == np.float32
        # valid steps come first, then padding, and padded steps are all zeros
        mask = inputs.step_mask
        assert (np.sort(mask, axis=1)[:, ::-1] == mask).all()
        assert not inputs.x[~mask].any()
        assert mask.any(axis=1).all()


def test_one_code_path_no_dependence_on_the_batch(real, sim):
    """Real and simulated sequences prepared together equal each prepared alone."""
    n = min(real.n_epochs, sim.n_epochs)

    def trim(ds):
        return SequenceDataset(
            ds.stamps[:, :n], ds.mjd[:, :n], ds.conditions[:, :n], ds.mask[:, :n], ds.labels, ds.ids
        )

    real_t, sim_t = trim(real), trim(sim)
    both = prepare(SequenceDataset.concatenate([real_t, sim_t]))
    alone = [prepare(real_t), prepare(sim_t)]
    np.testing.assert_array_equal(both.x, np.concatenate([a.x for a in alone]))
    np.testing.assert_array_equal(both.step_mask, np.concatenate([a.step_mask for a in alone]))


def test_background_is_zero_and_noise_comparable_for_real_and_simulated(real, sim):
    """After sky subtraction and scaling, empty sky looks the same in real and simulated inputs."""
    stats = []
    # Unmatched: PSF matching smooths white (simulated) noise more than the partly correlated
    # noise of real images, so matched real corners are ~2x noisier; the calibration is what is tested.
    unmatched = PreprocessConfig(psf_match_seeing=None, difference_channels=False)
    for ds in (real, sim):
        inputs = prepare(ds, unmatched)
        corners = inputs.x[..., :4, :4, :][inputs.step_mask]  # far from the source
        stats.append((np.median(corners), 1.4826 * np.median(np.abs(corners - np.median(corners)))))
    # within half a noise sigma of zero (real stamps: wings of bright stars reach the border ring)
    for median, noise in stats:
        assert abs(median) < 0.5 * noise, stats
    (_, noise_real), (_, noise_sim) = stats
    assert 0.5 < noise_real / noise_sim < 2.0, stats


def test_bad_seeing_epochs_are_dropped(real):
    ds = real.subset([0])
    conditions = ds.conditions.copy()
    bad = np.flatnonzero(ds.mask[0])[5]
    conditions[0, bad, SEEING] = 2.5
    degraded = SequenceDataset(ds.stamps, ds.mjd, conditions, ds.mask, ds.labels, ds.ids)
    # enough steps for every epoch, so losing one epoch must lose exactly one step
    config = PreprocessConfig(align_on_detection=False, n_steps=ds.n_epochs)
    before, after = prepare(ds, config), prepare(degraded, config)
    assert after.n_good_epochs[0] == before.n_good_epochs[0] - 1
    assert bad not in after.last_epoch[0]
    assert after.step_mask.sum() == before.step_mask.sum() - 1


def test_flux_is_scaled_to_the_reference_zero_point():
    """The same star seen with another zero point and exposure time gives the same calibrated flux."""
    ds = _flat_sequence()
    flux_a, _ = calibrate(ds.stamps[0, :1], ds.conditions[0, :1], PreprocessConfig())
    other = ds.conditions[0, :1].copy()
    other[0, CONDITION_NAMES.index("zero_point")] = 25.5  # 1 ADU/s is a fainter star: more ADU per star
    other[0, CONDITION_NAMES.index("exp_time")] = 43.0  # half the time: half the ADU
    seen = 200.0 + (ds.stamps[0, :1] - 200.0) * 10 ** (0.4 * 0.5) / 2.0
    flux_b, _ = calibrate(seen, other, PreprocessConfig())
    np.testing.assert_allclose(flux_a.sum(), flux_b.sum(), rtol=1e-3)


def test_window_starts_three_epochs_before_a_brightening():
    flux = np.full(26, 50.0)
    flux[12:] = 5000.0  # a transient appears at epoch 12
    inputs = prepare(_flat_sequence(flux=flux))
    assert inputs.last_epoch[0, 0] == 12 - 3 + 2  # the first step holds epochs 9, 10, 11
    steady = prepare(_flat_sequence())
    assert steady.last_epoch[0, 0] == 2  # a constant star is not moved
    no_align = prepare(_flat_sequence(flux=flux), PreprocessConfig(align_on_detection=False))
    assert no_align.last_epoch[0, 0] == 2


def test_labels_never_change_the_input(real):
    relabelled = SequenceDataset(
        real.stamps, real.mjd, real.conditions, real.mask, np.zeros_like(real.labels), real.ids
    )
    np.testing.assert_array_equal(prepare(real).x, prepare(relabelled).x)


def test_augmentation_is_repeatable_and_keeps_flux(sim):
    aug = Augmentation(shift_px=0.0, zero_point_error=0.0, sky_error=0.0)  # geometry only
    a = prepare(sim, augmentation=aug, rng=np.random.default_rng(1))
    b = prepare(sim, augmentation=aug, rng=np.random.default_rng(1))
    plain = prepare(sim)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, plain.x)
    np.testing.assert_allclose(a.x.sum(axis=(2, 3)), plain.x.sum(axis=(2, 3)), rtol=1e-4, atol=1e-3)
    full = prepare(sim, augmentation=Augmentation(), rng=np.random.default_rng(2))
    assert np.isfinite(full.x).all()
    with pytest.raises(ValueError, match="random generator"):
        prepare(sim, augmentation=Augmentation())


def test_fourier_shift_moves_a_star_by_the_requested_amount():
    yy, xx = np.mgrid[0:21, 0:21]
    star = np.exp(-0.5 * ((yy - 10) ** 2 + (xx - 10) ** 2) / 1.5**2).astype(np.float32)
    moved = fourier_shift(star[None], np.array([[0.4, -0.7]]))[0]
    centroid = np.array([(moved * yy).sum(), (moved * xx).sum()]) / moved.sum()
    np.testing.assert_allclose(centroid, [10.4, 9.3], atol=0.02)
    np.testing.assert_allclose(moved.sum(), star.sum(), rtol=1e-5)


def test_config_round_trip():
    config = replace(PreprocessConfig(), n_steps=12, softening=5.0)
    assert PreprocessConfig(**config.to_dict()) == config
    assert prepare(_flat_sequence(), config).x.shape == (1, 12, 21, 21, 6)


def test_psf_matching_removes_the_seeing_from_a_constant_star():
    """A constant star seen at seeing 0.8-1.9 arcsec has one peak after matching; without, it varies."""
    seeing = np.linspace(0.8, 1.9, 26)
    ds = _flat_sequence(flux=np.full(26, 20000.0), seeing=seeing, noise=0.0)
    config = PreprocessConfig(align_on_detection=False, n_steps=24)
    matched = prepare(ds, config).x[0, :, 10, 10, 0]
    raw = prepare(ds, replace(config, psf_match_seeing=None)).x[0, :, 10, 10, 0]
    assert np.ptp(matched) / matched.mean() < 0.01
    assert np.ptp(raw) / raw.mean() > 0.3


def test_psf_matching_conserves_flux_and_leaves_the_worst_seeing_alone():
    yy, xx = np.mgrid[0:21, 0:21]
    star = np.exp(-0.5 * ((yy - 10) ** 2 + (xx - 10) ** 2) / 1.5**2).astype(np.float32)
    blurred = fourier_filter(star[None], blur_sigma=np.array([2.0]))[0]
    np.testing.assert_allclose(blurred.sum(), star.sum(), rtol=1e-5)
    width = np.sqrt((blurred * (xx - 10) ** 2).sum() / blurred.sum())
    np.testing.assert_allclose(width, np.hypot(1.5, 2.0), rtol=0.02)  # widths add in quadrature
    config = PreprocessConfig()
    sigma = matching_sigma(np.array([0.9, 2.0, 2.4]), config)
    assert sigma[0] > 2.5 and sigma[1] == 0.0 and sigma[2] == 0.0
    assert matching_sigma(np.array([1.0]), replace(config, psf_match_seeing=None)) is None


def test_psf_matching_steadies_real_constant_stars(real_hits):
    """On real HiTS non-variables the centre pixel's epoch-to-epoch scatter drops several-fold."""
    nv = real_hits.subset(np.flatnonzero(real_hits.labels == label_of("NV"))[:40])
    config = PreprocessConfig(align_on_detection=False)

    def centre_scatter(cfg):
        inputs = prepare(nv, cfg)
        centre = np.where(inputs.step_mask, inputs.x[:, :, 10, 10, 0], np.nan)
        return np.nanmedian(np.nanstd(centre, axis=1) / np.nanmean(centre, axis=1))

    matched, raw = centre_scatter(config), centre_scatter(replace(config, psf_match_seeing=None))
    assert matched < 0.35 * raw, (matched, raw)


def test_relative_change_is_the_same_for_faint_and_bright_stars():
    """A 10 % brightening gives one relative-change value at any brightness; a constant star gives ~0."""
    config = PreprocessConfig(align_on_detection=False, n_steps=24)
    k = config.epochs_per_step
    centres = []
    for level in (20_000.0, 400_000.0):
        flux = np.full(26, level)
        flux[10:] *= 1.1
        x = prepare(_flat_sequence(flux=flux, noise=0.0), config).x[0, :, 10, 10, k]  # newest change
        centres.append(x)
        assert np.abs(x[:8]).max() < 0.05  # epochs 0-9: no change
    np.testing.assert_allclose(centres[0][10:], centres[1][10:], rtol=0.05)
    assert centres[1][12] > 1.0  # asinh(0.10 / 0.05): clearly non-zero
    plain = prepare(_flat_sequence(), replace(config, difference_channels=False))
    assert plain.x.shape[-1] == k


def test_model_cards_from_before_psf_matching_keep_their_preprocessing():
    from rcnnlib.rcnn.model import ModelConfig

    old = ModelConfig().to_dict()
    for key in ("psf_match_seeing", "difference_channels", "relative_floor", "relative_scale"):
        old["preprocess"].pop(key)
    pre = ModelConfig.from_dict(old).preprocess
    assert pre.psf_match_seeing is None and not pre.difference_channels and pre.channels == 3


# ------------------------------------------------------------------ prepare against a plain restatement
def reference_prepare(ds: SequenceDataset, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(x, step_mask)`` of :func:`prepare` restated plainly: a sequence at a time, float64, FFT, arcsinh."""
    size, k, steps = 21, config.epochs_per_step, config.n_steps
    x = np.zeros((len(ds), steps, size, size, config.channels))
    step_mask = np.zeros((len(ds), steps), bool)
    freq = np.fft.fftfreq(size)
    freq2 = freq[:, None] ** 2 + freq[None, :] ** 2
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    border = np.zeros((size, size), bool)
    border[[0, -1], :] = border[:, [0, -1]] = True
    to_sigma = 1 / (0.27 * 2.3548)  # FWHM in arcsec -> Gaussian sigma in pixels
    for i in range(len(ds)):
        cond = ds.conditions[i].astype(np.float64)
        good = ds.mask[i] & (cond[:, SEEING] < config.max_seeing) & np.isfinite(cond).all(1)
        idx = np.flatnonzero(good & np.isfinite(ds.stamps[i]).all((1, 2)))  # good epochs, in time order
        if idx.size == 0:
            continue
        stamps, cond = ds.stamps[i, idx].astype(np.float64), cond[idx]
        seeing = cond[:, SEEING]
        # sky: mean of the border ring after one 3-sigma (MAD) clip around its median
        ring = stamps[:, border]
        median = np.median(ring, axis=1, keepdims=True)
        sigma = 1.482602218505602 * np.median(np.abs(ring - median), axis=1, keepdims=True)
        kept = np.abs(ring - median) <= 3 * np.maximum(sigma, 1e-6)
        sky = (ring * kept).sum(1) / kept.sum(1)
        zero_point, exp_time = (
            cond[:, CONDITION_NAMES.index("zero_point")],
            cond[:, CONDITION_NAMES.index("exp_time")],
        )
        scale = config.exp_time_ref / exp_time * 10 ** (0.4 * (config.zero_point_ref - zero_point))
        flux = (stamps - sky[:, None, None]) * scale[:, None, None]
        start = 0
        if config.align_on_detection:
            psf_sigma = np.clip(seeing, 0.5, 5.0) / 0.27 / 2.3548
            psf = np.exp(-0.5 * (yy**2 + xx**2) / psf_sigma[:, None, None] ** 2)
            psf /= psf.sum(axis=(1, 2), keepdims=True)
            norm = (psf**2).sum(axis=(1, 2))
            value, error = (psf * flux).sum(axis=(1, 2)) / norm, sigma[:, 0] * scale / np.sqrt(norm)
            significance = (value - value[0]) / np.sqrt(error**2 + error[0] ** 2 + 1e-12)
            rises = np.flatnonzero(significance[1:] >= config.detection_sigma) + 1
            first = rises[0] if rises.size else 0
            start = min(max(first - config.epochs_before_detection, 0), max(idx.size - k, 0))
        window = np.arange(start, min(start + config.n_epochs, idx.size))
        pixels = flux[window]
        if config.psf_match_seeing is not None:
            target = config.psf_match_seeing * to_sigma
            own = np.clip(seeing[window], 0, config.psf_match_seeing) * to_sigma
            blur = np.sqrt(np.maximum(target**2 - own**2, 0))[:, None, None]
            pixels = np.fft.ifft2(np.fft.fft2(pixels) * np.exp(-2 * np.pi**2 * blur**2 * freq2)).real
        views = [config.scale * np.arcsinh(pixels / config.softening)]
        if config.difference_channels:
            level = max(pixels[0, 9:12, 9:12].mean(), 0) + config.relative_floor
            views.append(np.arcsinh((pixels - pixels[0]) / (level * config.relative_scale)))
        for s in range(min(steps, window.size - k + 1)):
            step_mask[i, s] = True
            x[i, s] = np.stack([view[s + j] for view in views for j in range(k)], axis=-1)
    return x, step_mask


def test_prepare_equals_a_plain_float64_restatement(real_hits, sim):
    """The fast, blocked, float32 prepare gives the plain algorithm's input, on real and simulated data.

    Sequences with a pixel beyond 2**24 ADU (float32's exact integers; one real
    sequence holds a 1e8-ADU bad pixel) are left out: float32 rounding of such a
    pixel alone exceeds the tolerance once blurred into its neighbours.
    """
    config = PreprocessConfig()
    for ds in (real_hits, sim):
        ordinary = np.flatnonzero(np.abs(ds.stamps).max(axis=(1, 2, 3)) < 2**24)
        assert ordinary.size >= len(ds) - 1
        ds = ds.subset(ordinary)
        fast = prepare(ds, config)
        x, step_mask = reference_prepare(ds, config)
        np.testing.assert_array_equal(fast.step_mask, step_mask)
        # float32 rounding, amplified by up to 1 / (0.5 ADU) in the relative-change channels
        np.testing.assert_allclose(fast.x, x, rtol=0, atol=5e-4)


def test_fourier_filter_equals_the_fft_route():
    """Shift and blur by matrix products equal multiplying the 2-D FFT by the transfer function."""
    rng = np.random.default_rng(4)
    images = rng.normal(0.0, 100.0, (3, 5, 21, 21)).astype(np.float32)
    shift = rng.normal(0.0, 0.5, (3, 5, 2))
    blur = rng.uniform(0.0, 3.5, (3, 5))
    freq = np.fft.fftfreq(21)
    fy, fx = freq[:, None], freq[None, :]
    for s, b in ((shift, None), (None, blur), (shift, blur)):
        gain = np.ones((3, 5, 21, 21), complex)
        if s is not None:
            gain *= np.exp(-2j * np.pi * (s[..., 0, None, None] * fy + s[..., 1, None, None] * fx))
        if b is not None:
            gain *= np.exp(-2 * np.pi**2 * b[..., None, None] ** 2 * (fy**2 + fx**2))
        expected = np.fft.ifft2(np.fft.fft2(images.astype(np.float64)) * gain).real
        np.testing.assert_allclose(fourier_filter(images, shift=s, blur_sigma=b), expected, atol=1e-3)


def test_asinh_equals_numpy_everywhere():
    x = np.concatenate([np.linspace(-30, 30, 6001), np.geomspace(1e-30, 3e38, 500)]).astype(np.float32)
    x = np.concatenate([x, -x])
    np.testing.assert_allclose(asinh(x), np.arcsinh(x.astype(np.float64)), rtol=2e-7, atol=2e-7)
