"""From a :class:`~rcnnlib.dataset.SequenceDataset` to the network's input: one function for all data.

Simulated and real sequences go through :func:`prepare` and nothing else, so
the network cannot learn a difference between the two code paths. The steps,
in order (``PreprocessConfig`` holds every number):

1. **Quality mask**: epochs with seeing >= ``max_seeing`` (2 arcsec, as the
   authors) or non-finite pixels are dropped; the good epochs move to the front.
2. **Sky subtraction** with the sky measured on each stamp's border (sigma-
   clipped ring), not the catalogue level: the catalogue is missing for some
   real epochs and is a field-wide figure, the border is local and exists for
   every stamp.
3. **Flux scaling** to a reference zero point and exposure time, so one ADU
   means the same flux at every epoch of every sequence.
4. Optional **augmentation** (training only): dihedral rotations/flips,
   sub-pixel shifts, zero-point and sky errors of the size real data has.
5. **PSF matching**: each epoch is convolved with the Gaussian that takes its
   seeing to ``psf_match_seeing`` (the seeing cut, so every kept epoch can be
   matched). Without it, seeing changes move a constant star's peak pixel by
   ~40 % from epoch to epoch, more than most variability does; after it, by
   ~3 % on real HiTS non-variables (measured, see the training chapter). The
   network still sees images, not light curves: this is the PSF homogenisation
   step of difference imaging, without the subtraction.
6. **Normalisation** ``scale * asinh(flux / softening)``: linear up to moderately
   bright pixels, logarithmic for bright stars, so 14th and 23rd magnitude fit one scale.
7. **Alignment**: the window starts ``epochs_before_detection`` epochs before
   the first significant brightening measured on the stamps (PSF-weighted flux
   above the first epoch's by ``detection_sigma``). The same rule for every
   class and for simulated and real data: it never looks at labels or truth.
   Non-varying sources are not moved.
8. **Relative change** (``difference_channels``): beside each normalised stamp,
   its difference from the window's first epoch divided by that epoch's central
   brightness (plus a floor for faint or absent sources), asinh-stretched. A
   constant star is ~0 there whatever its brightness, a 10 % change looks the
   same at 15th and 21st magnitude, and a new source stands out at any
   brightness; with PSF matching this needs no image subtraction beyond the pixels.
9. **Windows**: ``epochs_per_step`` consecutive epochs stacked as channels per
   time step, sliding by one epoch, up to ``n_steps`` steps, zero-padded, with
   a step mask. Channels: the ``epochs_per_step`` stamps, then (with
   ``difference_channels``) their ``epochs_per_step`` relative changes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.fft

from rcnnlib.dataset import COLUMN, STAMP_SIZE, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.stamps import ring_mean_sky

PIXEL_SCALE = 0.27  # arcsec / pixel (DECam); sets the detection kernel only


@dataclass(frozen=True)
class PreprocessConfig:
    """Every number of the pre-processing; saved with each model so it is applied identically later."""

    max_seeing: float = 2.0  # arcsec; worse epochs are dropped (the authors' cut)
    zero_point_ref: float = 25.0  # mag giving 1 ADU/s after scaling (HiTS median is 25.05)
    exp_time_ref: float = 86.0  # s, the HiTS exposure
    # asinh(flux / softening) * scale: linear (flux-conserving, so seeing changes are learnable as
    # such) up to ~100 ADU a pixel, logarithmic above; 10 ADU made bright constant stars look variable.
    softening: float = 100.0  # ADU at the reference, ~20x the HiTS sky noise per pixel
    scale: float = 4.0
    psf_match_seeing: float | None = 2.0  # arcsec FWHM every epoch is blurred to; None: no matching
    n_steps: int = 20
    epochs_per_step: int = 3
    align_on_detection: bool = True
    detection_sigma: float = 4.5
    epochs_before_detection: int = 3
    difference_channels: bool = True
    relative_floor: float = 10.0  # ADU/pixel at the reference added to the reference's brightness
    relative_scale: float = 0.05  # asinh(change / relative_scale): linear up to a ~5 % change

    @property
    def n_epochs(self) -> int:
        """Epochs needed to fill every step."""
        return self.n_steps + self.epochs_per_step - 1

    @property
    def channels(self) -> int:
        """Channels per time step of the network's input."""
        return self.epochs_per_step * (2 if self.difference_channels else 1)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Augmentation:
    """Perturbations real data has and simulations may lack; applied per sequence (geometry) or epoch."""

    rotate_flip: bool = True  # one of the 8 dihedral transforms per sequence
    shift_px: float = 0.3  # std of a per-epoch sub-pixel shift (registration error), pixels
    zero_point_error: float = 0.03  # mag, std per epoch
    sky_error: float = 0.5  # std of a per-epoch sky offset, in units of that epoch's pixel noise


