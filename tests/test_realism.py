"""Realism statistics: exact on synthetic data, and simulated vs real HiTS sequences.

The first half checks each statistic on synthetic stamps whose answer is known.
The second half simulates the fields and classes of the real labelled objects
and requires the simulator to match the real stamps where the paper's method
says it should (noise, PSF width, brightness scale, variability, cadence).
Tolerances were checked to fail for a broken simulator (gain ignored, seeing
ignored, PSF 15 % too wide, zero point off by 0.5 mag).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rcnnlib.classes import CLASS_NAMES, label_of
from rcnnlib.dataset import COLUMN, CONDITION_NAMES, SequenceDataset
from rcnnlib.hits.loader import load_hits
from rcnnlib.psf import moffat_psf
from rcnnlib.rcnn.preprocess import (
    PreprocessConfig,
    calibrate,
    detection_flux,
    psf_matching_scatter,
    quality_mask,
)
from rcnnlib.sim import realism
from rcnnlib.sim.simulate import ShardTask, simulate_shard
from rcnnlib.sim.survey import Survey

GAIN, READ_NOISE, PIXEL_SCALE = 4.104, 6.12, 0.27
STARS = ("RRL", "EB", "NV")


# ------------------------------------------------------------------ synthetic data
def make_dataset(
    mag: np.ndarray,
    seeing: np.ndarray,
    sky: np.ndarray,
    rng: np.random.Generator,
    zero_point: float = 25.0,
    exp_time: float = 86.0,
    beta: float = 3.5,
    noise_scale: float = 1.0,
    label: str = "NV",
    mjd: np.ndarray | None = None,
) -> SequenceDataset:
    """Stamps of a Moffat star (``mag`` = inf: none) on a flat sky with Poisson + read noise."""
    n, t = mag.shape
    seeing, sky = np.broadcast_to(seeing, (n, t)), np.broadcast_to(sky, (n, t))
    fwhm_px = (seeing / PIXEL_SCALE).ravel()
    psf = moffat_psf(fwhm_px, beta, 0.0, 0.0, 0.0, 0.0, oversample=3).reshape(n, t, 21, 21)
    finite = np.isfinite(mag)
    counts = np.where(finite, exp_time * 10.0 ** (-0.4 * (np.where(finite, mag, 99.0) - zero_point)), 0.0)
    mean = sky[..., None, None] + counts[..., None, None] * psf
    sigma = np.sqrt(mean * GAIN + READ_NOISE**2) / GAIN * noise_scale
    stamps = mean + sigma * rng.standard_normal(mean.shape)
    conditions = np.zeros((n, t, len(CONDITION_NAMES)))
    for name, value in (
        ("seeing", seeing),
        ("sky", sky),
        ("zero_point", zero_point),
        ("limit_mag_5sigma", 23.5),
        ("exp_time", exp_time),
        ("airmass", 1.2),
    ):
        conditions[..., CONDITION_NAMES.index(name)] = value
    return SequenceDataset(
        stamps=stamps,
        mjd=np.broadcast_to(np.arange(t) * 0.07 + 57070.0 if mjd is None else mjd, (n, t)),
        conditions=conditions,
        mask=np.ones((n, t), bool),
        labels=np.full(n, label_of(label)),
        ids=np.array([f"syn{i}" for i in range(n)]),
    )


def test_robust_std_gaussian_with_outliers():
    rng = np.random.default_rng(0)
    data = 100.0 + 5.0 * rng.standard_normal((400, 300))
    data[:, :6] += 500.0  # a neighbour / cosmic rays: 2 % of the pixels
    level, sigma = realism.robust_std(data)
    assert np.median(sigma) == pytest.approx(5.0, rel=0.02)
    assert np.median(level) == pytest.approx(100.0, abs=0.1)


def test_background_noise_known_sigma():
    rng = np.random.default_rng(1)
    sky = np.linspace(100.0, 1500.0, 40)[None, :].repeat(25, axis=0)
    ds = make_dataset(np.full(sky.shape, np.inf), 1.2, sky, rng)
    table = realism.background_noise(ds)
    assert len(table) == sky.size and set(table["class_name"]) == {"NV"}
    assert table["noise_ratio"].median() == pytest.approx(1.0, abs=0.03)
    per_sky = table.groupby("sky")["noise_ratio"].median()
    assert per_sky.between(0.94, 1.06).all()
    assert (table["level_minus_sky"].abs() / table["noise"]).median() < 0.15  # a median of ~200 pixels
    assert table["noise_correlation"].abs().median() < 0.05
    assert table["peak_snr"].median() < 5


def test_background_noise_sees_resampled_noise():
    """Averaging neighbouring pixels (as resampling does) lowers the noise and correlates it."""
    rng = np.random.default_rng(2)
    ds = make_dataset(np.full((20, 10), np.inf), 1.2, 300.0, rng)
    smooth = ds.stamps.copy()
    smooth[..., 1:] = 0.5 * (ds.stamps[..., 1:] + ds.stamps[..., :-1])
    ds.stamps = smooth
    table = realism.background_noise(ds)
    assert table["noise_ratio"].median() == pytest.approx(np.sqrt(0.5), rel=0.05)
    assert table["noise_correlation"].median() > 0.2


def test_noise_ratio_at_sky_recovers_a_known_excess():
    rng = np.random.default_rng(3)
    sky = rng.uniform(100, 800, (60, 10))
    real = make_dataset(np.full(sky.shape, np.inf), 1.2, sky, rng)
    sim = make_dataset(np.full(sky.shape, np.inf), 1.2, sky, rng, noise_scale=1.2)
    table = realism.noise_ratio_at_sky(real, sim, n_bins=4)
    assert len(table) == 4
    np.testing.assert_allclose(table["ratio"], 1.2, rtol=0.03)
    same = realism.noise_ratio_at_sky(real, make_dataset(np.full(sky.shape, np.inf), 1.2, sky, rng), n_bins=4)
    np.testing.assert_allclose(same["ratio"], 1.0, rtol=0.03)


def test_psf_fwhm_recovers_known_width():
    rng = np.random.default_rng(4)
    seeing = np.array([1.0, 1.3, 1.7])[None, :].repeat(10, axis=0)
    ds = make_dataset(np.full(seeing.shape, 17.0), seeing, 120.0, rng)
    table = realism.psf_fwhm(ds, min_snr=50)
    assert len(table) == seeing.size and table["ok"].all()
    np.testing.assert_allclose(table["fwhm_ratio"], 1.0, rtol=0.04)
    assert table["beta"].median() == pytest.approx(3.5, rel=0.1)
    # faint sources are left out rather than measured as noise
    faint = make_dataset(np.full((3, 3), 25.0), 1.2, 120.0, rng)
    assert len(realism.psf_fwhm(faint, min_snr=50)) == 0
    assert len(realism.psf_fwhm(ds, max_epochs=7)) == 7


def test_peak_counts_and_slope():
    rng = np.random.default_rng(5)
    mag = rng.uniform(16.0, 19.5, (40, 8))
    seeing = rng.uniform(0.9, 1.9, (40, 8))
    ds = make_dataset(mag, seeing, 120.0, rng)
    table = realism.peak_counts(ds)
    # aperture of 2 x seeing, capped at the stamp's 10 px: the Moffat wings lose < 0.1 mag
    assert np.abs(table["mag"] - mag.ravel()).max() < 0.1
    fit = realism.peak_slope(table)
    assert fit["mag_slope"] == pytest.approx(-0.4, abs=0.01)
    assert -2.2 < fit["seeing_slope"] < -1.6
    assert fit["n"] == mag.size


def test_light_curve_variability_constant_and_variable():
    rng = np.random.default_rng(6)
    t = 25
    constant = make_dataset(np.full((80, t), 20.0), 1.2, 120.0, rng)
    stats = realism.light_curve_variability(constant)
    assert stats["chi2_red"].median() == pytest.approx(1.0, abs=0.15)
    assert (stats["n_detections"] == t).all()
    assert stats["mean_mag"].median() == pytest.approx(20.0, abs=0.05)
    phase = np.linspace(0, 2 * np.pi, t, endpoint=False)
    wave = 18.0 + 0.5 * np.sin(phase)[None, :].repeat(20, axis=0)  # 1 mag peak to peak
    variable = realism.light_curve_variability(make_dataset(wave, 1.2, 120.0, rng, label="RRL"))
    expected = np.percentile(wave[0], 95) - np.percentile(wave[0], 5)
    assert variable["amplitude"].median() == pytest.approx(expected, abs=0.03)
    assert variable["chi2_red"].min() > 100
    assert set(variable["class_name"]) == {"RRL"}
    none = realism.light_curve_variability(make_dataset(np.full((3, t), np.inf), 1.2, 120.0, rng))
    assert (none["n_detections"] <= 1).all() and none["amplitude"].isna().all()


def test_cadence_and_gaps():
    rng = np.random.default_rng(7)
    mjd = np.array([57070.0, 57070.1, 57070.2, 57072.0, 57075.0])
    ds = make_dataset(np.full((2, 5), np.inf), 1.2, 120.0, rng, mjd=mjd)
    ds.mask[1, 3:] = False
    table = realism.cadence(ds)
    assert table["n_epochs"].tolist() == [5, 3]
    assert table["n_nights"].tolist() == [3, 1]
    assert table["span_days"].to_numpy() == pytest.approx([5.0, 0.2])
    assert table["max_gap_days"].to_numpy() == pytest.approx([3.0, 0.1])
    gaps = realism.epoch_gaps(ds)
    assert len(gaps) == 4 + 2 and gaps["gap_days"].min() == pytest.approx(0.1)


def test_seeing_cut_masks_bad_epochs():
    rng = np.random.default_rng(8)
    ds = make_dataset(np.full((2, 4), 20.0), np.array([1.0, 2.0, 2.5, 1.9]), 120.0, rng)
    cut = realism.seeing_cut(ds)
    assert cut.mask.sum(axis=1).tolist() == [2, 2]
    assert (cut.stamps[:, 1:3] == 0).all() and ds.mask.all()
    assert len(realism.epoch_table(cut)) == 4


def test_compare_table():
    rng = np.random.default_rng(9)
    a = pd.DataFrame({"class_name": ["RRL"] * 200 + ["NV"] * 200, "x": rng.normal(1, 0.1, 400)})
    b = pd.DataFrame({"class_name": ["RRL"] * 300 + ["EB"] * 10, "x": rng.normal(2, 0.1, 310)})
    table = realism.compare(a, b, "x")
    assert table["class_name"].tolist() == ["RRL", "all"]  # groups present on both sides only
    row = table.iloc[0]
    assert row["n_real"] == 200 and row["n_sim"] == 300
    assert row["median_ratio"] == pytest.approx(2.0, rel=0.05)
    assert row["ks_statistic"] == pytest.approx(1.0) and row["ks_pvalue"] < 1e-10
    same = realism.compare(a, a, "x", by=None)
    assert same.loc[0, "ks_statistic"] == 0.0 and same.loc[0, "median_ratio"] == 1.0


def test_difference_noise_cancels_static_structure():
    """Smooth static light (a host's wings) reads as correlated noise in one stamp, not in differences."""
    rng = np.random.default_rng(10)
    ds = make_dataset(np.full((30, 6), np.inf), 1.2, 300.0, rng)
    yy, xx = np.mgrid[0:21, 0:21]
    ds.stamps = ds.stamps + 40.0 * np.exp(-((xx - 3.0) ** 2 + (yy - 17.0) ** 2) / 60.0)  # same every epoch
    single = realism.background_noise(ds)
    diff = realism.difference_noise(ds)
    assert len(diff) == 30 * 5 and (diff["epoch"] >= 1).all()
    assert single["noise_correlation"].median() > 0.1  # the structure passes for correlated noise
    assert abs(diff["noise_correlation"].median()) < 0.05
    assert diff["noise_ratio"].median() == pytest.approx(1.0, abs=0.04)


def test_night_gaps():
    rng = np.random.default_rng(11)
    mjd = np.array([57070.1, 57070.2, 57072.1, 57072.2, 57072.3, 57075.1])
    ds = make_dataset(np.full((2, 6), np.inf), 1.2, 120.0, rng, mjd=mjd)
    ds.mask[1, 2:5] = False  # the middle night unobserved
    table = realism.night_gaps(ds)
    assert table["n_nights"].tolist() == [3, 2]
    assert table["epochs_per_night"].to_numpy() == pytest.approx([2.0, 1.5])
    assert table["night_gap_days"].to_numpy() == pytest.approx([2.5, 5.0])


def test_bootstrap_standard_error_of_a_mean():
    rng = np.random.default_rng(12)
    table = pd.DataFrame({"sequence": np.repeat(np.arange(400), 3), "x": np.repeat(rng.normal(0, 1, 400), 3)})
    value, se = realism.bootstrap(table, lambda t: t["x"].mean(), rng, 300)
    assert value == pytest.approx(table["x"].mean())
    assert se == pytest.approx(1 / np.sqrt(400), rel=0.2)  # whole sequences resampled: n = 400, not 1200


def test_field_of_real_ids():
    ids = np.array(["04_S22_648_2287", "SNHiTS15A_14_N16_681_88"])
    assert realism.field_of(ids).tolist() == ["04", "14"]


def test_difference_peaks_read_the_brightest_detection(tmp_path):
    folder = tmp_path / realism.SN_LIGHT_CURVES
    folder.mkdir(parents=True)
    (folder / "SNHiTS15X.dat").write_text(
        "# preliminary\nMJD ADU e_ADU mag band\n1 10 10 25.0 g\n2 900 100 21.5 g\n3 3000 100 20.2 r\n"
        "4 600 100 21.9 g\n"
    )
    table = realism.difference_peaks(tmp_path, np.array(["NV1", "SNHiTS15X_14_N1_1_1", "SNHiTS15Y_1_N1_1_1"]))
    assert table["sequence"].tolist() == [1] and table["peak_mag"].tolist() == [21.5]  # g only, S/N >= 5


# --------------------------------------------------------------- real vs simulated
SIM_FIELDS: dict[str, tuple[str, ...]] = {  # fields holding most real objects of each class
    "RRL": ("38", "33"),
    "EB": ("15", "04"),
    "NV": ("10", "04", "11"),
    "SN": ("14", "07"),
}
SIM_PER_SHARD = {"RRL": 30, "EB": 30, "NV": 150, "SN": 30}


@pytest.fixture(scope="module")
def real(hits_root) -> SequenceDataset:
    """The real labelled sequences with the paper's seeing cut (the simulator renders no worse epochs)."""
    return realism.seeing_cut(load_hits(hits_root))


@pytest.fixture(scope="module")
def sim() -> SequenceDataset:
    survey = Survey.preset("hits2015")
    tasks = [(name, field) for name, fields in SIM_FIELDS.items() for field in fields]
    parts = [
        simulate_shard(survey, ShardTask(i, field, name, 0, SIM_PER_SHARD[name]), seed=2019)
        for i, (name, field) in enumerate(tasks)
    ]
    ds = SequenceDataset.concatenate(parts)
    ds.metadata["resampled"] = [r for part in parts for r in part.metadata["resampled"]]
    return ds


def _resampled(table: pd.DataFrame, ds: SequenceDataset) -> np.ndarray:
    """Per row of a simulated table: was its sequence resampled as if registered?"""
    return np.asarray(ds.metadata["resampled"], dtype=bool)[table["sequence"].to_numpy()]


@pytest.fixture(scope="module")
def noise_tables(real, sim) -> tuple[pd.DataFrame, pd.DataFrame]:
    return realism.background_noise(real), realism.background_noise(sim)


@pytest.fixture(scope="module")
def psf_tables(real, sim) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Moffat fits of bright star epochs (point sources: supernovae sit on hosts)."""
    out = []
    for ds in (real, sim):
        stars = ds.subset(np.isin(ds.labels, [CLASS_NAMES.index(c) for c in STARS]))
        table = realism.psf_fwhm(stars, max_epochs=1200)
        table = table[table["ok"]].copy()
        table["seeing_bin"] = pd.cut(table["seeing"], [0.0, 1.2, 1.4, 1.6, 2.0])
        out.append(table)
    return out[0], out[1]


@pytest.fixture(scope="module")
def variability(real, sim) -> tuple[pd.DataFrame, pd.DataFrame]:
    return realism.light_curve_variability(real), realism.light_curve_variability(sim)


def test_noise_matches_real_at_same_sky(noise_tables, sim):
    """Raw star cut-outs: sky-subtracted background noise within 10 % of real in every sky bin.

    Real star stamps are raw cut-outs, so they are compared with the simulated
    sequences that were not resampled.
    """
    r, s = noise_tables
    s = s[~_resampled(s, sim)]
    faint_r = r[r["class_name"].isin(STARS) & (r["peak_snr"] < 20)]
    faint_s = s[s["class_name"].isin(STARS) & (s["peak_snr"] < 20)]
    corr = realism.compare(faint_r, faint_s, "noise_correlation", by=None).iloc[0]
    assert abs(corr["median_sim"] - corr["median_real"]) < 0.05, corr.to_dict()  # white pixel noise
    table = realism.noise_ratio_at_sky(r[r["class_name"].isin(STARS)], s[s["class_name"].isin(STARS)])
    assert len(table) >= 3, table
    assert table["ratio"].between(0.9, 1.1).all(), table.to_string()


def test_psf_fwhm_follows_seeing_like_real(psf_tables):
    """Measured FWHM / seeing per seeing bin within 10 % of real; FWHM scales with seeing like real."""
    r, s = psf_tables
    table = realism.compare(r, s, "fwhm_ratio", by="seeing_bin")
    bins = table[(table["n_real"] >= 30) & (table["n_sim"] >= 30) & (table["seeing_bin"] != "all")]
    assert len(bins) >= 3, table.to_string()
    assert bins["median_ratio"].between(0.9, 1.1).all(), table.to_string()
    slopes = [np.polyfit(np.log10(t["seeing"]), np.log10(t["fwhm_arcsec"]), 1)[0] for t in (r, s)]
    assert abs(slopes[1] - slopes[0]) < 0.3, slopes
    beta = realism.compare(r, s, "beta", by=None).iloc[0]
    assert 0.85 < beta["median_ratio"] < 1.15, beta.to_dict()


def test_peak_counts_scale_like_real(real, sim):
    """log10 peak falls 0.4 per mag and ~2 per decade of seeing; same peak at given mag and seeing."""
    fits = [realism.peak_slope(realism.peak_counts(ds)) for ds in (real, sim)]
    for fit in fits:
        assert fit["n"] > 500
        assert fit["mag_slope"] == pytest.approx(-0.4, abs=0.05), fits
        assert -2.6 < fit["seeing_slope"] < -1.4, fits
    assert abs(fits[1]["log_peak_ref"] - fits[0]["log_peak_ref"]) < 0.1, fits  # within 25 %


def test_nonvariable_scatter_like_real_at_same_magnitude(variability):
    """Reduced chi2 of non-variables of the real NV magnitudes (17.5-20.5) within a factor 2 of real.

    Real HiTS non-variables scatter by ~0.03 mag, mostly common to all stars of an
    epoch and correlated with seeing; the simulated ones must not be far cleaner.
    """
    r, s = variability
    pick = [t[(t["class_name"] == "NV") & t["mean_mag"].between(17.5, 20.5)] for t in (r, s)]
    assert len(pick[0]) >= 30 and len(pick[1]) >= 8, [len(p) for p in pick]
    row = realism.compare(pick[0], pick[1], "chi2_red", by=None).iloc[0]
    assert 0.5 < row["median_ratio"] < 2.0, row.to_dict()


def test_bright_constant_stars_jitter_like_real_ones_after_psf_matching(real, sim):
    """The network sees PSF-matched stamps: a constant star's centre pixel must be as steady as a real one's.

    Bright (PSF flux > 1e4 ADU) non-variables, median over stars of the scatter of the
    centre pixel about its median. Drawing every epoch's PSF width independently gave
    0.046 against the real 0.032; keeping a per-star width offset gives ~0.039. The
    remaining excess is within the tolerance of 35 %.
    """
    config = PreprocessConfig()
    medians = []
    for ds in (real, sim):
        stars = ds.subset(np.flatnonzero(ds.labels == CLASS_NAMES.index("NV")))
        good = quality_mask(stars, config)
        flux, noise = calibrate(stars.stamps, stars.conditions, config)
        value, _ = detection_flux(flux, noise, stars.conditions[..., COLUMN["seeing"]])
        bright = np.nanmedian(np.where(good, value, np.nan), axis=1) > 1e4
        scatter = np.nanstd(psf_matching_scatter(stars, config)["PSF-matched"], axis=1)
        assert bright.sum() >= 30, bright.sum()
        medians.append(np.median(scatter[bright]))
    assert medians[1] < 1.35 * medians[0], medians


@pytest.fixture(scope="module")
def matched_sim(real) -> SequenceDataset:
    """Three simulated sequences per real one, in the real objects' fields and classes."""
    return realism.simulate_like(real, Survey.preset("hits2015"), per_real=3, seed=2019)


@pytest.fixture(scope="module")
def card(real, matched_sim, hits_root) -> pd.DataFrame:
    peaks = realism.difference_peaks(hits_root, real.ids)
    return realism.scorecard(real, matched_sim, seed=0, real_peaks=peaks, max_fits=400)


def test_simulation_like_the_real_set_has_its_fields_and_classes(real, matched_sim):
    names = np.asarray(real.class_names)[real.labels]
    sim_names = np.asarray(matched_sim.class_names)[matched_sim.labels]
    real_fields, sim_fields = realism.field_of(real.ids), np.array([i.split("_")[2] for i in matched_sim.ids])
    for name in ("SN", "RRL", "EB", "NV"):
        for field_name in set(real_fields[names == name]) - {"03"}:  # field 03 has no conditions
            n_real = ((names == name) & (real_fields == field_name)).sum()
            assert ((sim_names == name) & (sim_fields == field_name)).sum() == 3 * n_real, (name, field_name)
    assert len(matched_sim) == 3 * (len(real) - (real_fields == "03").sum())


def test_realism_scorecard_passes_with_tolerances_from_the_real_spread(card):
    """Every statistic within 1.96 bootstrap standard errors of the real one, either side.

    The known gaps (:data:`rcnnlib.sim.realism.KNOWN_GAPS`) must still fail: a fix must remove
    them there, so the list never hides a statistic that has started to pass or a new failure.
    """
    shown = card.drop(columns=["ratio"]).to_string()
    assert len(card) >= 15 and (card["tolerance"] > 0).all(), shown
    assert not card.loc[~card["known_gap"], "passed"].eq(False).any(), shown
    assert not card.loc[card["known_gap"], "passed"].any(), shown
    assert set(
        zip(card.loc[card["known_gap"], "statistic"], card.loc[card["known_gap"], "group"], strict=True)
    ) == set(realism.KNOWN_GAPS)
