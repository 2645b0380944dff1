"""Survey presets and user-defined surveys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rcnnlib.dataset import CONDITION_NAMES
from rcnnlib.errors import InputError
from rcnnlib.sim.survey import PRESETS, Survey

CAM = "camera: {name: c, pixel_scale: 1, gain: 1, read_noise: 1, saturation: 1}\n"


def test_hits2015_matches_the_real_records(hits_root):
    survey = Survey.preset("hits2015")
    assert survey.camera.pixel_scale == pytest.approx(0.27)
    assert len(survey.fields) == 49 and "03" not in survey.fields
    record = np.load(hits_root / "real_obs" / "Blind15A_info" / "Blind15A_01_02_g.npy")
    row = survey.epochs[(survey.epochs["field"] == "01") & (survey.epochs["epoch"].astype(int) == 2)].iloc[0]
    assert row["seeing"] == pytest.approx(float(record["SEEING"]), rel=1e-6)
    assert row["sky"] == pytest.approx(float(record["BACK_LEVEL"]), rel=1e-6)
    assert row["zero_point"] == pytest.approx(float(record["ZP_PS"]), rel=1e-6)
    n_g = len(list((hits_root / "real_obs" / "Blind15A_info").glob("*_g.npy")))
    assert len(survey.epochs) == n_g


def test_seeing_cut_and_field_conditions():
    survey = Survey.preset("hits2015")
    usable = survey.usable_epochs()
    assert (usable["seeing"] < 2.0).all() and len(usable) < len(survey.epochs)
    mjd, cond = survey.field_conditions("01")
    assert cond.shape == (mjd.size, len(CONDITION_NAMES)) and np.all(np.diff(mjd) > 0)
    assert 15 <= mjd.size <= 30
    with pytest.raises(InputError, match="99"):
        survey.usable_epochs("99")


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_with_sane_figures(name):
    survey = Survey.preset(name)
    summary = survey.summary()
    assert (summary["n_epochs"] >= 10).all()
    assert summary["limit_mag_5sigma"].between(19, 27).all()
    assert summary["seeing"].between(0.5, 3.5).all()
    assert survey.camera.gain > 0 and survey.camera.saturation > 1000


def test_user_survey_from_yaml_and_csv(tmp_path):
    epochs = pd.DataFrame(
        {
            "field": ["A"] * 3,
            "mjd": [1.0, 2.0, 3.0],
            "seeing": [1.0, 1.2, 2.5],
            "sky": [100.0] * 3,
            "zero_point": [25.0] * 3,
            "limit_mag_5sigma": [23.5] * 3,
            "exp_time": [60.0] * 3,
            "airmass": [1.1] * 3,
        }
    )
    epochs.to_csv(tmp_path / "mine.csv", index=False)
    (tmp_path / "mine.yaml").write_text(
        "name: mine\ncamera: {name: cam, pixel_scale: 0.5, gain: 2, read_noise: 5, saturation: 30000}\n"
        "epochs: mine.csv\n"
    )
    survey = Survey.load(tmp_path / "mine.yaml")
    assert survey.name == "mine" and survey.fields == ["A"]
    assert len(survey.usable_epochs("A")) == 2  # the 2.5" epoch fails the default seeing cut


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("camera: {name: c}\nepochs: []\n", "camera block lacks"),
        ("name: x\n", "needs 'camera' and 'epochs'"),
        ("camera: [unclosed\n", "not valid YAML"),
        (
            CAM + "epochs: nope.csv\n",
            "not found",
        ),
        (
            CAM + "epochs: [{field: A}]\n",
            "lacks columns",
        ),
    ],
)
def test_bad_survey_files_name_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as err:
        Survey.load(path)
    assert "bad.yaml" in str(err.value)


def test_unknown_preset():
    with pytest.raises(InputError, match="hits2015"):
        Survey.load("sdss")


# Published g-band figures the ztf and lsst presets are derived from (data/surveys/make_presets.py),
# each with the tolerance the synthetic draws must meet. Medians over all epochs of the preset.
PUBLISHED = {
    "ztf": {  # Bellm et al. 2019 (PASP 131, 018002); Masci et al. 2019 (PASP 131, 018003)
        "pixel_scale": 1.01,  # arcsec/px
        "seeing": 2.1,  # median delivered image quality in g, arcsec
        "depth": 20.8,  # median 5-sigma depth in g, 30 s
        "zero_point_30s": 26.3,  # mag for 1 DN in a 30 s exposure
        "sky": 21.3,  # dark g sky, mag/arcsec^2
        "revisit_nights": 3.0,  # public survey: every ~3 nights (make_presets: "~2-3")
    },
    "lsst": {  # Ivezic et al. 2019 (ApJ 873, 111), Table 2 and Section 3
        "pixel_scale": 0.2,
        "seeing": 0.87,  # median g FWHM, arcsec
        "depth": 24.81,  # median single-visit m5 in g
        "zero_point_e": 28.51,  # g magnitude giving 1 e-/s
        "sky": 22.26,  # g sky, mag/arcsec^2
        "revisit_nights": 3.0,  # wide-fast-deep: a field every ~3 nights, visits in pairs 15-60 min apart
    },
}


def _revisit_nights(epochs: pd.DataFrame) -> np.ndarray:
    """Nights between consecutive nights with a visit, per field."""
    gaps = [np.diff(np.unique(np.floor(m))) for _, m in epochs.groupby("field")["mjd"]]
    return np.concatenate(gaps)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            "ztf",
            marks=pytest.mark.xfail(
                strict=True,
                reason="preset depth median 21.5 mag, 0.7 deeper than the published 20.8: "
                "make_presets.py's ideal-PSF depth formula ignores ZTF's losses (issue 14)",
            ),
        ),
        "lsst",
    ],
)
def test_presets_match_their_published_figures(name):
    """Seeing, depth, zero point, sky and cadence of a preset against the papers it cites.

    Tolerances: seeing within 15 % of the published median (the preset draws
    airmass and night-to-night scatter around it); depth and sky within 0.3 mag;
    zero point within 0.1 mag; the median revisit within one night of the
    published one and its mean within 1.5 nights.
    """
    survey = Survey.preset(name)
    published, epochs, camera = PUBLISHED[name], survey.epochs, survey.camera
    assert camera.pixel_scale == pytest.approx(published["pixel_scale"])
    assert epochs["seeing"].median() == pytest.approx(published["seeing"], rel=0.15)
    if name == "ztf":
        zp = epochs["zero_point"] + 2.5 * np.log10(epochs["exp_time"])  # ADU/s -> DN in the exposure
        assert zp.median() == pytest.approx(published["zero_point_30s"], abs=0.1)
    else:
        zp = epochs["zero_point"] + 2.5 * np.log10(camera.gain)  # ADU/s -> e-/s
        assert zp.median() == pytest.approx(published["zero_point_e"], abs=0.1)
        pairs = [np.diff(m.to_numpy()) for _, m in epochs.groupby(["field", np.floor(epochs["mjd"])])["mjd"]]
        pairs = np.concatenate([p for p in pairs if p.size]) * 1440
        assert pairs.size and pairs.min() >= 15 and pairs.max() <= 60  # minutes
    sky_mag = epochs["zero_point"] - 2.5 * np.log10(
        epochs["sky"] / (camera.pixel_scale**2 * epochs["exp_time"])
    )
    assert sky_mag.median() == pytest.approx(published["sky"], abs=0.3)
    revisit = _revisit_nights(epochs)
    assert abs(np.median(revisit) - published["revisit_nights"]) <= 1.0
    assert abs(revisit.mean() - published["revisit_nights"]) <= 1.5
    assert epochs["limit_mag_5sigma"].median() == pytest.approx(published["depth"], abs=0.3)
