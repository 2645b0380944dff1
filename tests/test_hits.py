"""The real HiTS loader: counts, ids, the conditions join, estimated epochs, CLI and bad inputs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rcnnlib.classes import CLASS_NAMES
from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.hits.loader import (
    JOIN_TOLERANCE_DAYS,
    hits_epoch_stats,
    load_hits,
    match_epochs,
    read_field_records,
)
from rcnnlib.hits.safe_pickle import load_pickled_dict
from rcnnlib.stamps import ring_sky

STAMPS = Path("real_obs/real_stamps")
INFO = Path("real_obs/Blind15A_info")
SEEING, SKY, ZP = (CONDITION_NAMES.index(c) for c in ("seeing", "sky", "zero_point"))


@pytest.fixture(scope="module")
def real(hits_root: Path) -> SequenceDataset:
    return load_hits(hits_root)


def _records_brute_force(hits_root: Path, field: str) -> list[np.ndarray]:
    """Every g record of a field, read independently of rcnnlib (plain structured arrays)."""
    return [
        np.load(p, allow_pickle=False) for p in sorted((hits_root / INFO).glob(f"Blind15A_{field}_*_g.npy"))
    ]


def _row(ds: SequenceDataset, object_id: str) -> int:
    (index,) = np.flatnonzero(ds.ids == object_id)
    return int(index)


# ------------------------------------------------------------------ the real folder
def test_counts(real: SequenceDataset, hits_root: Path) -> None:
    assert real.class_counts() == {"SN": 46, "RRL": 54, "EB": 32, "NV": 232}
    assert real.class_names == CLASS_NAMES
    brighter = load_hits(hits_root, classes=["SN"], sn_subset="brighter")
    assert brighter.class_counts() == {"SN": 24}
    assert set(brighter.ids) < set(real.ids)


def test_arrays_and_padding(real: SequenceDataset, hits_root: Path) -> None:
    assert real.stamps.shape[1:] == (30, 21, 21)
    assert np.isfinite(real.stamps).all() and np.isfinite(real.conditions[real.mask]).all()
    assert (real.stamps[~real.mask] == 0).all() and (real.conditions[~real.mask] == 0).all()
    assert (real.mask[:, :-1] >= real.mask[:, 1:]).all(), "observed epochs come first"
    star = load_pickled_dict(hits_root / STAMPS / "EB" / "Blind15A_04_S22_648_2287_g_stamp.npy")
    k = _row(real, "04_S22_648_2287")
    n = len(star["stamp"])
    assert real.mask[k].sum() == n and CLASS_NAMES[real.labels[k]] == "EB"
    np.testing.assert_array_equal(real.stamps[k, :n], star["stamp"])
    sn = np.load(hits_root / STAMPS / "SNstamps/npy/SNHiTS15C_stamps.npy")
    k = _row(real, "SNHiTS15C_40_N10_300_1019")
    np.testing.assert_array_equal(real.stamps[k, : len(sn)], sn)
    assert CLASS_NAMES[real.labels[k]] == "SN" and real.mask[k].sum() == len(sn)
    # epochs in time order
    assert all((np.diff(mjd[m]) > 0).all() for mjd, m in zip(real.mjd, real.mask, strict=True))


def test_ids(real: SequenceDataset, hits_root: Path) -> None:
    assert len(set(real.ids.tolist())) == len(real)
    stars = real.ids[real.labels != CLASS_NAMES.index("SN")]
    assert all(re.fullmatch(r"\d\d_[NS]\d+_\d+_\d+", i) for i in stars)
    files = {
        p.name[len("Blind15A_") : -len("_g_stamp.npy")] for p in (hits_root / STAMPS).glob("*/*_g_stamp.npy")
    }
    assert set(stars.tolist()) == files
    sns = real.ids[real.labels == CLASS_NAMES.index("SN")]
    assert all(re.fullmatch(r"SNHiTS15\w+_\d\d_[NS]\d+_\d+_\d+", i) for i in sns)
    assert {"SNHiTS15C_40_N10_300_1019", "SNHiTS15bn_03_N3_206_1712"} <= set(sns.tolist())


def test_star_epochs_join_nearest_record(real: SequenceDataset, hits_root: Path) -> None:
    """Every epoch of a few stars matches, by brute force, the field's record nearest in MJD."""
    checked = estimated = 0
    for folder, name in [("EB", "04_S22_648_2287"), ("RRLyrae", None), ("real_constants", None)]:
        paths = sorted((hits_root / STAMPS / folder).glob("*_g_stamp.npy"))
        path = next(p for p in paths if name is None or name in p.name)
        object_id = path.name[len("Blind15A_") : -len("_g_stamp.npy")]
        k = _row(real, object_id)
        records = _records_brute_force(hits_root, object_id[:2])
        record_mjd = np.array([float(r["MJD"]) for r in records])
        for t, stamp_mjd in enumerate(load_pickled_dict(path)["time"]["MJD"].astype(float)):
            j = int(np.argmin(np.abs(record_mjd - stamp_mjd)))
            if abs(record_mjd[j] - stamp_mjd) > JOIN_TOLERANCE_DAYS:
                assert real.conditions_estimated[k, t]
                estimated += 1
                continue
            assert not real.conditions_estimated[k, t]
            assert real.mjd[k, t] == record_mjd[j]
            assert real.conditions[k, t, SEEING] == np.float32(records[j]["SEEING"])
            assert real.conditions[k, t, SKY] == np.float32(records[j]["BACK_LEVEL"])
            assert real.conditions[k, t, ZP] == np.float32(records[j]["ZP_PS"])
            checked += 1
    assert checked > 60


