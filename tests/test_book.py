"""End to end: ``rcnnlib book --profile ci`` builds the book, and a reader's browser shows it whole.

One ci build (minutes) serves every check: a module-scoped fixture builds it
once, then headless Chromium (Debian's ``chromium``; installed here if missing)
opens every page of the table of contents over the Chrome DevTools Protocol
(plain websocket, ``websocket-client``), checks images, error cells and the
required content of each page, and saves screenshots to
``$ARTEFACTS_DIR`` or ``build/test-artefacts/``.

``RCNNLIB_TEST_BOOK_DIR=build/ci`` reuses an existing build instead of building
one (for working on these tests; the rebuild check then runs on that folder).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rcnnlib import runner

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("book")]

# chapter -> least number of figures it must show
FIGURES = {
    "01_hits_survey": 7,  # 4 + one gallery per class
    "02_simulation": 6,  # light-curve models, side by side, image realism, 3 distributions
}
# page (toc file stem) -> text the rendered page must contain (case-insensitive); pages not in
# the toc yet are skipped, so a chapter's requirement starts to apply as soon as it is added
REQUIRED = {
    "intro": ["Classifying HiTS events", "Licence and citation"],
    "01_hits_survey": ["Parameters of this run", "seeing cut"],
    "02_simulation": ["Parameters of this run", "Simulated next to real"],
    "03_training": ["Parameters of this run", "PSF-matched", "relative change"],
    "04_real_evaluation": ["Parameters of this run", "macro recall"],
    "05_baseline": ["Parameters of this run", "recall"],
    "reproduce": ["Every parameter", "Measured stage times", "wall time [s]", "01_hits_survey"],
    "workshop": ["Predict", "Solution"],
    "references": ["Deep Learning for Image Sequence Classification of Astronomical Events"],
}
# what a reader must never see: an error output cell, a traceback, an unresolved glue or citation
ERROR_SELECTOR = ".output.error, .output.traceback, .traceback, .ansi-red-fg"
FORBIDDEN_TEXT = ("Traceback (most recent call last)", "{glue:", "{cite}")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-allow-origins=*",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
]


# ------------------------------------------------------------------ the build
@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the ci book once; returns the build folder, the wall time and the runner's output."""
    reuse = os.environ.get("RCNNLIB_TEST_BOOK_DIR")
    build = Path(reuse).resolve() if reuse else tmp_path_factory.mktemp("book") / "ci"
    seconds, out = (0.0, "") if reuse else run_ci_book(build)
    return {"build": build, "html": build / "_build" / "html", "seconds": seconds, "output": out}


