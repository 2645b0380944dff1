"""Hostile and clumsy input to classify, evaluate, baseline, hits-info and survey files (issue 14).

Every refusal must be one line on stderr (``rcnnlib: error: <file>: <problem>``),
exit status 2, no traceback, nothing left behind and the input untouched. The
command-line cases run as subprocesses (a few per class: each costs a Python
start); the many variants of one check run in-process. Also here: the stream
and the batch classifier agree on odd sequences, or refuse them alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli, stream_and_batch

from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.rcnn.model import pretrained_dir

pytestmark = pytest.mark.xdist_group("tensorflow")

T = 12
GOOD_CONDITIONS = (1.2, 150.0, 25.0, 23.5, 86.0, 1.2)  # seeing, sky, zero point, depth, exposure, airmass


# --------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: its kind, or for a regular file its content hash (FIFOs stay closed)."""
    out = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[str(path.relative_to(root))] = stat.filemode(mode)
    return out


def refused_without_trace(
    tmp_path: Path, *args: str, needles: tuple[str, ...] = (), timeout: float = 300
) -> str:
    """Run a command expected to be refused; the folder it works in must be exactly as before."""
    before = snapshot(tmp_path)
    line = assert_one_line_error(run_cli(*args, cwd=tmp_path, timeout=timeout), *needles)
    assert snapshot(tmp_path) == before, "files left behind or input changed"
    return line


