"""Survey conditions: a camera and the observing conditions of every field at every epoch.

A :class:`Survey` is what drives the simulator: light curves are sampled at its
epochs and images are rendered with its seeing, sky, zero point and camera.
Presets are committed tables under ``data/surveys/`` (``hits2015`` is derived
from the real HiTS ``Blind15A_info`` records by ``data/surveys/make_hits2015.py``),
so the package works without the real data. A user survey is a YAML file with a
``camera`` block and an ``epochs`` CSV (see :meth:`Survey.from_yaml`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from rcnnlib.dataset import CONDITION_NAMES
from rcnnlib.errors import InputError
from rcnnlib.observations import condition_problem
from rcnnlib.paths import data_dir
from rcnnlib.stamps import night_of

EPOCH_COLUMNS: tuple[str, ...] = ("field", "mjd", *CONDITION_NAMES)
"""Columns every epochs table must have (extra columns are kept)."""

PRESETS: tuple[str, ...] = ("hits2015", "ztf", "lsst")


_CAMERA_KEYS = ("name", "pixel_scale", "gain", "read_noise", "saturation")


def _positive(value: Any, field_name: str, source: str | Path | None) -> float:
    """``value`` as a float when it is a finite positive number (YAML ``true`` or ``"1"`` are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InputError(f"{field_name} must be a finite positive number, got {value!r}", source)
    return float(value)


@dataclass(frozen=True)
class CCD:
    """Camera figures of one detector."""

    name: str
    gain: float  # e-/ADU
    read_noise: float  # e-
    saturation: float  # ADU


@dataclass(frozen=True)
class Camera:
    """Detector figures: a typical CCD plus, where known, per-CCD values."""

    name: str
    pixel_scale: float  # arcsec / pixel
    gain: float  # e-/ADU
    read_noise: float  # e-
    saturation: float  # ADU
    ccds: tuple[CCD, ...] = ()

    @classmethod
    def from_dict(cls, block: Any, source: str | Path | None = None) -> Camera:
        """A camera from its YAML block; every figure must be a finite positive number."""
        if not isinstance(block, dict):
            raise InputError(f"'camera' must be a mapping of {', '.join(_CAMERA_KEYS)}", source)
        missing = [k for k in _CAMERA_KEYS if k not in block]
        if missing:
            raise InputError(f"camera block lacks {', '.join(missing)}", source)
        values = {k: _positive(block[k], f"camera {k}", source) for k in _CAMERA_KEYS[1:]}
        ccd_blocks = block.get("ccds") or {}
        if not isinstance(ccd_blocks, dict):
            raise InputError(
                "camera ccds must be a mapping: CCD name -> gain, read_noise, saturation", source
            )
        ccds = []
        for name, ccd in ccd_blocks.items():
            keys = _CAMERA_KEYS[2:]
            if not isinstance(ccd, dict) or set(ccd) != set(keys):
                raise InputError(f"camera ccds {name}: expected exactly {', '.join(keys)}", source)
            ccds.append(
                CCD(str(name), **{k: _positive(ccd[k], f"camera ccds {name} {k}", source) for k in keys})
            )
        return cls(name=str(block["name"]), ccds=tuple(ccds), **values)

    def detector_table(self) -> pd.DataFrame:
        """Per-CCD gain, read noise and saturation (the typical CCD when none are listed)."""
        ccds = self.ccds or (CCD("typical", self.gain, self.read_noise, self.saturation),)
        return pd.DataFrame([c.__dict__ for c in ccds])


@cache
def preset_camera(name: str) -> Camera:
    """The camera block of a preset, without reading its epochs table (cheap, cached)."""
    if name not in PRESETS:
        raise InputError(f"unknown survey {name!r}; presets are {', '.join(PRESETS)}")
    path = data_dir() / "surveys" / f"{name}.yaml"
    return Camera.from_dict(yaml.safe_load(path.read_text())["camera"], path)


@dataclass
class Survey:
    """A camera plus one row per (field, epoch) of observing conditions.

    ``epochs`` has the columns of :data:`EPOCH_COLUMNS`; ``max_seeing`` (arcsec)
    is the quality cut: epochs with worse seeing are not used, as in the paper.
    """

    name: str
    band: str
    camera: Camera
    epochs: pd.DataFrame
    max_seeing: float = 2.0
    description: str = ""
    references: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check the epochs table: every column present, every value a finite number in its range."""
        missing = [c for c in EPOCH_COLUMNS if c not in self.epochs.columns]
        if missing:
            raise InputError(f"survey {self.name!r}: epochs table lacks columns {', '.join(missing)}")
        if self.epochs.empty:
            raise InputError(f"survey {self.name!r}: epochs table has no rows")
        if isinstance(self.max_seeing, bool) or not 0 < self.max_seeing < math.inf:
            raise InputError(f"survey {self.name!r}: max_seeing must be a positive number of arcsec")
        self.epochs = self.epochs.reset_index(drop=True)
        for column in EPOCH_COLUMNS[1:]:
            values = pd.to_numeric(self.epochs[column], errors="coerce").astype(float)
            bad = ~np.isfinite(values.to_numpy())
            if bad.any():
                row = int(np.argmax(bad))
                raise InputError(
                    f"survey {self.name!r}: epochs column {column!r} row {row + 1}: "
                    f"{self.epochs[column].iloc[row]!r} is not a finite number"
                )
            self.epochs[column] = values
        problem = condition_problem(self.epochs[list(CONDITION_NAMES)].to_numpy(float), allow_nan=False)
        if problem is not None:
            raise InputError(f"survey {self.name!r}: epochs row {problem[0][0] + 1}: {problem[1]}")
        if not (self.epochs["seeing"] < self.max_seeing).any():
            raise InputError(
                f"survey {self.name!r}: no epoch has seeing below max_seeing = {self.max_seeing}"
            )
        self.epochs = self.epochs.sort_values(["field", "mjd"], kind="stable").reset_index(drop=True)
        self.epochs["field"] = self.epochs["field"].astype(str)

    # ----------------------------------------------------------------- views
    @property
    def fields(self) -> list[str]:
        return sorted(self.epochs["field"].unique())

    def usable_epochs(self, field_name: str | None = None) -> pd.DataFrame:
        """Epochs passing the seeing cut, optionally of one field, in time order."""
        table = self.epochs[self.epochs["seeing"] < self.max_seeing]
        if field_name is not None:
            table = table[table["field"] == str(field_name)]
            if table.empty:
                raise InputError(f"survey {self.name!r} has no usable epochs in field {field_name!r}")
        return table.reset_index(drop=True)

    def field_conditions(self, field_name: str) -> tuple[np.ndarray, np.ndarray]:
        """MJDs (T,) and conditions (T, len(CONDITION_NAMES)) of one field's usable epochs."""
        table = self.usable_epochs(field_name)
        return table["mjd"].to_numpy(float), table[list(CONDITION_NAMES)].to_numpy(np.float32)

    def summary(self) -> pd.DataFrame:
        """Per-field epoch counts and median conditions, for tables and plots."""
        usable = self.usable_epochs()
        grouped = usable.groupby("field")
        out = grouped[list(CONDITION_NAMES)].median()
        out.insert(0, "n_epochs", grouped.size())
        out.insert(1, "n_nights", grouped["mjd"].apply(lambda m: np.unique(night_of(m)).size))
        out.insert(2, "span_days", grouped["mjd"].apply(lambda m: float(m.max() - m.min())))
        return out

    # --------------------------------------------------------------- loading
    @classmethod
    def preset(cls, name: str) -> Survey:
        """One of :data:`PRESETS`, read from the committed tables."""
        if name not in PRESETS:
            raise InputError(f"unknown survey {name!r}; presets are {', '.join(PRESETS)} (or a YAML file)")
        return cls.from_yaml(data_dir() / "surveys" / f"{name}.yaml")

    @classmethod
    def load(cls, name_or_path: str | Path) -> Survey:
        """A preset name or the path of a survey YAML file."""
        if str(name_or_path) in PRESETS:
            return cls.preset(str(name_or_path))
        path = Path(name_or_path)
        if not path.exists() and path.suffix not in (".yaml", ".yml"):
            raise InputError(
                f"unknown survey {str(name_or_path)!r}; presets are {', '.join(PRESETS)} (or a YAML file)"
            )
        return cls.from_yaml(path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> Survey:
        """Read a survey definition.

        The YAML holds ``name``, ``band``, ``camera`` (``name``, ``pixel_scale``,
        ``gain``, ``read_noise``, ``saturation``, optional ``ccds``), optional
        ``max_seeing``, and ``epochs``: a CSV path relative to the YAML file, or
        an inline list of rows with the columns of :data:`EPOCH_COLUMNS`.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError("no such survey file", path)
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InputError(f"not valid YAML: {exc}".splitlines()[0], path) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"unreadable survey file ({type(exc).__name__}: {exc})", path) from None
        if not isinstance(spec, dict) or "camera" not in spec or "epochs" not in spec:
            raise InputError("a survey file needs 'camera' and 'epochs' entries", path)
        for key in ("name", "band", "description"):
            if key in spec and not isinstance(spec[key], str):
                raise InputError(f"{key!r} must be text, got {spec[key]!r}", path)
        references = spec.get("references", [])
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            raise InputError("'references' must be a list of texts", path)
        max_seeing = spec.get("max_seeing", 2.0)
        if (
            isinstance(max_seeing, bool)
            or not isinstance(max_seeing, int | float)
            or not 0 < max_seeing <= 20
        ):
            raise InputError(f"'max_seeing' must be a number of arcsec in (0, 20], got {max_seeing!r}", path)
        camera = Camera.from_dict(spec["camera"], path)
        epochs_spec, source = spec["epochs"], path
        if isinstance(epochs_spec, str):
            source = path.parent / epochs_spec
            if not source.is_file():
                raise InputError(
                    f"epochs table {source} not found (a CSV path relative to the YAML file)", path
                )
            try:
                epochs = pd.read_csv(source, comment="#", dtype={"field": str})
            except (OSError, ValueError, pd.errors.ParserError) as exc:  # empty, binary or ragged files
                raise InputError(f"unreadable CSV: {exc}".splitlines()[0], source) from None
        elif isinstance(epochs_spec, list) and epochs_spec and all(isinstance(r, dict) for r in epochs_spec):
            epochs = pd.DataFrame(epochs_spec)
        else:
            raise InputError(
                f"'epochs' must be a CSV path or a list of rows with {', '.join(EPOCH_COLUMNS)}", path
            )
        try:
            return cls(
                name=str(spec.get("name", path.stem)),
                band=str(spec.get("band", "g")),
                camera=camera,
                epochs=epochs,
                max_seeing=float(max_seeing),
                description=str(spec.get("description", "")),
                references=list(references),
            )
        except InputError as exc:
            if exc.path is None:
                raise InputError(exc.problem, source) from None
            raise