def run_ci_book(build: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rcnnlib.cli", "book", "--profile", "ci", "--build-dir", str(build)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert proc.returncode == 0, f"ci book failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return time.perf_counter() - start, proc.stdout


def toc_pages() -> list[str]:
    """Every page of the table of contents as a path relative to the HTML root, without .html."""
    return runner.toc_files(REPO)


def test_every_toc_page_and_chapter_was_built(book: dict[str, Any]):
    html = book["html"]
    assert (html / "index.html").is_file()
    for page in toc_pages():
        assert (html / f"{page}.html").is_file(), f"{page} missing from the HTML"
    records = {r["stage"]: r for r in runner.stage_records(book["build"] / "stages")}
    for notebook in runner.toc_notebooks(REPO):
        assert records[notebook.stem]["status"] == "ok", notebook
        assert (book["build"] / notebook).is_file()
    run = json.loads((book["build"] / runner.RUN_FILE).read_text())
    assert run["html"] and {s["stage"] for s in run["stages"]} == {
        nb.stem for nb in runner.toc_notebooks(REPO)
    }
    # the sources stay clean: executed copies live only in the build folder
    assert not (REPO / "book" / "_build").exists()
    assert not list((REPO / "book").glob("*.json"))


def test_chapters_show_their_figures(book: dict[str, Any]):
    for chapter, n_figures in FIGURES.items():
        page = book["html"] / "book" / f"{chapter}.html"
        text = page.read_text()
        sources = re.findall(r'<img[^>]*src="([^"]+)"', text)
        images = [(page.parent / src).resolve() for src in sources if "_images/" in src]
        assert len(images) >= n_figures, f"{chapter}: {len(images)} figures"
        for image in images:
            assert image.is_file() and image.stat().st_size > 1000, image
    movie = (book["html"] / "book" / "02_simulation.html").read_text()
    assert "animation" in movie and "data:image/png;base64" in movie, "the simulated movie is missing"


def test_unchanged_rebuild_executes_nothing(book: dict[str, Any]):
    seconds, out = run_ci_book(book["build"])
    reran = re.findall(r"^\s+(\S+): running \(([^)]*)\)", out, flags=re.M)

    # the only excuse: someone edited the package or a notebook while the test ran (a shared
    # working tree), and the stages after it re-ran because of that
    def edited(reason: str) -> bool:  # package, notebook code or profiles (summary stages) edited
        parts = reason.removeprefix("changed: ").split(", ")
        return reason.startswith("changed: ") and set(parts) <= {"library", "code", "book"}

    follow = {"changed: upstream", "an earlier stage was re-executed"}
    assert all(edited(reason) or reason in follow for _, reason in reran), out
    assert not reran or any(edited(reason) for _, reason in reran), out
    if not reran:
        assert "executed nothing" in out and seconds < 90, (seconds, out)
    report = Path(os.environ.get("ARTEFACTS_DIR") or REPO / "build" / "test-artefacts")
    report.mkdir(parents=True, exist_ok=True)
    (report / "book-times.json").write_text(
        json.dumps({"cold_seconds": book["seconds"], "rebuild_seconds": seconds, "rebuild_reran": reran})
    )


# ------------------------------------------------------------------ browser
def chromium_path() -> str:
    """Debian's chromium, installed with apt-get when missing and we may (root or password-less sudo)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    apt = shutil.which("apt-get")
    if apt and hasattr(os, "geteuid"):
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        may = os.geteuid() == 0 or (
            shutil.which("sudo")
            and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0
        )
        if may:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            wait = ["-o", "DPkg::Lock::Timeout=600"]  # another apt-get may hold the lock: wait for it
            subprocess.run([*prefix, apt, *wait, "update"], capture_output=True, env=env, timeout=700)
            proc = subprocess.run(
                [*prefix, apt, *wait, "install", "-y", "--no-install-recommends", "chromium"],
                capture_output=True,
                text=True,
                env=env,
                timeout=900,
            )
            found = shutil.which("chromium")
            if found:
                return found
            pytest.fail(f"apt-get install chromium failed: {proc.stderr.strip()[-500:]}", pytrace=False)
    pytest.fail(
        "headless Chromium is needed for the book test and could not be installed: "
        "run `sudo apt-get install chromium` (Debian/Ubuntu) or put chromium on PATH",
        pytrace=False,
    )


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page: calls and awaited events."""

    def __init__(self, url: str):
        import websocket

        self.ws = websocket.create_connection(url, timeout=120, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.events):
                if message.get("method") == event:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(event)
            self.events.append(json.loads(self.ws.recv()))

    def close(self) -> None:
        self.ws.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[DevTools]:
    """Headless Chromium with one page open, driven over its DevTools websocket."""
    binary = chromium_path()
    profile = Path(tempfile.mkdtemp(prefix="rcnnlib-chromium-"))
    proc = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            assert proc.poll() is None, f"{binary} exited with status {proc.returncode}"
            assert time.monotonic() < deadline, "Chromium did not open its DevTools port in 60 s"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        root = DevTools(f"ws://127.0.0.1:{port}{port_file.read_text().split()[1]}")
        target = root.call("Target.createTarget", url="about:blank")["targetId"]
        page = DevTools(f"ws://127.0.0.1:{port}/devtools/page/{target}")
        page.call("Page.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False
        )
        yield page
        page.close()
        root.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


INSPECT = """
(async () => {
  const images = Array.from(document.images);
  images.forEach((img) => { img.loading = "eager"; });
  await Promise.all(images.map((img) => img.decode().catch(() => null)));
  return JSON.stringify({
    title: document.title,
    images: images.map((img) => ({src: (img.currentSrc || img.src).slice(0, 120), width: img.naturalWidth,
                                   alt: img.alt})),
    errors: Array.from(document.querySelectorAll(SELECTOR)).map((e) => e.innerText.slice(0, 300)),
    text: document.body.innerText,
  });
})()
"""


def open_page(page: DevTools, path: Path) -> dict[str, Any]:
    page.events.clear()
    page.call("Page.navigate", url=path.as_uri())
    page.wait_for("Page.loadEventFired")
    script = INSPECT.replace("SELECTOR", json.dumps(ERROR_SELECTOR))
    result = page.call("Runtime.evaluate", expression=script, awaitPromise=True, returnByValue=True)
    assert "exceptionDetails" not in result, result["exceptionDetails"]
    return json.loads(result["result"]["value"])


def described(alt: str) -> bool:
    """Alt text that says something: not empty, not the image's file name."""
    return bool(alt.strip()) and not re.search(r"\.(png|jpe?g|svg|gif)$", alt.strip(), flags=re.I)


def test_every_page_reads_well_in_chromium(book: dict[str, Any], browser: DevTools):
    shots = Path(os.environ.get("ARTEFACTS_DIR") or REPO / "build" / "test-artefacts") / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    pages = toc_pages()
    for page in pages:
        info = open_page(browser, book["html"] / f"{page}.html")
        stem = Path(page).name
        if not info["title"] or "404" in info["title"]:
            problems.append(f"{page}: did not load (title {info['title']!r})")
        broken = [img["src"] for img in info["images"] if img["width"] == 0]
        if broken:
            problems.append(f"{page}: {len(broken)} image(s) did not load: {broken[:3]}")
        # figures are described for screen readers (the runner's fallback names their section)
        mute = [
            img["src"] for img in info["images"] if "_images/" in img["src"] and not described(img["alt"])
        ]
        if mute:
            problems.append(f"{page}: {len(mute)} figure(s) without alt text: {mute[:2]}")
        if info["errors"]:
            problems.append(f"{page}: error output shown: {info['errors'][0]!r}")
        text = info["text"]
        problems += [f"{page}: shows {bad!r}" for bad in FORBIDDEN_TEXT if bad in text]
        missing = [want for want in REQUIRED.get(stem, []) if want.lower() not in text.lower()]
        if missing:
            problems.append(f"{page}: missing {missing}")
        shot = browser.call("Page.captureScreenshot", format="png")
        (shots / f"{stem}.png").write_bytes(base64.b64decode(shot["data"]))
    assert not problems, "\n".join(problems)
    assert len(list(shots.glob("*.png"))) >= len(pages)


def test_reproduce_chapter_lists_the_times_of_this_build(book: dict[str, Any], browser: DevTools):
    """The stage-time table is generated from this build's records: one row per stage, with its time."""
    info = open_page(browser, book["html"] / "book" / "reproduce.html")
    records = [r for r in runner.stage_records(book["build"] / "stages") if r["stage"] != "reproduce"]
    assert records
    for record in records:
        row = re.search(rf"{re.escape(record['stage'])}\s+ci\s+[\d-]+ [\d:]+\s+([\d.]+)", info["text"])
        assert row, f"no time row for {record['stage']}"
        assert abs(float(row.group(1)) - record["seconds"]) < 0.1


def test_the_browser_checks_catch_a_broken_page(browser: DevTools, tmp_path: Path):
    """The checks above can fail: a page with a missing image and an error cell is caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<html><head><title>broken</title></head><body><p>x</p><img src='missing.png' alt='gone'>"
        "<div class='cell_output'><div class='output traceback'>Traceback (most recent call last)</div></div>"
        "</body></html>"
    )
    info = open_page(browser, page)
    assert info["title"] == "broken"
    assert [img["width"] for img in info["images"]] == [0]
    assert info["errors"] and "Traceback (most recent call last)" in info["text"]
