"""Shared fixtures. The real HiTS folder is required: tests and CI fail, never skip, without it."""

from __future__ import annotations

from pathlib import Path

import pytest

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
