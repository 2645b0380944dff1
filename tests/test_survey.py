"""Survey presets and user-defined surveys."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rcnnlib.dataset import CONDITION_NAMES
from rcnnlib.errors import InputError
from rcnnlib.survey import PRESETS, Survey

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
