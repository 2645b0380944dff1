"""Point-spread functions: a fast elliptical Moffat model and a FWHM measurement.

The paper drew PSFs from 2,312 real HiTS PSFs; we substitute an elliptical
Moffat profile whose FWHM follows the epoch's seeing and whose shape (Moffat
``beta``, ellipticity) varies from epoch to epoch. The spread of those shape
parameters can be calibrated on bright real stars (``data/psf/hits_psf_shape.csv``,
made by ``data/psf/make_psf_shape.py`` with :func:`fit_moffat`).

Conventions: pixel ``(row, col) = (y, x)``; pixel centres at integer
coordinates; the stamp centre is ``((size - 1) / 2, (size - 1) / 2)``; FWHM in
pixels is the geometric mean of the major- and minor-axis FWHM; ``angle`` is the
major-axis position angle in radians from +x towards +y.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from rcnnlib.paths import data_dir
from rcnnlib.stamps import border_ring

PSF_SHAPE_TABLE = data_dir() / "psf" / "hits_psf_shape.csv"
"""Measured per-star-epoch PSF shapes of real HiTS stars (see ``data/psf/make_psf_shape.py``)."""

_F32 = np.float32
SEEING_NEIGHBOURS = 300
"""Rows of nearest seeing among which a PSF shape is drawn (5 % of the 5,362-row table: a
seeing window of about +-0.02 arcsec at the median, wider in the sparse tails)."""


def moffat_alpha2(fwhm: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Squared Moffat scale ``alpha**2`` of a profile with the given FWHM and ``beta``."""
    fwhm = np.asarray(fwhm, dtype=np.float64)
    return (0.5 * fwhm) ** 2 / (2.0 ** (1.0 / np.asarray(beta, dtype=np.float64)) - 1.0)


