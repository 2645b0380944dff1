"""``rcnnlib classify``: class probabilities per time step for a user's own sequences.

Accepted inputs (the file names the format):

- ``.h5``/``.hdf5``: a :class:`~rcnnlib.dataset.SequenceDataset` file.
- ``.npz``: ``stamps`` (N, T, 21, 21) or (T, 21, 21) in ADU, sky not subtracted;
  ``mjd`` (N, T) or (T,); the conditions either as ``conditions`` (..., 6) in
  :data:`~rcnnlib.dataset.CONDITION_NAMES` order or as one array per name;
  optional ``mask`` and ``ids``.
- ``.fits``/``.fits.gz``: a (T, 21, 21) cube in the primary HDU and a binary
  table in HDU 1 with an ``MJD`` column and one column per condition name
  (any case).

Every input is checked once, here, before the model loads: numeric arrays of
the shapes above, finite pixels and MJDs, MJDs increasing within a sequence and
conditions within :data:`rcnnlib.observations.CONDITION_RANGES` (a non-finite
condition means "not measured": the epoch is not used).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.dataset import CONDITION_NAMES, STAMP_SIZE, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.observations import check_sequences

_NUMBERS = "fiu"  # dtype kinds accepted for stamps, MJDs and conditions


def read_sequences(path: str | Path) -> SequenceDataset:
    """A user's sequences as a :class:`SequenceDataset` (labels are placeholders: 0), checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    name = path.name.lower()
    if name.endswith((".h5", ".hdf5")):
        ds = SequenceDataset.load(path)
        if len(ds) == 0 or ds.n_epochs == 0:
            raise InputError("the dataset holds no sequences", path)
    elif name.endswith(".npz"):
        ds = _to_dataset(_read_npz(path), path)
    elif name.endswith((".fits", ".fits.gz", ".fit")):
        ds = _to_dataset(_read_fits(path), path)
    else:
        raise InputError("unknown format: expected .npz, .h5/.hdf5 or .fits", path)
    check_sequences(ds.mjd, ds.conditions, ds.mask, ds.ids, path)
    return ds


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy file renamed .npz
            raise InputError("not a .npz archive (a single .npy array?)", path)
        with loaded as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a readable .npz file ({exc})", path) from None
    for key in ("stamps", "mjd"):
        if key not in arrays:
            raise InputError(f"missing array {key!r} (has: {', '.join(sorted(arrays)) or 'nothing'})", path)
    if "conditions" not in arrays:
        missing = [c for c in CONDITION_NAMES if c not in arrays]
        if missing:
            raise InputError(f"missing 'conditions' or the arrays {', '.join(missing)}", path)
        shapes = {np.shape(arrays[c]) for c in CONDITION_NAMES}
        if len(shapes) > 1:
            raise InputError(f"the arrays {', '.join(CONDITION_NAMES)} differ in shape", path)
        for c in CONDITION_NAMES:
            _numeric(arrays[c], c, path)
        arrays["conditions"] = np.stack([arrays[c] for c in CONDITION_NAMES], axis=-1)
    return arrays


def _read_fits(path: Path) -> dict[str, np.ndarray]:
    from astropy.io import fits

    layout = "expected a (T, 21, 21) stamp cube in HDU 0 and a conditions table in HDU 1"
    try:
        with fits.open(path) as hdul:
            if len(hdul) < 2 or hdul[0].data is None or not isinstance(hdul[1], fits.BinTableHDU):
                raise InputError(layout, path)
            cube = np.array(hdul[0].data)
            table = hdul[1].data
            columns = {c.lower(): c for c in table.columns.names}
            missing = [c for c in ("mjd", *CONDITION_NAMES) if c not in columns]
            if missing:
                raise InputError(f"the table in HDU 1 lacks column(s) {', '.join(missing)}", path)
            mjd = np.array(table[columns["mjd"]])
            values = [_numeric(np.array(table[columns[c]]), c, path) for c in CONDITION_NAMES]
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError) as exc:
        # astropy reports a truncated or foreign file with any of these
        raise InputError(f"not a readable FITS file ({type(exc).__name__}: {exc})", path) from None
    if cube.ndim != 3:
        raise InputError(f"{layout}; HDU 0 has shape {cube.shape}", path)
    conditions = np.stack(values, -1) if values[0].ndim == 1 else None
    if conditions is None:
        raise InputError("the conditions table's columns must hold one number per row", path)
    return {"stamps": cube, "mjd": mjd, "conditions": conditions, "ids": np.array([path.stem])}


