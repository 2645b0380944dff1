"""Load the real labelled HiTS 2015 sequences into a :class:`~rcnnlib.dataset.SequenceDataset`.

Layout read (under ``hits_dir``, as in github.com/rodrigcd/HiTS_simulations):

- stars: ``real_obs/real_stamps/{EB,RRLyrae,real_constants}/Blind15A_<field>_<CCD>_<x>_<y>_g_stamp.npy``,
  Python 2 pickles of a dict (``stamp`` (T, 21, 21), ``time`` with ``EPOCH`` and a float32
  ``MJD``), read with :mod:`rcnnlib.hits.safe_pickle` (never a plain unpickle);
- supernovae: ``real_obs/real_stamps/SNstamps/npy/<name>_stamps.npy`` and ``<name>_MJDs.npy``
  (plain npy, MJDs as byte strings; ``brighter/`` for ``sn_subset="brighter"``), field, CCD
  and pixel from ``SNstamps/SNHiTS.txt``;
- conditions: ``real_obs/Blind15A_info/Blind15A_<field>_<epoch>_g.npy``, one record per
  field and epoch.

Decisions (each visible in the returned dataset, none silent):

- **Ids** keep field, CCD and pixel: stars ``<field>_<CCD>_<x>_<y>`` from the file name
  (``04_S22_648_2287``); supernovae ``<name>_<field>_<CCD>_<i>_<j>`` with the field
  zero-padded to two digits and pixels as integers (``SNHiTS15C_40_N10_300_1019``).
- **Labels** are indices into the canonical seven :data:`~rcnnlib.classes.CLASS_NAMES`, so a
  model trained on simulations scores these without relabelling. Sequences come in the
  order of ``classes``, then sorted by file name.
- **Join** of an epoch to its conditions: by field and *nearest MJD* within
  :data:`JOIN_TOLERANCE_DAYS` (10 min), not by the ``EPOCH`` label (the labels of ~8 % of
  star epochs disagree with the record of the same exposure). Star MJDs are float32
  (the record's MJD rounded, up to 169 s off), so where two records of a field fall within
  that rounding (back-to-back exposures), the one with the stamp's ``EPOCH`` label wins,
  else the nearest (counted in ``metadata["n_ambiguous_matches"]``).
- **MJD** of a matched epoch is the record's float64 MJD (the star files only keep it to
  float32); an unmatched epoch keeps its own MJD.
- **Unmatched epochs** (~0.5 % of star epochs, a few supernova epochs and every epoch of the
  two field-03 supernovae, a field without records) are **kept** and flagged in
  ``conditions_estimated``: the sky is a sigma-clipped median of the stamp's border pixels
  (within a few % of ``BACK_LEVEL`` for most stamps, biased high next to bright stars); the
  other conditions are campaign-wide (all fields) medians of the records of the same night,
  else of the whole campaign.
- **Zero point** of the 3 records written without ``ZP_PS`` is recomputed from their own
  5-sigma depth, ``ZP = LIMIT_MAG_EA5 + 2.5 log10(5 STD_EMPTY_AP / EXP_TIME)``, an identity
  that holds to 1e-14 mag for all other records; they count as measured.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.classes import CLASS_NAMES, REAL_CLASS_NAMES, label_of
from rcnnlib.dataset import COLUMN, CONDITION_NAMES, STAMP_SIZE, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.hits.safe_pickle import load_pickled_dict, safe_load_npy
from rcnnlib.paths import hits_dir as default_hits_dir
from rcnnlib.stamps import night_of, ring_sky

SOURCE = "HiTS 2015 real"
BAND = "g"
JOIN_TOLERANCE_DAYS = 10.0 / 1440.0
"""Largest |stamp MJD - record MJD| accepted as the same exposure (matched ones are <= 169 s)."""
SN_SUBSETS: tuple[str, ...] = ("all", "brighter")
STAR_FOLDERS: dict[str, str] = {"RRL": "RRLyrae", "EB": "EB", "NV": "real_constants"}
"""Class name -> folder under ``real_obs/real_stamps`` for the star classes."""

_STAR_NAME = re.compile(r"^Blind15A_(\d+)_([NS]\d+)_(\d+)_(\d+)_g_stamp\.npy$")
_INFO_NAME = re.compile(r"^Blind15A_(\d+)_(\w+?)_g\.npy$")
_RECORD_COLUMNS = {  # our condition -> Blind15A_info field
    "seeing": "SEEING",
    "sky": "BACK_LEVEL",
    "zero_point": "ZP_PS",
    "limit_mag_5sigma": "LIMIT_MAG_EA5",
    "exp_time": "EXP_TIME",
    "airmass": "AIRMASS",
}


# --------------------------------------------------------------------------- conditions
@dataclass
class FieldRecords:
    """The ``Blind15A_info`` records of one field, sorted by MJD."""

    mjd: np.ndarray  # (n,) float64
    epochs: np.ndarray  # (n,) str, the EPOCH labels
    conditions: np.ndarray  # (n, len(CONDITION_NAMES)) float64


def regular_file(path: Path) -> Path:
    """``path`` when it is a regular file (or a link to one); InputError otherwise.

    Why: only regular files are read from the real-data folder. A FIFO named like
    a data file would block the reader forever, a self-referencing link fails
    deep inside numpy; both are refused here, by name, before they are opened.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = " (a broken symbolic link)" if os.path.islink(path) else ""
        raise InputError(f"no such file{broken}", path) from None
    except OSError as exc:  # ELOOP: a link to itself; EACCES
        raise InputError(f"cannot be read as a file ({exc.strerror or type(exc).__name__})", path) from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise InputError(f"is {kind}, expected a regular file; only regular files are read", path)
    return path