def moffat_coefficients(
    fwhm: np.ndarray,
    beta: np.ndarray,
    ellipticity: np.ndarray,
    angle: np.ndarray,
    pixel_correction: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quadratic-form coefficients ``(cxx, cxy2, cyy, log_norm)`` of elliptical Moffats.

    The profile is ``norm * (1 + cxx dx^2 + cxy2 dx dy + cyy dy^2) ** -beta`` with
    ``norm`` making the integral over the plane 1. ``pixel_correction`` widens
    ``alpha^2`` along both axes by ``beta / 6``: this matches the core curvature of
    the profile convolved with a unit pixel box (variance +1/12 per axis), so a
    single evaluation at the pixel centre approximates the pixel-integrated PSF
    without 3x3 sub-sampling (9x the cost).
    """
    beta = np.asarray(beta, dtype=np.float64)
    a2 = moffat_alpha2(fwhm, beta)
    q = 1.0 - np.asarray(ellipticity, dtype=np.float64)  # minor / major axis ratio
    a_maj2, a_min2 = a2 / q, a2 * q
    if pixel_correction:
        a_maj2 = a_maj2 + beta / 6.0
        a_min2 = a_min2 + beta / 6.0
    c, s = np.cos(angle), np.sin(angle)
    cxx = c * c / a_maj2 + s * s / a_min2
    cyy = s * s / a_maj2 + c * c / a_min2
    cxy2 = 2.0 * c * s * (1.0 / a_maj2 - 1.0 / a_min2)
    log_norm = np.log((beta - 1.0) / (np.pi * np.sqrt(a_maj2 * a_min2)))
    return cxx, cxy2, cyy, log_norm


def moffat_eval(
    x0: np.ndarray,
    y0: np.ndarray,
    cxx: np.ndarray,
    cxy2: np.ndarray,
    cyy: np.ndarray,
    beta: np.ndarray,
    log_scale: np.ndarray,
    size: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Evaluate ``exp(log_scale) * (1 + q(dx, dy)) ** -beta`` at pixel centres, (m, size, size) float32.

    Vectorised over the m stamps with 7 full-array float32 passes (one log, one
    exp); this is the hot loop of the simulator, hence the in-place operations.
    """
    m = len(x0)
    grid = np.arange(size, dtype=_F32)
    dx = grid[None, None, :] - np.asarray(x0, dtype=_F32)[:, None, None]  # (m, 1, S)
    dy = grid[None, :, None] - np.asarray(y0, dtype=_F32)[:, None, None]  # (m, S, 1)
    if out is None:
        out = np.empty((m, size, size), dtype=_F32)
    col = lambda v: np.asarray(v, dtype=_F32)[:, None, None]  # noqa: E731
    np.multiply(col(cxy2) * dy, dx, out=out)
    out += col(cxx) * dx * dx
    out += col(cyy) * dy * dy + _F32(1.0)
    np.log(out, out=out)
    out *= -col(beta)
    out += col(log_scale)
    np.exp(out, out=out)
    return out


def moffat_psf(
    fwhm_px: np.ndarray,
    beta: np.ndarray,
    ellipticity: np.ndarray | float,
    angle: np.ndarray | float,
    dx: np.ndarray,
    dy: np.ndarray,
    size: int = 21,
    oversample: int = 1,
) -> np.ndarray:
    """Pixel-integrated elliptical Moffat PSFs, (m, size, size) float32.

    Normalised so that the flux over the infinite plane is 1: the stamp sum is
    the enclosed fraction (< 1). ``dx, dy`` offset the centre from the stamp
    centre in pixels. ``oversample=1`` (fast, used by the simulator) integrates
    over the pixel approximately (see :func:`moffat_coefficients`);
    ``oversample=n`` averages an n x n grid of sub-pixel samples instead.
    """
    args = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(a, dtype=np.float64)) for a in (fwhm_px, beta, ellipticity, angle, dx, dy))
    )
    fwhm_px, beta, ellipticity, angle, dx, dy = args
    centre = 0.5 * (size - 1)
    cxx, cxy2, cyy, log_norm = moffat_coefficients(fwhm_px, beta, ellipticity, angle, oversample == 1)
    if oversample == 1:
        return moffat_eval(centre + dx, centre + dy, cxx, cxy2, cyy, beta, log_norm, size)
    out = np.zeros((len(dx), size, size), dtype=np.float64)
    subs = (np.arange(oversample) + 0.5) / oversample - 0.5
    for sy in subs:
        for sx in subs:
            out += moffat_eval(centre + dx - sx, centre + dy - sy, cxx, cxy2, cyy, beta, log_norm, size)
    return (out / oversample**2).astype(_F32)


