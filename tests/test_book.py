"""End to end: ``rcnnlib book --profile ci`` executes the chapters and builds HTML with their figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# chapter -> least number of figures it must show
CHAPTERS = {
    "01_hits_survey": 7,  # 4 + one gallery per class
    "02_simulation": 6,  # light-curve models, side by side, image realism, 3 distributions
}


@pytest.mark.slow
@pytest.mark.xdist_group("book")
def test_ci_book_builds_with_figures(tmp_path: Path):
    build = tmp_path / "book"
    proc = subprocess.run(
        [sys.executable, "-m", "rcnnlib.cli", "book", "--profile", "ci", "--build-dir", str(build)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = build / "_build" / "html"
    assert (html / "index.html").is_file()
    for chapter, n_figures in CHAPTERS.items():
        page = html / "book" / f"{chapter}.html"
        assert page.is_file(), f"{chapter} missing from the HTML"
        text = page.read_text()
        assert "Traceback" not in text, f"{chapter} shows a traceback"
        sources = re.findall(r'<img[^>]*src="([^"]+)"', text)
        images = [(page.parent / src).resolve() for src in sources if "_images/" in src]
        assert len(images) >= n_figures, f"{chapter}: {len(images)} figures"
        for image in images:
            assert image.is_file() and image.stat().st_size > 1000, image
    movie = (html / "book" / "02_simulation.html").read_text()
    assert "animation" in movie and "data:image/png;base64" in movie, "the simulated movie is missing"
    # the sources stay clean: executed copies live only in the build folder
    assert not (REPO / "book" / "_build").exists()