def test_estimated_epochs(real: SequenceDataset) -> None:
    est = real.conditions_estimated
    assert not est[~real.mask].any()
    stars = real.labels != CLASS_NAMES.index("SN")
    assert 0 < est[stars].sum() < 0.02 * real.mask[stars].sum()  # ~0.5 % of star epochs
    for object_id in ("SNHiTS15bn_03_N3_206_1712", "SNHiTS15bo_03_N20_128_1934"):  # field 03: no records
        k = _row(real, object_id)
        assert est[k, real.mask[k]].all()
    assert real.metadata["n_estimated_epochs"] == int(est.sum())
    # estimated conditions are plausible: sky from the stamp near the measured skies, usual exposures
    measured_sky = real.conditions[real.mask & ~est, SKY]
    estimated_sky = real.conditions[est, SKY]
    assert np.all((estimated_sky > 0.5 * measured_sky.min()) & (estimated_sky < 2 * measured_sky.max()))
    np.testing.assert_allclose(estimated_sky, ring_sky(real.stamps[est]), rtol=1e-6)
    exp_time = real.condition("exp_time")
    assert set(exp_time[est].tolist()) <= set(exp_time[real.mask & ~est].tolist()) == {86.0, 102.0}
    seeing = real.condition("seeing")[est]
    assert np.all((seeing > 0.7) & (seeing < 3.0))


def test_supernova_mjds_match_records_exactly(real: SequenceDataset, hits_root: Path) -> None:
    k = _row(real, "SNHiTS15C_40_N10_300_1019")
    raw = np.load(hits_root / STAMPS / "SNstamps/npy/SNHiTS15C_MJDs.npy").astype(float)
    np.testing.assert_allclose(real.mjd[k, : len(raw)], raw, atol=1e-6)
    assert not real.conditions_estimated[k, real.mask[k]].any()


def test_zero_point_of_old_records(hits_root: Path) -> None:
    records = read_field_records(hits_root)
    assert "03" not in records and len(records) == 49
    field = records["25"]
    old = np.isin(field.epochs, ["07", "08", "09"])
    assert old.sum() == 3
    zp = field.conditions[:, ZP]
    assert np.isfinite(zp).all()
    # recomputed from the record's own depth; close to, not equal to, the field's other nights
    assert np.all(np.abs(zp[old] - np.median(zp[~old])) < 0.3)
    raw = np.load(hits_root / INFO / "Blind15A_25_07_g.npy")
    expected = raw["LIMIT_MAG_EA5"] + 2.5 * np.log10(5 * raw["STD_EMPTY_AP"] / raw["EXP_TIME"])
    assert zp[field.epochs == "07"][0] == pytest.approx(float(expected))