def _read_record(path: Path) -> tuple[str, float, np.ndarray]:
    record = safe_load_npy(regular_file(path))
    names = record.dtype.names or ()
    if record.shape != () or not names:
        raise InputError(f"expected one structured record, got {record.dtype} {record.shape}", path)
    needed = {"MJD", "EPOCH", *(v for k, v in _RECORD_COLUMNS.items() if k != "zero_point")}
    if "ZP_PS" not in names:
        needed |= {"STD_EMPTY_AP"}
    missing = sorted(needed - set(names))
    if missing:
        raise InputError(f"conditions record lacks {', '.join(missing)}", path)
    values = {}
    for ours, theirs in _RECORD_COLUMNS.items():
        if theirs in names:
            values[ours] = float(record[theirs])
    if "zero_point" not in values:  # old record layout: the identity is exact on all other records
        ratio = 5.0 * float(record["STD_EMPTY_AP"]) / values["exp_time"]
        values["zero_point"] = values["limit_mag_5sigma"] + 2.5 * np.log10(ratio) if ratio > 0 else np.nan
    row = np.array([values[name] for name in CONDITION_NAMES], dtype=np.float64)
    mjd = float(record["MJD"])
    if not np.isfinite(row).all() or not np.isfinite(mjd):
        raise InputError("non-finite values in conditions record", path)
    epoch = record["EPOCH"].item()
    return (epoch.decode() if isinstance(epoch, bytes) else str(epoch)), mjd, row


def read_field_records(hits_dir: Path | None = None) -> dict[str, FieldRecords]:
    """All g-band ``Blind15A_info`` records, by two-digit field."""
    root = _root(hits_dir)
    folder = root / "real_obs" / "Blind15A_info"
    if not folder.is_dir():
        raise InputError("missing conditions folder (expected real_obs/Blind15A_info)", folder)
    grouped: dict[str, list[tuple[float, str, np.ndarray]]] = {}
    for path in sorted(folder.glob(f"Blind15A_*_{BAND}.npy")):
        match = _INFO_NAME.match(path.name)
        if not match:
            raise InputError("unexpected file name in Blind15A_info", path)
        epoch, mjd, row = _read_record(path)
        grouped.setdefault(match.group(1).zfill(2), []).append((mjd, epoch, row))
    if not grouped:
        raise InputError(f"no {BAND}-band conditions records (Blind15A_<field>_<epoch>_{BAND}.npy)", folder)
    out = {}
    for field_name, rows in grouped.items():
        rows.sort(key=lambda r: r[0])
        out[field_name] = FieldRecords(
            mjd=np.array([r[0] for r in rows]),
            epochs=np.array([r[1] for r in rows], dtype=str),
            conditions=np.stack([r[2] for r in rows]),
        )
    return out


