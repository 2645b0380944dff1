"""One dataset type for image sequences, simulated and real alike.

Simulated and real HiTS sequences are both held in a :class:`SequenceDataset`,
so preprocessing, models and metrics never need a second code path for real
data. Sequences of different length are zero-padded to a common ``T`` and the
``mask`` says which epochs exist.

On disk a dataset is one HDF5 file (chunked, compressed), written atomically:
the file appears complete under its final name or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from rcnnlib.classes import CLASS_NAMES
from rcnnlib.errors import InputError
from rcnnlib.outputs import atomic_path

CONDITION_NAMES: tuple[str, ...] = (
    "seeing",  # PSF FWHM, arcsec
    "sky",  # sky level, ADU
    "zero_point",  # mag giving 1 ADU/s
    "limit_mag_5sigma",  # 5-sigma limiting magnitude
    "exp_time",  # exposure time, s
    "airmass",
)
"""Columns of :attr:`SequenceDataset.conditions`, in order."""
COLUMN: dict[str, int] = {name: i for i, name in enumerate(CONDITION_NAMES)}
"""Index of each condition column by name: ``conditions[..., COLUMN["seeing"]]``; never a bare number."""

STAMP_SIZE = 21
FORMAT_NAME = "rcnnlib.SequenceDataset"
FORMAT_VERSION = 1
_ARRAYS = ("stamps", "mjd", "conditions", "conditions_estimated", "mask", "labels", "ids")


@dataclass(eq=False)
class SequenceDataset:
    """N image sequences of up to T epochs of 21x21 stamps, with their observing conditions.

    Attributes:
        stamps: (N, T, 21, 21) float32, ADU, sky not subtracted; zeros where masked.
        mjd: (N, T) float64 modified Julian dates of the epochs.
        conditions: (N, T, len(CONDITION_NAMES)) float32, see :data:`CONDITION_NAMES`.
        mask: (N, T) bool, True where the epoch was observed.
        labels: (N,) int16 indices into ``class_names``.
        ids: (N,) str object ids (for HiTS: ``field_CCD_x_y``).
        conditions_estimated: (N, T) bool, True where an epoch's conditions were
            estimated rather than measured (see :mod:`rcnnlib.hits.loader`).
        metadata: JSON-serialisable provenance (survey, seed, source, fingerprint...).
        class_names: the names behind ``labels``; the canonical seven by default.
    """

    stamps: np.ndarray
    mjd: np.ndarray
    conditions: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    conditions_estimated: np.ndarray = None  # type: ignore[assignment]  # None: all False (__post_init__)
    metadata: dict[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        self.stamps = np.asarray(self.stamps, dtype=np.float32)
        self.mjd = np.asarray(self.mjd, dtype=np.float64)
        self.conditions = np.asarray(self.conditions, dtype=np.float32)
        self.mask = np.asarray(self.mask, dtype=bool)
        self.labels = np.asarray(self.labels, dtype=np.int16)
        self.ids = np.asarray(self.ids, dtype=str)
        if self.conditions_estimated is None:
            self.conditions_estimated = np.zeros(self.mask.shape, dtype=bool)
        self.conditions_estimated = np.asarray(self.conditions_estimated, dtype=bool)
        self.class_names = tuple(self.class_names)
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self, source: str | Path | None = None) -> None:
        """Raise :class:`InputError` unless shapes, labels and pixels are consistent."""
        n, t = self.mask.shape if self.mask.ndim == 2 else (-1, -1)
        expected = {
            "stamps": (n, t, STAMP_SIZE, STAMP_SIZE),
            "mjd": (n, t),
            "conditions": (n, t, len(CONDITION_NAMES)),
            "conditions_estimated": (n, t),
            "labels": (n,),
            "ids": (n,),
        }
        if self.mask.ndim != 2:
            raise InputError(f"mask must be 2-D (N, T), got shape {self.mask.shape}", source)
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise InputError(f"{name} has shape {got}, expected {shape}", source)
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.class_names)):
            raise InputError(f"labels outside 0..{len(self.class_names) - 1}", source)
        # fast path: a finite total means finite pixels (NaN and inf propagate)
        if (
            not np.isfinite(self.stamps.sum(dtype=np.float64))
            and not np.isfinite(self.stamps[self.mask]).all()
        ):
            bad = np.argwhere(~np.isfinite(self.stamps).all(axis=(2, 3)) & self.mask)[0]
            raise InputError(f"non-finite pixels in sequence {self.ids[bad[0]]} epoch {bad[1]}", source)

    # ----------------------------------------------------------------- basics
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_epochs(self) -> int:
        """Padded sequence length T."""
        return int(self.mask.shape[1])

    def condition(self, name: str) -> np.ndarray:
        """One column of :attr:`conditions`, shape (N, T)."""
        try:
            return self.conditions[..., COLUMN[name]]
        except ValueError:
            raise KeyError(f"unknown condition {name!r}; expected one of {CONDITION_NAMES}") from None

    def class_counts(self) -> dict[str, int]:
        """Number of sequences per class name, for classes present."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True) if c}

    def subset(self, index: np.ndarray | Sequence[int] | slice) -> SequenceDataset:
        """The sequences selected by ``index`` (integers, booleans or a slice)."""
        if not isinstance(index, slice):
            index = np.asarray(index)
        return SequenceDataset(
            stamps=self.stamps[index],
            mjd=self.mjd[index],
            conditions=self.conditions[index],
            mask=self.mask[index],
            labels=self.labels[index],
            ids=self.ids[index],
            conditions_estimated=self.conditions_estimated[index],
            metadata=dict(self.metadata),
            class_names=self.class_names,
        )

    @classmethod
    def concatenate(cls, parts: Iterable[SequenceDataset], metadata: dict | None = None) -> SequenceDataset:
        """Join datasets, padding every part to the longest sequence length."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise ValueError("cannot concatenate datasets with different class names")
        t = max(p.n_epochs for p in parts)

        def padded(name: str) -> np.ndarray:
            arrays = []
            for p in parts:
                a = getattr(p, name)
                pad = [(0, 0), (0, t - p.n_epochs)] + [(0, 0)] * (a.ndim - 2)
                arrays.append(np.pad(a, pad))
            return np.concatenate(arrays)

        return cls(
            stamps=padded("stamps"),
            mjd=padded("mjd"),
            conditions=padded("conditions"),
            mask=padded("mask"),
            labels=np.concatenate([p.labels for p in parts]),
            ids=np.concatenate([p.ids for p in parts]),
            conditions_estimated=padded("conditions_estimated"),
            metadata=dict(parts[0].metadata if metadata is None else metadata),
            class_names=names,
        )

    # ----------------------------------------------------------- fingerprint
    def fingerprint(self) -> str:
        """sha256 of the arrays and class names: equal content gives equal fingerprints."""
        digest = hashlib.sha256()
        digest.update(json.dumps(list(self.class_names)).encode())
        for name in _ARRAYS:
            a = getattr(self, name)
            if name == "ids":
                digest.update(b"ids" + "\0".join(a.tolist()).encode("utf-8"))
                continue
            a = np.ascontiguousarray(a)
            digest.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
            digest.update(a.data if a.ndim else a.tobytes())  # no copy of big arrays
        return digest.hexdigest()

    # ------------------------------------------------------------------- disk
    def save(
        self,
        path: str | Path,
        compression: str | None = "gzip",
        stamp_dtype: str = "float32",
        durable: bool = True,
    ) -> Path:
        """Write to an HDF5 file atomically and record the fingerprint in the metadata.

        ``stamp_dtype`` ``"uint16"`` or ``"float16"`` halves the file size for stamps
        exactly representable that way (the simulator digitises to integer ADU); it
        is refused when it would lose information, so loading gives back the same
        arrays. ``durable=False`` skips the fsync, for files inside a folder that is
        itself published atomically.
        """
        path = Path(path)
        self.metadata["fingerprint"] = self.fingerprint()
        with atomic_path(path, durable=durable) as tmp, h5py.File(tmp, "w") as f:
            write_hdf5_group(f, self, compression=compression, stamp_dtype=stamp_dtype)
        return path

    @classmethod
    def load(cls, path: str | Path, verify: bool = True) -> SequenceDataset:
        """Read a file written by :meth:`save`; bad files raise :class:`InputError` naming them."""
        path = Path(path)
        if not path.exists():
            raise InputError("no such file", path)
        try:
            with h5py.File(path, "r") as f:
                return read_hdf5_group(f, path, verify=verify)
        except OSError as exc:
            raise InputError(
                f"not a readable HDF5 dataset (truncated or foreign file?): {exc}", path
            ) from None
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            # a damaged attribute or array (one flipped byte) surfaces as a parse or shape error
            raise InputError(f"damaged dataset file ({type(exc).__name__}: {exc})", path) from None


def write_hdf5_group(
    group: h5py.Group, ds: SequenceDataset, compression: str | None = "gzip", stamp_dtype: str = "float32"
) -> None:
    """Store a dataset's arrays in an HDF5 group, chunked by batches of sequences."""
    group.attrs["format"] = FORMAT_NAME
    group.attrs["format_version"] = FORMAT_VERSION
    group.attrs["class_names"] = json.dumps(list(ds.class_names))
    group.attrs["condition_names"] = json.dumps(list(CONDITION_NAMES))
    group.attrs["metadata"] = json.dumps(ds.metadata, default=str)
    n = max(len(ds), 1)
    for name in _ARRAYS:
        a = getattr(ds, name)
        if name == "ids":
            group.create_dataset(name, data=a.astype(object), dtype=h5py.string_dtype())
            continue
        if name == "stamps" and stamp_dtype != "float32":
            stored = a.astype(stamp_dtype)
            if not np.array_equal(stored, a):  # compares values, so catches rounding and overflow
                raise ValueError(f"stamps are not exactly representable as {stamp_dtype}")
            a = stored
        chunks = (min(n, 256), *a.shape[1:]) if len(ds) else None
        opts = {"compression": compression, "shuffle": True} if len(ds) and compression else {}
        group.create_dataset(name, data=a, chunks=chunks, **opts)