def test_metadata_and_roundtrip(real: SequenceDataset, hits_root: Path, tmp_path: Path) -> None:
    assert real.metadata["source"] == "HiTS 2015 real"
    assert real.metadata["sn_subset"] == "all"
    assert Path(real.metadata["hits_dir"]) == hits_root.resolve()
    again = SequenceDataset.load(real.subset(slice(0, 5)).save(tmp_path / "real.h5"))
    assert again.ids.tolist() == real.ids[:5].tolist()


def test_epoch_stats(real: SequenceDataset) -> None:
    stats = hits_epoch_stats(real)
    assert stats["counts"] == {"SN": 46, "RRL": 54, "EB": 32, "NV": 232}
    assert stats["epochs_min"] <= stats["epochs_median"] <= stats["epochs_max"] == 30
    assert stats["n_epochs_total"] == int(real.mask.sum())
    assert stats["fraction_estimated"] == pytest.approx(real.conditions_estimated.sum() / real.mask.sum())
    assert 0.05 < stats["median_cadence_days"] < 0.1  # ~1.7 h between epochs of a night
    sn = stats["per_class"]["SN"]
    assert sn["n"] == 46 and sn["fraction_estimated"] > stats["per_class"]["NV"]["fraction_estimated"]
    json.dumps(stats)


def test_bad_arguments(hits_root: Path) -> None:
    with pytest.raises(ValueError, match="classes"):
        load_hits(hits_root, classes=["CEP"])
    with pytest.raises(ValueError, match="sn_subset"):
        load_hits(hits_root, sn_subset="faint")


# ------------------------------------------------------------------ pure helpers
def test_match_epochs_nearest_within_tolerance() -> None:
    records = np.array([10.0, 10.1, 11.0])
    epochs = np.array([9.0, 10.001, 10.098, 10.06, 10.999, 12.0, 10.1 + 0.5 * JOIN_TOLERANCE_DAYS])
    index, ambiguous = match_epochs(records, epochs)
    assert index.tolist() == [-1, 0, 1, -1, 2, -1, 1]
    assert ambiguous == 0
    assert match_epochs(records[:1], np.array([10.0, 10.5]))[0].tolist() == [0, -1]
    assert match_epochs(np.array([]), np.array([10.0]))[0].tolist() == [-1]


@pytest.mark.parametrize(("label", "expected"), [("15", 1), ("14", 0)])
def test_match_epochs_ambiguous_uses_label(label: str, expected: int) -> None:
    """Two records 131 s apart, epoch known only to float32: the EPOCH label decides."""
    records = np.array([57072.03119658, 57072.03271662])
    epoch = np.array([float(np.float32(records[1]))])
    half_ulp = np.spacing(epoch.astype(np.float32)) / 2
    index, ambiguous = match_epochs(
        records,
        epoch,
        resolution=half_ulp,
        record_labels=np.array(["14", "15"]),
        epoch_labels=np.array([label]),
    )
    assert ambiguous == 1 and index.tolist() == [expected]


def test_border_sky_ignores_source_and_outliers() -> None:
    rng = np.random.default_rng(1)
    stamps = rng.normal(100.0, 5.0, size=(3, 21, 21))
    stamps[:, 8:13, 8:13] += 5000.0  # the object
    stamps[1, 0, :6] += 3000.0  # a neighbour on the border
    stamps[2] += 900.0
    sky = ring_sky(stamps)
    np.testing.assert_allclose(sky, [100.0, 100.0, 1000.0], atol=2.5)


