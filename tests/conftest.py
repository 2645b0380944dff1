"""Shared fixtures. The real HiTS folder is required: tests and CI fail, never skip, without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rcnnlib.dataset import SequenceDataset
from rcnnlib.hits.loader import load_hits
from rcnnlib.paths import hits_dir


@pytest.fixture(scope="session")
def hits_root() -> Path:
    """The real HiTS folder (``$RCNNLIB_HITS_DIR`` or ``../shared/hits``); fails loudly if absent."""
    root = hits_dir()
    if not (root / "real_obs" / "real_stamps").is_dir():
        pytest.fail(
            f"real HiTS data not found at {root} (expected real_obs/real_stamps inside). "
            "The tests need it: set RCNNLIB_HITS_DIR or put the folder at ../shared/hits.",
            pytrace=False,
        )
    return root


@pytest.fixture(scope="session")
def real_hits(hits_root: Path) -> SequenceDataset:
    """Every real labelled sequence, loaded once per test process."""
    return load_hits(hits_root, progress=False)


def first_per_class(ds: SequenceDataset, n: int) -> SequenceDataset:
    """The first ``n`` sequences of every class present: a small real sample with all classes."""
    return ds.subset(np.concatenate([np.flatnonzero(ds.labels == c)[:n] for c in np.unique(ds.labels)]))
