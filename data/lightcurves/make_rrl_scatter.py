"""Derive ``rrl_hits_scatter.csv`` from the real HiTS RR Lyrae scatter table.

Provenance: ``lightcurve_sampling/lc_data/RRLYR_HiTS_std.csv`` of
github.com/rodrigcd/HiTS_simulations at commit 275198b (MIT): the standard
deviation (g mag) of the light curves of real HiTS 2015 RR Lyrae. The authors
sampled the extra scatter of simulated RR Lyrae from a Gaussian KDE of these
values (Silverman bandwidth), clipped below at 0.011 mag; ``rcnnlib.sim.lightcurves``
does the same from this committed copy, so the package needs no real data.
Usage: ``python data/lightcurves/make_rrl_scatter.py [HITS_DIR]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rcnnlib.paths import hits_dir

SOURCE = Path("lightcurve_sampling") / "lc_data" / "RRLYR_HiTS_std.csv"
OUT = Path(__file__).resolve().parent / "rrl_hits_scatter.csv"


def main(root: Path) -> None:
    std = pd.read_csv(root / SOURCE)["Std"].to_numpy(float)
    std = np.sort(std[np.isfinite(std)])
    header = (
        "# Light-curve scatter (std, g mag) of real HiTS 2015 RR Lyrae, sorted;\n"
        "# derived by make_rrl_scatter.py from lightcurve_sampling/lc_data/RRLYR_HiTS_std.csv\n"
        "# of github.com/rodrigcd/HiTS_simulations @275198b (MIT).\n"
        f"# {std.size} objects; min {std.min():.4f}, median {np.median(std):.4f}, max {std.max():.4f} mag.\n"
    )
    body = pd.DataFrame({"std_mag": np.round(std, 5)}).to_csv(index=False)
    OUT.write_text(header + body)
    print(f"wrote {OUT} ({std.size} rows)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else hits_dir())
