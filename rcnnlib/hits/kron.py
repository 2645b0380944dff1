"""The HiTS pipeline's Kron light curves of the real RR Lyrae and eclipsing binaries, next to our photometry.

Chapter 5 validates the stamp photometry (:mod:`rcnnlib.photometry`) against them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.hits.loader import STAR_FOLDERS
from rcnnlib.photometry import flux_to_mag, mag_error, psf_photometry

KRON_MATCH_DAYS = 0.003
"""Largest |MJD| difference (~4 min) between a stamp epoch and the Kron point of the same exposure."""


def kron_comparison(ds: SequenceDataset, hits_dir: Path | str, **kwargs: Any) -> pd.DataFrame:
    """PSF magnitudes of real RR Lyrae / EB next to the HiTS Kron magnitudes of the same exposures.

    Reads ``real_obs/real_stamps/{RRLyrae,EB}/lightcurves/*.dat`` (coordinates
    zero-padded to 4 digits) for every RRL and EB sequence of ``ds`` (as loaded
    by :func:`rcnnlib.hits.loader.load_hits`); epochs are matched by nearest MJD within
    :data:`KRON_MATCH_DAYS`. Columns: ``id``, ``class``, ``mjd``, ``seeing``,
    ``mag_psf``, ``err_psf``, ``mag_kron``, ``err_kron``, ``offset`` (the object's
    median PSF - Kron) and ``dmag`` (PSF - Kron - offset). Zero-point
    conventions may differ by a constant per object; the per-epoch agreement is
    what validates the photometry.
    """
    root = Path(hits_dir)
    phot = psf_photometry(ds, **kwargs)
    mag = flux_to_mag(phot.flux, ds.condition("zero_point"), ds.condition("exp_time"))
    err = mag_error(phot.flux, phot.flux_err)
    seeing = ds.condition("seeing")
    frames = []
    for i in np.flatnonzero(np.isin(ds.labels, [ds.class_names.index(c) for c in ("RRL", "EB")])):
        name = ds.class_names[ds.labels[i]]
        field, ccd, x, y = str(ds.ids[i]).split("_")
        path = (
            root
            / "real_obs"
            / "real_stamps"
            / STAR_FOLDERS[name]
            / "lightcurves"
            / f"Blind15A_{field}_{ccd}_{int(x):04d}_{int(y):04d}_g.dat"
        )
        if not path.exists():
            raise InputError("no Kron light curve for this object", path)
        kron = np.loadtxt(path, ndmin=2)
        if kron.shape[1] < 4:
            raise InputError("expected columns EPOCH MJD MAG_KRON MAGERR_KRON", path)
        nearest = np.abs(ds.mjd[i][:, None] - kron[None, :, 1]).argmin(axis=1)
        ok = (
            ds.mask[i]
            & (np.abs(ds.mjd[i] - kron[nearest, 1]) < KRON_MATCH_DAYS)
            & np.isfinite(mag[i])
            & np.isfinite(kron[nearest, 2])
        )
        if not ok.any():
            continue
        diff = mag[i, ok] - kron[nearest[ok], 2]
        offset = float(np.median(diff))
        frames.append(
            pd.DataFrame(
                {
                    "id": ds.ids[i],
                    "class": name,
                    "mjd": ds.mjd[i, ok],
                    "seeing": seeing[i, ok],
                    "mag_psf": mag[i, ok],
                    "err_psf": err[i, ok],
                    "mag_kron": kron[nearest[ok], 2],
                    "err_kron": kron[nearest[ok], 3],
                    "offset": offset,
                    "dmag": diff - offset,
                }
            )
        )
    columns = ["id", "class", "mjd", "seeing", "mag_psf", "err_psf", "mag_kron", "err_kron", "offset", "dmag"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