def read_hdf5_group(group: h5py.Group, source: str | Path, verify: bool = True) -> SequenceDataset:
    """Inverse of :func:`write_hdf5_group`; checks the format and, optionally, the fingerprint."""
    if group.attrs.get("format") != FORMAT_NAME:
        raise InputError(f"not an {FORMAT_NAME} file (missing format tag)", source)
    missing = [name for name in _ARRAYS if name not in group]
    if missing:
        raise InputError(f"missing arrays: {', '.join(missing)}", source)
    if json.loads(group.attrs["condition_names"]) != list(CONDITION_NAMES):
        raise InputError("conditions columns differ from this version of rcnnlib", source)
    arrays = {name: group[name][()] for name in _ARRAYS}
    arrays["ids"] = np.array([s.decode() if isinstance(s, bytes) else s for s in arrays["ids"]], dtype=str)
    metadata = json.loads(group.attrs["metadata"])
    ds = SequenceDataset(
        **arrays, metadata=metadata, class_names=tuple(json.loads(group.attrs["class_names"]))
    )
    ds.validate(source)
    stored = metadata.get("fingerprint")
    if verify and stored and stored != ds.fingerprint():
        raise InputError("content does not match its stored fingerprint (corrupted file?)", source)
    return ds


def read_rows(path: str | Path, start: int, stop: int) -> SequenceDataset:
    """Sequences ``start:stop`` of a saved dataset, read without loading the rest.

    For streaming training data: no fingerprint check (that needs the whole
    file); :meth:`SequenceDataset.load` or ``ShardedDataset.verify`` do that.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT_NAME:
                raise InputError(f"not an {FORMAT_NAME} file (missing format tag)", path)
            arrays = {name: f[name][start:stop] for name in _ARRAYS}
            class_names = tuple(json.loads(f.attrs["class_names"]))
    except OSError as exc:
        raise InputError(f"not a readable HDF5 dataset: {exc}", path) from None
    arrays["ids"] = np.array([s.decode() if isinstance(s, bytes) else s for s in arrays["ids"]], dtype=str)
    return SequenceDataset(**arrays, metadata={"source_file": str(path)}, class_names=class_names)
