"""One definition of a stamp's sky and noise and of a night, checked against astropy's sigma clipping."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats

from rcnnlib.stamps import (
    MAD_TO_SIGMA,
    border_ring,
    night_of,
    ring_background,
    ring_mean_sky,
    ring_sky,
    sigma_clip,
)


def noisy_stamps(n: int = 300, seed: int = 0) -> np.ndarray:
    """Sky 100 ADU, noise 5 ADU, a bright source in the centre and a neighbour on the border."""
    rng = np.random.default_rng(seed)
    stamps = rng.normal(100.0, 5.0, size=(n, 21, 21))
    stamps[:, 8:13, 8:13] += 2000.0
    stamps[:, 0, :4] += 800.0  # a neighbour's wing across four border pixels
    return stamps


def test_mad_constant_is_the_gaussian_one():
    from scipy import stats

    assert MAD_TO_SIGMA == pytest.approx(1 / stats.norm.ppf(0.75), rel=1e-12)


def test_border_ring_is_the_outermost_pixels():
    stamp = np.arange(21 * 21).reshape(21, 21)
    ring = border_ring(stamp)
    inner = stamp[1:-1, 1:-1]
    assert ring.size == 80 and set(ring) == set(stamp.ravel()) - set(inner.ravel())


def test_ring_estimators_agree_with_astropy_sigma_clipped_stats():
    stamps = noisy_stamps()
    ring = border_ring(stamps)
    _, median, std = sigma_clipped_stats(
        ring, sigma=3.0, maxiters=5, cenfunc="median", stdfunc="mad_std", axis=-1
    )
    # astropy clips cumulatively, ours re-clips from all pixels each time (a pixel may come back):
    # identical on almost every stamp, within 5 % of the noise on the rest
    sky = ring_sky(stamps)
    np.testing.assert_allclose(sky, median, atol=0.25)
    assert np.mean(np.isclose(sky, median, rtol=0, atol=1e-9)) > 0.95
    level, sigma, n_used = ring_background(stamps)
    np.testing.assert_allclose(level, median, atol=0.25)
    np.testing.assert_allclose(np.median(sigma), np.median(std), rtol=0.05)
    assert np.median(sigma) == pytest.approx(5.0, rel=0.03)  # the true noise
    assert np.all(n_used <= 76)  # the neighbour's four pixels are clipped
    sky, noise = ring_mean_sky(stamps)
    assert noise.dtype == np.float32 and np.median(np.abs(sky - median)) < 0.5
    assert np.median(noise) == pytest.approx(5.0, rel=0.1)


def test_clipping_is_what_removes_the_neighbour():
    """The comparison above can fail: without clipping the neighbour drags the sky up."""
    stamps = noisy_stamps()
    unclipped = sigma_clip(border_ring(stamps), iterations=0).kept.mean(axis=-1)
    assert np.median(unclipped - ring_sky(stamps)) > 30.0


def test_one_night_rule():
    # HiTS (Chile) observes around MJD fraction 0.0-0.4, ZTF (Palomar) 0.1-0.55: one night each
    chile = 57070.0 + np.array([-0.05, 0.1, 0.38])
    palomar = 57070.0 + np.array([0.12, 0.3, 0.55])
    assert np.unique(night_of(chile)).size == 1 and np.unique(night_of(palomar)).size == 1
    assert night_of(np.array([57070.3]))[0] != night_of(np.array([57071.3]))[0]
