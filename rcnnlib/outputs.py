"""Checks on output paths, made before any long work, so a bad ``--out`` fails in a second, not after hours.

Every check raises :class:`~rcnnlib.errors.InputError` naming the path as the user gave it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rcnnlib.errors import InputError


def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (the folder a new ``path`` would be created in)."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(path.anchor or "/")


def _probe_writable(folder: Path, shown: Path) -> None:
    """Create and remove a file in ``folder``: permissions alone lie (root, read-only mounts, /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".rcnnlib-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(f"cannot write in {folder} ({reason})", shown) from None


def check_output_folder(path: str | Path, replace: bool = False) -> Path:
    """Check that ``path`` can be created, or written into when it is an existing folder.

    Refuses a path that is a file or lies in a place that cannot be written.
    ``replace``: the folder is built under a temporary name in its parent and moved
    into place, replacing any existing one; then the parent must be writable, and the
    current folder, its parents (``.``, ``..``, ``/``) and symbolic links are refused.
    Returns the absolute path (``..`` resolved), which the caller should write to.
    Whether an existing folder may be replaced is the caller's rule.
    """
    shown = Path(path)
    if str(shown) == "":
        raise InputError("empty output path")
    absolute = Path(os.path.abspath(shown))
    if replace:
        cwd = Path.cwd().resolve()
        resolved = absolute.resolve()
        if resolved == cwd or resolved in cwd.parents:
            raise InputError("is the current folder or one of its parents; give a new folder's name", shown)
        if absolute.is_symlink():
            raise InputError("is a symbolic link; give the folder itself", shown)
    if absolute.exists() and not absolute.is_dir():
        raise InputError("exists and is not a folder", shown)
    base = absolute if absolute.exists() and not replace else _nearest_existing(absolute.parent)
    if not base.is_dir():
        raise InputError(f"cannot create a folder under {base}: it is not a folder", shown)
    _probe_writable(base, shown)
    return absolute


def check_output_file(path: str | Path) -> Path:
    """Check that a single output file (``--json FILE``) can be written: its folder exists and is writable.

    Returns the absolute path.
    """
    shown = Path(path)
    if str(shown) == "":
        raise InputError("empty output path")
    absolute = Path(os.path.abspath(shown))
    if absolute.is_dir():
        raise InputError("is a folder, expected a file name", shown)
    if absolute.exists() and not absolute.is_file():
        raise InputError("exists and is not a regular file", shown)
    parent = absolute.parent
    if not parent.is_dir():
        raise InputError(f"folder {parent} does not exist", shown)
    _probe_writable(parent, shown)
    if absolute.exists() and not os.access(absolute, os.W_OK):
        raise InputError("exists and is not writable", shown)
    return absolute


class atomic_path:
    """Context manager yielding a temporary path beside ``path``, moved into place on success.

    Interrupted or failed writes leave nothing under the final name.
    """

    def __init__(self, path: str | Path, durable: bool = True):
        self.path = Path(path)
        self.durable = durable
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.durable:
                with open(self.tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """Write a small text file (record, card, JSON result): readers see the old or the new, never half."""
    with atomic_path(path, durable=False) as tmp:
        tmp.write_text(text)
