"""Render noisy 21x21 HiTS-like stamps for every epoch of many objects at once.

Per epoch (Carrasco-Davis et al. 2019, "Images"): source counts
``t_exp * 10 ** (-0.4 (m - ZP))`` spread by a Moffat PSF of the epoch's seeing,
plus the sky level, plus (for some objects) a host galaxy -- exponential disc
plus de Vaucouleurs bulge convolved with the same PSF -- then ``x gain``,
photon noise, Gaussian read noise, ``/ gain``, clip to ``[0, saturation]`` (again after
registration resampling, so the clip is always the last step).

Speed is the design constraint (about 50,000 stamps/s on one core): everything
is vectorised over objects and epochs in float32, the PSF is evaluated once per
pixel (with an analytic pixel-integration correction, see
:func:`rcnnlib.psf.moffat_coefficients`), host galaxies are drawn once per
object and convolved with each epoch's PSF by batched real FFTs, and Gaussian
deviates come from a 16-bit inverse-CDF table.

Noise model: photon noise is Gaussian with variance equal to the mean (in
electrons) wherever the mean is at least :data:`POISSON_EXACT_BELOW` electrons
(the Gaussian approximation of a Poisson law with mean >= 50 is accurate to
a few per cent in its skewness, far below what a 21x21 stamp can show; HiTS
sky alone is ~450 e-), and exact Poisson below.

Per-epoch flux offsets (:func:`epoch_mag_offsets`): real HiTS non-variable stars
measured by aperture photometry share a ~0.03 mag offset per field and epoch that
grows with seeing (a PSF halo / scattered light beyond the stamp, and transparency
or zero-point errors); the simulator scales every source of a field-epoch by the
same calibrated factor (``data/psf/hits_epoch_offsets.csv``).

Registration resampling (:func:`registration_resample`): real supernova stamps were
cut from images interpolated onto the template grid, which correlates neighbouring
pixels' noise; a random fraction (:data:`REGISTRATION_FRACTION`) of the sequences of
*every* class is resampled the same way, so the texture is realism and augmentation,
never a class label.

Geometry: pixel centres at integer ``(x, y)`` = (column, row); the transient
sits at ``(10 + offset + jitter)`` on both axes of a 21x21 stamp. Epochs whose
seeing or exposure time is not positive and finite (padding) render as zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft as sfft
from scipy.special import gammaincinv, j0, ndtri

from rcnnlib.dataset import COLUMN
from rcnnlib.paths import data_dir
from rcnnlib.psf import moffat_coefficients, moffat_eval, psf_shape_model

_F32 = np.float32

ASTROMETRIC_JITTER_PX = 0.3
"""Per-epoch Gaussian astrometric error (pixels, per axis), as in the authors' configuration."""
POISSON_EXACT_BELOW = 50.0
"""Mean electrons below which photon noise is drawn from the exact Poisson law."""
PAD = 32
"""Side of the padded grid on which host galaxies are convolved with the PSF."""
HOST_MAG_RANGE = (19.0, 23.0)
HOST_DISC_RE_RANGE = (0.5, 2.0)  # arcsec, half-light radius of the disc
HOST_BULGE_RE_RANGE = (0.3, 1.0)  # arcsec, capped at the disc's
HOST_AXIS_RATIO_RANGE = (0.3, 1.0)
CHUNK_STAMPS = 512  # stamps per block: keeps temporaries in cache
REGISTRATION_FRACTION = 0.5
"""Share of simulated sequences (every class) resampled as if registered to a template grid."""
REGISTRATION_KERNEL = "lanczos3"
"""Interpolation kernel of the registration resampling: ``lanczos3`` or ``bilinear``."""
EPOCH_OFFSET_TABLE = data_dir() / "psf" / "hits_epoch_offsets.csv"
"""Calibrated per-field-epoch magnitude offsets vs seeing (``data/psf/make_epoch_offsets.py``)."""

_B1 = float(gammaincinv(2.0, 0.5))  # Sersic b_n: half the light inside r_e
_B4 = float(gammaincinv(8.0, 0.5))