# --------------------------------------------------------------- shape model
@dataclass(frozen=True)
class PsfShapeModel:
    """Joint distribution of (FWHM / seeing, beta, ellipticity), sampled row-wise.

    From the measured real-star table when present, else a documented default
    (beta ~ U(2.5, 4.5), ellipticity ~ U(0, 0.1), FWHM equal to the seeing).
    """

    fwhm_ratio: np.ndarray
    beta: np.ndarray
    ellipticity: np.ndarray
    source: str
    seeing: np.ndarray | None = None
    """Catalogue seeing (arcsec) of each row, sorted ascending; enables seeing-conditional draws."""
    ratio_trend: np.ndarray | None = None
    """Quadratic in seeing (``np.polyval`` order) through the FWHM / seeing ratio."""
    ratio_star_share: float = 0.0
    """Share of the ratio's scatter about the trend that belongs to the star, not the epoch.

    A real star's PSF width, at given seeing, keeps an offset from epoch to epoch
    (its CCD, its place on it, its colour): on the HiTS table the scatter of the
    ratio within one star is 0.024, against 0.041 over all rows, so two thirds of
    the variance is per star. Drawing every epoch independently from all rows
    would make a constant star's centre pixel jitter ~1.5x more than on the real
    stars after PSF matching (0.046 against 0.032), which the network reads as
    variability. :meth:`sample` keeps that share fixed along the last axis.
    """

    def sample(
        self, rng: np.random.Generator, shape: tuple[int, ...], seeing: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """Draw ``(fwhm_ratio, beta, ellipticity, angle)`` arrays of ``shape``.

        With ``seeing`` (broadcastable to ``shape``) and a table that records each
        row's seeing, rows are drawn among the :data:`SEEING_NEIGHBOURS` rows of
        nearest seeing, so the shape follows the seeing as on the real stars: the
        fitted FWHM / seeing ratio of real HiTS stars rises from ~0.78 at 1 arcsec
        to ~0.84 at 1.8 arcsec (the catalogue seeing is not exactly the PSF's FWHM,
        and bad-seeing PSFs have relatively broader cores). Uniform draws over all
        rows flatten that trend. Outside the table's seeing range the nearest rows
        are used.
        """
        if self.source == "default":
            ratio = np.ones(shape)
            beta = rng.uniform(2.5, 4.5, shape)
            ell = rng.uniform(0.0, 0.1, shape)
        else:
            rows = self._rows(rng, shape, seeing)
            ratio, beta, ell = self.fwhm_ratio[rows], self.beta[rows], self.ellipticity[rows]
            if self.ratio_star_share > 0 and len(shape) >= 2 and self.seeing is not None:
                ratio = self._with_star_offsets(rows, rng, shape, seeing)
        angle = rng.uniform(0.0, np.pi, shape)
        return ratio, beta, ell, angle

    def _rows(
        self, rng: np.random.Generator, shape: tuple[int, ...], seeing: np.ndarray | None
    ) -> np.ndarray:
        """Table rows of ``shape``: uniform, or among the nearest-seeing rows where ``seeing`` is given."""
        n_rows = len(self.beta)
        if seeing is None or self.seeing is None:
            return rng.integers(0, n_rows, shape)
        width = min(SEEING_NEIGHBOURS, n_rows)
        centre = np.searchsorted(self.seeing, np.broadcast_to(seeing, shape))
        centre = np.clip(centre, width // 2, n_rows - (width - width // 2))
        return centre - width // 2 + rng.integers(0, width, shape)

    def _trend(self, rows: np.ndarray) -> np.ndarray:
        """The FWHM/seeing trend at these rows' seeing (only for a table that has both columns)."""
        if self.seeing is None or self.ratio_trend is None:
            raise ValueError("this PSF shape table has no seeing column to follow")
        return np.polyval(self.ratio_trend, self.seeing[rows])

    def _residual(self, rows: np.ndarray) -> np.ndarray:
        return self.fwhm_ratio[rows] - self._trend(rows)

    def _with_star_offsets(
        self,
        rows: np.ndarray,
        rng: np.random.Generator,
        shape: tuple[int, ...],
        seeing: np.ndarray | None,
    ) -> np.ndarray:
        """Trend + sqrt(share) x one star's residual (per object) + sqrt(1 - share) x the epoch's.

        The star's residual comes from a row near the object's median seeing, since the
        scatter about the trend is larger in good seeing.
        """
        share = self.ratio_star_share
        typical = (
            None if seeing is None else np.median(np.broadcast_to(seeing, shape), axis=-1, keepdims=True)
        )
        star_rows = self._rows(rng, (*shape[:-1], 1), typical)
        trend = self._trend(rows)
        return (
            trend + np.sqrt(1.0 - share) * self._residual(rows) + np.sqrt(share) * self._residual(star_rows)
        )


def star_share(residual: np.ndarray, star: np.ndarray) -> float:
    """Fraction of the variance of ``residual`` between stars (1 - within-star over total variance)."""
    residual = np.asarray(residual, dtype=np.float64)
    _, index = np.unique(star, return_inverse=True)
    means = np.bincount(index, residual) / np.bincount(index)
    within = np.mean((residual - means[index]) ** 2)
    return float(np.clip(1.0 - within / residual.var(), 0.0, 1.0))


@lru_cache(maxsize=4)
def psf_shape_model(path: str | None = None) -> PsfShapeModel:
    """The PSF shape model: the measured table at ``path`` (default :data:`PSF_SHAPE_TABLE`) if it exists."""
    table = Path(path) if path else PSF_SHAPE_TABLE
    if not table.exists():
        empty = np.empty(0)
        return PsfShapeModel(empty, empty, empty, "default")
    df = pd.read_csv(table, comment="#")
    if "seeing" in df:
        df = df[np.isfinite(df["seeing"])].sort_values("seeing", kind="stable")
    seeing = df["seeing"].to_numpy(float) if "seeing" in df else None
    ratio = df["fwhm_ratio"].to_numpy(float)
    trend, share = None, 0.0
    star_columns = ["field", "ccd", "x", "y"]
    if seeing is not None and len(df) > 3 and set(star_columns) <= set(df):
        trend = np.polyfit(seeing, ratio, 2)
        star = df.groupby(star_columns, sort=False).ngroup().to_numpy()
        share = star_share(ratio - np.polyval(trend, seeing), star)
    return PsfShapeModel(
        ratio,
        df["beta"].to_numpy(float),
        df["ellipticity"].to_numpy(float),
        str(table),
        seeing,
        trend,
        share,
    )


# --------------------------------------------------------------- measurement
def _moffat_start(data: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """First guess per stamp: ring median, peak, light-weighted centre, FWHM from the area above half peak."""
    m, sy, sx = data.shape
    bkg = np.median(border_ring(data), axis=1)  # plain median: fits are of isolated bright stars
    resid = data - bkg[:, None, None]
    cy, cx = (sy - 1) // 2, (sx - 1) // 2
    core = resid[:, cy - 3 : cy + 4, cx - 3 : cx + 4]
    amp = np.maximum(core.reshape(m, -1).max(axis=1), 1e-6)
    w = np.clip(resid, 0, None) * ((yy - cy) ** 2 + (xx - cx) ** 2 < 36)
    wsum = np.maximum(w.sum(axis=(1, 2)), 1e-12)
    x0 = (w * xx).sum(axis=(1, 2)) / wsum
    y0 = (w * yy).sum(axis=(1, 2)) / wsum
    n_half = np.maximum((resid > 0.5 * amp[:, None, None]).sum(axis=(1, 2)), 1)
    fwhm0 = 2.0 * np.sqrt(n_half / np.pi)
    beta0 = np.full(m, 3.0)
    c0 = 1.0 / moffat_alpha2(fwhm0, beta0)
    return np.stack([bkg, amp, x0, y0, c0, c0, np.zeros(m), beta0], axis=1)


def _moffat_model(p: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Model pixels and the terms the Jacobian needs (profile, w, dx, dy).

    Parameters per stamp: background, amplitude, x0, y0, cxx, cyy, cxy, beta, with
    w = 1 + cxx dx^2 + cyy dy^2 + 2 cxy dx dy and model = background + amplitude w^-beta.
    """
    dx, dy = x[None] - p[:, 2:3], y[None] - p[:, 3:4]
    w = 1.0 + p[:, 4:5] * dx * dx + p[:, 5:6] * dy * dy + 2.0 * p[:, 6:7] * dx * dy
    w = np.maximum(w, 1e-9)
    prof = np.exp(-p[:, 7:8] * np.log(w))
    return p[:, 0:1] + p[:, 1:2] * prof, prof, w, dx, dy


def _moffat_jacobian(
    p: np.ndarray, prof: np.ndarray, w: np.ndarray, dx: np.ndarray, dy: np.ndarray
) -> np.ndarray:
    """d model / d parameter, shape (stamps, pixels, 8), analytic."""
    a, beta = p[:, 1:2], p[:, 7:8]
    g = -a * beta * prof / w  # d model / d w
    columns = [
        np.ones_like(prof),
        prof,
        g * -(2 * p[:, 4:5] * dx + 2 * p[:, 6:7] * dy),
        g * -(2 * p[:, 5:6] * dy + 2 * p[:, 6:7] * dx),
        g * dx * dx,
        g * dy * dy,
        g * 2 * dx * dy,
        -a * prof * np.log(w),
    ]
    return np.stack(columns, axis=2)


def _levenberg_marquardt(
    p: np.ndarray, flat: np.ndarray, x: np.ndarray, y: np.ndarray, n_iter: int
) -> tuple[np.ndarray, np.ndarray]:
    """Damped Gauss-Newton on all stamps at once; a step is kept only where it is sane and lowers the cost."""

    def cost(q: np.ndarray) -> np.ndarray:
        return ((flat - _moffat_model(q, x, y)[0]) ** 2).sum(axis=1)

    current = cost(p)
    lam = np.full(len(p), 1e-2)
    for _ in range(n_iter):
        mod, prof, w, dx, dy = _moffat_model(p, x, y)
        jac = _moffat_jacobian(p, prof, w, dx, dy)
        jtj = np.einsum("mpi,mpj->mij", jac, jac)
        jtr = np.einsum("mpi,mp->mi", jac, flat - mod)
        diag = np.einsum("mii->mi", jtj)
        step = np.linalg.solve(jtj + (lam[:, None] * diag + 1e-12)[:, :, None] * np.eye(8), jtr[:, :, None])
        trial = p + step[:, :, 0]
        trial[:, 7] = np.clip(trial[:, 7], 1.01, 20.0)
        sane = (trial[:, 4] > 0) & (trial[:, 5] > 0) & (trial[:, 4] * trial[:, 5] > trial[:, 6] ** 2)
        sane &= (trial[:, 1] > 0) & np.isfinite(trial).all(axis=1)
        new = np.where(sane, cost(np.where(sane[:, None], trial, p)), np.inf)
        better = new < current
        p = np.where(better[:, None], trial, p)
        current = np.where(better, new, current)
        lam = np.where(better, lam / 3.0, lam * 4.0)
    return p, current


def fit_moffat(stamps: np.ndarray, n_iter: int = 40) -> dict[str, np.ndarray]:
    """Fit an elliptical Moffat plus constant background to each stamp (vectorised Levenberg-Marquardt).

    Used identically on real and simulated stamps, so their PSF statistics are
    compared with the same (pixel-sampled) estimator. Returns per-stamp arrays:
    ``fwhm`` (px, geometric mean of the axes), ``beta``, ``ellipticity``
    (1 - minor/major), ``angle``, ``x0``, ``y0``, ``amplitude``, ``background``,
    ``rms`` (residual rms) and ``ok`` (finite, sane fit).
    """
    data = np.asarray(stamps, dtype=np.float64)
    if data.ndim == 2:
        data = data[None]
    m, sy, sx = data.shape
    yy, xx = np.mgrid[0:sy, 0:sx].astype(np.float64)
    flat = data.reshape(m, -1)
    p, cost = _levenberg_marquardt(_moffat_start(data, yy, xx), flat, xx.ravel(), yy.ravel(), n_iter)
    cxx, cyy, cxy, beta = p[:, 4], p[:, 5], p[:, 6], p[:, 7]
    det = cxx * cyy - cxy**2
    half_tr = 0.5 * (cxx + cyy)
    disc = np.sqrt(np.maximum(half_tr**2 - det, 0.0))
    lam_max, lam_min = half_tr + disc, half_tr - disc
    with np.errstate(invalid="ignore", divide="ignore"):
        fwhm = 2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0) * det**-0.25
        ell = 1.0 - np.sqrt(lam_min / lam_max)
    angle = np.mod(0.5 * np.arctan2(-2 * cxy, cyy - cxx), np.pi)  # major axis = smallest eigenvalue
    ok = np.isfinite(fwhm) & (det > 0) & (fwhm > 0.5) & (fwhm < 3 * sx)
    return {
        "fwhm": fwhm,
        "beta": beta,
        "ellipticity": ell,
        "angle": angle,
        "x0": p[:, 2],
        "y0": p[:, 3],
        "amplitude": p[:, 1],
        "background": p[:, 0],
        "rms": np.sqrt(cost / flat.shape[1]),
        "ok": ok,
    }


def measure_fwhm(stamps: np.ndarray) -> np.ndarray:
    """FWHM in pixels of the (brightest, central) source in each stamp, from :func:`fit_moffat`."""
    return fit_moffat(stamps)["fwhm"]


fwhm_of_stamp = measure_fwhm
