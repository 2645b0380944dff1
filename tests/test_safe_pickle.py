"""The restricted reader of the authors' pickled .npy files: real files load, hostile ones are refused."""

from __future__ import annotations

import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from rcnnlib.errors import InputError
from rcnnlib.hits.safe_pickle import load_pickled_dict, safe_load_npy, safe_loads

STAR = "real_obs/real_stamps/EB/Blind15A_04_S22_648_2287_g_stamp.npy"
RECORD = "real_obs/Blind15A_info/Blind15A_04_02_g.npy"


def _object_npy(path: Path, payload: bytes) -> Path:
    """An npy file announcing a 0-d object array, followed by ``payload`` (as numpy writes them)."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(buffer.getvalue() + payload)
    return path


def _reduce_pickle(module: str, name: str, argument: str) -> bytes:
    """Protocol-2 pickle calling ``module.name(argument)`` on load (GLOBAL + REDUCE)."""
    arg = argument.encode()
    return (
        b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n"
        b"X" + len(arg).to_bytes(4, "little") + arg + b"\x85R."
    )


def test_real_star_file_matches_numpy(hits_root: Path) -> None:
    path = hits_root / STAR
    content = load_pickled_dict(path)
    reference = np.load(path, allow_pickle=True, encoding="latin1").item()  # trusted local copy
    assert set(content) == {"stamp", "centroidsXY", "time"}
    for key, value in reference.items():
        assert content[key].dtype == value.dtype
        np.testing.assert_array_equal(content[key], value)
    assert content["stamp"].shape[1:] == (21, 21)


def test_numpy3_object_pickle_loads(tmp_path: Path) -> None:
    """Files re-saved by modern numpy spell the module numpy._core: still allowed."""
    stored = {"stamp": np.arange(8, dtype=np.float32).reshape(2, 2, 2), "n": np.float64(2.5)}
    path = tmp_path / "modern.npy"
    np.save(path, np.array(stored, dtype=object), allow_pickle=True)
    content = load_pickled_dict(path)
    np.testing.assert_array_equal(content["stamp"], stored["stamp"])
    assert content["n"] == 2.5


def test_plain_arrays_load_without_pickle(hits_root: Path, tmp_path: Path) -> None:
    record = safe_load_npy(hits_root / RECORD)
    assert record.dtype.names is not None and "SEEING" in record.dtype.names
    path = tmp_path / "plain.npy"
    np.save(path, np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(safe_load_npy(path), np.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize(
    ("module", "name", "make_command"),
    [
        ("os", "system", lambda marker: f"touch {marker}"),
        ("posix", "system", lambda marker: f"touch {marker}"),
        ("builtins", "eval", lambda marker: f"open({str(marker)!r}, 'w').write('pwned')"),
        ("builtins", "exec", lambda marker: f"open({str(marker)!r}, 'w').write('pwned')"),
        ("subprocess", "getoutput", lambda marker: f"touch {marker}"),
        ("numpy", "load", lambda marker: str(marker)),
    ],
)
def test_hostile_pickle_is_refused_without_running(
    tmp_path: Path, module: str, name: str, make_command
) -> None:
    marker = tmp_path / "pwned"
    path = _object_npy(
        tmp_path / "Blind15A_04_S1_1_1_g_stamp.npy", _reduce_pickle(module, name, make_command(marker))
    )
    with pytest.raises(InputError) as info:
        load_pickled_dict(path)
    assert f"refusing to unpickle {module}.{name}" in str(info.value)
    assert info.value.path == path
    assert not marker.exists()


def test_hostile_payload_would_run_with_plain_pickle(tmp_path: Path) -> None:
    """Guard for the test above: the crafted payload really executes when unpickled naively."""
    marker = tmp_path / "ran"
    pickle.loads(_reduce_pickle("os", "system", f"touch {marker}"))
    assert marker.exists()


def test_hostile_global_nested_in_a_real_file(hits_root: Path, tmp_path: Path) -> None:
    """A real file with one of its allowed globals swapped for os.system is refused."""
    data = (hits_root / STAR).read_bytes()
    tampered = data.replace(b"cnumpy\nndarray\n", b"cos\nsystem\n", 1)
    assert tampered != data
    path = tmp_path / "tampered.npy"
    path.write_bytes(tampered)
    with pytest.raises(InputError, match=r"refusing to unpickle os\.system"):
        safe_load_npy(path)


@pytest.mark.parametrize("cut", [5, 40, 100, 0.5, -10])
def test_truncated_star_file(hits_root: Path, tmp_path: Path, cut: float) -> None:
    data = (hits_root / STAR).read_bytes()
    size = int(len(data) * cut) if isinstance(cut, float) else (cut if cut > 0 else len(data) + cut)
    path = tmp_path / "cut.npy"
    path.write_bytes(data[:size])
    with pytest.raises(InputError) as info:
        load_pickled_dict(path)
    assert info.value.path == path
    assert "truncated" in str(info.value)


def test_truncated_plain_array(tmp_path: Path) -> None:
    path = tmp_path / "plain.npy"
    np.save(path, np.zeros((10, 21, 21), dtype=np.float32))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(InputError, match="truncated"):
        safe_load_npy(path)


@pytest.mark.parametrize("content", [b"SNname field CCD i j\n", b"\x89PNG\r\n\x1a\n" + bytes(64)])
def test_foreign_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "foreign.npy"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"not a \.npy file") as info:
        safe_load_npy(path)
    assert info.value.path == path


def test_missing_file_and_wrong_payload(tmp_path: Path) -> None:
    empty = tmp_path / "empty.npy"
    empty.touch()
    with pytest.raises(InputError, match="empty file"):
        safe_load_npy(empty)
    with pytest.raises(InputError, match="no such file"):
        safe_load_npy(tmp_path / "absent.npy")
    list_array = tmp_path / "list.npy"
    np.save(list_array, np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="expected a pickled dict"):
        load_pickled_dict(list_array)
    # header says one shape, pickle holds a plain list: refused
    path = _object_npy(tmp_path / "mismatch.npy", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(InputError, match="not the object array"):
        safe_load_npy(path)


def test_safe_loads_names_source() -> None:
    with pytest.raises(InputError, match=r"^somewhere\.npy: refusing to unpickle builtins\.getattr"):
        safe_loads(_reduce_pickle("builtins", "getattr", "x"), "somewhere.npy")


def test_copy_of_real_file_still_loads(hits_root: Path, tmp_path: Path) -> None:
    path = tmp_path / Path(STAR).name
    shutil.copy(hits_root / STAR, path)
    assert load_pickled_dict(path)["stamp"].dtype == np.float32
