"""Derive ``hits2015.csv`` from the real HiTS ``real_obs/Blind15A_info`` records.

Provenance: github.com/rodrigcd/HiTS_simulations at commit 275198b (MIT), the
per-field, per-epoch g-band conditions of the HiTS 2015 campaign (Blind15A).
Usage: ``python data/surveys/make_hits2015.py [HITS_DIR]`` (default: the
project's real-data folder, see ``rcnnlib.paths.hits_dir``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rcnnlib.paths import hits_dir

COLUMNS = {  # Blind15A_info field -> our column
    "MJD": "mjd",
    "SEEING": "seeing",
    "BACK_LEVEL": "sky",
    "ZP_PS": "zero_point",
    "LIMIT_MAG_EA5": "limit_mag_5sigma",
    "LIMIT_MAG_EA3": "limit_mag_3sigma",
    "EXP_TIME": "exp_time",
    "AIRMASS": "airmass",
}


def read_conditions(root: Path, band: str = "g") -> pd.DataFrame:
    rows = []
    for path in sorted((root / "real_obs" / "Blind15A_info").glob(f"Blind15A_*_*_{band}.npy")):
        record = np.load(path, allow_pickle=False)  # plain structured array, no pickle
        _, field, epoch, _ = path.stem.split("_")
        row = {"field": field, "epoch": epoch}
        names = record.dtype.names
        row.update(
            {ours: float(record[theirs]) if theirs in names else np.nan for theirs, ours in COLUMNS.items()}
        )
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["field", "mjd"]).reset_index(drop=True)
    # 3 records use an older layout without ZP_PS / LIMIT_MAG_EA3: fill the zero point with
    # the field's median and the 3-sigma depth from the 5-sigma one, and say so in a column.
    table["zero_point_estimated"] = table["zero_point"].isna().astype(int)
    table["zero_point"] = table["zero_point"].fillna(table.groupby("field")["zero_point"].transform("median"))
    table["limit_mag_3sigma"] = table["limit_mag_3sigma"].fillna(
        table["limit_mag_5sigma"] + 2.5 * np.log10(5 / 3)
    )
    return table[["field", "epoch", *COLUMNS.values(), "zero_point_estimated"]]


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else hits_dir()
    table = read_conditions(root)
    out = Path(__file__).with_name("hits2015.csv")
    header = (
        "# HiTS 2015 (Blind15A) g-band conditions per field and epoch; derived by make_hits2015.py\n"
        "# from real_obs/Blind15A_info of github.com/rodrigcd/HiTS_simulations @275198b (MIT).\n"
        "# seeing: arcsec FWHM; sky: ADU; zero_point: mag for 1 ADU/s; exp_time: s.\n"
    )
    out.write_text(header + table.to_csv(index=False, float_format="%.6f"))
    print(f"wrote {out} ({len(table)} epochs, {table['field'].nunique()} fields)")


if __name__ == "__main__":
    main()
