"""Where things live: the real HiTS folder, the repository, the data tables."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
"""The repository root for a source checkout / editable install."""


def hits_dir() -> Path:
    """The real HiTS folder: ``$RCNNLIB_HITS_DIR``, else ``../shared/hits`` from the repository root."""
    env = os.environ.get("RCNNLIB_HITS_DIR")
    if env:
        return Path(env).expanduser()
    return (REPO_ROOT / ".." / "shared" / "hits").resolve()


def data_dir() -> Path:
    """Committed derived tables: the package copy in a wheel, else ``data/`` of the checkout."""
    packaged = PACKAGE_DIR / "_data"
    return packaged if packaged.is_dir() else REPO_ROOT / "data"
