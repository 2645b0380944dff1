"""The book as one PDF: a single-page HTML build printed by headless Chromium.

Why Chromium and not LaTeX: the HTML book already carries every figure, table
and caption the way readers see them, the tests already drive Chromium, and a
TeX installation would be a second, much larger, toolchain.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rcnnlib.errors import InputError

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# flags for a machine without a display or network: no GPU, no sandbox (root), no background traffic
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def debian_tool(binary: str, package: str, install: bool = True) -> str:
    """Path of ``binary``; installs Debian's ``package`` with apt-get when missing and allowed.

    Allowed: running as root or with password-less sudo. Nothing then relies on a
    hand-installed tool: ``make pdf`` and the book tests fetch what they need.
    """
    found = shutil.which(binary)
    if found:
        return found
    apt = shutil.which("apt-get")
    if install and apt and hasattr(os, "geteuid"):
        root = os.geteuid() == 0
        prefix = [] if root else ["sudo", "-n"]
        may = root or (
            shutil.which("sudo") is not None
            and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
        )
        if may:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            wait = ["-o", "DPkg::Lock::Timeout=600"]  # another apt-get may hold the lock: wait for it
            subprocess.run(
                [*prefix, apt, *wait, "update"], capture_output=True, env=env, timeout=700, check=False
            )
            proc = subprocess.run(
                [*prefix, apt, *wait, "install", "-y", "--no-install-recommends", package],
                capture_output=True,
                text=True,
                env=env,
                timeout=900,
                check=False,
            )
            found = shutil.which(binary)
            if found:
                return found
            raise InputError(f"apt-get install {package} failed: {proc.stderr.strip()[-300:]}")
    raise InputError(
        f"{binary} is needed and could not be installed: run `sudo apt-get install {package}` "
        f"(Debian/Ubuntu) or put {binary} on PATH"
    )


def chromium_path(install: bool = True) -> str:
    """Debian's Chromium (or another Chromium/Chrome on PATH), installed when missing and allowed."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return debian_tool("chromium", "chromium", install)


def build_singlehtml(build_dir: Path) -> Path:
    """The whole executed book as one HTML page (``jupyter-book build --builder singlehtml``)."""
    from rcnnlib.book.html import build_html

    return build_html(build_dir, builder="singlehtml") / "index.html"


def print_pdf(page: Path, pdf: Path, timeout: float = 600) -> Path:
    """Print ``page`` to ``pdf`` with headless Chromium (A4, backgrounds, no browser header/footer).

    Written to a temporary file first and moved into place, so a failed print never
    leaves a truncated PDF behind.
    """
    binary = chromium_path()
    pdf.parent.mkdir(parents=True, exist_ok=True)
    profile = Path(tempfile.mkdtemp(prefix="rcnnlib-chromium-"))
    partial = pdf.with_name(f".{pdf.name}.partial-{os.getpid()}")
    try:
        proc = subprocess.run(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                "--no-pdf-header-footer",
                "--run-all-compositor-stages-before-draw",
                "--virtual-time-budget=20000",  # let images decode and MathJax typeset before printing
                f"--print-to-pdf={partial}",
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0 or not partial.is_file() or partial.stat().st_size == 0:
            tail = " ".join(proc.stderr.strip().splitlines()[-1:])
            raise InputError(f"Chromium could not print the book ({tail})", page)
        partial.replace(pdf)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(profile, ignore_errors=True)
    return pdf


def build_pdf(build_dir: Path, pdf: Path | None = None) -> Path:
    """The whole executed book printed to ``pdf`` (default: build/<profile>/book.pdf)."""
    page = build_singlehtml(build_dir)
    return print_pdf(page, pdf or build_dir / "book.pdf")