def _numeric(a: np.ndarray, name: str, path: Path) -> np.ndarray:
    """``a`` when it holds real numbers; the file and field named otherwise."""
    a = np.asarray(a)
    if a.dtype.kind not in _NUMBERS:
        raise InputError(f"{name} must hold real numbers, got dtype {a.dtype}", path)
    return a


def _shaped(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...], single: bool, path: Path):
    """``arrays[name]`` with exactly ``shape`` ((N, T, ...)); (T, ...) also for a single sequence."""
    a = np.asarray(arrays[name])
    if single and a.shape == shape[1:]:
        a = a[None]
    if a.shape != shape:
        wanted = f"{shape}" + (f" or {shape[1:]}" if single else "")
        raise InputError(f"{name} must have shape {wanted} to match the stamps, got {a.shape}", path)
    return a


def _to_dataset(arrays: dict[str, np.ndarray], path: Path) -> SequenceDataset:
    stamps = _numeric(arrays["stamps"], "stamps", path)
    single = stamps.ndim == 3
    if single:
        stamps = stamps[None]
    if stamps.ndim != 4 or stamps.shape[-2:] != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(
            f"stamps must have shape (N, T, {STAMP_SIZE}, {STAMP_SIZE}) or (T, {STAMP_SIZE}, {STAMP_SIZE}), "
            f"got {np.shape(arrays['stamps'])}",
            path,
        )
    n, t = stamps.shape[:2]
    if n == 0 or t == 0:
        raise InputError(f"no sequences or no epochs: stamps have shape {np.shape(arrays['stamps'])}", path)
    mjd = _numeric(_shaped(arrays, "mjd", (n, t), single, path), "mjd", path)
    conditions = _shaped(arrays, "conditions", (n, t, len(CONDITION_NAMES)), single, path)
    conditions = _numeric(conditions, f"conditions ({', '.join(CONDITION_NAMES)})", path)
    mask = np.ones((n, t), bool)
    if "mask" in arrays:
        mask = _shaped(arrays, "mask", (n, t), single, path)
        if mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
            raise InputError(f"mask must hold booleans (or 0/1), got dtype {mask.dtype}", path)
        mask = mask.astype(bool)
    ids = np.asarray(arrays.get("ids", [f"{path.stem}_{i}" for i in range(n)]))
    if ids.shape != (n,) or ids.dtype.kind not in "USiu":
        raise InputError(f"ids must hold {n} names, got shape {ids.shape} of dtype {ids.dtype}", path)
    try:
        return SequenceDataset(
            stamps=stamps,
            mjd=mjd,
            conditions=conditions,
            mask=mask,
            labels=np.zeros(n, dtype=np.int16),
            ids=ids.astype(str),
            metadata={"source": str(path), "labels": "unknown"},
        )
    except InputError as exc:  # e.g. non-finite pixels: name the file
        raise InputError(exc.problem, path) from None


def classify(ds: SequenceDataset, model: str | Path | None = None) -> list[dict[str, Any]]:
    """Per sequence: its id and, per valid step, the epochs seen, the MJD and the class probabilities."""
    from rcnnlib.rcnn.evaluate import predict_sequences
    from rcnnlib.rcnn.model import load_model

    net, config, _ = load_model(model)
    inputs, proba = predict_sequences(net, config, ds)
    out = []
    k = config.preprocess.epochs_per_step
    for i in range(len(ds)):
        steps: list[dict[str, Any]] = []
        for j in np.flatnonzero(inputs.step_mask[i]):
            epoch = int(inputs.last_epoch[i, j])
            steps.append(
                {
                    "step": int(j),
                    "epochs_seen": int(j) + k,
                    "mjd": float(ds.mjd[i, epoch]),
                    "probabilities": dict(
                        zip(config.class_names, proba[i, j].round(4).tolist(), strict=True)
                    ),
                }
            )
        best = max(steps[-1]["probabilities"].items(), key=lambda kv: kv[1])[0] if steps else None
        out.append({"id": str(ds.ids[i]), "class": best, "steps": steps})
    return out


def format_table(results: list[dict[str, Any]], class_names: tuple[str, ...]) -> str:
    lines = []
    for r in results:
        lines.append(
            f"# {r['id']}: {r['class'] or 'too few good epochs (needs 3 with seeing below the cut)'}"
        )
        lines.append(f"{'step':>4} {'epochs':>6} {'mjd':>11} " + " ".join(f"{c:>6}" for c in class_names))
        for s in r["steps"]:
            probs = " ".join(f"{s['probabilities'][c]:>6.3f}" for c in class_names)
            lines.append(f"{s['step']:>4} {s['epochs_seen']:>6} {s['mjd']:>11.4f} {probs}")
    return "\n".join(lines)