def sequence_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """One plausible sequence: a star on sky, T epochs, HiTS-like conditions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:21, 0:21]
    star = 3000.0 * np.exp(-((yy - 10) ** 2 + (xx - 10) ** 2) / (2 * 1.8**2))
    stamps = (150.0 + star + rng.normal(0, 5, (T, 21, 21))).astype(np.float32)
    return {
        "stamps": stamps,
        "mjd": 57070.0 + 0.07 * np.arange(T),
        "conditions": np.tile(np.array(GOOD_CONDITIONS, np.float32), (T, 1)),
    }


def with_condition(name: str, value: float, epoch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    arrays = sequence_arrays(seed)
    arrays["conditions"][epoch, CONDITION_NAMES.index(name)] = value
    return arrays


@pytest.fixture(scope="module")
def shipped():
    from rcnnlib.rcnn.model import load_model

    return load_model()


# --------------------------------------------------------------------------- ranges
def test_condition_ranges_are_documented_and_enforced():
    from rcnnlib.observations import CONDITION_RANGES, check_sequences, condition_problem

    assert set(CONDITION_RANGES) == set(CONDITION_NAMES)
    good = np.array(GOOD_CONDITIONS)
    assert condition_problem(good) is None
    edges = {  # name: (allowed, refused)
        "seeing": ([1e-3, 20.0], [0.0, -1.0, 20.5]),
        "sky": ([0.0, 1e5], [-0.1]),
        "zero_point": ([15.0, 40.0], [14.9, 40.1, 1e6, 0.0]),
        "limit_mag_5sigma": ([10.0, 35.0], [9.0, 99.0]),
        "exp_time": ([1e-3, 86400.0], [0.0, -30.0, 1e6]),
        "airmass": ([1.0, 10.0], [0.0, 0.9, 11.0]),
    }
    for name, (allowed, refused) in edges.items():
        k = CONDITION_NAMES.index(name)
        for value in [*allowed, np.nan, np.inf]:  # non-finite: "not measured", allowed
            assert condition_problem(np.where(np.arange(6) == k, value, good)) is None, (name, value)
        for value in refused:
            problem = condition_problem(np.where(np.arange(6) == k, value, good))
            assert problem is not None and problem[1].startswith(f"{name} = "), (name, value)
            assert str(CONDITION_RANGES[name]) in problem[1]
    assert str(CONDITION_RANGES["exp_time"]) == "(0, 86400] s"
    assert str(CONDITION_RANGES["zero_point"]) == "[15, 40] mag"
    # padding (unobserved epochs) is not looked at; observed ones are
    mjd = np.array([[57000.0, 57001.0, 0.0]])
    cond = np.tile(good, (1, 3, 1))
    cond[0, 2] = 0.0
    check_sequences(mjd, cond, np.array([[True, True, False]]), ["a"], "f.npz")
    with pytest.raises(InputError, match=r"f\.npz: mjd of sequence a must increase strictly"):
        check_sequences(mjd[:, ::-1], cond, np.ones((1, 3), bool), ["a"], "f.npz")


# --------------------------------------------------------------------------- user files, in-process
def _fits(path: Path, cube: np.ndarray, columns: dict[str, np.ndarray], table_hdu: bool = True) -> Path:
    from astropy.io import fits
    from astropy.table import Table

    second = fits.BinTableHDU(Table(columns)) if table_hdu else fits.ImageHDU(np.zeros((2, 2)))
    fits.HDUList([fits.PrimaryHDU(cube), second]).writeto(path)
    return path


def _columns(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {
        "MJD": arrays["mjd"],
        **{n.upper(): arrays["conditions"][:, i] for i, n in enumerate(CONDITION_NAMES)},
    }


def _bad_user_file(case: str, tmp_path: Path) -> Path:
    a = sequence_arrays()
    path = tmp_path / f"{case}.npz"
    if case == "nan-pixel":
        a["stamps"][3, 5, 5] = np.nan
    elif case == "npy-named-npz":
        np.save(tmp_path / "x.npy", a["stamps"])
        (tmp_path / "x.npy").rename(path)
        return path
    elif case == "named-condition-shapes":
        a = {"stamps": a["stamps"], "mjd": a["mjd"]}
        a.update({n: np.ones(T) for n in CONDITION_NAMES})
        a["seeing"] = np.ones(T - 1)
    elif case == "mask-not-boolean":
        a["mask"] = np.full(T, 2)
    elif case == "no-sequences":
        a = {"stamps": np.zeros((0, T, 21, 21)), "mjd": np.zeros((0, T)), "conditions": np.zeros((0, T, 6))}
    elif case == "string-mjd":
        a["mjd"] = a["mjd"].astype(str)
    elif case == "fits-no-table":
        return _fits(tmp_path / "c.fits", a["stamps"], _columns(a), table_hdu=False)
    elif case == "fits-text-column":
        columns = _columns(a)
        columns["SEEING"] = np.array(["good"] * T)
        return _fits(tmp_path / "c.fits", a["stamps"], columns)
    elif case == "fits-too-few-rows":
        columns = {k: v[:-2] for k, v in _columns(a).items()}
        return _fits(tmp_path / "c.fits", a["stamps"], columns)
    elif case == "h5-airmass-zero":
        ds = SequenceDataset(
            stamps=a["stamps"][None],
            mjd=a["mjd"][None],
            conditions=with_condition("airmass", 0.0)["conditions"][None],
            mask=np.ones((1, T), bool),
            labels=[0],
            ids=["x"],
        )
        return ds.save(tmp_path / "seq.h5")
    elif case == "h5-no-sequences":
        ds = SequenceDataset(
            stamps=np.zeros((0, T, 21, 21)),
            mjd=np.zeros((0, T)),
            conditions=np.zeros((0, T, 6)),
            mask=np.zeros((0, T), bool),
            labels=np.zeros(0),
            ids=np.zeros(0, str),
        )
        return ds.save(tmp_path / "seq.h5")
    np.savez(path, **a)
    return path


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("nan-pixel", "non-finite pixels"),
        ("npy-named-npz", "not a .npz archive"),
        ("named-condition-shapes", "differ in shape"),
        ("mask-not-boolean", "mask must hold booleans"),
        ("no-sequences", "no sequences"),
        ("string-mjd", "mjd must hold real numbers"),
        ("fits-no-table", "conditions table in HDU 1"),
        ("fits-text-column", "seeing must hold real numbers"),
        ("fits-too-few-rows", "must have shape (1, 12)"),
        ("h5-airmass-zero", "airmass = 0; allowed: [1, 10]"),
        ("h5-no-sequences", "no sequences"),
    ],
)
def test_read_sequences_refuses_naming_the_file(case, needle, tmp_path):
    from rcnnlib.rcnn.classify import read_sequences

    path = _bad_user_file(case, tmp_path)
    with pytest.raises(InputError) as info:
        read_sequences(path)
    assert info.value.path == path and needle in info.value.problem, str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- classify, subprocess
@pytest.mark.parametrize(
    ("name", "arrays", "needles"),
    [
        ("exp0", with_condition("exp_time", 0.0), ("exp_time = 0", "(0, 86400] s")),
        ("zp", with_condition("zero_point", 1e6), ("zero_point = 1e+06", "[15, 40] mag")),
        (
            "nanmjd",
            {**sequence_arrays(), "mjd": np.where(np.arange(T) == 3, np.nan, 57070 + np.arange(T))},
            ("mjd",),
        ),
        ("backwards", {**sequence_arrays(), "mjd": 57070.0 - np.arange(T)}, ("increase strictly",)),
        ("text", {**sequence_arrays(), "stamps": np.array(["a"] * 21)}, ("stamps must hold real numbers",)),
        (
            "empty",
            {"stamps": np.zeros((0, 21, 21)), "mjd": np.zeros(0), "conditions": np.zeros((0, 6))},
            ("no",),
        ),
        ("mask", {**sequence_arrays(), "mask": np.ones(3, bool)}, ("mask must have shape",)),
    ],
)
def test_classify_refuses_implausible_npz(name, arrays, needles, tmp_path):
    np.savez(tmp_path / f"{name}.npz", **arrays)
    refused_without_trace(tmp_path, "classify", f"{name}.npz", needles=(f"{name}.npz", *needles))


def test_classify_refuses_a_mistyped_h5_and_fits(tmp_path):
    a = sequence_arrays()
    with h5py.File(tmp_path / "typed.h5", "w") as f:  # the format tag, but text where numbers belong
        f.attrs["format"] = "rcnnlib.SequenceDataset"
        f.attrs["format_version"] = 1
        f.attrs["class_names"] = json.dumps(["SN"])
        f.attrs["condition_names"] = json.dumps(list(CONDITION_NAMES))
        f.attrs["metadata"] = "{}"
        f["stamps"] = np.array([["x"] * T], dtype=h5py.string_dtype())
        for name in ("mjd", "conditions_estimated", "mask"):
            f[name] = np.zeros((1, T))
        f["conditions"] = np.zeros((1, T, 6))
        f["labels"] = np.zeros(1)
        f["ids"] = np.array(["a"], dtype=h5py.string_dtype())
    refused_without_trace(tmp_path, "classify", "typed.h5", needles=("typed.h5",))
    columns = _columns(a)
    columns["MJD"] = np.array(["yesterday"] * T)
    _fits(tmp_path / "c.fits", a["stamps"], columns)
    refused_without_trace(tmp_path, "classify", "c.fits", needles=("c.fits", "mjd must hold real numbers"))


def test_classify_json_that_cannot_be_written_fails_first(tmp_path):
    np.savez(tmp_path / "ok.npz", **sequence_arrays())
    (tmp_path / "taken").mkdir()
    refused_without_trace(tmp_path, "classify", "ok.npz", "--json", "taken", needles=("taken",))


def _model_with_card(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(pretrained_dir(), folder)
    card = json.loads((folder / "card.json").read_text())
    edit(card["config"])
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def test_classify_refuses_a_card_that_disagrees_with_its_weights(tmp_path):
    np.savez(tmp_path / "ok.npz", **sequence_arrays())
    _model_with_card(tmp_path, lambda c: c["preprocess"].update(n_steps=10))
    refused_without_trace(tmp_path, "classify", "ok.npz", "--model", "model", needles=("card.json", "inputs"))


def test_load_model_names_every_disagreement(tmp_path):
    from rcnnlib.rcnn.model import load_model

    edits = {
        "lstm": lambda c: c.update(lstm_units=32),
        "classes": lambda c: c.update(class_names=["SN", "RRL"]),
        "filters": lambda c: c.update(conv_filters=[8, 16]),
        "channels": lambda c: c["preprocess"].update(difference_channels=False),
        "nonsense": lambda c: c.update(dense_units=-3),
    }
    for name, edit in edits.items():
        folder = _model_with_card(tmp_path / name, edit)
        with pytest.raises(InputError) as info:
            load_model(folder)
        assert info.value.path == folder / "card.json" and "\n" not in str(info.value), (
            name,
            str(info.value),
        )


# --------------------------------------------------------------------------- evaluate and baseline
def test_evaluate_refuses_bad_options_before_the_work(tmp_path, hits_root):
    hits = ("--hits-dir", str(hits_root))
    refused_without_trace(
        tmp_path,
        "evaluate",
        *hits,
        "--seed",
        "-1",
        "--finetune-per-class",
        "1",
        "--repeats",
        "1",
        needles=("--seed", ">= 0"),
    )
    (tmp_path / "taken").mkdir()
    refused_without_trace(
        tmp_path, "evaluate", *hits, "--finetune-per-class", "0", "--json", "taken", needles=("taken",)
    )
    _model_with_card(tmp_path, lambda c: c.update(lstm_units=32))
    refused_without_trace(
        tmp_path,
        "evaluate",
        *hits,
        "--finetune-per-class",
        "0",
        "--model",
        "model",
        needles=("card.json", "lstm"),
    )


def test_baseline_refuses_bad_options_before_the_work(tmp_path, hits_root):
    small = ("--hits-dir", str(hits_root), "--fields", "01", "--n-estimators", "2", "--repeats", "1")
    refused_without_trace(
        tmp_path, "baseline", *small, "--n-sim-per-class", "2", needles=("--n-sim-per-class", "at least 3")
    )
    refused_without_trace(
        tmp_path, "baseline", *small, "--n-sim-per-class", "3", "--seed", "-2", needles=("--seed",)
    )
    (tmp_path / "taken").mkdir()
    refused_without_trace(
        tmp_path,
        "baseline",
        *small,
        "--n-sim-per-class",
        "3",
        "--augment-per-class",
        "1",
        "--json",
        "taken",
        needles=("taken",),
    )


# --------------------------------------------------------------------------- the real-data folder
def _mirror(hits_root: Path, dest: Path) -> Path:
    """A real-data folder of links to the real one, with a real_constants folder of its own (5 stars)."""
    stamps = dest / "real_obs" / "real_stamps"
    stamps.mkdir(parents=True)
    (dest / "real_obs" / "Blind15A_info").symlink_to(hits_root / "real_obs" / "Blind15A_info")
    for name in ("EB", "RRLyrae", "SNstamps"):
        (stamps / name).symlink_to(hits_root / "real_obs" / "real_stamps" / name)
    (stamps / "real_constants").mkdir()
    for path in sorted((hits_root / "real_obs" / "real_stamps" / "real_constants").glob("*.npy"))[:5]:
        (stamps / "real_constants" / path.name).symlink_to(path)
    return stamps / "real_constants" / "Blind15A_99_N1_1_1_g_stamp.npy"


@pytest.mark.parametrize("kind", ["self-link", "fifo"])
def test_hits_info_reads_only_regular_files(kind, tmp_path, hits_root):
    planted = _mirror(hits_root, tmp_path / "hits")
    if kind == "self-link":
        planted.symlink_to(planted.name)
        needles = (planted.name, "symbolic links")
    else:
        os.mkfifo(planted)  # reading a FIFO blocks forever: the timeout turns a hang into a failure
        needles = (planted.name, "FIFO")
    refused_without_trace(tmp_path, "hits-info", "--hits-dir", "hits", needles=needles, timeout=60)


# --------------------------------------------------------------------------- survey files
CAMERA = {"name": "c", "pixel_scale": 0.5, "gain": 2.0, "read_noise": 5.0, "saturation": 60000.0}
CSV_HEADER = "field,mjd,seeing,sky,zero_point,limit_mag_5sigma,exp_time,airmass\n"
CSV_ROWS = "".join(f"01,{57000 + i * 0.1},1.2,150,25,23.5,60,1.2\n" for i in range(12))


def _survey_files(folder: Path, yaml_text: str, csv_text: str | None = CSV_HEADER + CSV_ROWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if csv_text is not None:
        (folder / "epochs.csv").write_text(csv_text)
    (folder / "s.yaml").write_text(yaml_text)
    return folder / "s.yaml"


def _yaml(camera: dict | str | None = None, epochs: str = "epochs.csv", extra: str = "") -> str:
    block = json.dumps(CAMERA if camera is None else camera)
    return f"name: s\nband: g\ncamera: {block}\nepochs: {epochs}\n{extra}"


BAD_SURVEYS = {  # case: (yaml, csv or None for the default, words of the message, file named)
    "pixel-scale-text": (_yaml({**CAMERA, "pixel_scale": "abc"}), None, "camera pixel_scale", "s.yaml"),
    "pixel-scale-nan": (
        _yaml({**CAMERA, "pixel_scale": float("nan")}).replace("NaN", ".nan"),
        None,
        "pixel_scale",
        "s.yaml",
    ),
    "camera-list": (_yaml([1, 2]), None, "'camera' must be a mapping", "s.yaml"),  # type: ignore[arg-type]
    "ccd-negative-gain": (
        _yaml({**CAMERA, "ccds": {"N1": {"gain": -1, "read_noise": 5, "saturation": 6e4}}}),
        None,
        "camera ccds N1 gain",
        "s.yaml",
    ),
    "ccd-missing-keys": (_yaml({**CAMERA, "ccds": {"N1": {"gain": 1}}}), None, "ccds N1", "s.yaml"),
    "max-seeing-text": (_yaml(extra="max_seeing: wide\n"), None, "max_seeing", "s.yaml"),
    "epochs-scalar": (_yaml(epochs="5"), None, "'epochs' must be", "s.yaml"),
    "epochs-rows-not-mappings": (_yaml(epochs="[1, 2, 3]"), None, "'epochs' must be", "s.yaml"),
    "csv-text-seeing": (
        _yaml(),
        CSV_HEADER + CSV_ROWS.replace("1.2,150", "good,150", 1),
        "'seeing' row 1",
        "epochs.csv",
    ),
    "csv-negative-seeing": (
        _yaml(),
        CSV_HEADER + CSV_ROWS.replace("1.2,150", "-1,150", 1),
        "seeing = -1",
        "epochs.csv",
    ),
    "csv-zero-exposure": (
        _yaml(),
        CSV_HEADER + CSV_ROWS.replace(",60,", ",0,"),
        "exp_time = 0",
        "epochs.csv",
    ),
    "csv-all-beyond-cut": (
        _yaml(),
        CSV_HEADER + CSV_ROWS.replace("1.2,150", "3.5,150"),
        "max_seeing",
        "epochs.csv",
    ),
    "yaml-binary": ("", None, "unreadable survey file", "s.yaml"),
    "references-not-a-list": (_yaml(extra="references: 7\n"), None, "references", "s.yaml"),
}


@pytest.mark.parametrize("case", sorted(BAD_SURVEYS))
def test_survey_yaml_refusals_name_the_file_and_field(case, tmp_path):
    from rcnnlib.sim.survey import Survey

    text, csv, needle, named = BAD_SURVEYS[case]
    folder = tmp_path / case
    if case == "yaml-binary":
        folder.mkdir()
        (folder / "s.yaml").write_bytes(b"\xff\xfe\x00camera")
        path = folder / "s.yaml"
    else:
        path = _survey_files(folder, text, CSV_HEADER + CSV_ROWS if csv is None else csv)
    with pytest.raises(InputError) as info:
        Survey.from_yaml(path)
    assert info.value.path is not None and info.value.path.name == named, str(info.value)
    assert needle in info.value.problem and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("case", ["pixel-scale-text", "csv-negative-seeing", "yaml-binary"])
def test_simulate_with_a_malformed_survey_is_one_line(case, tmp_path):
    text, csv, needle, named = BAD_SURVEYS[case]
    if case == "yaml-binary":
        (tmp_path / "s.yaml").write_bytes(b"\xff\xfe\x00camera")
    else:
        _survey_files(tmp_path, text, CSV_HEADER + CSV_ROWS if csv is None else csv)
    args = ("simulate", "--survey", "s.yaml", "--n-per-class", "1", "--seed", "1", "--out", "out")
    refused_without_trace(tmp_path, *args, needles=(named, needle))


# --------------------------------------------------------------------------- stream = batch on odd input
ODD_EPOCHS = {  # name: (condition, value, epochs)
    "nan-seeing": ("seeing", np.nan, [2]),
    "beyond-cut": ("seeing", 2.6, [3, 4]),
    "at-the-cut": ("seeing", 2.0, [5]),
    "nan-zero-point": ("zero_point", np.nan, [1, 6]),
    "inf-exposure": ("exp_time", np.inf, [0]),
    "nan-sky": ("sky", np.nan, [7]),
    "nan-everything": (None, np.nan, [8]),
}


def test_stream_and_batch_agree_on_odd_sequences(shipped, tmp_path):
    from rcnnlib.rcnn.classify import read_sequences

    model, config, _ = shipped
    arrays = []
    for k, (name, value, epochs) in enumerate(ODD_EPOCHS.values()):
        a = sequence_arrays(seed=k)
        a["stamps"][6:] *= 1.0 + 0.1 * np.arange(T - 6)[:, None, None]  # something changes
        for t in epochs:
            if name is None:
                a["conditions"][t] = value
            else:
                a["conditions"][t, CONDITION_NAMES.index(name)] = value
        arrays.append(a)
    stacked = {key: np.stack([a[key] for a in arrays]) for key in arrays[0]}
    np.savez(tmp_path / "odd.npz", **stacked)
    ds = read_sequences(tmp_path / "odd.npz")  # the user-file path accepts them: non-finite = not measured
    for (batch, stream), case in zip(stream_and_batch(model, config, ds), ODD_EPOCHS, strict=True):
        assert len(batch) > 0, case
        np.testing.assert_allclose(stream, batch, atol=2e-5, err_msg=case)


@pytest.mark.parametrize(
    ("name", "value"),
    [("exp_time", 0.0), ("zero_point", 1e6), ("seeing", 25.0), ("sky", -5.0), ("airmass", 0.5)],
)
def test_stream_and_batch_refuse_the_same_epoch(name, value, shipped, tmp_path):
    from rcnnlib.rcnn.classify import read_sequences
    from rcnnlib.rcnn.stream import StreamingClassifier

    model, config, _ = shipped
    a = with_condition(name, value, epoch=5)
    np.savez(tmp_path / "bad.npz", **a)
    with pytest.raises(InputError) as batch:
        read_sequences(tmp_path / "bad.npz")
    stream = StreamingClassifier(model=model, config=config)
    for t in range(5):
        stream.update(a["stamps"][t], a["mjd"][t], a["conditions"][t])
    state = (stream.n_epochs, stream.n_steps, stream._last_mjd)
    with pytest.raises(InputError) as streamed:
        stream.update(a["stamps"][5], a["mjd"][5], a["conditions"][5])
    assert batch.value.problem.split(": ", 1)[1] == streamed.value.problem.split(": ", 1)[1]
    assert batch.value.problem.startswith("sequence bad_0 epoch 5: ")
    assert (stream.n_epochs, stream.n_steps, stream._last_mjd) == state  # a refused epoch changes nothing


def test_stream_refuses_a_nan_mjd_and_keeps_checking_time_order(shipped):
    from rcnnlib.rcnn.stream import StreamingClassifier

    model, config, _ = shipped
    a = sequence_arrays()
    stream = StreamingClassifier(model=model, config=config)
    stream.update(a["stamps"][0], 57070.0, a["conditions"][0])
    for bad in (np.nan, np.inf, "soon", None):
        with pytest.raises(InputError, match="mjd must be"):
            stream.update(a["stamps"][1], bad, a["conditions"][1])
    with pytest.raises(InputError, match="time order"):
        stream.update(a["stamps"][1], 57069.0, a["conditions"][1])
    with pytest.raises(InputError, match="conditions must be"):
        stream.update(a["stamps"][1], 57071.0, ["a"] * 6)
    with pytest.raises(InputError, match="real numbers"):
        stream.update(np.full((21, 21), "x"), 57071.0, a["conditions"][1])
    assert stream.n_epochs == 1
