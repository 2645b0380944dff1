"""The stage cache: what a stage's key is made of (fingerprints) and the records that say a stage is done."""

from __future__ import annotations

import ast
import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rcnnlib import paths
from rcnnlib.outputs import write_atomic
from rcnnlib.provenance import direct_dependencies, installed_versions, python_version

RECORDS_DIR = "stages"


CACHE_FORMAT = 1


def digest(obj: Any) -> str:
    """sha256 of a JSON-able object (sorted keys; paths and other objects as strings)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def hash_tree(root: Path, skip: Iterable[str] = ("__pycache__", ".ipynb_checkpoints")) -> str:
    """Content hash of every file under ``root`` (relative names included), skipping caches."""
    digest = hashlib.sha256()
    skip = set(skip)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if skip & set(rel.parts) or path.suffix == ".pyc":
            continue
        digest.update(f"{rel.as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _python_source(cell: str) -> str:
    """A notebook cell as plain Python (magics and shell escapes translated by IPython)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(cell)


def library_modules(sources: Iterable[str], package: str = "rcnnlib") -> set[str] | None:
    """The package's modules that this code imports, directly or through each other (None: unknown).

    Static: ``import``/``from ... import`` statements, relative ones included.
    Code that cannot be parsed gives None, which callers treat as "all modules".
    """
    root = paths.PACKAGE_DIR

    def module_file(name: str) -> Path | None:
        if name == package:
            return root / "__init__.py"
        rel = Path(*name.split(".")[1:])
        for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def imports(code: str, current: str) -> set[str] | None:
        try:
            tree = ast.parse(code)
        except SyntaxError:
            return None
        found: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == package)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the current module's package
                    parts = current.split(".")[: -node.level] if not current.endswith("__init__") else []
                    base = ".".join([*(parts or [package]), *([base] if base else [])])
                if base.split(".")[0] != package:
                    continue
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)
        return {name for name in found if module_file(name) is not None}

    seen: set[str] = set()
    todo: list[str] = []
    for source in sources:
        try:
            found = imports(_python_source(source), package)
        except Exception:  # IPython could not translate the cell
            found = None
        if found is None:
            return None
        todo.extend(found)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        found = imports(path.read_text(), name) if path else set()
        if found is None:
            return None
        todo.extend(found - seen)
    return seen | {package}


def library_fingerprint(modules: set[str] | None = None) -> str:
    """The package source a stage uses and all packaged data: a change re-runs the stage.

    ``modules`` (from :func:`library_modules`) limits the Python files hashed to
    the ones the stage imports; None hashes them all (conservative).
    """
    root = paths.PACKAGE_DIR
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if {"__pycache__", ".ipynb_checkpoints"} & set(rel.parts) or path.suffix == ".pyc":
            continue
        if path.suffix == ".py" and modules is not None:
            name = ".".join(["rcnnlib", *rel.with_suffix("").parts]).removesuffix(".__init__")
            if name not in modules:
                continue
        digest.update(f"{rel.as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    data = paths.data_dir()
    if data.is_dir() and not data.is_relative_to(root):
        digest.update(hash_tree(data).encode())
    return digest.hexdigest()


def environment_fingerprint() -> dict[str, Any]:
    """Python's version and the installed versions of the package's direct dependencies."""
    return {"python": python_version(), "packages": installed_versions(direct_dependencies())}


def data_fingerprint(folder: Path) -> str:
    """The real-data folder: its ``MANIFEST.sha256`` and every file's size and mtime (cheap, no reading)."""
    folder = Path(folder)
    if not folder.is_dir():
        return "missing"
    digest = hashlib.sha256()
    manifest = folder / "MANIFEST.sha256"
    if manifest.is_file():
        digest.update(manifest.read_bytes())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def code_sources(notebook: Path) -> list[str]:
    """The code cells of a notebook, as written."""
    import nbformat

    return [c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code"]


def why_not_cached(
    record: StageRecord | None, reasons: Mapping[str, str], runs: list[Any], path: Path
) -> str:
    """Why a stage cannot come from the cache, in a few words for the build log."""
    if record is None:
        return "no earlier run"
    if not record.ok:
        return {"failed": "failed last time", "running": "interrupted last time"}.get(
            record.status, "no valid record"
        )
    if not path.is_file():
        return "executed notebook missing"
    changed = [name for name, value in reasons.items() if record.parts.get(name) != value]
    changed = [name for name in changed if name != "upstream"] or changed
    if changed:
        return "changed: " + ", ".join(changed)
    if record.upstream_runs != runs:
        return "an earlier stage was re-executed"
    return "forced"


def notebook_hashes(notebook: Path) -> tuple[str, str]:
    """(code hash, presentation hash): what execution depends on, and the markdown and tags it does not."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    code = [(c.source, "parameters" in c.metadata.get("tags", [])) for c in nb.cells if c.cell_type == "code"]
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    shown = [
        (
            c.cell_type,
            c.source if c.cell_type != "code" else "",
            c.metadata.get("tags", []),
            c.metadata.get("mystnb"),
        )
        for c in nb.cells
    ]
    return digest({"code": code, "kernel": kernel}), digest(shown)


@dataclass
class StageRecord:
    """What the runner knows about a stage's last execution, written to ``stages/<stem>.json``.

    ``status`` is ``running`` while the stage executes (what an interrupted run
    leaves: not ok, so the next run re-executes), then ``ok`` or ``failed``.
    ``parts`` holds the digest of each part of ``key``, so the next run can say
    what changed.
    """

    stage: str
    notebook: str
    profile: str
    key: str
    shown: str
    upstream_runs: list[str | None]
    parts: dict[str, str]
    parameters: dict[str, Any]
    started: str
    status: str = "running"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    finished: str | None = None
    seconds: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> StageRecord:
        """Parse a record; raises ValueError for anything that is not one (missing or unknown fields)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a stage record is a JSON object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def write(self, records: Path) -> None:
        write_atomic(records / f"{self.stage}.json", self.to_json())


def read_record(records: Path, stem: str) -> StageRecord | None:
    """A stage's record, or None if it has none (an unreadable one counts as none: the stage re-runs)."""
    try:
        return StageRecord.from_json((records / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None


def stage_records(records: str | Path) -> list[StageRecord]:
    """Every stage record of a build folder's ``stages/`` (for the "Reproduce and extend" chapter)."""
    folder = Path(records)
    found = (read_record(folder, p.stem) for p in sorted(folder.glob("*.json")))
    return [r for r in found if r is not None]