def match_epochs(
    record_mjd: np.ndarray,
    epoch_mjd: np.ndarray,
    tolerance: float = JOIN_TOLERANCE_DAYS,
    resolution: np.ndarray | float = 0.0,
    record_labels: np.ndarray | None = None,
    epoch_labels: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Index of the record nearest in MJD to each epoch (``-1`` beyond ``tolerance``).

    ``record_mjd`` must be sorted. ``resolution`` is each epoch MJD's rounding half-width:
    where more than one record lies within it, the record whose label equals the epoch's
    label is taken if there is exactly one. Returns the indices and the number of such
    ambiguous epochs.
    """
    record_mjd = np.asarray(record_mjd, dtype=np.float64)
    epoch_mjd = np.asarray(epoch_mjd, dtype=np.float64)
    index = np.full(epoch_mjd.shape, -1, dtype=np.int64)
    if record_mjd.size == 0 or epoch_mjd.size == 0:
        return index, 0
    right = np.clip(np.searchsorted(record_mjd, epoch_mjd), 1, record_mjd.size - 1)
    left = right - 1 if record_mjd.size > 1 else right
    pick_left = np.abs(epoch_mjd - record_mjd[left]) <= np.abs(record_mjd[right] - epoch_mjd)
    nearest = np.where(pick_left, left, right)
    if record_mjd.size == 1:
        nearest = np.zeros_like(nearest)
    matched = np.abs(record_mjd[nearest] - epoch_mjd) <= tolerance
    index[matched] = nearest[matched]
    slack = np.broadcast_to(np.asarray(resolution, dtype=np.float64), epoch_mjd.shape) + 1.0 / 86400
    lo = np.searchsorted(record_mjd, epoch_mjd - slack, side="left")
    hi = np.searchsorted(record_mjd, epoch_mjd + slack, side="right")
    ambiguous = np.flatnonzero(matched & (hi - lo > 1))
    if record_labels is not None and epoch_labels is not None:
        for i in ambiguous:
            same = [j for j in range(lo[i], hi[i]) if record_labels[j] == epoch_labels[i]]
            if len(same) == 1:
                index[i] = same[0]
    return index, int(ambiguous.size)


def _campaign_fallback(records: dict[str, FieldRecords], mjd: np.ndarray) -> np.ndarray:
    """Per-epoch conditions from the campaign median of the same night, else of the whole campaign."""
    all_mjd = np.concatenate([r.mjd for r in records.values()])
    all_cond = np.concatenate([r.conditions for r in records.values()])
    nights = night_of(all_mjd)
    out = np.tile(np.median(all_cond, axis=0), (mjd.size, 1))
    wanted = night_of(mjd)
    for night in np.unique(wanted):
        same = nights == night
        if same.any():
            out[wanted == night] = np.median(all_cond[same], axis=0)
    return out


# --------------------------------------------------------------------------- sequences
@dataclass
class _Sequence:
    """One object as read from disk, before padding and the conditions join."""

    id: str
    label: str
    field: str
    stamps: np.ndarray  # (T, 21, 21) float32
    mjd: np.ndarray  # (T,) float64
    resolution: np.ndarray  # (T,) float64 rounding half-width of mjd
    epochs: np.ndarray  # (T,) str EPOCH labels ("" where unknown)
    path: Path


def _check_stamps(stamps: Any, n_times: int, path: Path) -> np.ndarray:
    stamps = np.asarray(stamps)
    if stamps.dtype.kind not in "fiu":
        raise InputError(f"stamps have dtype {stamps.dtype}, expected numbers", path)
    if stamps.ndim != 3 or stamps.shape[1:] != (STAMP_SIZE, STAMP_SIZE) or stamps.shape[0] < 1:
        raise InputError(f"stamps have shape {stamps.shape}, expected (T, {STAMP_SIZE}, {STAMP_SIZE})", path)
    if stamps.shape[0] != n_times:
        raise InputError(f"{stamps.shape[0]} stamps but {n_times} MJDs", path)
    finite = np.isfinite(stamps).all(axis=(1, 2))
    if not finite.all():
        raise InputError(f"non-finite pixels in epoch(s) {np.flatnonzero(~finite).tolist()}", path)
    return stamps.astype(np.float32)


def _check_mjd(mjd: np.ndarray, path: Path) -> np.ndarray:
    if mjd.ndim != 1 or not np.isfinite(mjd).all():
        raise InputError("MJDs must be a 1-D array of finite numbers", path)
    return mjd


def _read_star(path: Path, label: str) -> _Sequence:
    match = _STAR_NAME.match(path.name)
    if not match:
        raise InputError("unexpected file name (expected Blind15A_<field>_<CCD>_<x>_<y>_g_stamp.npy)", path)
    field_name, ccd, x, y = match.groups()
    field_name = field_name.zfill(2)
    content = load_pickled_dict(regular_file(path))
    missing = [k for k in ("stamp", "time") if k not in content]
    if missing:
        raise InputError(f"stamp file lacks key(s) {', '.join(missing)}", path)
    time = np.asarray(content["time"])
    if time.dtype.names is None or "MJD" not in time.dtype.names:
        raise InputError("'time' is not a structured array with an MJD column", path)
    mjd32 = np.asarray(time["MJD"])
    mjd = _check_mjd(mjd32.astype(np.float64), path)
    resolution = np.spacing(mjd32) / 2.0 if mjd32.dtype.kind == "f" else np.zeros_like(mjd)
    if "EPOCH" in time.dtype.names:
        epochs = np.array([e.decode() if isinstance(e, bytes) else str(e) for e in time["EPOCH"]], dtype=str)
    else:
        epochs = np.full(mjd.shape, "", dtype=str)
    stamps = _check_stamps(content["stamp"], mjd.size, path)
    return _Sequence(
        f"{field_name}_{ccd}_{int(x)}_{int(y)}",
        label,
        field_name,
        stamps,
        mjd,
        resolution.astype(np.float64),
        epochs,
        path,
    )


def _read_sn_table(path: Path) -> dict[str, tuple[str, str, int, int]]:
    if not path.exists() and not path.is_symlink():
        raise InputError("missing supernova table (SNstamps/SNHiTS.txt)", path)
    regular_file(path)
    table = {}
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable supernova table: {exc}", path) from None
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split()
        if not parts:
            continue
        try:
            name, field_name, ccd, i, j = parts
            table[name] = (f"{int(field_name):02d}", ccd, int(i), int(j))
        except ValueError:
            raise InputError(f"line {number}: expected 'name field CCD i j', got {line!r}", path) from None
    return table


def _read_supernova(stamps_path: Path, table: dict[str, tuple[str, str, int, int]]) -> _Sequence:
    name = stamps_path.name[: -len("_stamps.npy")]
    if name not in table:
        raise InputError(f"supernova {name} is not in SNHiTS.txt", stamps_path)
    field_name, ccd, i, j = table[name]
    mjd_path = stamps_path.with_name(f"{name}_MJDs.npy")
    raw = safe_load_npy(regular_file(mjd_path))
    try:
        mjd = np.asarray([float(m.decode() if isinstance(m, bytes) else m) for m in np.ravel(raw)])
    except (ValueError, TypeError, UnicodeDecodeError):
        raise InputError(f"MJDs are not numbers (dtype {raw.dtype})", mjd_path) from None
    mjd = _check_mjd(mjd.reshape(raw.shape), mjd_path)
    stamps = _check_stamps(safe_load_npy(regular_file(stamps_path)), mjd.size, stamps_path)
    return _Sequence(
        f"{name}_{field_name}_{ccd}_{i}_{j}",
        "SN",
        field_name,
        stamps,
        mjd,
        np.zeros_like(mjd),
        np.full(mjd.shape, "", dtype=str),
        stamps_path,
    )


def _sequence_files(root: Path, classes: Sequence[str], sn_subset: str) -> list[tuple[str, Path]]:
    stamps_dir = root / "real_obs" / "real_stamps"
    files: list[tuple[str, Path]] = []
    for name in classes:
        if name == "SN":
            folder = stamps_dir / "SNstamps" / "npy"
            if sn_subset == "brighter":
                folder = folder / "brighter"
            pattern = "*_stamps.npy"
        else:
            folder = stamps_dir / STAR_FOLDERS[name]
            pattern = "*_g_stamp.npy"
        if not folder.is_dir():
            raise InputError(f"missing {name} folder (expected the HiTS real_obs/real_stamps layout)", folder)
        found = sorted(folder.glob(pattern))
        if not found:
            raise InputError(f"no {pattern} files for class {name}", folder)
        files.extend((name, path) for path in found)
    return files


def _root(hits_dir: Path | str | None) -> Path:
    root = default_hits_dir() if hits_dir is None else Path(hits_dir).expanduser()
    if not root.is_dir():
        raise InputError("no such HiTS folder (pass --hits-dir or set RCNNLIB_HITS_DIR)", root)
    return root


def _progress(items: list, enabled: bool) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="HiTS files", unit="file", file=sys.stderr)


# --------------------------------------------------------------------------- public API
def load_hits(
    hits_dir: Path | str | None = None,
    classes: Sequence[str] = REAL_CLASS_NAMES,
    sn_subset: str = "all",
    progress: bool = False,
) -> SequenceDataset:
    """Read the real labelled HiTS sequences, joined to their epochs' conditions (see module doc).

    ``hits_dir`` defaults to :func:`rcnnlib.paths.hits_dir`. Missing folders and bad files
    raise :class:`InputError` naming the file.
    """
    classes = tuple(classes)
    unknown = [c for c in classes if c not in REAL_CLASS_NAMES]
    if unknown or not classes:
        raise ValueError(f"classes must be among {', '.join(REAL_CLASS_NAMES)}, got {list(classes)}")
    if sn_subset not in SN_SUBSETS:
        raise ValueError(f"sn_subset must be one of {SN_SUBSETS}, got {sn_subset!r}")
    root = _root(hits_dir)
    records = read_field_records(root)
    files = _sequence_files(root, classes, sn_subset)
    sn_table = root / "real_obs" / "real_stamps" / "SNstamps" / "SNHiTS.txt"
    table = _read_sn_table(sn_table) if "SN" in classes else {}
    sequences = [
        _read_supernova(path, table) if name == "SN" else _read_star(path, name)
        for name, path in _progress(files, progress)
    ]

    n, t = len(sequences), max(s.mjd.size for s in sequences)
    stamps = np.zeros((n, t, STAMP_SIZE, STAMP_SIZE), dtype=np.float32)
    mjd = np.zeros((n, t))
    mask = np.zeros((n, t), dtype=bool)
    for k, s in enumerate(sequences):
        stamps[k, : s.mjd.size] = s.stamps
        mjd[k, : s.mjd.size] = s.mjd
        mask[k, : s.mjd.size] = True
    conditions, estimated, n_ambiguous = _join_conditions(sequences, records, stamps, mjd, mask)

    ids = np.array([s.id for s in sequences], dtype=str)
    if len(set(ids.tolist())) != n:
        dup = sorted({i for i in ids.tolist() if (ids == i).sum() > 1})
        raise InputError(f"object id(s) appear twice: {', '.join(dup[:5])}", root)
    metadata = {
        "source": SOURCE,
        "hits_dir": str(root.resolve()),
        "band": BAND,
        "classes": list(classes),
        "sn_subset": sn_subset,
        "n_estimated_epochs": int(estimated.sum()),
        "n_ambiguous_matches": n_ambiguous,
        "join_tolerance_s": JOIN_TOLERANCE_DAYS * 86400,
    }
    return SequenceDataset(
        stamps=stamps,
        mjd=mjd,
        conditions=conditions,
        mask=mask,
        labels=np.array([label_of(s.label) for s in sequences], dtype=np.int16),
        ids=ids,
        conditions_estimated=estimated,
        metadata=metadata,
        class_names=CLASS_NAMES,
    )


def _join_conditions(
    sequences: list[_Sequence],
    records: dict[str, FieldRecords],
    stamps: np.ndarray,
    mjd: np.ndarray,
    mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Fill conditions per (sequence, epoch); updates ``mjd`` in place with matched record MJDs."""
    n, t = mask.shape
    conditions = np.zeros((n, t, len(CONDITION_NAMES)))
    matched = np.zeros((n, t), dtype=bool)
    seq_field = np.array([s.field for s in sequences])
    resolution = np.zeros((n, t))
    labels = np.full((n, t), "", dtype=object)
    for k, s in enumerate(sequences):
        resolution[k, : s.mjd.size] = s.resolution
        labels[k, : s.mjd.size] = s.epochs
    n_ambiguous = 0
    for field_name in np.unique(seq_field):
        rec = records.get(str(field_name))
        if rec is None:
            continue
        rows, cols = np.nonzero(mask & (seq_field == field_name)[:, None])
        index, ambiguous = match_epochs(
            rec.mjd,
            mjd[rows, cols],
            resolution=resolution[rows, cols],
            record_labels=rec.epochs,
            epoch_labels=labels[rows, cols],
        )
        n_ambiguous += ambiguous
        ok = index >= 0
        rows, cols, index = rows[ok], cols[ok], index[ok]
        conditions[rows, cols] = rec.conditions[index]
        mjd[rows, cols] = rec.mjd[index]
        matched[rows, cols] = True
    estimated = mask & ~matched
    if estimated.any():
        conditions[estimated] = _campaign_fallback(records, mjd[estimated])
        conditions[estimated, COLUMN["sky"]] = ring_sky(stamps[estimated])
    return conditions, estimated, n_ambiguous


def hits_epoch_stats(ds: SequenceDataset) -> dict[str, Any]:
    """Per-class counts and epoch statistics of a dataset (JSON-serialisable)."""

    def summary(sel: np.ndarray) -> dict[str, Any]:
        mask = ds.mask[sel]
        n_epochs = mask.sum(axis=1)
        gaps = np.diff(np.where(mask, ds.mjd[sel], np.nan), axis=1)
        gaps = gaps[np.isfinite(gaps)]
        observed = int(mask.sum())
        n_est = int(ds.conditions_estimated[sel][mask].sum())
        return {
            "n": int(sel.sum()),
            "epochs_min": int(n_epochs.min()) if n_epochs.size else 0,
            "epochs_median": float(np.median(n_epochs)) if n_epochs.size else 0.0,
            "epochs_max": int(n_epochs.max()) if n_epochs.size else 0,
            "n_epochs_total": observed,
            "median_cadence_days": float(np.median(gaps)) if gaps.size else None,
            "n_estimated_epochs": n_est,
            "fraction_estimated": n_est / observed if observed else 0.0,
        }

    names = [c for i, c in enumerate(ds.class_names) if c in REAL_CLASS_NAMES or (ds.labels == i).any()]
    per_class = {c: summary(ds.labels == ds.class_names.index(c)) for c in names}
    overall = summary(np.ones(len(ds), dtype=bool))
    observed_mjd = ds.mjd[ds.mask]
    return {
        "counts": {c: per_class[c]["n"] for c in names},
        "n_sequences": len(ds),
        **{k: v for k, v in overall.items() if k != "n"},
        "mjd_min": float(observed_mjd.min()) if observed_mjd.size else None,
        "mjd_max": float(observed_mjd.max()) if observed_mjd.size else None,
        "per_class": per_class,
    }


# --------------------------------------------------------------------------- command line


def format_epoch_stats(stats: dict[str, Any]) -> str:
    """:func:`hits_epoch_stats` as the text table of ``rcnnlib hits-info``."""
    lines = [
        f"{SOURCE} sequences in {stats['hits_dir']} (supernovae: {stats['sn_subset']})",
        f"{'class':<6} {'n':>5} {'epochs min/median/max':>22} {'cadence [d]':>12} {'estimated':>10}",
    ]
    rows = [*stats["per_class"].items(), ("all", {"n": stats["n_sequences"], **stats})]
    for name, row in rows:
        epochs = f"{row['epochs_min']}/{row['epochs_median']:g}/{row['epochs_max']}"
        cadence = "-" if row["median_cadence_days"] is None else f"{row['median_cadence_days']:.3f}"
        lines.append(f"{name:<6} {row['n']:>5} {epochs:>22} {cadence:>12} {row['fraction_estimated']:>9.1%}")
    lines.append(
        f"MJD {stats['mjd_min']:.2f} to {stats['mjd_max']:.2f}; {stats['n_estimated_epochs']} of "
        f"{stats['n_epochs_total']} epochs have estimated conditions (no Blind15A_info record within "
        f"{JOIN_TOLERANCE_DAYS * 1440:g} min)."
    )
    return "\n".join(lines)