@dataclass
class RenderedStamps:
    """Simulated stamps and the nuisance parameters drawn to make them.

    ``stamps``: (n, T, size, size) float32 ADU, sky included (like raw real cut-outs).
    ``params``: per-object (n,) or per-epoch (n, T) arrays; host entries are NaN
    where an object has no host. Offsets are in pixels, radii in arcsec, angles
    in radians.
    """

    stamps: np.ndarray
    params: dict[str, np.ndarray]


@lru_cache(maxsize=1)
def _normal_table() -> np.ndarray:
    """Quantiles of N(0, 1) at the centres of 65,536 equal-probability bins."""
    return ndtri((np.arange(65536) + 0.5) / 65536).astype(_F32)


def standard_normal_f32(rng: np.random.Generator, n: int) -> np.ndarray:
    """n float32 N(0, 1) deviates, ~3x faster than ``rng.standard_normal``.

    16 random bits index an inverse-CDF table; the two outermost bins (|z| > 4.17)
    are redrawn exactly from the tail so the distribution is not truncated.
    """
    idx = rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n]
    z = np.take(_normal_table(), idx)  # twice as fast as _normal_table()[idx]
    tail = np.flatnonzero((idx == 0) | (idx == 65535))
    if tail.size:
        u = rng.random(tail.size) / 65536.0
        z[tail] = np.where(idx[tail] == 0, ndtri(u), -ndtri(u))
    return z


