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
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.dataset import CONDITION_NAMES, STAMP_SIZE, SequenceDataset, atomic_path
from rcnnlib.errors import InputError


def read_sequences(path: str | Path) -> SequenceDataset:
    """A user's sequences as a :class:`SequenceDataset` (labels are placeholders: 0)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    name = path.name.lower()
    if name.endswith((".h5", ".hdf5")):
        return SequenceDataset.load(path)
    if name.endswith(".npz"):
        arrays = _read_npz(path)
    elif name.endswith((".fits", ".fits.gz", ".fit")):
        arrays = _read_fits(path)
    else:
        raise InputError("unknown format: expected .npz, .h5/.hdf5 or .fits", path)
    return _to_dataset(arrays, path)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"not a readable .npz file ({exc})", path) from None
    for key in ("stamps", "mjd"):
        if key not in arrays:
            raise InputError(f"missing array {key!r} (has: {', '.join(sorted(arrays)) or 'nothing'})", path)
    if "conditions" not in arrays:
        missing = [c for c in CONDITION_NAMES if c not in arrays]
        if missing:
            raise InputError(f"missing 'conditions' or the arrays {', '.join(missing)}", path)
        arrays["conditions"] = np.stack([arrays[c] for c in CONDITION_NAMES], axis=-1)
    return arrays


def _read_fits(path: Path) -> dict[str, np.ndarray]:
    from astropy.io import fits

    try:
        with fits.open(path) as hdul:
            if len(hdul) < 2 or hdul[0].data is None:
                raise InputError("expected a stamp cube in HDU 0 and a conditions table in HDU 1", path)
            cube = np.asarray(hdul[0].data, dtype=np.float32)
            table = hdul[1].data
            columns = {c.lower(): c for c in table.columns.names}
            missing = [c for c in ("mjd", *CONDITION_NAMES) if c not in columns]
            if missing:
                raise InputError(f"the table in HDU 1 lacks column(s) {', '.join(missing)}", path)
            mjd = np.asarray(table[columns["mjd"]], dtype=np.float64)
            conditions = np.stack(
                [np.asarray(table[columns[c]], dtype=np.float32) for c in CONDITION_NAMES], -1
            )
    except OSError as exc:
        raise InputError(f"not a readable FITS file ({exc})", path) from None
    return {"stamps": cube, "mjd": mjd, "conditions": conditions, "ids": np.array([path.stem])}


def _to_dataset(arrays: dict[str, np.ndarray], path: Path) -> SequenceDataset:
    stamps = np.asarray(arrays["stamps"], dtype=np.float32)
    if stamps.ndim == 3:
        stamps = stamps[None]
    if stamps.ndim != 4 or stamps.shape[-2:] != (STAMP_SIZE, STAMP_SIZE):
        raise InputError(f"stamps must be (N, T, {STAMP_SIZE}, {STAMP_SIZE}), got {stamps.shape}", path)
    n, t = stamps.shape[:2]
    mjd = (
        np.asarray(arrays["mjd"], dtype=np.float64).reshape(-1, t)
        if np.size(arrays["mjd"]) == n * t
        else None
    )
    if mjd is None:
        raise InputError(f"mjd must hold {n} x {t} values, got shape {np.shape(arrays['mjd'])}", path)
    conditions = np.asarray(arrays["conditions"], dtype=np.float32)
    if conditions.size != n * t * len(CONDITION_NAMES):
        raise InputError(
            f"conditions must be ({n}, {t}, {len(CONDITION_NAMES)}) = {', '.join(CONDITION_NAMES)}; "
            f"got shape {conditions.shape}",
            path,
        )
    mask = np.asarray(arrays.get("mask", np.ones((n, t), bool)), dtype=bool).reshape(n, t)
    ids = np.asarray(arrays.get("ids", [f"{path.stem}_{i}" for i in range(n)])).astype(str).reshape(-1)
    if ids.size != n:
        raise InputError(f"ids must hold {n} names, got {ids.size}", path)
    return SequenceDataset(
        stamps=stamps,
        mjd=mjd,
        conditions=conditions.reshape(n, t, -1),
        mask=mask,
        labels=np.zeros(n, dtype=np.int16),
        ids=ids,
        metadata={"source": str(path), "labels": "unknown"},
    )


def classify(ds: SequenceDataset, model: str | Path | None = None) -> list[dict[str, Any]]:
    """Per sequence: its id and, per valid step, the epochs seen, the MJD and the class probabilities."""
    from rcnnlib.evaluate import predict_sequences
    from rcnnlib.model import load_model

    net, config, _ = load_model(model)
    inputs, proba = predict_sequences(net, config, ds)
    out = []
    k = config.preprocess.epochs_per_step
    for i in range(len(ds)):
        steps = []
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


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="class probabilities per time step for your own sequences")
    p.add_argument("input", type=Path, help=".npz, .h5/.hdf5 or .fits (see `rcnnlib.classify`)")
    p.add_argument("--model", type=Path, default=None, help="saved model folder (default: the shipped one)")
    p.add_argument("--json", type=Path, default=None, help="write the probabilities here")
    p.set_defaults(func=_cmd_classify)


def _cmd_classify(args: argparse.Namespace) -> int:
    from rcnnlib.classes import CLASS_NAMES

    ds = read_sequences(args.input)
    results = classify(ds, args.model)
    print(format_table(results, CLASS_NAMES), file=sys.stdout)
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
    return 0
