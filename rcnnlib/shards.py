"""Datasets too large for memory: a folder of HDF5 shards plus a JSON manifest.

The simulator writes one shard per task, so shards can be produced by any
number of workers (or a Dask cluster) in any order; the manifest lists them in
task order. The dataset fingerprint is the sha256 of the shards' fingerprints
in that order, so it depends only on the content, never on who wrote what.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.classes import CLASS_NAMES
from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError

MANIFEST = "manifest.json"
FORMAT_NAME = "rcnnlib.ShardedSequenceDataset"
"""The manifest's ``format``: marks a folder as a dataset this package wrote (and may replace)."""
_HEX64 = re.compile(r"[0-9a-f]{64}")


def combined_fingerprint(shard_fingerprints: list[str]) -> str:
    """Fingerprint of a sharded dataset from its shards' fingerprints, in task order."""
    return hashlib.sha256("\n".join(shard_fingerprints).encode()).hexdigest()


class ShardedDataset:
    """Read-only view of a shard folder written by :func:`write_manifest`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        if not self.path.is_dir():
            raise InputError("no such dataset folder", self.path)
        if not manifest.is_file():
            raise InputError(f"not a sharded dataset (no {MANIFEST})", self.path)
        self.manifest: dict[str, Any] = read_manifest(manifest)

    @property
    def shards(self) -> list[dict[str, Any]]:
        return self.manifest["shards"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.manifest.get("metadata", {})

    def __len__(self) -> int:
        return sum(s["n"] for s in self.shards)

    def class_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.shards:
            for name, n in s["counts"].items():
                counts[name] = counts.get(name, 0) + n
        return counts

    def iter_shards(self, verify: bool = True) -> Iterator[SequenceDataset]:
        """Shards one at a time, in manifest order: memory stays bounded by one shard.

        Each shard is checked against its manifest entry as it is opened (its content
        fingerprint, its size and class counts), so a corrupted or swapped shard fails
        here, naming the file, instead of feeding wrong data downstream.
        ``verify=False`` skips only the content hash (for callers that check it otherwise).
        """
        for s in self.shards:
            path = self.path / s["file"]
            shard = SequenceDataset.load(path, verify=verify)
            if shard.metadata.get("fingerprint") != s["fingerprint"]:
                raise InputError(f"shard fingerprint differs from {MANIFEST} (replaced or corrupted?)", path)
            if len(shard) != s["n"] or shard.class_counts() != {k: v for k, v in s["counts"].items() if v}:
                raise InputError(f"shard content differs from its {MANIFEST} entry (n, counts)", path)
            yield shard

    def check_shards(self) -> None:
        """Read every shard once and check it (see :meth:`iter_shards`): before long work on them."""
        for _ in self.iter_shards():
            pass

    def load(self, max_per_class: int | None = None, seed: int = 0) -> SequenceDataset:
        """Concatenate shards into memory, optionally keeping at most ``max_per_class`` per class."""
        parts = []
        kept: dict[int, int] = {}
        rng = np.random.default_rng(seed)
        for shard in self.iter_shards():
            if max_per_class is not None:
                keep = np.zeros(len(shard), dtype=bool)
                for label in np.unique(shard.labels):
                    idx = np.flatnonzero(shard.labels == label)
                    room = max_per_class - kept.get(int(label), 0)
                    if room > 0:
                        chosen = rng.permutation(idx)[:room]
                        keep[chosen] = True
                        kept[int(label)] = kept.get(int(label), 0) + len(chosen)
                if not keep.any():
                    continue
                shard = shard.subset(np.flatnonzero(keep))
            parts.append(shard)
        return SequenceDataset.concatenate(parts, metadata=dict(self.metadata, fingerprint=self.fingerprint))

    def verify(self) -> None:
        """Re-read every shard and check its fingerprint and the combined one."""
        self.check_shards()
        if combined_fingerprint([s["fingerprint"] for s in self.shards]) != self.fingerprint:
            raise InputError("combined fingerprint differs from the manifest", self.path / MANIFEST)


def _field(manifest: Path, name: str, problem: str) -> InputError:
    return InputError(f"field {name!r} {problem}", manifest)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_shard_entry(manifest: Path, where: str, entry: Any, files: set[str]) -> None:
    """One ``shards[i]`` entry: a file name inside the folder (not seen before), counts that add up."""
    if not isinstance(entry, dict):
        raise _field(manifest, where, "must be a JSON object")
    for key in ("file", "n", "counts", "fingerprint"):
        if key not in entry:
            raise _field(manifest, f"{where}.{key}", "is missing")
    name = entry["file"]
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise _field(manifest, f"{where}.file", f"must be a file name inside the folder, got {name!r}")
    if name in files:
        raise _field(manifest, f"{where}.file", f"repeats {name!r}")
    files.add(name)
    if not _count(entry["n"]):
        raise _field(manifest, f"{where}.n", f"must be a non-negative integer, got {entry['n']!r}")
    counts = entry["counts"]
    if not isinstance(counts, dict) or not all(k in CLASS_NAMES and _count(v) for k, v in counts.items()):
        raise _field(
            manifest, f"{where}.counts", f"must map class names ({', '.join(CLASS_NAMES)}) to counts"
        )
    if sum(counts.values()) != entry["n"]:
        raise _field(manifest, f"{where}.counts", f"add up to {sum(counts.values())}, not n = {entry['n']}")
    if not isinstance(entry["fingerprint"], str) or not _HEX64.fullmatch(entry["fingerprint"]):
        raise _field(manifest, f"{where}.fingerprint", "must be 64 lowercase hex digits")


def read_manifest(manifest: Path) -> dict[str, Any]:
    """Read and check a ``manifest.json``: a broken one fails here, naming the field, not deep in training."""
    try:
        data = json.loads(manifest.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"unreadable manifest (not JSON: {exc})", manifest) from None
    except OSError as exc:
        raise InputError(f"unreadable manifest ({exc.strerror or exc})", manifest) from None
    if not isinstance(data, dict):
        raise InputError(f"manifest must be a JSON object, got {type(data).__name__}", manifest)
    if data.get("format") != FORMAT_NAME:
        raise InputError(f"not an {FORMAT_NAME} manifest (field 'format')", manifest)
    for key in ("n", "fingerprint", "shards"):
        if key not in data:
            raise _field(manifest, key, "is missing")
    if not _count(data["n"]):
        raise _field(manifest, "n", f"must be a non-negative integer, got {data['n']!r}")
    if not isinstance(data["fingerprint"], str) or not _HEX64.fullmatch(data["fingerprint"]):
        raise _field(manifest, "fingerprint", "must be 64 lowercase hex digits")
    if not isinstance(data.get("metadata", {}), dict):
        raise _field(manifest, "metadata", "must be a JSON object")
    shards = data["shards"]
    if not isinstance(shards, list):
        raise _field(manifest, "shards", f"must be a list, got {type(shards).__name__}")
    files: set[str] = set()
    for i, entry in enumerate(shards):
        _check_shard_entry(manifest, f"shards[{i}]", entry, files)
    total = sum(entry["n"] for entry in shards)
    if total != data["n"]:
        raise _field(manifest, "n", f"is {data['n']} but the shards hold {total}")
    if combined_fingerprint([entry["fingerprint"] for entry in shards]) != data["fingerprint"]:
        raise _field(manifest, "fingerprint", "differs from the combination of the shards' fingerprints")
    return data


def write_manifest(folder: Path, shards: list[dict[str, Any]], metadata: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest of a complete shard folder (shards sorted by task index)."""
    shards = sorted(shards, key=lambda s: s["index"])
    manifest = {
        "format": FORMAT_NAME,
        "n": sum(s["n"] for s in shards),
        "fingerprint": combined_fingerprint([s["fingerprint"] for s in shards]),
        "metadata": metadata,
        "shards": shards,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def open_sequences(path: str | Path) -> SequenceDataset | ShardedDataset:
    """A dataset file (loaded) or a shard folder (opened lazily)."""
    path = Path(path)
    if path.is_dir():
        return ShardedDataset(path)
    return SequenceDataset.load(path)


def is_dataset_folder(path: Path) -> bool:
    """Whether ``path`` is a dataset folder this package wrote, holding nothing else.

    Only such a folder may be replaced (``--overwrite``): its manifest has this
    package's ``format`` and every entry is the manifest or a shard it lists.
    """
    if path.is_symlink() or not path.is_dir() or not (path / MANIFEST).is_file():
        return False
    try:
        manifest = json.loads((path / MANIFEST).read_bytes())
        listed = {entry["file"] for entry in manifest["shards"]}
        ours = manifest.get("format") == FORMAT_NAME and all(isinstance(f, str) for f in listed)
    except (ValueError, UnicodeDecodeError, OSError, KeyError, TypeError):
        return False
    return ours and all(p.name == MANIFEST or p.name in listed for p in path.iterdir())


def check_replaceable(final: Path, overwrite: bool, shown: Path | None = None) -> None:
    """Refuse, before any work, an existing ``final`` unless ``overwrite`` and it is one of our datasets."""
    shown = final if shown is None else shown
    if not (final.exists() or final.is_symlink()):
        return
    if not is_dataset_folder(final):
        raise InputError(
            f"already exists and is not a dataset written by rcnnlib (no {FORMAT_NAME} {MANIFEST}, "
            "or other files inside); --overwrite replaces only those: choose a new folder",
            shown,
        )
    if not overwrite:
        raise InputError("already exists (use --overwrite to replace it)", shown)


def partial_name(final: Path, pid: int | None = None) -> Path:
    """The temporary folder a dataset is built in, beside ``final``: ``.NAME.partial-PID``."""
    return final.with_name(f".{final.name}.partial-{os.getpid() if pid is None else pid}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process (or an odd number): leave its folder alone
    return True


_SHARD_FILE = re.compile(r"(\.?shard-\d+\.h5(\.partial-\d+)?|manifest\.json)")


def sweep_stale_partials(final: Path) -> list[Path]:
    """Remove ``.NAME.partial-PID`` / ``.NAME.old-PID`` folders left by runs that died (SIGKILL, power loss).

    Only folders whose process is gone and which hold nothing but shard files and a
    manifest are removed: never anything this package did not create. Returns them.
    """
    pattern = re.compile(re.escape(f".{final.name}.") + r"(partial|old)-(\d+)")
    removed: list[Path] = []
    if not final.parent.is_dir():
        return removed
    for candidate in final.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if not match or candidate.is_symlink() or not candidate.is_dir():
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and _pid_alive(pid):  # our own PID: left by an earlier process
            continue
        if all(_SHARD_FILE.fullmatch(p.name) and p.is_file() for p in candidate.iterdir()):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def publish_folder(tmp: Path, final: Path, overwrite: bool = False) -> None:
    """Move a finished temporary folder into place, so readers never see half a dataset.

    An existing ``final`` is replaced only with ``overwrite`` and only when it is a
    dataset this package wrote (:func:`is_dataset_folder`); checked again here because
    the folder may have changed during a long simulation. SIGINT and SIGTERM are held
    back during the two renames, so an interruption never leaves neither folder in place.
    """
    check_replaceable(final, overwrite)
    signals = {signal.SIGINT, signal.SIGTERM}
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
