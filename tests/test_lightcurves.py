"""Properties of the parametric light-curve models that a broken model would fail."""

from __future__ import annotations

import numpy as np
import pytest

from rcnnlib.classes import CLASS_NAMES
from rcnnlib.sim.lightcurves import (
    DIFFERENCE_DEPTH_LOSS,
    RRL_SCATTER,
    SN_MIN_DETECTIONS,
    LightCurves,
    faint_bound,
    photometric_sigma,
    rrl_scatter_values,
    sample_light_curves,
    sample_mean_magnitudes,
)

T = 25


def _survey(n: int, seed: int = 0, limit: float = 23.7) -> tuple[np.ndarray, np.ndarray]:
    """HiTS-like epochs: 4 per night over ~25 nights (MJD 57070-57095), 5σ limits ~limit ± 0.4."""
    rng = np.random.default_rng(seed)
    nights = np.sort(rng.choice(np.arange(57070, 57096), 7, replace=False))
    mjd = (nights[:, None] + 0.05 + np.array([0.0, 0.07, 0.14, 0.21])).ravel()[:T] + 0.5
    lim = limit + 0.4 * rng.standard_normal(T)
    return np.broadcast_to(mjd, (n, T)).copy(), np.broadcast_to(lim, (n, T)).copy()


def _draw(name: str, n: int = 2000, seed: int = 1, **kw: float) -> tuple[LightCurves, np.ndarray, np.ndarray]:
    mjd, lim = _survey(n, **kw)
    return sample_light_curves(name, mjd, lim, np.random.default_rng(seed)), mjd, lim


@pytest.mark.parametrize("name", CLASS_NAMES)
def test_shapes_dtypes_and_determinism(name: str) -> None:
    lc, _, _ = _draw(name, 500)
    again, _, _ = _draw(name, 500)
    assert lc.mag.shape == (500, T) and lc.mag.dtype == np.float64
    assert not np.isnan(lc.mag).any()
    for key, value in lc.params.items():
        assert len(value) == 500, key
        np.testing.assert_array_equal(value, again.params[key])
    np.testing.assert_array_equal(lc.mag, again.mag)
    other = sample_light_curves(name, *_survey(500), np.random.default_rng(2))
    assert name == "EMPTY" or not np.array_equal(np.nan_to_num(other.mag), np.nan_to_num(lc.mag))


def test_bad_class_name() -> None:
    with pytest.raises(ValueError, match="SN, RRL, CEP, EB, NV, AST, EMPTY"):
        sample_light_curves("QSO", *_survey(3), np.random.default_rng(0))


def test_rrl_periods_mix_amplitudes_and_scatter(monkeypatch: pytest.MonkeyPatch) -> None:
    lc, _, _ = _draw("RRL", 4000)
    p = lc.params
    ab = p["subtype"] == "RRab"
    assert 0.72 < ab.mean() < 0.84
    assert (p["period"][ab] >= 0.43).all() and (p["period"][ab] <= 0.85).all()
    assert 0.57 < p["period"][ab].mean() < 0.63
    assert (p["period"][~ab] >= 0.24).all() and (p["period"][~ab] <= 0.43).all()
    assert p["amplitude"][ab].mean() > p["amplitude"][~ab].mean() + 0.3
    assert (p["scatter"] == RRL_SCATTER).all()  # not the light curves' own std (see RRL_SCATTER)
    # noiseless shape on a dense grid: peak-to-peak equals the drawn amplitude, RRab rise is fast
    import rcnnlib.sim.lightcurves as lcmod

    monkeypatch.setattr(lcmod, "RRL_SCATTER", 0.0)
    n = 300
    mjd = np.zeros((n, 500))  # only to learn the periods this seed draws
    lc = sample_light_curves("RRL", mjd, np.full((n, 500), 30.0), np.random.default_rng(4))
    grid = np.linspace(0.0, 1.0, 500, endpoint=False)[None, :] * lc.params["period"][:, None]
    lc2 = sample_light_curves("RRL", grid, np.full((n, 500), 30.0), np.random.default_rng(4))
    np.testing.assert_allclose(lc2.params["period"], lc.params["period"])
    ptp = np.ptp(lc2.mag, axis=1)
    np.testing.assert_allclose(ptp, lc2.params["amplitude"], rtol=0.02)
    ab = lc2.params["subtype"] == "RRab"
    amplitude = lc2.params["amplitude"] / lcmod.RRL_AMPLITUDE_SCALE  # back to the population relations
    assert (amplitude[ab] > 0.44).all() and (amplitude[ab] < 1.41).all()
    assert (amplitude[~ab] > 0.24).all() and (amplitude[~ab] < 0.71).all()
    # rise time (minimum to maximum light, phase fraction): RRab sawtooth ~0.1-0.25, RRc ~0.3-0.5
    imax, imin = np.argmin(lc2.mag, axis=1), np.argmax(lc2.mag, axis=1)
    rise = np.mod(imax - imin, 500) / 500
    assert 0.08 < np.median(rise[ab]) < 0.3
    assert 0.3 < np.median(rise[~ab]) < 0.55


def test_rrl_scatter_table_is_committed() -> None:
    values = rrl_scatter_values()
    assert values.size > 100 and values.min() > 0.01 and values.max() < 1.0


def test_cepheid_periods_and_amplitudes() -> None:
    n = 300
    lc, _, _ = _draw("CEP", 3000)
    period = lc.params["period"]
    assert period.min() >= 2.0 and period.max() <= 60.0
    assert abs(np.log(period).mean() - 0.5 * (np.log(2) + np.log(60))) < 0.1  # log-uniform
    grid = np.linspace(0.0, 200.0, 4000)[None, :].repeat(n, 0)
    dense = sample_light_curves("CEP", grid, np.full(grid.shape, 30.0), np.random.default_rng(7))
    full = dense.params["period"] < 60.0  # 200 d covers >= 3 cycles
    ptp = np.ptp(dense.mag, axis=1)[full]
    np.testing.assert_allclose(ptp, dense.params["amplitude"][full], rtol=0.02)
    assert 0.29 < ptp.min() and ptp.max() < 1.01


def test_eb_detectability_rule_holds_for_every_object() -> None:
    lc, mjd, lim = _draw("EB", 3000)
    detached = ~lc.params["contact"]
    assert 0.2 < detached.mean() < 0.8  # both kinds are present
    lc, mjd, lim = lc.take(np.flatnonzero(detached)), mjd[detached], lim[detached]
    p = lc.params
    assert (p["period"] >= 0.2).all() and (p["period"] <= 10).all()
    assert (p["depth_primary"] >= p["depth_secondary"] - 1e-12).all()
    assert (p["eclipse_width"] > 0).all() and (p["eclipse_width"] < 0.5).all()
    # recompute the uneclipsed baseline (with ellipsoidal variation) at every epoch
    phase = np.mod(mjd / p["period"][:, None] + p["phase"][:, None], 1.0)
    ellip = 1.0 - p["ellipsoidal"][:, None] * np.cos(4 * np.pi * phase)
    base = p["mean_mag"][:, None] - 2.5 * np.log10(ellip)
    depth = lc.mag - base
    assert depth.min() > -1e-9  # eclipses only ever dim the system
    assert np.all(np.any(depth > 3.0 * photometric_sigma(base, lim), axis=1))
    # shallow eclipses of faint stars are rejected: rare among faint accepted objects
    faint = p["mean_mag"] > 23.0
    assert faint.sum() >= 20  # seeded: enough faint systems for the comparison to mean something
    assert np.median(p["depth_primary"][faint]) > np.median(p["depth_primary"][~faint])


def test_contact_binaries_vary_continuously_and_are_detectable() -> None:
    """W UMa systems: two minima per period, dimmer than maximum light at most phases, never brighter."""
    lc, _, lim = _draw("EB", 3000)
    contact = lc.params["contact"]
    p = {k: v[contact] for k, v in lc.params.items()}
    mag, lim = lc.mag[contact], lim[contact]
    assert (p["period"] >= 0.22).all() and (p["period"] <= 1.0).all()
    assert np.isnan(p["r1"]).all() and np.isnan(lc.params["amplitude"][~contact]).all()  # per-kind params
    dimming = mag - p["mean_mag"][:, None]
    assert dimming.min() > -1e-9 and (dimming <= p["amplitude"][:, None] * 1.25 + 1e-9).all()
    assert np.all(np.any(dimming > 3.0 * photometric_sigma(p["mean_mag"][:, None], lim), axis=1))
    # continuous variation: most epochs sit well away from maximum light (detached: most at it)
    bright = p["mean_mag"] < 21.0
    away = np.mean(dimming[bright] > 0.03, axis=1)
    assert np.median(away) > 0.6
    dense = sample_light_curves(
        "EB",
        np.linspace(57070, 57071, 400)[None].repeat(400, 0),
        np.full((400, 400), 26.0),
        np.random.default_rng(5),
    )
    c = dense.params["contact"]
    np.testing.assert_allclose(np.ptp(dense.mag[c], axis=1), dense.params["amplitude"][c], rtol=0.3)


def test_eb_rejects_undetectable() -> None:
    # limits brighter than the catalogue's bright end (14.5 mag): no system can be drawn, refused by name
    mjd, lim = _survey(5, limit=14.0)
    with pytest.raises(ValueError, match=r"faint limit must exceed the bright end 14\.5"):
        sample_light_curves("EB", mjd, lim, np.random.default_rng(0))


def test_sn_rules_hold_for_every_object() -> None:
    lc, mjd, lim = _draw("SN", 3000)
    p = lc.params
    depth = lim - DIFFERENCE_DEPTH_LOSS  # 5 sigma in a difference image against a same-depth reference
    assert np.all((lc.mag < depth).sum(axis=1) >= SN_MIN_DETECTIONS)  # as a survey would have found it
    assert np.all(lc.mag[:, 0] - lc.mag.min(axis=1) >= 1.0)  # first epoch >= 1 mag below peak
    assert 0.35 < np.mean(p["subtype"] == "Ia") < 0.9  # half drawn; Ia seen to larger z (86 % on HiTS fields)
    assert (p["redshift"] > 0).all() and (p["redshift"] <= 0.5).all()
    assert (p["t_explosion"] >= mjd[:, 0] - 60.0).all() and (p["t_explosion"] <= mjd[:, -1]).all()
    assert np.all(lc.mag.min(axis=1) >= p["peak_mag"] - 1e-9)  # never brighter than the peak
    before = mjd < p["t_explosion"][:, None]
    assert np.isinf(lc.mag[before]).all() and np.isfinite(lc.mag[~before]).all()


def test_sn_ia_peak_absolute_magnitude_and_shape() -> None:
    lc, _, _ = _draw("SN", 3000, limit=30.0)  # no flux selection: the intrinsic population
    p = lc.params
    ia = p["subtype"] == "Ia"
    assert abs(np.median(p["abs_peak_mag"][ia]) + 19.3) < 0.05
    assert 0.12 < np.std(p["abs_peak_mag"][ia]) < 0.3
    assert abs(np.median(p["abs_peak_mag"][~ia]) + 16.8) < 0.15
    np.testing.assert_allclose(p["peak_mag"], p["abs_peak_mag"] + p["distance_modulus"])
    # Ia template: ~18 d rest-frame rise, ~1.1 mag decline in the 15 d after peak
    from rcnnlib.sim.lightcurves import _sn_ia_flux

    tau = np.linspace(0, 80, 8001)
    mag = -2.5 * np.log10(np.maximum(_sn_ia_flux(tau), 1e-30))
    assert abs(tau[np.argmin(mag)] - 18.0) < 0.05
    assert 0.9 < np.interp(33.0, tau, mag) < 1.3


