"""Shared fixtures. The real HiTS folder is required: tests and CI fail, never skip, without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------------- helpers shared by test modules
def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``rcnnlib ARGS`` in a fresh interpreter; a hang fails the test (TimeoutExpired) instead of blocking."""
    return subprocess.run(
        [sys.executable, "-m", "rcnnlib.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=timeout,
        env={k: v for k, v in os.environ.items() if k != "RCNNLIB_VERBOSE"},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 and exactly one non-empty stderr line (``rcnnlib: error: ...``), no traceback; returns it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("rcnnlib: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def stream_and_batch(model, config, ds: SequenceDataset) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per sequence: the batch probabilities at each valid step, and the stream's after each new step.

    Every observed epoch is fed to one :class:`StreamingClassifier`; the batch path prepares the
    same sequences without detection alignment, since a stream starts at its first epoch.
    """
    from dataclasses import replace

    from rcnnlib.rcnn.model import predict_proba
    from rcnnlib.rcnn.preprocess import prepare
    from rcnnlib.rcnn.stream import StreamingClassifier

    inputs = prepare(ds, replace(config.preprocess, align_on_detection=False))
    batch = predict_proba(model, inputs.x, inputs.step_mask)
    stream = StreamingClassifier(model=model, config=config)
    out = []
    for i in range(len(ds)):
        stream.reset()
        seen = []
        for t in np.flatnonzero(ds.mask[i]):
            before = stream.n_steps
            proba = stream.update(ds.stamps[i, t], ds.mjd[i, t], ds.conditions[i, t])
            if stream.n_steps > before:
                seen.append(proba)
        n = int(inputs.step_mask[i].sum())
        assert len(seen) >= n, (ds.ids[i], n, len(seen))
        out.append((batch[i, :n], np.array(seen[:n]).reshape(n, -1)))
    return out


# ------------------------------------------------------------------ the ci book
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the ci book once; returns the build folder, the wall time and the runner's output."""
    reuse = os.environ.get("RCNNLIB_TEST_BOOK_DIR")
    build = Path(reuse).resolve() if reuse else tmp_path_factory.mktemp("book") / "ci"
    seconds, out = (0.0, "") if reuse else run_ci_book(build)
    artifacts = build / "artifacts"
    return {
        "build": build,
        "html": build / "_build" / "html",
        "seconds": seconds,
        "output": out,
        # read now: the workshop exercises re-run chapters in this build with other parameters
        "evaluation": json.loads((artifacts / "04_real_evaluation" / "evaluation.json").read_text()),
        "baseline": json.loads((artifacts / "05_baseline" / "baseline.json").read_text()),
    }


def run_ci_book(build: Path, *extra: str) -> tuple[float, str]:
    """``rcnnlib book --profile ci`` into ``build``; returns the wall time and stdout + stderr."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rcnnlib.cli", "book", "--profile", "ci", "--build-dir", str(build), *extra],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert proc.returncode == 0, f"ci book failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return time.perf_counter() - start, proc.stdout + proc.stderr