# ------------------------------------------------------------------ bad folders and the CLI
@pytest.fixture
def mini_hits(hits_root: Path, tmp_path: Path) -> Path:
    """A copy of the real layout with one object per class and only their fields' records."""
    root = tmp_path / "hits"
    picks = {
        "EB": "Blind15A_04_S22_648_2287_g_stamp.npy",
        "RRLyrae": sorted(p.name for p in (hits_root / STAMPS / "RRLyrae").glob("Blind15A_04_*_g_stamp.npy"))[
            0
        ],
        "real_constants": sorted(
            p.name for p in (hits_root / STAMPS / "real_constants").glob("Blind15A_04_*")
        )[0],
    }
    for folder, name in picks.items():
        (root / STAMPS / folder).mkdir(parents=True)
        shutil.copy(hits_root / STAMPS / folder / name, root / STAMPS / folder / name)
    sn = root / STAMPS / "SNstamps" / "npy"
    sn.mkdir(parents=True)
    shutil.copy(hits_root / STAMPS / "SNstamps" / "SNHiTS.txt", sn.parent / "SNHiTS.txt")
    for suffix in ("stamps", "MJDs"):
        shutil.copy(hits_root / STAMPS / f"SNstamps/npy/SNHiTS15C_{suffix}.npy", sn)
    (root / INFO).mkdir(parents=True)
    for field in ("04", "40"):
        for path in (hits_root / INFO).glob(f"Blind15A_{field}_*_g.npy"):
            shutil.copy(path, root / INFO / path.name)
    return root


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rcnnlib.cli", "hits-info", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_json_on_real_folder(hits_root: Path, tmp_path: Path) -> None:
    result = _cli("--json", tmp_path / "stats.json", "--hits-dir", hits_root)
    assert result.returncode == 0, result.stderr
    stats = json.loads((tmp_path / "stats.json").read_text())  # exactly one JSON document
    assert stats["counts"] == {"SN": 46, "RRL": 54, "EB": 32, "NV": 232}
    assert stats["n_estimated_epochs"] > 0 and stats["source"] == "HiTS 2015 real"
    table = _cli("--hits-dir", hits_root)
    assert table.returncode == 0 and "NV" in table.stdout and "232" in table.stdout


def test_mini_folder_loads(mini_hits: Path, tmp_path: Path) -> None:
    ds = load_hits(mini_hits)
    assert ds.class_counts() == {"SN": 1, "RRL": 1, "EB": 1, "NV": 1}
    result = _cli("--json", tmp_path / "stats.json", "--hits-dir", mini_hits)
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "stats.json").read_text())["counts"] == {
        "SN": 1,
        "RRL": 1,
        "EB": 1,
        "NV": 1,
    }


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign(path: Path) -> None:
    path.write_text("SNname   field  CCD i    j\n")


def _nan_pixels(path: Path) -> None:
    stamps = np.load(path)
    stamps[3, 10, 10] = np.nan
    np.save(path, stamps)


def _wrong_shape(path: Path) -> None:
    np.save(path, np.load(path)[:, :20, :20])


def _hostile(path: Path) -> None:
    marker = path.parent / "pwned"
    command = f"touch {marker}".encode()
    payload = b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R."
    header = path.read_bytes()[: path.read_bytes().index(b"\n") + 1]  # the real object-array header
    path.write_bytes(header + payload)


def _remove(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("target", "damage", "message"),
    [
        ("EB/Blind15A_04_S22_648_2287_g_stamp.npy", _truncate, "truncated"),
        ("EB/Blind15A_04_S22_648_2287_g_stamp.npy", _foreign, "not a .npy file"),
        ("EB/Blind15A_04_S22_648_2287_g_stamp.npy", _hostile, "refusing to unpickle os.system"),
        ("SNstamps/npy/SNHiTS15C_stamps.npy", _nan_pixels, "non-finite pixels"),
        ("SNstamps/npy/SNHiTS15C_stamps.npy", _wrong_shape, "shape"),
        ("SNstamps/npy/SNHiTS15C_MJDs.npy", _truncate, "truncated"),
        ("SNstamps/npy/SNHiTS15C_MJDs.npy", _remove, "no such file"),
    ],
)
def test_bad_files_exit_2_naming_the_file(mini_hits: Path, target: str, damage, message: str) -> None:
    path = mini_hits / STAMPS / target
    damage(path)
    with pytest.raises(InputError) as info:
        load_hits(mini_hits)
    assert info.value.path == path and message in str(info.value)
    result = _cli("--hits-dir", mini_hits)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (path.parent / "pwned").exists()


@pytest.mark.parametrize("what", ["missing root", "missing class folder", "missing records"])
def test_missing_folders_exit_2(mini_hits: Path, what: str) -> None:
    if what == "missing root":
        target = mini_hits / "nowhere"
    elif what == "missing class folder":
        target = mini_hits / STAMPS / "RRLyrae"
        shutil.rmtree(target)
    else:
        target = mini_hits / INFO
        shutil.rmtree(target)
    root = target if what == "missing root" else mini_hits
    result = _cli("--hits-dir", root)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and "Traceback" not in result.stderr
