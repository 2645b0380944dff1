"""The shared dataset type: validation, round trip, fingerprint, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset
from rcnnlib.errors import InputError


def make_dataset(n: int = 5, t: int = 4, seed: int = 0) -> SequenceDataset:
    rng = np.random.default_rng(seed)
    mask = np.ones((n, t), dtype=bool)
    mask[0, -1] = False
    stamps = rng.normal(100, 5, (n, t, 21, 21)).astype(np.float32) * mask[..., None, None]
    return SequenceDataset(
        stamps=stamps,
        mjd=57070 + np.sort(rng.uniform(0, 20, (n, t)), axis=1),
        conditions=rng.uniform(1, 2, (n, t, len(CONDITION_NAMES))),
        mask=mask,
        labels=rng.integers(0, 7, n),
        ids=[f"obj{i}" for i in range(n)],
        metadata={"survey": "test", "seed": seed},
    )


def test_round_trip_preserves_arrays_and_fingerprint(tmp_path):
    ds = make_dataset()
    path = ds.save(tmp_path / "d.h5")
    back = SequenceDataset.load(path)
    for name in ("stamps", "mjd", "conditions", "mask", "labels", "ids", "conditions_estimated"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ds, name))
    assert back.fingerprint() == ds.fingerprint() == back.metadata["fingerprint"]
    assert back.metadata["survey"] == "test"
    assert back.class_names == ds.class_names


def test_fingerprint_changes_with_any_pixel():
    ds = make_dataset()
    before = ds.fingerprint()
    ds.stamps[3, 1, 10, 10] += 1e-3
    assert ds.fingerprint() != before
    assert make_dataset(seed=1).fingerprint() != make_dataset(seed=0).fingerprint()


def test_uint16_storage_is_lossless_or_refused(tmp_path):
    ds = make_dataset()
    with pytest.raises(ValueError, match="uint16"):
        ds.save(tmp_path / "lossy.h5", stamp_dtype="uint16")
    ds.stamps = np.rint(ds.stamps)
    ds.stamps[0, 0, 0, 0] = 70000  # overflow must be refused too
    with pytest.raises(ValueError, match="uint16"):
        ds.save(tmp_path / "overflow.h5", stamp_dtype="uint16")
    ds.stamps[0, 0, 0, 0] = 65535
    assert not list(tmp_path.iterdir()), "a refused write must leave no partial file"
    back = SequenceDataset.load(ds.save(tmp_path / "int.h5", stamp_dtype="uint16", durable=False))
    np.testing.assert_array_equal(back.stamps, ds.stamps)
    assert back.fingerprint() == ds.fingerprint()


def test_float16_storage_is_lossless_or_refused(tmp_path):
    ds = make_dataset()
    with pytest.raises(ValueError, match="float16"):
        ds.save(tmp_path / "lossy.h5", stamp_dtype="float16")
    assert not (tmp_path / "lossy.h5").exists()
    assert not list(tmp_path.iterdir()), "a refused write must leave no partial file"
    ds.stamps = ds.stamps.astype(np.float16).astype(np.float32)
    back = SequenceDataset.load(ds.save(tmp_path / "half.h5", stamp_dtype="float16"))
    assert back.stamps.dtype == np.float32
    np.testing.assert_array_equal(back.stamps, ds.stamps)


def test_corrupted_content_is_detected(tmp_path):
    import h5py

    path = make_dataset().save(tmp_path / "d.h5")
    with h5py.File(path, "r+") as f:
        f["labels"][0] = (f["labels"][0] + 1) % 7
    with pytest.raises(InputError, match="fingerprint"):
        SequenceDataset.load(path)


@pytest.mark.parametrize("content", [b"", b"not an hdf5 file at all", b"\x89HDF\r\n\x1a\n" + b"\0" * 10])
def test_foreign_or_truncated_file_names_the_file(tmp_path, content):
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        SequenceDataset.load(path)
    assert "bad.h5" in str(err.value)


def test_truncated_real_file(tmp_path):
    path = make_dataset(n=50).save(tmp_path / "d.h5", compression=None)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"d\.h5"):
        SequenceDataset.load(path)


def test_validation_rejects_wrong_shapes_and_nan():
    ds = make_dataset()
    with pytest.raises(InputError, match="stamps has shape"):
        SequenceDataset(ds.stamps[:, :, :20], ds.mjd, ds.conditions, ds.mask, ds.labels, ds.ids)
    bad = ds.stamps.copy()
    bad[2, 1, 5, 5] = np.nan
    with pytest.raises(InputError, match="obj2 epoch 1"):
        SequenceDataset(bad, ds.mjd, ds.conditions, ds.mask, ds.labels, ds.ids)
    # NaN in a masked (absent) epoch is fine: it is never used
    bad = ds.stamps.copy()
    bad[0, -1] = np.nan
    SequenceDataset(bad, ds.mjd, ds.conditions, ds.mask, ds.labels, ds.ids)
    with pytest.raises(InputError, match="labels"):
        SequenceDataset(ds.stamps, ds.mjd, ds.conditions, ds.mask, ds.labels + 7, ds.ids)


def test_interrupted_save_leaves_nothing(tmp_path, monkeypatch):
    import rcnnlib.dataset as module

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "write_hdf5_group", explode)
    with pytest.raises(KeyboardInterrupt):
        make_dataset().save(tmp_path / "d.h5")
    assert list(tmp_path.iterdir()) == []


def test_concatenate_pads_and_subset_selects():
    a, b = make_dataset(n=3, t=4), make_dataset(n=2, t=6, seed=3)
    both = SequenceDataset.concatenate([a, b])
    assert both.stamps.shape == (5, 6, 21, 21)
    assert not both.mask[:3, 4:].any()
    np.testing.assert_array_equal(both.mask[3:], b.mask)
    np.testing.assert_array_equal(both.subset([3, 4]).stamps, b.stamps)
    np.testing.assert_array_equal(both.subset(slice(0, 3)).stamps[:, :4], a.stamps)
    assert both.condition("sky").shape == (5, 6)
    with pytest.raises(KeyError):
        both.condition("moon")
