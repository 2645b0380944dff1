"""Datasets too large for memory: a folder of HDF5 shards plus a JSON manifest.

The simulator writes one shard per task, so shards can be produced by any
number of workers (or a Dask cluster) in any order; the manifest lists them in
task order. The dataset fingerprint is the sha256 of the shards' fingerprints
in that order, so it depends only on the content, never on who wrote what.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError

MANIFEST = "manifest.json"
FORMAT_NAME = "rcnnlib.ShardedSequenceDataset"


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
        try:
            self.manifest: dict[str, Any] = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"unreadable manifest: {exc}", manifest) from None
        if self.manifest.get("format") != FORMAT_NAME:
            raise InputError(f"not an {FORMAT_NAME} manifest", manifest)

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

    def iter_shards(self, verify: bool = False) -> Iterator[SequenceDataset]:
        """Shards one at a time, in manifest order: memory stays bounded by one shard."""
        for s in self.shards:
            yield SequenceDataset.load(self.path / s["file"], verify=verify)

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
        prints = []
        for s, shard in zip(self.shards, self.iter_shards(verify=True), strict=True):
            if shard.metadata.get("fingerprint") != s["fingerprint"]:
                raise InputError("shard fingerprint differs from the manifest", self.path / s["file"])
            prints.append(s["fingerprint"])
        if combined_fingerprint(prints) != self.fingerprint:
            raise InputError("combined fingerprint differs from the manifest", self.path / MANIFEST)


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


def publish_folder(tmp: Path, final: Path, overwrite: bool = False) -> None:
    """Move a finished temporary folder into place, so readers never see half a dataset."""
    if final.exists():
        if not overwrite:
            raise InputError("already exists (use --overwrite to replace it)", final)
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
