"""Derive ``hits_psf_shape.csv``: PSF shapes of bright real HiTS stars, per star and epoch.

Provenance: the non-variable star stamps ``real_obs/real_stamps/real_constants``
of github.com/rodrigcd/HiTS_simulations at commit 275198b (MIT), joined to the
epoch's seeing of ``data/surveys/hits2015.csv`` (itself from ``Blind15A_info``)
by field and nearest MJD (within 10 minutes). Each stamp is fitted with the
elliptical Moffat of :func:`rcnnlib.psf.fit_moffat`; bright, unsaturated,
well-fitted and well-centred stars are kept. The simulator samples rows jointly:
``fwhm_ratio`` (Moffat FWHM before pixel integration / catalogue seeing),
``beta``, ``ellipticity`` (also before pixel integration); ``fwhm_px`` and
``fitted_ellipticity`` are the fitted, pixel-integrated values.

Usage: ``python data/psf/make_psf_shape.py [HITS_DIR]``. The stamps are Python-2
pickles; they are trusted local files of that repository and are only unpickled
here, never in the library.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rcnnlib.paths import hits_dir
from rcnnlib.psf import fit_moffat, moffat_alpha2
from rcnnlib.sim.survey import preset_camera

HERE = Path(__file__).resolve().parent
PIXEL_SCALE = preset_camera("hits2015").pixel_scale
GAIN = preset_camera("hits2015").gain
MIN_PEAK_SNR = 50.0  # peak / sky noise
MAX_PEAK_ADU = 25000.0  # well below saturation (and the non-linear regime)
MAX_REL_RMS = 0.03  # residual rms / peak: rejects neighbours, cosmics, bad fits
MAX_JOIN_DAYS = 10.0 / 1440.0


def load_stamps(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((root / "real_obs" / "real_stamps" / "real_constants").glob("*_stamp.npy")):
        obj = np.load(path, allow_pickle=True, encoding="latin1").item()  # trusted, see module docstring
        _, field, ccd, x, y, _, _ = path.stem.split("_")
        for stamp, mjd in zip(obj["stamp"], obj["time"]["MJD"], strict=True):
            rows.append(
                {"field": field, "ccd": ccd, "x": int(x), "y": int(y), "mjd": float(mjd), "stamp": stamp}
            )
    return pd.DataFrame(rows)


def main(root: Path) -> None:
    stamps = load_stamps(root)
    conditions = pd.read_csv(HERE.parent / "surveys" / "hits2015.csv", comment="#", dtype={"field": str})
    seeing = np.full(len(stamps), np.nan)
    for field, idx in stamps.groupby("field").groups.items():
        cond = conditions[conditions["field"] == field].sort_values("mjd")
        if cond.empty:
            continue
        mjd = stamps.loc[idx, "mjd"].to_numpy()
        j = np.clip(np.searchsorted(cond["mjd"].to_numpy(), mjd), 1, len(cond) - 1)
        before, after = cond["mjd"].to_numpy()[j - 1], cond["mjd"].to_numpy()[j]
        j = np.where(np.abs(mjd - before) < np.abs(mjd - after), j - 1, j)
        near = np.abs(cond["mjd"].to_numpy()[j] - mjd) < MAX_JOIN_DAYS
        seeing[np.asarray(idx)] = np.where(near, cond["seeing"].to_numpy()[j], np.nan)
    fit = fit_moffat(np.stack(stamps["stamp"].to_numpy()))
    sky_noise = np.sqrt(np.maximum(fit["background"], 1.0) * GAIN) / GAIN
    peak = np.stack(stamps["stamp"].to_numpy()).max(axis=(1, 2))
    keep = (
        fit["ok"]
        & np.isfinite(seeing)
        & (fit["amplitude"] / sky_noise > MIN_PEAK_SNR)
        & (peak < MAX_PEAK_ADU)
        & (fit["rms"] / fit["amplitude"] < MAX_REL_RMS)
        & (np.hypot(fit["x0"] - 10, fit["y0"] - 10) < 2.0)
        & (fit["beta"] > 1.5)
        & (fit["beta"] < 15.0)
        & (fit["ellipticity"] < 0.3)
    )
    # Undo the pixel integration (alpha^2 + beta / 6 per axis, as in rcnnlib.psf.moffat_coefficients),
    # so the simulator, which adds it back, reproduces the fitted sizes.
    beta = fit["beta"]
    a2 = moffat_alpha2(fit["fwhm"], beta)
    q = 1.0 - fit["ellipticity"]
    a_maj2 = np.maximum(a2 / q - beta / 6.0, 0.05)
    a_min2 = np.maximum(a2 * q - beta / 6.0, 0.05)
    fwhm_int = 2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0) * (a_maj2 * a_min2) ** 0.25
    ell_int = 1.0 - np.sqrt(a_min2 / a_maj2)
    table = pd.DataFrame(
        {
            "field": stamps["field"],
            "ccd": stamps["ccd"],
            "x": stamps["x"],
            "y": stamps["y"],
            "mjd": stamps["mjd"].round(6),
            "seeing": seeing,
            "fwhm_px": fit["fwhm"].round(4),
            "fwhm_ratio": (fwhm_int * PIXEL_SCALE / seeing).round(4),
            "beta": beta.round(4),
            "ellipticity": ell_int.round(4),
            "fitted_ellipticity": fit["ellipticity"].round(4),
        }
    )[keep]
    out = HERE / "hits_psf_shape.csv"
    header = (
        "# PSF shapes of bright isolated real HiTS 2015 stars (elliptical Moffat fits,\n"
        "# rcnnlib.psf.fit_moffat); derived by make_psf_shape.py from real_obs/real_stamps/real_constants\n"
        "# of github.com/rodrigcd/HiTS_simulations @275198b (MIT); seeing (arcsec) joined from\n"
        f"# data/surveys/hits2015.csv. {keep.sum()} of {len(keep)} star-epochs kept. fwhm_px: fitted,\n"
        f"# pixels of {PIXEL_SCALE} arcsec. fwhm_ratio, beta, ellipticity: Moffat before pixel\n"
        "# integration (what rcnnlib.sim.images draws from).\n"
    )
    out.write_text(header + table.to_csv(index=False))
    n_stars = stamps.groupby(["field", "ccd", "x", "y"]).ngroups
    print(f"kept {keep.sum()} / {len(keep)} star-epochs from {n_stars} stars")
    print(table[["seeing", "fwhm_ratio", "beta", "ellipticity"]].describe().round(3))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else hits_dir())
