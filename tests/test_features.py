"""Light-curve features: shapes and names, masked epochs, non-detections, known periods, pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline

from rcnnlib.forest.baseline import LightCurveForest
from rcnnlib.forest.features import (
    MIN_EPOCHS,
    SELECTION_FEATURES,
    SOFTENING_UJY,
    LightCurveFeatures,
    asinh_magnitude,
    extract_features,
    feature_names,
    pack_light_curves,
)

T = 28


def cadence(n: int, rng: np.random.Generator) -> np.ndarray:
    """HiTS-like times: 7 nights over ~25 days, 4 epochs a night ~1.6 h apart."""
    nights = np.sort(rng.choice(25, size=T // 4, replace=False)).astype(float)
    one = (nights[:, None] + np.arange(4) * 0.07 + 0.05).ravel()
    return np.tile(57070.0 + one, (n, 1)) + rng.normal(0, 0.003, (n, T))


def column(name: str) -> int:
    return feature_names().index(name)


def of_light_curve(X: np.ndarray) -> np.ndarray:
    """The columns computed from light curves alone (without the stamps' concentration)."""
    return np.delete(X, column("stamp_concentration"), axis=-1)


def test_shape_names_and_finite_on_ordinary_curves():
    rng = np.random.default_rng(0)
    mjd = cadence(5, rng)
    flux = 50.0 + rng.normal(0, 1.0, (5, T))
    X = extract_features(mjd, flux, np.ones((5, T)))
    names = feature_names()
    assert X.shape == (5, len(names)) and len(set(names)) == len(names)
    for required in ("amplitude", "stetson_K", "skew", "kurtosis", "anderson_darling", "linear_trend", "eta"):
        assert any(required in n for n in names), required
    assert any("periodogram_period" in n for n in names)
    assert np.isfinite(of_light_curve(X)).all()


def test_masked_epochs_are_ignored_and_short_curves_are_nan():
    rng = np.random.default_rng(1)
    mjd = cadence(3, rng)
    flux = 20.0 + 5 * np.sin(mjd / 0.3) + rng.normal(0, 0.5, (3, T))
    err = np.full((3, T), 0.5)
    mask = np.ones((3, T), bool)
    mask[0, ::3] = False
    mask[2, MIN_EPOCHS - 1 :] = False  # too few epochs left
    garbage = flux.copy()
    garbage[~mask] = 1e6  # values at masked epochs must not matter
    a = extract_features(mjd, flux, err, mask)
    b = extract_features(mjd, garbage, err, mask)
    np.testing.assert_array_equal(a[:2], b[:2])
    assert np.isnan(a[2]).all() and np.isfinite(of_light_curve(a[:2])).all()
    # NaN fluxes (no photometry) count as masked too
    nan_flux = flux.copy()
    nan_flux[~mask] = np.nan
    np.testing.assert_array_equal(extract_features(mjd, nan_flux, err)[:2], a[:2])


def test_asinh_magnitudes_match_ab_when_bright_and_stay_finite_below_zero():
    flux = np.array([1e3, 100.0, 0.0, -2.0])
    mag, err = asinh_magnitude(flux, np.full(4, 0.3))
    np.testing.assert_allclose(mag[:2], 23.9 - 2.5 * np.log10(flux[:2]), atol=1e-3)
    assert np.isfinite(mag).all() and np.all(np.diff(mag) > 0)  # fainter flux, larger magnitude
    np.testing.assert_allclose(err[0], 2.5 / np.log(10) * 0.3 / 1e3, rtol=1e-4)
    assert err[2] == pytest.approx(2.5 / np.log(10) * 0.3 / (2 * SOFTENING_UJY))


def test_non_detections_keep_their_epochs():
    """A supernova-like curve: zero flux, then a rise; negative noise fluctuations must not drop epochs."""
    rng = np.random.default_rng(2)
    mjd = cadence(1, rng)
    true = np.where(mjd > 57082, 30.0 * np.exp(-(mjd - 57082) / 10.0), 0.0)
    flux = true + rng.normal(0, 0.3, true.shape)
    assert (flux < 0).any()
    X = extract_features(mjd, flux, np.full(true.shape, 0.3))
    assert np.isfinite(of_light_curve(X)).all()
    assert X[0, column("flux_detected_fraction")] == pytest.approx(np.mean(flux / 0.3 > 3))
    assert X[0, column("flux_max_snr")] == pytest.approx(flux.max() / 0.3)
    constant = extract_features(
        mjd, np.full(true.shape, 30.0) + rng.normal(0, 0.3, true.shape), 0.3 * np.ones(true.shape)
    )
    assert X[0, column("flux_chi2")] > 100 * constant[0, column("flux_chi2")]
    assert constant[0, column("flux_chi2")] == pytest.approx(1.0, abs=0.8)


@pytest.mark.parametrize("period", [0.55, 2.7])
def test_periodogram_finds_a_sinusoid_period(period):
    rng = np.random.default_rng(3)
    mjd = np.sort(57070 + rng.uniform(0, 25, (1, 60)), axis=1)
    flux = 40.0 * (1 + 0.3 * np.sin(2 * np.pi * mjd / period)) + rng.normal(0, 0.2, mjd.shape)
    X = extract_features(mjd, flux, np.full(mjd.shape, 0.2))
    assert X[0, column("mag_periodogram_period_0")] == pytest.approx(period, rel=0.03)


def test_transformer_in_a_pipeline_classifies_light_curves():
    rng = np.random.default_rng(4)
    n = 60
    mjd = cadence(n, rng)
    y = np.repeat([0, 1], n // 2)
    amplitude = np.where(y == 1, 0.5, 0.0)[:, None]
    flux = 30.0 * (1 + amplitude * np.sin(2 * np.pi * mjd / 0.6)) + rng.normal(0, 0.3, (n, T))
    packed = pack_light_curves(mjd, flux, np.full((n, T), 0.3))
    pipe = make_pipeline(LightCurveFeatures(), LightCurveForest(n_estimators=20, random_state=0))
    pipe.fit(packed[::2], y[::2])
    assert (pipe.predict(packed[1::2]) == y[1::2]).mean() > 0.9
    assert pipe.predict_proba(packed[1::2]).shape == (n // 2, 2)
    assert list(pipe[0].get_feature_names_out()) == feature_names()
    with pytest.raises(ValueError, match="packed"):
        LightCurveFeatures().fit(np.zeros((3, 7)))


def test_shape_features_tell_noise_slow_transients_and_short_periods_apart():
    """Noise: scatter ~ its error, turns often from night to night; a slow rise: never turns; an
    0.3-day star varies within a night more than between nights, unlike a 20-day one."""
    rng = np.random.default_rng(5)
    n_constant = 30
    mjd = cadence(n_constant + 3, rng)
    days = mjd - mjd[:, :1]
    flux = (
        np.concatenate(
            [
                np.full((n_constant, T), 100.0),  # non-variables
                5.0 + 4.0 * days[n_constant:][:1],  # a transient rising over the whole sequence
                100.0 * (1 + 0.3 * np.sin(2 * np.pi * days[n_constant:][1:2] / 0.3)),
                100.0 * (1 + 0.3 * np.sin(2 * np.pi * days[n_constant:][2:] / 20.0)),
            ]
        )
        + rng.normal(0, 0.3, mjd.shape)
    )
    X = extract_features(mjd, flux, np.full(mjd.shape, 0.3))
    constant, (rise, short, long) = X[:n_constant], X[n_constant:]
    assert np.median(constant[:, column("mag_scatter_to_error")]) == pytest.approx(1.0, abs=0.15)
    assert min(rise[column("mag_scatter_to_error")], short[column("mag_scatter_to_error")]) > 10
    turns = column("night_sign_change_fraction")
    assert rise[turns] == 0.0 and np.median(constant[:, turns]) >= 0.4
    intra = column("night_intra_to_inter_scatter")
    assert short[intra] > 0.5 and long[intra] < 0.1
    relative = column("flux_relative_amplitude")
    assert rise[relative] > 0.8 and np.median(constant[:, relative]) < 0.05
    at_baseline = column("flux_baseline_fraction")
    assert rise[at_baseline] < np.median(constant[:, at_baseline])


def test_forest_ignores_the_brightness_features():
    """Classes that differ only in brightness: the default forest cannot tell them apart, a forest told
    to use every feature can, and the ignored columns get no importance."""
    rng = np.random.default_rng(6)
    n = 80
    mjd = cadence(n, rng)
    y = np.repeat([0, 1], n // 2)
    level = np.where(y == 1, 1000.0, 30.0)[:, None]
    flux = level * (1 + 0.3 * np.sin(2 * np.pi * mjd / rng.uniform(0.3, 0.8, (n, 1))))
    X = extract_features(mjd, flux + rng.normal(0, 0.3, (n, T)), np.full((n, T), 0.3))
    ignored = [column(name) for name in SELECTION_FEATURES]
    default = LightCurveForest(n_estimators=30, random_state=0).fit(X[::2], y[::2])
    assert (default.feature_importances_[ignored] == 0).all()
    shuffled = X.copy()
    shuffled[:, ignored] = shuffled[rng.permutation(n)][:, ignored]
    np.testing.assert_array_equal(default.predict_proba(shuffled), default.predict_proba(X))
    everything = LightCurveForest(n_estimators=30, random_state=0, ignored_features=()).fit(X[::2], y[::2])
    assert everything.feature_importances_[ignored].sum() > 0.05


def test_stamp_concentration_fills_its_column_only_when_given():
    rng = np.random.default_rng(7)
    mjd = cadence(3, rng)
    flux = 50.0 + rng.normal(0, 1.0, (3, T))
    err = np.ones((3, T))
    without = extract_features(mjd, flux, err)
    given = extract_features(mjd, flux, err, stamp_concentration=np.array([1.1, 1.6, 1.3]))
    stamp = column("stamp_concentration")
    assert np.isnan(without[:, stamp]).all()
    np.testing.assert_array_equal(given[:, stamp], [1.1, 1.6, 1.3])
    others = np.arange(without.shape[1]) != stamp
    np.testing.assert_array_equal(given[:, others], without[:, others])
