"""``jupyter-book build`` on a build folder, and removal of a book that no longer matches its stages."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from rcnnlib.errors import InputError

BOOK_FILES = ("_config.yml", "_toc.yml")


BOOK_DIRS = ("book",)


def copy_book_sources(source_dir: Path, build_dir: Path) -> None:
    """Copy the book config and non-notebook sources beside the executed notebooks (mtimes kept)."""
    for name in BOOK_FILES:
        src = source_dir / name
        if src.is_file():
            shutil.copy2(src, build_dir / name)
    for folder in BOOK_DIRS:
        root = source_dir / folder
        for src in root.rglob("*"):
            rel = src.relative_to(source_dir)
            skip = {"_build", ".ipynb_checkpoints", "__pycache__"}
            if src.is_dir() or src.suffix == ".ipynb" or skip & set(rel.parts):
                continue
            dest = build_dir / rel
            if dest.is_file() and dest.stat().st_mtime_ns == src.stat().st_mtime_ns:
                continue  # unchanged: keep Sphinx's incremental build incremental
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def build_html(build_dir: Path, builder: str = "html") -> Path:
    """``jupyter-book build`` on the build folder; returns ``_build/<builder>`` (html or singlehtml)."""
    cmd = [
        sys.executable,
        "-c",
        "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build",
        "--builder",
        builder,
        str(build_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = build_dir / "_build" / ("jupyter-book.log" if builder == "html" else f"jupyter-book-{builder}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    html = build_dir / "_build" / builder
    if proc.returncode != 0 or not (html / "index.html").is_file():
        tail = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-1:]
        raise InputError(f"jupyter-book build failed ({' '.join(tail)}); full log in {log}", build_dir)
    return html


def remove_html(build: Path) -> None:
    """No stale book: the HTML (and PDF) of an earlier build go when a stage fails or is left out of date."""
    shutil.rmtree(build / "_build" / "html", ignore_errors=True)
    shutil.rmtree(build / "_build" / "singlehtml", ignore_errors=True)
    (build / "book.pdf").unlink(missing_ok=True)
