"""Where a result came from: installed versions, the machine, the git state of the code.

One capture for every record the package writes: the book runner's cache keys
(:mod:`rcnnlib.book.cache`) and the model card (:func:`rcnnlib.rcnn.train.train`).
Nothing here imports TensorFlow: the caller that has it loaded adds its devices.
"""

from __future__ import annotations

import importlib.metadata
import platform
import re
import subprocess
from collections.abc import Iterable
from typing import Any

from rcnnlib.paths import REPO_ROOT


def installed_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution (lower-case name), None where it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name.lower()] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name.lower()] = None
    return versions


def direct_dependencies() -> list[str]:
    """The distributions ``rcnnlib`` requires (extras left out); empty when run from a bare checkout."""
    try:
        requirements = importlib.metadata.requires("rcnnlib") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in requirements if "extra ==" not in r]


def python_version() -> str:
    return platform.python_version()


def git_state(root: str | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the checkout the package runs from; empty outside a git checkout."""
    where = str(root or REPO_ROOT)
    try:
        commit = _git(where, "rev-parse", "HEAD").strip()
        status = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "uncommitted_changes": bool(status.strip())}


def _git(where: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", where, *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout
