"""What an observed epoch may look like: checked once, where user data enters the package.

A file with a zero exposure time or a zero point of 1e6 mag used to be
classified with confidence (every stamp scaled to zero flux), and a NaN or
decreasing MJD went through unnoticed. The user's sequences (``rcnnlib
classify``), the alert stream (:class:`~rcnnlib.rcnn.stream.StreamingClassifier`) and
survey definitions (:meth:`~rcnnlib.sim.survey.Survey.from_yaml`) are therefore
checked here, with the same rules and messages that name the field and its
allowed values:

- MJDs of observed epochs are finite and strictly increasing within a sequence.
- Each condition, where finite, lies in :data:`CONDITION_RANGES` (wide enough for
  any optical survey, narrow enough to catch wrong units and placeholders).
- A **non-finite condition means "not measured"**: the epoch is kept but not
  used, exactly like an epoch beyond the seeing cut, by the batch classifier
  (:func:`rcnnlib.rcnn.preprocess.quality_mask`) and by the stream alike.
  Surveys, which drive the simulator, need every value (they refuse non-finite ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rcnnlib.dataset import CONDITION_NAMES
from rcnnlib.errors import InputError


@dataclass(frozen=True)
class Range:
    """Allowed values of one condition: ``low`` (excluded when ``low_open``) up to ``high`` included."""

    low: float
    high: float
    low_open: bool
    unit: str

    def contains(self, values: np.ndarray) -> np.ndarray:
        """True where a value is allowed (NaN is not)."""
        above = values > self.low if self.low_open else values >= self.low
        return above & (values <= self.high)

    def __str__(self) -> str:
        high = "inf)" if math.isinf(self.high) else f"{self.high:g}]"
        return f"{'(' if self.low_open else '['}{self.low:g}, {high} {self.unit}".rstrip()


CONDITION_RANGES: dict[str, Range] = {
    "seeing": Range(0.0, 20.0, True, "arcsec"),  # FWHM; the best sites reach 0.4, 20 is no image
    "sky": Range(0.0, math.inf, False, "ADU"),  # sky not subtracted: never negative
    "zero_point": Range(15.0, 40.0, False, "mag"),  # mag giving 1 ADU/s; HiTS 22.6-25.2, LSST ~28
    "limit_mag_5sigma": Range(10.0, 35.0, False, "mag"),  # HiTS 14.5 (cloud) to 25.4
    "exp_time": Range(0.0, 86400.0, True, "s"),  # positive, at most a day
    "airmass": Range(1.0, 10.0, False, ""),  # 1 at the zenith; ~10 at the horizon's edge
}
"""Allowed values of each condition of :data:`~rcnnlib.dataset.CONDITION_NAMES` (where finite)."""

NOT_MEASURED = "or NaN when not measured (that epoch is then not used)"


def allowed_values() -> str:
    """One line listing every condition's allowed values, for error messages and help."""
    return "; ".join(f"{name} in {CONDITION_RANGES[name]}" for name in CONDITION_NAMES)


def condition_problem(
    conditions: np.ndarray, observed: np.ndarray | None = None, allow_nan: bool = True
) -> tuple[tuple, str] | None:
    """The first observed epoch whose finite conditions leave :data:`CONDITION_RANGES`, or None.

    ``conditions`` is (..., len(CONDITION_NAMES)); returns the epoch's index into
    the leading axes and a description such as ``exp_time = 0; allowed: (0, 86400] s``.
    ``allow_nan=False`` (surveys) refuses non-finite values too.
    """
    conditions = np.asarray(conditions, dtype=np.float64)
    lead = conditions.shape[:-1]
    observed = np.ones(lead, dtype=bool) if observed is None else np.asarray(observed, dtype=bool)
    for k, name in enumerate(CONDITION_NAMES):
        values = conditions[..., k]
        allowed = CONDITION_RANGES[name]
        bad = observed & ~allowed.contains(values)
        if allow_nan:
            bad &= np.isfinite(values)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            tail = f", {NOT_MEASURED}" if allow_nan else ""
            return where, f"{name} = {values[where]:g}; allowed: {allowed}{tail}"
    return None


def check_sequences(
    mjd: np.ndarray,
    conditions: np.ndarray,
    mask: np.ndarray,
    ids: Sequence[str] | np.ndarray,
    source: str | Path | None = None,
) -> None:
    """Raise :class:`InputError` unless every observed epoch is plausible (see the module doc).

    ``mjd`` (N, T), ``conditions`` (N, T, len(CONDITION_NAMES)), ``mask`` (N, T):
    unobserved (padding) epochs are not looked at.
    """
    mjd = np.asarray(mjd, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    bad = mask & ~np.isfinite(mjd)
    if bad.any():
        i, t = np.argwhere(bad)[0]
        raise InputError(
            f"mjd of sequence {ids[i]} epoch {t} is {mjd[i, t]}: MJDs must be finite numbers", source
        )
    for i in range(mjd.shape[0]):
        observed = np.flatnonzero(mask[i])
        steps = np.diff(mjd[i, observed])
        if (steps <= 0).any():
            j = int(np.argmax(steps <= 0))
            raise InputError(
                f"mjd of sequence {ids[i]} must increase strictly from epoch to epoch: "
                f"epoch {observed[j + 1]} at {float(mjd[i, observed[j + 1]])} follows "
                f"{float(mjd[i, observed[j]])}",
                source,
            )
    problem = condition_problem(conditions, mask)
    if problem is not None:
        (i, t), text = problem
        raise InputError(f"sequence {ids[i]} epoch {t}: {text}", source)