@dataclass
class ModelInput:
    """What the network sees, and how each step maps back to the dataset's epochs."""

    x: np.ndarray  # (N, n_steps, 21, 21, channels) float32
    step_mask: np.ndarray  # (N, n_steps) bool
    labels: np.ndarray  # (N,) int
    last_epoch: (
        np.ndarray
    )  # (N, n_steps) index into the dataset's epoch axis of each step's newest epoch; -1 if none
    n_good_epochs: np.ndarray  # (N,) epochs left after the quality mask

    def __len__(self) -> int:
        return int(self.labels.shape[0])


# --------------------------------------------------------------------------- per epoch
def flux_scale(conditions: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Factor taking each epoch's ADU to ADU at the reference zero point and exposure time."""
    zp = conditions[..., COLUMN["zero_point"]].astype(np.float64)
    exp_time = conditions[..., COLUMN["exp_time"]].astype(np.float64)
    usable = (exp_time > 0) & np.isfinite(zp)  # padded epochs have zeros; they are masked later
    factor = (
        config.exp_time_ref / np.where(usable, exp_time, 1.0) * 10.0 ** (0.4 * (config.zero_point_ref - zp))
    )
    return np.where(usable, factor, 0.0).astype(np.float32)


def calibrate(
    stamps: np.ndarray,
    conditions: np.ndarray,
    config: PreprocessConfig,
    augmentation: Augmentation | None = None,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sky-subtracted flux at the reference zero point of (..., S, S) stamps, and each stamp's noise.

    Per epoch only, so the streaming classifier calls it on one stamp and gets
    the numbers the batch path gets. Augmentation (zero-point and sky errors)
    needs ``rng``; shifts and geometry transforms are applied by :func:`prepare`
    to the epochs inside the window only, which is cheaper.
    """
    sky, noise = ring_mean_sky(stamps)
    scale = flux_scale(conditions, config)
    flux = (stamps.astype(np.float32) - sky[..., None, None]) * scale[..., None, None]
    noise = noise * scale
    if augmentation is not None:
        if rng is None:
            raise ValueError("augmentation needs a random generator")
        shape = flux.shape[:-2]
        if augmentation.zero_point_error:
            zp_error = rng.normal(0.0, augmentation.zero_point_error, shape).astype(np.float32)
            flux *= (10.0 ** (-0.4 * zp_error))[..., None, None]
        if augmentation.sky_error:
            flux += (rng.normal(0.0, augmentation.sky_error, shape).astype(np.float32) * noise)[
                ..., None, None
            ]
    return flux, noise


def fourier_filter(
    images: np.ndarray, shift: np.ndarray | None = None, blur_sigma: np.ndarray | None = None
) -> np.ndarray:
    """Shift each (..., S, S) image by ``shift[..., (dy, dx)]`` pixels and/or blur it with a Gaussian.

    One FFT for both (band-limited interpolation; periodic boundary, which only
    mixes sky noise across opposite edges of a sky-subtracted stamp). The 2-D
    transfer function is the outer product of two 1-D ones: 32 exponentials per
    image, not 231.
    """
    size = images.shape[-1]
    fy = np.fft.fftfreq(size).astype(np.float32)
    fx = np.fft.rfftfreq(size).astype(np.float32)
    lead = images.shape[:-2]
    gy = np.ones((*lead, fy.size), np.complex64)
    gx = np.ones((*lead, fx.size), np.complex64)
    if shift is not None:
        shift = shift.astype(np.float32)
        gy = gy * np.exp(np.complex64(-2j * np.pi) * shift[..., 0, None] * fy)
        gx = gx * np.exp(np.complex64(-2j * np.pi) * shift[..., 1, None] * fx)
    if blur_sigma is not None:
        var = (2.0 * np.pi**2 * np.asarray(blur_sigma, np.float32) ** 2)[..., None]
        gy = gy * np.exp(-var * fy**2)
        gx = gx * np.exp(-var * fx**2)
    transfer = gy[..., :, None] * gx[..., None, :]
    return scipy.fft.irfft2(scipy.fft.rfft2(images) * transfer, s=images.shape[-2:]).astype(np.float32)


def fourier_shift(images: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift each (..., S, S) image by ``shift[..., (dy, dx)]`` pixels (band-limited interpolation)."""
    return fourier_filter(images, shift=shift)


def matching_sigma(seeing: np.ndarray, config: PreprocessConfig) -> np.ndarray | None:
    """Std (pixels) of the Gaussian taking FWHM ``seeing`` to ``psf_match_seeing``; None: no matching.

    Widths add in quadrature (exact for Gaussians; for the Moffat-like HiTS PSFs
    it leaves ~3 % peak scatter on real constant stars, against ~40 % unmatched).
    Epochs already worse than the target are left as they are.
    """
    if config.psf_match_seeing is None:
        return None
    to_sigma = 1.0 / (PIXEL_SCALE * 2.3548)
    target = config.psf_match_seeing * to_sigma
    own = np.clip(np.nan_to_num(seeing, nan=config.psf_match_seeing), 0.0, config.psf_match_seeing) * to_sigma
    return np.sqrt(np.maximum(target**2 - own**2, 0.0)).astype(np.float32)


def match_psf(flux: np.ndarray, seeing: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Calibrated (..., S, S) stamps blurred to the common seeing ``psf_match_seeing``, epoch by epoch."""
    sigma = matching_sigma(seeing, config)
    return flux if sigma is None else fourier_filter(flux, blur_sigma=sigma)


def normalise(flux: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The network's pixel scale: linear near the noise, logarithmic for bright sources."""
    return (np.arcsinh(flux / np.float32(config.softening)) * np.float32(config.scale)).astype(np.float32)


def reference_level(reference: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """Brightness (ADU/pixel) that changes are measured against: the reference stamp's centre plus a floor."""
    c = STAMP_SIZE // 2
    centre = reference[..., c - 1 : c + 2, c - 1 : c + 2].mean(axis=(-2, -1))
    return (np.maximum(centre, 0.0) + np.float32(config.relative_floor)).astype(np.float32)


def relative_change(
    flux: np.ndarray, reference: np.ndarray, level: np.ndarray, config: PreprocessConfig
) -> np.ndarray:
    """asinh-stretched ``(flux - reference) / level`` of (..., S, S) stamps; ``level`` is (...)."""
    ratio = (flux - reference) / (level[..., None, None] * np.float32(config.relative_scale))
    return np.arcsinh(ratio).astype(np.float32)


def detection_flux(flux: np.ndarray, noise: np.ndarray, seeing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PSF-weighted (Gaussian, each epoch's seeing) flux at the stamp centre and its error, (...)."""
    centre = (STAMP_SIZE - 1) / 2
    yy, xx = np.mgrid[0:STAMP_SIZE, 0:STAMP_SIZE]
    r2 = ((yy - centre) ** 2 + (xx - centre) ** 2).astype(np.float32)
    sigma_px = np.clip(seeing, 0.5, 5.0) / PIXEL_SCALE / 2.3548
    psf = np.exp(-0.5 * r2 / (sigma_px[..., None, None] ** 2)).astype(np.float32)
    psf /= psf.sum(axis=(-2, -1), keepdims=True)
    norm = (psf**2).sum(axis=(-2, -1))
    value = (psf * flux).sum(axis=(-2, -1)) / norm
    return value, noise / np.sqrt(norm)


# --------------------------------------------------------------------------- per sequence
def quality_mask(ds: SequenceDataset, config: PreprocessConfig) -> np.ndarray:
    """Epochs kept: observed, seeing below the cut, finite conditions and pixels."""
    seeing = ds.conditions[..., COLUMN["seeing"]]
    good = ds.mask & (seeing < config.max_seeing) & np.isfinite(ds.conditions).all(-1)
    return good & np.isfinite(ds.stamps).all(axis=(-2, -1))


def detection_start(
    flux: np.ndarray, noise: np.ndarray, seeing: np.ndarray, good: np.ndarray, config: PreprocessConfig
) -> np.ndarray:
    """First epoch of each window: ``epochs_before_detection`` before the first significant brightening.

    ``flux``/``noise``/``seeing``/``good`` are compacted (good epochs first).
    Brightening means PSF flux above the first good epoch's by ``detection_sigma``
    combined errors. Sequences that never brighten start at 0, and every
    sequence keeps at least one full step.
    """
    n = good.shape[0]
    if not config.align_on_detection:
        return np.zeros(n, dtype=np.int64)
    value, error = detection_flux(flux, noise, seeing)
    significance = (value - value[:, :1]) / np.sqrt(error**2 + error[:, :1] ** 2 + 1e-12)
    detected = (significance >= config.detection_sigma) & good
    detected[:, 0] = False
    first = np.where(detected.any(1), detected.argmax(1), 0)
    start = np.maximum(first - config.epochs_before_detection, 0)
    last_start = np.maximum(good.sum(1) - config.epochs_per_step, 0)
    return np.minimum(start, last_start).astype(np.int64)


def prepare(
    ds: SequenceDataset,
    config: PreprocessConfig | None = None,
    augmentation: Augmentation | None = None,
    rng: np.random.Generator | None = None,
) -> ModelInput:
    """The network input of every sequence of ``ds``; see the module docstring for the steps."""
    config = config or PreprocessConfig()
    n, t = ds.mask.shape
    if n == 0:
        raise InputError("no sequences to prepare")
    good = quality_mask(ds, config)
    # compact: good epochs first, in time order (stable sort on "bad")
    order = np.argsort(~good, axis=1, kind="stable")
    if (order == np.arange(t)).all():  # nothing to move (typical of simulations): skip the copies
        good_c, stamps, conditions = good, ds.stamps, ds.conditions
    else:
        good_c = np.take_along_axis(good, order, axis=1)
        stamps = np.take_along_axis(ds.stamps, order[..., None, None], axis=1)
        conditions = np.take_along_axis(ds.conditions, order[..., None], axis=1)
    flux, noise = calibrate(stamps, conditions, config, augmentation, rng)
    flux[~good_c] = 0.0
    start = detection_start(flux, noise, conditions[..., COLUMN["seeing"]], good_c, config)

    k = config.epochs_per_step
    window = start[:, None] + np.arange(config.n_epochs)[None, :]  # (N, n_epochs)
    inside = window < t
    window = np.minimum(window, t - 1)
    epoch_ok = np.take_along_axis(good_c, window, axis=1) & inside
    pixels = np.take_along_axis(flux, window[..., None, None], axis=1)
    shift = None
    if augmentation is not None and augmentation.shift_px:
        shift = rng.normal(0.0, augmentation.shift_px, (*pixels.shape[:2], 2))
    blur = matching_sigma(np.take_along_axis(conditions[..., COLUMN["seeing"]], window, axis=1), config)
    if shift is not None or blur is not None:
        pixels = fourier_filter(pixels, shift=shift, blur_sigma=blur)
    views = [normalise(pixels, config)]
    if config.difference_channels:
        reference = pixels[:, :1]
        views.append(relative_change(pixels, reference, reference_level(reference, config), config))
    pixels = np.concatenate(views, axis=1)  # (N, views * n_epochs, S, S): one geometry for all views
    pixels[~np.tile(epoch_ok, len(views))] = 0.0
    if augmentation is not None and augmentation.rotate_flip:
        pixels = random_dihedral(pixels, rng)
    steps, e = config.n_steps, config.n_epochs
    x = np.stack(
        [pixels[:, v * e + j : v * e + j + steps] for v in range(len(views)) for j in range(k)], axis=-1
    )
    step_mask = np.stack([epoch_ok[:, j : j + steps] for j in range(k)], axis=-1).all(-1)
    x[~step_mask] = 0.0
    source_epoch = np.take_along_axis(order, window, axis=1)[:, k - 1 : k - 1 + steps]
    last_epoch = np.where(step_mask, source_epoch, -1)
    return ModelInput(
        x=np.ascontiguousarray(x, dtype=np.float32),
        step_mask=step_mask,
        labels=ds.labels.astype(np.int64),
        last_epoch=last_epoch,
        n_good_epochs=good.sum(1),
    )


def random_dihedral(pixels: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Apply one of the 8 rotations/reflections of the square to each sequence (N, T, S, S)."""
    if rng is None:
        raise ValueError("augmentation needs a random generator")
    op = rng.integers(8, size=pixels.shape[0])
    out = np.empty_like(pixels)
    for code in range(8):  # 8 vectorised groups, not a loop over sequences
        sel = op == code
        block = pixels[sel]
        if code & 4:
            block = block.swapaxes(-1, -2)
        out[sel] = np.rot90(block, k=code & 3, axes=(-2, -1))
    return out


def psf_matching_scatter(ds: SequenceDataset, config: PreprocessConfig) -> dict[str, np.ndarray]:
    """Per sequence and epoch, the calibrated centre pixel over its median, unmatched and PSF-matched.

    Centre pixel = the central pixel of the calibrated stamp (before the asinh stretch), so the
    figure reads in flux; ``config`` is a :class:`~rcnnlib.rcnn.preprocess.PreprocessConfig`.
    """
    from dataclasses import replace

    good = quality_mask(ds, config)
    flux, _ = calibrate(ds.stamps, ds.conditions, config)
    matched = match_psf(flux, ds.conditions[..., COLUMN["seeing"]], config)
    unmatched = match_psf(flux, ds.conditions[..., COLUMN["seeing"]], replace(config, psf_match_seeing=None))
    out = {}
    for name, images in (("unmatched", unmatched), ("PSF-matched", matched)):
        centre = np.where(good, images[..., STAMP_SIZE // 2, STAMP_SIZE // 2], np.nan)
        out[name] = centre / np.nanmedian(centre, axis=1, keepdims=True)
    out["seeing"] = np.where(good, ds.conditions[..., COLUMN["seeing"]], np.nan)
    return out
