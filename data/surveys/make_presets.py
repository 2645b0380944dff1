"""Write the ``ztf`` and ``lsst`` survey presets from published figures.

Unlike ``hits2015`` (measured conditions), these epochs are synthetic: a fixed
seed draws a realistic cadence and per-epoch seeing, sky and airmass around the
published medians, and the 5-sigma depth follows from them with the usual
point-source signal-to-noise formula. Usage: ``python data/surveys/make_presets.py``.

Figures (g band):
- ZTF: Bellm et al. 2019 (PASP 131, 018002), Masci et al. 2019 (PASP 131, 018003):
  1.01"/px, gain 6.2 e-/ADU, read noise 8 e-, 30 s exposures, median g image
  quality ~2.1", zero point ~26.3 mag for the DN of a 30 s exposure, dark g sky
  ~21.3 mag/arcsec^2, public-survey cadence of ~2-3 nights, saturation ~50,000 DN.
- LSST: Ivezic et al. 2019 (ApJ 873, 111), Table 2: 0.2"/px, 30 s visits, g sky
  22.26 mag/arcsec^2, 1 e-/s at g = 28.51, median g seeing ~0.87", m5(g) ~24.8;
  gain ~1.7 e-/ADU, read noise <= 9 e-, full well ~100,000 e-; visits in pairs
  ~30 min apart, a field revisited every ~3 nights in the wide-fast-deep survey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).parent

PRESETS = {
    "ztf": {
        "camera": {"name": "ZTF", "pixel_scale": 1.01, "gain": 6.2, "read_noise": 8.0, "saturation": 50000},
        "exp_time": 30.0,
        "zero_point": 26.3 - 2.5 * np.log10(30.0),  # ADU/s
        "sky_mag": 21.3,
        "seeing": 2.1,
        "night_step": 2.5,  # mean nights between visits
        "second_visit": 0.5,  # probability of a second g visit the same night
        "n_nights": 60,
        "fields": 5,
        "max_seeing": 3.5,
        "description": "ZTF public survey, g band (synthetic epochs, published figures).",
        "references": ["Bellm et al. 2019, PASP 131, 018002", "Masci et al. 2019, PASP 131, 018003"],
    },
    "lsst": {
        "camera": {
            "name": "LSSTCam",
            "pixel_scale": 0.2,
            "gain": 1.7,
            "read_noise": 9.0,
            "saturation": 58000,
        },
        "exp_time": 30.0,
        "zero_point": 28.51 - 2.5 * np.log10(1.7),  # ADU/s from 1 e-/s at g = 28.51
        "sky_mag": 22.26,
        "seeing": 0.87,
        "night_step": 3.0,
        "second_visit": 0.8,
        "n_nights": 70,
        "fields": 5,
        "max_seeing": 2.0,
        "description": "Rubin Observatory LSST wide-fast-deep, g band (synthetic epochs, published figures).",
        "references": ["Ivezic et al. 2019, ApJ 873, 111"],
    },
}


def limit_mag_5sigma(zp, sky_adu, seeing, pixel_scale, gain, read_noise, exp_time):
    """5-sigma point-source depth: F^2 / (F + B) = 25 with B the noise in an optimal PSF aperture."""
    n_eff = 2.266 * (seeing / pixel_scale) ** 2
    background = n_eff * (sky_adu * gain + read_noise**2)  # e-^2
    flux_e = (25 + np.sqrt(625 + 100 * background)) / 2
    return zp - 2.5 * np.log10(flux_e / gain / exp_time)


def make_epochs(spec: dict, rng: np.random.Generator) -> pd.DataFrame:
    cam = spec["camera"]
    rows = []
    for field in range(1, spec["fields"] + 1):
        night = rng.uniform(0, spec["night_step"])
        while night < spec["n_nights"]:
            visits = 1 + (rng.random() < spec["second_visit"])
            start = 0.05 + rng.uniform(0, 0.2)
            for v in range(visits):
                mjd = 60000.0 + np.floor(night) + start + v * 0.021  # ~30 min apart
                airmass = 1.0 + rng.gamma(2.0, 0.1)
                seeing = spec["seeing"] * np.exp(rng.normal(0, 0.18)) * airmass**0.6
                sky_mag = spec["sky_mag"] + rng.normal(0, 0.25) - 0.3 * (airmass - 1)
                sky = (
                    10 ** (-0.4 * (sky_mag - spec["zero_point"])) * cam["pixel_scale"] ** 2 * spec["exp_time"]
                )
                zp = spec["zero_point"] - 0.2 * (airmass - 1) + rng.normal(0, 0.02)
                rows.append(
                    {
                        "field": f"{field:02d}",
                        "epoch": f"{len([r for r in rows if r['field'] == f'{field:02d}']) + 1:03d}",
                        "mjd": mjd,
                        "seeing": seeing,
                        "sky": sky,
                        "zero_point": zp,
                        "limit_mag_5sigma": limit_mag_5sigma(
                            zp,
                            sky,
                            seeing,
                            cam["pixel_scale"],
                            cam["gain"],
                            cam["read_noise"],
                            spec["exp_time"],
                        ),
                        "exp_time": spec["exp_time"],
                        "airmass": airmass,
                    }
                )
            night += rng.exponential(spec["night_step"] - 1) + 1
    return pd.DataFrame(rows)


def main() -> None:
    import yaml

    for name, spec in PRESETS.items():
        table = make_epochs(spec, np.random.default_rng(20190718))
        header = f"# {name}: synthetic g-band epochs from published figures; written by make_presets.py\n"
        (HERE / f"{name}.csv").write_text(header + table.to_csv(index=False, float_format="%.6f"))
        block = {
            "name": name,
            "band": "g",
            "description": spec["description"],
            "references": spec["references"],
            "max_seeing": spec["max_seeing"],
            "camera": spec["camera"],
            "epochs": f"{name}.csv",
        }
        (HERE / f"{name}.yaml").write_text(
            "# Written by make_presets.py: edit there.\n" + yaml.safe_dump(block, sort_keys=False)
        )
        print(
            f"{name}: {len(table)} epochs in {table['field'].nunique()} fields, "
            f"median m5 {table['limit_mag_5sigma'].median():.2f}, median sky {table['sky'].median():.0f} ADU"
        )


if __name__ == "__main__":
    main()