def add_noise(electrons: np.ndarray, read_noise: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photon plus read noise on an array of mean electrons (m, ...) float32, in place.

    ``read_noise`` (m,) in electrons. Gaussian photon noise above
    :data:`POISSON_EXACT_BELOW` electrons, exact Poisson below.
    """
    shape = electrons.shape
    flat = electrons.reshape(shape[0], -1)
    rn = np.asarray(read_noise, dtype=_F32)[:, None]
    z = standard_normal_f32(rng, flat.size).reshape(flat.shape)
    low = flat < POISSON_EXACT_BELOW
    exact = np.flatnonzero(low) if low.any() else None
    sigma = flat + rn * rn
    np.sqrt(sigma, out=sigma)
    sigma *= z
    if exact is not None:
        rows = exact // flat.shape[1]
        lam = np.maximum(flat.ravel()[exact], 0.0)
        poisson = rng.poisson(lam).astype(_F32) + rn[rows, 0] * z.ravel()[exact]
    flat += sigma
    if exact is not None:
        flat.ravel()[exact] = poisson
    return electrons


def _draw_hosts(k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Host galaxy parameters for k objects (see the HOST_* ranges)."""
    re_disc = rng.uniform(*HOST_DISC_RE_RANGE, k)
    re_bulge = np.minimum(rng.uniform(*HOST_BULGE_RE_RANGE, k), re_disc)
    bulge_fraction = rng.uniform(0.0, 1.0, k)
    q = rng.uniform(*HOST_AXIS_RATIO_RANGE, k)
    angle = rng.uniform(0.0, np.pi, k)
    # transient offset from the host centre: uniform over the light-weighted half-light ellipse
    r_half = bulge_fraction * re_bulge + (1.0 - bulge_fraction) * re_disc
    rad, phi = np.sqrt(rng.uniform(0.0, 1.0, k)) * r_half, rng.uniform(0.0, 2 * np.pi, k)
    u, v = rad * np.cos(phi), rad * q * np.sin(phi)
    return {
        "host_mag": rng.uniform(*HOST_MAG_RANGE, k),
        "host_re_disc": re_disc,
        "host_re_bulge": re_bulge,
        "host_bulge_fraction": bulge_fraction,
        "host_axis_ratio": q,
        "host_angle": angle,
        "host_offset_x": u * np.cos(angle) - v * np.sin(angle),  # arcsec, transient minus host centre
        "host_offset_y": u * np.sin(angle) + v * np.cos(angle),
    }


@lru_cache(maxsize=1)
def _bulge_ft_table() -> tuple[np.ndarray, np.ndarray]:
    """Normalised 2-D Fourier transform of a de Vaucouleurs profile (r_e = 1) vs sqrt(frequency).

    A numerical Hankel transform, tabulated once; the cusp makes it steep at low
    frequency, hence the sqrt(s) abscissa.
    """
    x = np.linspace(0.0, 200.0**0.25, 4001)[1:]  # r = x**4 resolves the cusp
    r, dr = x**4, 4.0 * x**3 * (x[1] - x[0])
    weight = np.exp(-_B4 * x) * 2.0 * np.pi * r * dr
    t = np.linspace(0.0, np.sqrt(20.0), 600)
    ft = j0(2.0 * np.pi * (t * t)[:, None] * r[None]) @ weight
    return t.astype(_F32), (ft / ft[0]).astype(_F32)


def host_transforms(hosts: dict[str, np.ndarray], pixel_scale: float) -> np.ndarray:
    """Unit-flux host galaxies as rfft2 transforms on the PAD x PAD grid, (k, PAD, PAD//2+1) complex64.

    Built directly in Fourier space (analytic exponential disc, tabulated
    de Vaucouleurs bulge, pixel-box sinc, phase shift to the host centre), so the
    cuspy bulge is pixel-integrated exactly and no real-space rendering or
    forward FFT is needed. The grid is periodic around the transient: a
    circular convolution with a PSF centred on the transient puts the host at
    ``transient - offset``; light beyond the 8.6 arcsec grid wraps around (a
    per-cent-level excess at the stamp edge for the largest hosts).
    """
    fy = np.fft.fftfreq(PAD).astype(_F32)[None, :, None]  # cycles / pixel
    fx = np.fft.rfftfreq(PAD).astype(_F32)[None, None, :]
    col = lambda v: np.asarray(v, dtype=_F32)[:, None, None]  # noqa: E731
    c, s = col(np.cos(hosts["host_angle"])), col(np.sin(hosts["host_angle"]))
    q = col(hosts["host_axis_ratio"])
    ku = fx * c + fy * s  # along the major axis
    kv = (fy * c - fx * s) * q
    k2 = ku * ku + kv * kv
    h = col(hosts["host_re_disc"] / pixel_scale / _B1)  # exponential scale length, px
    disc = (1.0 + (2.0 * np.pi) ** 2 * h * h * k2) ** _F32(-1.5)
    table_t, table_ft = _bulge_ft_table()
    re_b = col(hosts["host_re_bulge"] / pixel_scale)
    bulge = np.interp(np.sqrt(np.sqrt(k2) * re_b), table_t, table_ft).astype(_F32)
    frac = col(hosts["host_bulge_fraction"])
    amp = (1.0 - frac) * disc + frac * bulge
    amp *= np.sinc(fy) * np.sinc(fx)  # pixel integration
    x0 = col(-hosts["host_offset_x"] / pixel_scale)  # host centre relative to the transient, px
    y0 = col(-hosts["host_offset_y"] / pixel_scale)
    phase = np.exp(-2j * np.pi * (fx * x0)).astype(np.complex64) * np.exp(-2j * np.pi * (fy * y0)).astype(
        np.complex64
    )
    return (amp * phase).astype(np.complex64)


def host_images(hosts: dict[str, np.ndarray], pixel_scale: float) -> np.ndarray:
    """Unit-flux, pixel-integrated host galaxies on the periodic PAD x PAD grid (FFT order), float32."""
    return sfft.irfft2(host_transforms(hosts, pixel_scale), s=(PAD, PAD)).astype(_F32)


@lru_cache(maxsize=2)
def _epoch_offset_table(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    table = Path(path)
    if not table.exists():
        return None
    df = pd.read_csv(table, comment="#")
    seeing, offset, scatter = (df[c].to_numpy(float) for c in ("seeing", "offset", "scatter"))
    return seeing, offset, scatter


def epoch_mag_offsets(seeing: np.ndarray, rng: np.random.Generator, path: str | None = None) -> np.ndarray:
    """Magnitude offsets shared by every source of one field-epoch, one per epoch of ``seeing``.

    ``offset(seeing) + scatter(seeing) * N(0, 1)``, both linearly interpolated in the
    calibration table (default :data:`EPOCH_OFFSET_TABLE`; zeros when it is missing).
    Calibrated as the real-minus-simulated per-epoch median offset of bright real
    non-variable stars (``data/psf/make_epoch_offsets.py``): the part of the shared
    per-epoch scatter the Moffat PSF does not produce by itself. It grows with seeing
    and is larger in a 2 x seeing aperture than in a 1 x seeing one, so most of it is
    light scattered into a wide halo outside the aperture (not rendered: the flux is
    simply removed), the rest transparency / zero-point errors. Positive = fainter.
    The caller draws ``rng`` from a generator keyed by (seed, field) so every object
    of a field-epoch gets the same offset whatever the sharding.
    """
    seeing = np.asarray(seeing, dtype=np.float64)
    z = rng.standard_normal(seeing.shape)
    table = _epoch_offset_table(str(path or EPOCH_OFFSET_TABLE))
    if table is None:
        return np.zeros(seeing.shape)
    x, offset, scatter = table
    s = np.where(np.isfinite(seeing), seeing, x[0])
    return np.interp(s, x, offset) + np.interp(s, x, scatter) * z


def _interp_matrices(shift: np.ndarray, size: int, kernel: str) -> np.ndarray:
    """(m, size, size) float32 matrices ``W`` with ``(W @ v)[i] = sum_j w(j - i - shift) v[j]``.

    Rows are normalised to unit sum (flux conserving; at the stamp edge the taps
    outside the stamp are dropped and the rest renormalised).
    """
    taps = np.arange(-3, 4)  # both kernels vanish beyond |d| = 3
    d = taps[None, :] - shift[:, None]  # (m, 7) kernel arguments, 1-D: cheap
    if kernel == "bilinear":
        w = np.clip(1.0 - np.abs(d), 0.0, None)
    elif kernel == "lanczos3":
        w = np.where(np.abs(d) < 3.0, np.sinc(d) * np.sinc(d / 3.0), 0.0)
    else:
        raise ValueError(f"unknown registration kernel {kernel!r}")
    w = w.astype(_F32)
    out = np.zeros((len(shift), size, size), dtype=_F32)
    rows = np.arange(size)
    for k, tap in enumerate(taps):  # the band: out[:, i, i + tap] = w[:, k]
        i = rows[(rows + tap >= 0) & (rows + tap < size)]
        out[:, i, i + tap] = w[:, k, None]
    out /= out.sum(axis=2, keepdims=True)
    return out


SHIFT_STEPS = 64
"""Registration shifts are quantised to 1/64 px, so the interpolation matrices are tabulated once."""


@lru_cache(maxsize=4)
def _interp_table(size: int, kernel: str) -> np.ndarray:
    """Interpolation matrices for shifts ``k / SHIFT_STEPS - 0.5``, k = 0 .. SHIFT_STEPS, float32."""
    return _interp_matrices(np.arange(SHIFT_STEPS + 1) / SHIFT_STEPS - 0.5, size, kernel)


def registration_resample(
    stamps: np.ndarray, shift_x: np.ndarray, shift_y: np.ndarray, kernel: str = REGISTRATION_KERNEL
) -> np.ndarray:
    """Resample stamps (m, S, S) at positions shifted by ``(shift_x, shift_y)`` px, separably.

    What difference-imaging registration does to an exposure: the image is
    interpolated onto the template's pixel grid, here a sub-pixel translation
    (the rotation and scale changes over a 21-pixel stamp are negligible). Noise
    becomes correlated between neighbours and its per-pixel level drops (Lanczos-3
    with a uniform shift: ~0.89 of the white level, neighbour correlation ~0.12;
    bilinear: ~0.65 and ~0.28). Two batched 21x21 matrix products per stamp; shifts
    are rounded to 1/:data:`SHIFT_STEPS` px (tabulated matrices; an astrometric
    error of < 0.008 px).
    """
    table = _interp_table(stamps.shape[-1], kernel)
    qy = np.rint((np.asarray(shift_y) + 0.5) * SHIFT_STEPS).astype(np.intp)
    qx = np.rint((np.asarray(shift_x) + 0.5) * SHIFT_STEPS).astype(np.intp)
    return np.matmul(np.matmul(table[qy], stamps), table[qx].transpose(0, 2, 1))


def _clip(stamps: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """Clip stamps (m, S, S) to ``[0, saturation]`` per stamp, in place (np.clip with arrays: 3x slower)."""
    np.maximum(stamps, _F32(0.0), out=stamps)
    np.minimum(stamps, saturation[:, None, None], out=stamps)
    return stamps


@dataclass(frozen=True)
class _Epochs:
    """Per (object, epoch) observing figures, float64 (n, T); padding epochs made harmless."""

    valid: np.ndarray  # seeing, exposure time and zero point usable: the epoch renders
    seeing: np.ndarray  # arcsec, 1 where not valid
    sky: np.ndarray  # ADU, 0 where not valid
    zero_point: np.ndarray
    exp_time: np.ndarray

    @classmethod
    def of(cls, conditions: np.ndarray) -> _Epochs:
        cond = np.asarray(conditions, dtype=np.float64)
        seeing, sky, zp, exp_time = (
            cond[..., COLUMN[c]] for c in ("seeing", "sky", "zero_point", "exp_time")
        )
        valid = np.isfinite(seeing) & (seeing > 0) & np.isfinite(exp_time) & (exp_time > 0) & np.isfinite(zp)
        return cls(
            valid, np.where(valid, seeing, 1.0), np.where(valid, np.nan_to_num(sky), 0.0), zp, exp_time
        )

    def counts(self, mag: np.ndarray, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Counts ``t_exp 10**(-0.4 (m - ZP))`` of objects ``rows``; 0 where no source or no epoch."""
        with np.errstate(over="ignore", invalid="ignore"):
            flux = self.exp_time[rows] * 10.0 ** (-0.4 * (mag - self.zero_point[rows]))
        return np.where(self.valid[rows] & np.isfinite(mag), flux, 0.0)


@dataclass(frozen=True)
class _PsfGrid:
    """Every stamp's PSF, flattened over (object, epoch): centre (px) and Moffat coefficients."""

    pos_x: np.ndarray
    pos_y: np.ndarray
    cxx: np.ndarray
    cxy2: np.ndarray
    cyy: np.ndarray
    beta: np.ndarray
    log_norm: np.ndarray

    def render(
        self, i: np.ndarray, log_scale: np.ndarray, size: int, pad: int = 0, out: np.ndarray | None = None
    ) -> np.ndarray:
        """PSFs of stamps ``i`` times ``exp(log_scale)`` on a ``size`` grid, centres shifted by ``pad`` px."""
        x, y = self.pos_x[i], self.pos_y[i]
        return moffat_eval(
            x + pad if pad else x,
            y + pad if pad else y,
            self.cxx[i],
            self.cxy2[i],
            self.cyy[i],
            self.beta[i],
            log_scale,
            size,
            out=out,
        )


def _draw_nuisance(
    rng: np.random.Generator, epochs: _Epochs, pixel_scale: float, n_hosts: int, size: int
) -> tuple[dict[str, np.ndarray], _PsfGrid, dict[str, np.ndarray]]:
    """Positions, PSF shapes and host galaxies, drawn in a fixed order (it defines the random stream).

    Returns the per-object and per-epoch parameters (for ``RenderedStamps.params``),
    the PSF of every stamp, and the hosts' parameters.
    """
    n, t = epochs.seeing.shape
    offset = rng.uniform(-0.5, 0.5, (n, 2))
    jitter = rng.normal(0.0, ASTROMETRIC_JITTER_PX, (n, t, 2))
    ratio, beta, ell, angle = psf_shape_model().sample(rng, (n, t), seeing=epochs.seeing)
    fwhm = epochs.seeing / pixel_scale * ratio
    hosts = _draw_hosts(n_hosts, rng)
    cxx, cxy2, cyy, log_norm = moffat_coefficients(fwhm, beta, ell, angle)
    centre = 0.5 * (size - 1)
    pos_x = centre + offset[:, None, 0] + jitter[..., 0]
    pos_y = centre + offset[:, None, 1] + jitter[..., 1]
    params = {
        "offset_x": offset[:, 0],
        "offset_y": offset[:, 1],
        "jitter_x": jitter[..., 0],
        "jitter_y": jitter[..., 1],
        "psf_fwhm": fwhm,
        "psf_beta": beta,
        "psf_ellipticity": ell,
        "psf_angle": angle,
    }
    psf = _PsfGrid(*(a.ravel() for a in (pos_x, pos_y, cxx, cxy2, cyy, beta, log_norm)))
    return params, psf, hosts


def _contiguous(i: np.ndarray) -> slice | None:
    """``i`` (sorted, distinct) as a slice when it is a run of consecutive indices."""
    if i.size and i[-1] - i[0] + 1 == i.size:
        return slice(int(i[0]), int(i[-1]) + 1)
    return None


def _add_lone_sources(flat: np.ndarray, flux: np.ndarray, has_host: np.ndarray, psf: _PsfGrid) -> None:
    """Point sources of objects without a host: the PSF scaled by the flux, straight into the stamps."""
    lone = np.flatnonzero(((flux > 0) & ~has_host[:, None]).ravel())
    with np.errstate(divide="ignore"):
        log_scale = psf.log_norm + np.log(flux.ravel())
    size = flat.shape[-1]
    for lo in range(0, lone.size, CHUNK_STAMPS):
        i = lone[lo : lo + CHUNK_STAMPS]
        run = _contiguous(i)
        if run is not None:  # most chunks: every epoch of consecutive objects, no copy
            psf.render(i, log_scale[i], size, out=flat[run])
        else:
            flat[i] = psf.render(i, log_scale[i], size)


def _add_hosted_sources(
    flat: np.ndarray,
    flux: np.ndarray,
    has_host: np.ndarray,
    hosts: dict[str, np.ndarray],
    psf: _PsfGrid,
    epochs: _Epochs,
    dm: np.ndarray,
    pixel_scale: float,
) -> None:
    """Objects on a host: unit PSF on the padded grid, the host by FFT convolution, plus the source."""
    host_idx = np.flatnonzero(has_host)
    if not host_idx.size:
        return
    t = flux.shape[1]
    size = flat.shape[-1]
    galaxies = host_transforms(hosts, pixel_scale)
    host_counts = epochs.counts(hosts["host_mag"][:, None] + dm[host_idx], host_idx)
    pad = (PAD - size) // 2
    crop = (slice(None), slice(None), slice(pad, pad + size), slice(pad, pad + size))
    per_chunk = max(1, CHUNK_STAMPS // (2 * t))
    for lo in range(0, host_idx.size, per_chunk):
        h = host_idx[lo : lo + per_chunk]
        k = h.size
        sel = (h[:, None] * t + np.arange(t)[None]).ravel()
        unit_psf = psf.render(sel, psf.log_norm[sel], PAD, pad).reshape(k, t, PAD, PAD)
        psf_ft = sfft.rfft2(unit_psf)
        psf_ft *= galaxies[lo : lo + k, None]
        conv = sfft.irfft2(psf_ft, s=(PAD, PAD))[crop]
        conv *= host_counts[lo : lo + k].astype(_F32)[:, :, None, None]
        conv += unit_psf[crop] * flux[h].astype(_F32)[:, :, None, None]
        flat[sel] = conv.reshape(k * t, size, size)


def _registration_shifts(rng: np.random.Generator, resample: np.ndarray | None, n: int, t: int) -> np.ndarray:
    """(n, T, 2) registration shifts in [-0.5, 0.5) px of the chosen objects, NaN for the others."""
    shift = np.full((n, t, 2), np.nan)
    if resample is not None and np.any(resample):
        chosen = np.flatnonzero(np.asarray(resample, dtype=bool))
        shift[chosen] = rng.uniform(-0.5, 0.5, (chosen.size, t, 2))
    return shift


def _expose(
    flat: np.ndarray,
    sky: np.ndarray,
    gain: np.ndarray,
    read_noise: np.ndarray,
    saturation: np.ndarray,
    shift: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Sky, gain, noise, back to ADU, clip and registration resampling of stamps (m, S, S), in place.

    Per-stamp figures are (m,) arrays, ``shift`` (m, 2) (NaN: not resampled). Block by
    block, so the noise's random stream is defined by :data:`CHUNK_STAMPS`.
    """
    sky32, g, rn, sat = (np.asarray(a, dtype=_F32) for a in (sky, gain, read_noise, saturation))
    to_resample = np.isfinite(shift[:, 0])
    for lo in range(0, len(flat), CHUNK_STAMPS):
        block = flat[lo : lo + CHUNK_STAMPS]
        sl = slice(lo, lo + len(block))
        block += sky32[sl, None, None]
        block *= g[sl, None, None]
        add_noise(block, rn[sl], rng)
        block *= (1.0 / g[sl])[:, None, None]
        _clip(block, sat[sl])  # the detector saturates before any processing

        # registration resampling of the chosen objects' raw (clipped) exposures, while in cache
        i = np.flatnonzero(to_resample[sl])
        if i.size:
            # Lanczos ringing around a saturated star overshoots the saturation level and,
            # where the sky is faint (ZTF, LSST), dips below zero: clip again, last, so every
            # stamp lies in [0, saturation] (and digitises to unsigned integers)
            block[i] = _clip(registration_resample(block[i], shift[lo + i, 0], shift[lo + i, 1]), sat[lo + i])


def render_stamps(
    mag: np.ndarray,
    conditions: np.ndarray,
    pixel_scale: float,
    gain: np.ndarray,
    read_noise: np.ndarray,
    saturation: np.ndarray,
    has_host: np.ndarray,
    rng: np.random.Generator,
    size: int = 21,
    epoch_mag_offset: np.ndarray | None = None,
    resample: np.ndarray | None = None,
) -> RenderedStamps:
    """Simulate raw stamps (n, T, size, size) for n objects observed at T epochs.

    Args:
        mag: (n, T) source magnitudes; ``np.inf`` where there is no source.
        conditions: (n, T, 6) columns of :data:`rcnnlib.dataset.CONDITION_NAMES`
            (seeing arcsec, sky ADU, zero point, 5-sigma depth, exposure s, airmass).
        pixel_scale: arcsec / pixel.
        gain, read_noise, saturation: (n,) detector figures (e-/ADU, e-, ADU) of
            each object's CCD.
        has_host: (n,) bool, which objects sit on a host galaxy.
        rng: the only source of randomness (same generator state, same output).
        epoch_mag_offset: optional (T,) or (n, T) magnitudes added to every source
            (and host) of an epoch (:func:`epoch_mag_offsets`); not to the sky.
        resample: optional (n,) bool, objects whose stamps are resampled as if
            registered (:func:`registration_resample`, uniform sub-pixel shifts in
            [-0.5, 0.5) px per axis and epoch, recorded in ``params``).
    """
    mag = np.asarray(mag, dtype=np.float64)
    n, t = mag.shape
    has_host = np.asarray(has_host, dtype=bool)
    per_stamp = lambda v: np.repeat(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)), t)  # noqa: E731
    epochs = _Epochs.of(conditions)
    params, psf, hosts = _draw_nuisance(rng, epochs, pixel_scale, int(has_host.sum()), size)
    dm = np.zeros((n, t)) if epoch_mag_offset is None else np.broadcast_to(epoch_mag_offset, (n, t))
    dm = np.where(np.isfinite(dm), dm, 0.0)
    flux = epochs.counts(mag + dm)

    stamps = np.zeros((n, t, size, size), dtype=_F32)
    flat = stamps.reshape(n * t, size, size)
    _add_lone_sources(flat, flux, has_host, psf)
    _add_hosted_sources(flat, flux, has_host, hosts, psf, epochs, dm, pixel_scale)
    shift = _registration_shifts(rng, resample, n, t)
    _expose(
        flat,
        epochs.sky.ravel(),
        per_stamp(gain),
        per_stamp(read_noise),
        per_stamp(saturation),
        shift.reshape(n * t, 2),
        rng,
    )
    stamps[~epochs.valid] = 0.0

    params.update(
        source_counts=flux,
        epoch_mag_offset=dm,
        resampled=np.zeros(n, bool) if resample is None else np.asarray(resample, dtype=bool),
        registration_shift_x=shift[..., 0],
        registration_shift_y=shift[..., 1],
    )
    host_idx = np.flatnonzero(has_host)
    for key, values in hosts.items():
        full = np.full(n, np.nan)
        full[host_idx] = values
        params[key] = full
    return RenderedStamps(stamps=stamps, params=params)