def test_nv_constant_ast_single_epoch_empty_inf() -> None:
    nv, _, _ = _draw("NV")
    np.testing.assert_array_equal(nv.mag, np.repeat(nv.params["mean_mag"][:, None], T, axis=1))
    ast, _, _ = _draw("AST")
    finite = np.isfinite(ast.mag)
    assert (finite.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(ast.mag[finite], ast.params["mean_mag"])
    assert np.bincount(ast.params["epoch"], minlength=T).min() > 0  # any epoch can host it
    empty, _, _ = _draw("EMPTY")
    assert np.isinf(empty.mag).all() and (empty.mag > 0).all()


def test_mean_magnitudes_bounds_and_shape() -> None:
    rng = np.random.default_rng(0)
    m = sample_mean_magnitudes(200_000, 24.0, rng, cutoff=30.0)  # no cut-off: pure power law
    assert m.min() >= 14.5 and m.max() <= 24.0
    counts = np.histogram(m, bins=np.arange(15, 24.01, 1.0))[0]
    assert (np.diff(counts) > 0).all()  # rising with magnitude
    slope = np.polyfit(np.arange(15.5, 24, 1.0), np.log10(counts), 1)[0]
    assert abs(slope - 0.3) < 0.02
    cut = sample_mean_magnitudes(200_000, 24.0, rng)  # erf cut-off at 22.8
    hist = np.histogram(cut, bins=np.arange(19, 24.01, 0.5))[0]
    assert hist.argmax() in (6, 7)  # peaks ~22-23 then falls
    assert hist[-1] < 0.5 * hist.max()
    rrl = sample_mean_magnitudes(50_000, 24.0, rng, cutoff=21.5)
    assert np.median(rrl) < np.median(cut) - 0.8
    per_obj = sample_mean_magnitudes(3, np.array([16.0, 20.0, 24.0]), rng)
    assert (per_obj <= [16.0, 20.0, 24.0]).all()
    with pytest.raises(ValueError, match=r"faint limit must exceed the bright end 14\.5"):
        sample_mean_magnitudes(2, 14.0, rng)


def test_faint_bound() -> None:
    lim = np.array([[23.0, 24.0, 23.5]])
    np.testing.assert_allclose(faint_bound(lim), 23.5 + 0.7 * np.std([23.0, 24.0, 23.5]))


def test_class_mean_magnitudes_respect_faint_bound() -> None:
    for name in ("RRL", "CEP", "NV"):
        lc, _, lim = _draw(name, 1000)
        assert (lc.params["mean_mag"] <= faint_bound(lim) + 1e-9).all()
        assert (lc.params["mean_mag"] >= 14.5).all()


@pytest.mark.parametrize("name", ["RRL", "CEP", "EB", "NV", "AST"])
def test_flat_training_prior_reaches_the_bright_real_stars(name: str) -> None:
    """mag_slope=0: flat in magnitude up to the cut-off, far more bright stars than the survey's counts."""
    mjd, lim = _survey(3000)
    counts = sample_light_curves(name, mjd, lim, np.random.default_rng(2))
    flat = sample_light_curves(name, mjd, lim, np.random.default_rng(2), mag_slope=0.0)
    bright = [np.mean(lc.params["mean_mag"] < 19.0) for lc in (counts, flat)]
    assert bright[1] > 2.5 * bright[0], bright
    if name == "NV":  # no detectability rule: flat between 14.5 and the erf cut-off at 22.8
        hist = np.histogram(flat.params["mean_mag"], bins=np.arange(15.0, 21.01, 1.0))[0]
        assert hist.max() < 1.3 * hist.min(), hist
