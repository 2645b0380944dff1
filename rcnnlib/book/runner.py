"""``rcnnlib book``: execute the stage notebooks with a parameter profile, cache them, build the HTML book.

The notebooks are the paper's stages (survey, simulation, training, evaluation,
baseline). They are thin: parameters cell, library calls, figures. This runner

1. reads a profile ``params/<name>.yaml`` (``ci`` small and fast, ``default``
   laptop-sized, ``paper`` published scale) with ``common:`` values and one
   section per notebook under ``notebooks:``;
2. executes the notebooks listed in ``_toc.yml``, in that order, with papermill
   into a build folder outside the sources (``build/<profile>/`` by default),
   injecting only the parameters each notebook declares in its cell tagged
   ``parameters``, and skipping every stage whose cache key is unchanged;
3. copies the book sources beside the executed notebooks and runs
   ``jupyter-book build`` there (the book config has execution off: papermill
   already ran everything), giving ``build/<profile>/_build/html``.

Adding a chapter is adding its notebook to ``_toc.yml`` and, if it needs
non-default values, a section named after the notebook (file stem) in the
profiles. Precedence, lowest first: the notebook's own default, values the
runner provides (below), the profile's ``common``, the profile's notebook
section, ``-p KEY VALUE``, ``-p NOTEBOOK.KEY VALUE``.

Values the runner provides (injected only into notebooks that declare them):

* ``hits_dir``: the real HiTS folder (``$RCNNLIB_HITS_DIR`` or ``../shared/hits``);
* ``artifacts_dir`` (alias ``artefacts_dir``): ``build/<profile>/artifacts``, the
  artefact root of this build. **Contract**: stage ``<stem>`` writes its outputs
  into ``<artifacts_dir>/<stem>/`` (the runner empties and creates that folder
  before it executes the stage) and reads earlier stages' outputs from
  ``<artifacts_dir>/<earlier stem>/``, e.g. ``03_training`` writes
  ``<artifacts_dir>/03_training/model.keras`` and ``04_real_evaluation`` reads it.
  Never write into the sources. A stage's outputs are valid once its record says
  so (below), so a reader never sees a half-written stage;
* ``stage_records``: the folder of stage records (below). A notebook that declares
  it is a *summary* stage (the "Reproduce and extend" chapter): it reads the
  others' records, so it runs after every other stage, wherever it sits in the toc;
* ``source_dir``: the book sources (repository root), ``profile_name``: the profile.

Caching. Each stage's key is a hash of its resolved parameters, its code cells
(and which one is the parameters cell), the source of the ``rcnnlib`` modules it
imports (statically, followed through the package's own imports; all of them if
a cell cannot be parsed) and all packaged data (``data/``, non-Python files of
``rcnnlib/``), the versions of Python and of the direct dependencies, the
fingerprint of the real-data folder (``MANIFEST.sha256`` plus every file's size
and mtime) and the keys of all earlier stages, a conservative chain; summary
stages also hash ``params/`` and every notebook's code. After a successful
execution the runner writes ``build/<profile>/stages/<stem>.json`` atomically
(key, digest of each part of it, parameters, wall time, the run ids of the
earlier stages it read). A stage is skipped when its record is ``ok``, has the
same key, and the earlier stages have not been re-executed since; otherwise it
and every later stage run again, and the log says which part changed. Editing
only the markdown (or cell tags, or ``mystnb`` cell metadata) of a notebook
re-renders it without re-executing. An interrupted run resumes at the first
stage without a valid record; ``--force`` re-executes the selected stages.
``--only STAGE`` brings STAGE and the stages before it up to date, not the later
ones (and so builds no HTML).

Each executed copy (``build/<profile>/book/<stem>.ipynb``) gets a box at its top
listing the parameters it ran with and where each value came from, and figures
without alt text get one naming their section. A failed
stage leaves its executed notebook, error included, at that same path; the
HTML book is built only when every stage is up to date, and a run that leaves a
stage failed or out of date (or re-executes with ``--no-html``) removes the
previous ``_build/html``, so no book is ever read from stale results.
``build/<profile>/book-run.json`` records the last run: which stages ran or came
from the cache, wall times, parameters.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import datetime as dt
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rcnnlib import paths
from rcnnlib.errors import InputError

PROFILE_KEYS = ("description", "common", "notebooks")
BOOK_FILES = ("_config.yml", "_toc.yml")
BOOK_DIRS = ("book",)
ARTIFACTS_DIR = "artifacts"
KERNEL_NAME = "python3"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


# ------------------------------------------------------------------ profiles
def params_dir(source_dir: Path | None = None) -> Path:
    """The folder holding the profiles: ``params/`` of the book sources."""
    return (source_dir or paths.REPO_ROOT) / "params"


def available_profiles(directory: Path | None = None) -> list[str]:
    """Profile names found in the params folder."""
    directory = directory or params_dir()
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_profile(name: str, directory: Path | None = None) -> dict[str, Any]:
    """Read ``params/<name>.yaml`` (or a YAML path) as ``{"common": {...}, "notebooks": {stem: {...}}}``.

    Structure is checked here; whether the keys exist in the notebooks is
    checked by :func:`resolve_parameters`, which knows what they declare.
    """
    directory = directory or params_dir()
    path = Path(name) if name.endswith((".yaml", ".yml")) else directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise InputError(f"no profile {name!r} (profiles in {directory}: {known})", path)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {str(exc).splitlines()[0]}", path) from None
    if not isinstance(spec, dict):
        raise InputError("a profile is a mapping with 'common' and 'notebooks' sections", path)
    unknown = sorted(set(spec) - set(PROFILE_KEYS))
    if unknown:
        raise InputError(f"unknown top-level keys {unknown}; expected {', '.join(PROFILE_KEYS)}", path)
    common = spec.get("common") or {}
    notebooks = spec.get("notebooks") or {}
    if not isinstance(common, dict) or not isinstance(notebooks, dict):
        raise InputError("'common' and 'notebooks' must be mappings", path)
    for stem, section in notebooks.items():
        if section is not None and not isinstance(section, dict):
            raise InputError(f"notebooks.{stem} must be a mapping of parameter: value", path)
    return {
        "name": path.stem,
        "path": path,
        "description": str(spec.get("description", "")),
        "common": dict(common),
        "notebooks": {str(k): dict(v or {}) for k, v in notebooks.items()},
    }


def parse_value(text: str) -> Any:
    """A ``-p`` value as a YAML scalar (``3`` -> int, ``0.5``/``1e3`` -> float, ``true``, ``null``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e3" as a string
        except ValueError:
            return value
    return value


def parse_overrides(pairs: Iterable[Sequence[str]] | None) -> dict[str, Any]:
    """``[(KEY, VALUE), ...]`` from the command line to a dict of typed values."""
    return {str(key): parse_value(str(value)) for key, value in (pairs or [])}


# ------------------------------------------------------------------- the toc
def toc_files(source_dir: Path) -> list[str]:
    """Every ``file`` entry of ``_toc.yml`` (root first), in reading order, without extension."""
    toc_path = source_dir / "_toc.yml"
    if not toc_path.is_file():
        raise InputError("no table of contents", toc_path)
    try:
        toc = yaml.safe_load(toc_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {str(exc).splitlines()[0]}", toc_path) from None
    found: list[str] = [str(toc["root"])] if "root" in toc else []

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if "file" in node:
                found.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                walk(node.get(key))

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".md", ".ipynb") else f for f in found]


def toc_notebooks(source_dir: Path) -> list[Path]:
    """The notebooks of the book in ``_toc.yml`` order, relative to ``source_dir``."""
    notebooks = []
    for entry in toc_files(source_dir):
        rel = Path(f"{entry}.ipynb")
        if (source_dir / rel).is_file():
            notebooks.append(rel)
        elif not (source_dir / f"{entry}.md").is_file():
            raise InputError(f"_toc.yml lists {entry!r} but neither .ipynb nor .md exists", source_dir)
    return notebooks


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The parameters a notebook declares (its cell tagged ``parameters``), name -> papermill info."""
    import papermill

    try:
        return dict(papermill.inspect_notebook(str(notebook)))
    except Exception as exc:  # unreadable JSON, bad nbformat...
        raise InputError(f"cannot inspect notebook: {exc}".splitlines()[0], notebook) from None


# -------------------------------------------------------------- parameters
def resolve_parameters(
    declared: Mapping[str, Mapping[str, Any]],
    profile: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    provided: Mapping[str, Any] | None = None,
    origins: dict[str, dict[str, str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Parameters to inject into each notebook (by stem), keeping only the ones it declares.

    ``declared`` maps notebook stem -> declared parameters; ``provided`` are
    runner values (paths) injected where declared. Keys that no notebook
    declares are errors that list the valid ones, so a typo never passes silently.
    ``origins``, if given, is filled with stem -> name -> which layer set the value
    (shown in the parameter box at the top of each executed chapter).
    """
    overrides = dict(overrides or {})
    provided = dict(provided or {})
    all_names = sorted({name for params in declared.values() for name in params})
    source = profile.get("path")

    def valid_list() -> str:
        if not all_names:
            return "none (no notebook declares parameters)"
        stems = ", ".join(stem for stem, params in declared.items() if params)
        return f"{', '.join(all_names)} (or NOTEBOOK.KEY for one notebook: {stems})"

    for key in profile.get("common", {}):
        if key not in all_names:
            raise InputError(f"common.{key} is declared by no notebook; valid keys: {valid_list()}", source)
    for stem, section in profile.get("notebooks", {}).items():
        if stem not in declared:
            raise InputError(
                f"notebooks.{stem}: no such notebook in _toc.yml ({', '.join(declared) or 'none'})", source
            )
        for key in section:
            if key not in declared[stem]:
                raise InputError(
                    f"notebooks.{stem}.{key}: {stem} declares no such parameter "
                    f"(it declares {', '.join(declared[stem]) or 'none'})",
                    source,
                )
    plain: dict[str, Any] = {}
    qualified: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        stem, dot, name = key.rpartition(".")
        if dot and stem in declared and name in declared[stem]:
            qualified.setdefault(stem, {})[name] = value
        elif not dot and key in all_names:
            plain[key] = value
        else:
            raise InputError(f"unknown parameter {key!r}; valid keys: {valid_list()}")

    resolved: dict[str, dict[str, Any]] = {}
    for stem, params in declared.items():
        name = profile.get("name", "profile")
        layers = (
            ("runner", provided),
            (f"profile {name} (common)", profile.get("common", {})),
            (f"profile {name} (notebooks.{stem})", profile.get("notebooks", {}).get(stem, {})),
            ("command line (-p KEY)", plain),
            (f"command line (-p {stem}.KEY)", qualified.get(stem, {})),
        )
        values: dict[str, Any] = {}
        where: dict[str, str] = {}
        for label, layer in layers:
            for k, v in layer.items():
                if k in params:
                    values[k] = v
                    where[k] = label
        resolved[stem] = values
        if origins is not None:
            origins[stem] = where
    return resolved


# -------------------------------------------------------------- execution
RECORDS_DIR = "stages"
RUN_FILE = "book-run.json"
RUNNING_DIR = ".running"
LOCK_FILE = ".lock"
SUMMARY_PARAMETER = "stage_records"
PARAMETERS_TAG = "rcnnlib-parameters"
INJECTED_TAG = "injected-parameters"
CACHE_FORMAT = 1
RUNNER_PROVIDED = (
    "hits_dir",
    "artifacts_dir",
    "artefacts_dir",
    SUMMARY_PARAMETER,
    "source_dir",
    "profile_name",
)
"""Parameters the runner sets (see the module docstring), injected where a notebook declares them."""


def _first_line(source: str) -> str:
    lines = [line.strip() for line in source.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _code_cell_number(notebook: Path, source: str) -> int | None:
    """1-based position of the code cell with this source in the source notebook (None if not found)."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code, start=1):
        if cell.source.strip() == source.strip():
            return number
    return None


KERNEL_START_ATTEMPTS = 3
"""Tries to start a notebook's kernel. jupyter_client picks free TCP ports and
releases them before the kernel binds them, so two kernels started at the same
moment (parallel tests, two builds) can collide and one dies before it answers.
No cell has run then, so starting again is safe."""


def _kernel_failed_to_start(exc: BaseException) -> bool:
    """Whether ``exc`` is jupyter_client's "died before replying to kernel_info"/"didn't respond"."""
    text = str(exc)
    return "before replying to kernel_info" in text or "didn't respond in" in text


def execute_notebook(
    source: Path,
    output: Path,
    parameters: Mapping[str, Any],
    label: str,
    cwd: Path | None = None,
    kept_at: Path | None = None,
) -> None:
    """Run one notebook with papermill into ``output``; a failure is one :class:`InputError` line.

    The partial notebook stays at ``output`` (or wherever the caller moves it:
    ``kept_at``, named in the message) so the traceback can be read there.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    kept_at = kept_at or output
    previous = os.environ.get("MPLBACKEND")
    # A headless MPLBACKEND=Agg inherited from the caller would stop the kernel from
    # rendering figures into the notebook; the inline backend is headless too.
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                papermill.execute_notebook(
                    str(source),
                    str(output),
                    parameters=dict(parameters),
                    kernel_name=KERNEL_NAME,
                    cwd=str(cwd or output.parent),
                    progress_bar=False,
                    log_output=False,
                    # the kernel's own start-up warnings (TCP transport...) are noise in a build log
                    extra_arguments=["--IPKernelApp.log_level=ERROR"],
                )
                break
            except RuntimeError as exc:
                if attempt == KERNEL_START_ATTEMPTS or not _kernel_failed_to_start(exc):
                    raise
                time.sleep(1.0)
    except PapermillExecutionError as exc:
        number = _code_cell_number(source, exc.source)
        where = f"code cell {number}" if number is not None else f"cell In [{exc.exec_count}]"
        evalue = " ".join(str(exc.evalue).split())
        raise InputError(
            f"{where} ({_first_line(exc.source)!r}) raised {exc.ename}: {evalue}; "
            f"partial notebook kept at {kept_at}",
            label,
        ) from None
    except Exception as exc:  # dead kernel, timeout, missing kernel...
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"execution failed: {message}; partial notebook kept at {kept_at}", label) from None
    finally:
        if previous is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = previous


# ------------------------------------------------------------ fingerprints
def _digest(obj: Any) -> str:
    """sha256 of a JSON-able object (sorted keys; paths and other objects as strings)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _hash_tree(root: Path, skip: Iterable[str] = ("__pycache__", ".ipynb_checkpoints")) -> str:
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
        digest.update(_hash_tree(data).encode())
    return digest.hexdigest()


def environment_fingerprint() -> dict[str, Any]:
    """Python's version and the installed versions of the package's direct dependencies."""
    versions: dict[str, str | None] = {}
    try:
        requirements = importlib.metadata.requires("rcnnlib") or []
    except importlib.metadata.PackageNotFoundError:  # running from a bare checkout
        requirements = []
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0]
        try:
            versions[name.lower()] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name.lower()] = None
    return {"python": sys.version.split()[0], "packages": versions}


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


def _why(record: Mapping[str, Any] | None, reasons: Mapping[str, str], runs: list[Any], path: Path) -> str:
    """Why a stage cannot come from the cache, in a few words for the build log."""
    if record is None:
        return "no earlier run"
    if record.get("status") != "ok":
        return {"failed": "failed last time", "running": "interrupted last time"}.get(
            str(record.get("status")), "no valid record"
        )
    if not path.is_file():
        return "executed notebook missing"
    changed = [name for name, value in reasons.items() if (record.get("parts") or {}).get(name) != value]
    changed = [name for name in changed if name != "upstream"] or changed
    if changed:
        return "changed: " + ", ".join(changed)
    if record.get("upstream_runs") != runs:
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
    return _digest({"code": code, "kernel": kernel}), _digest(shown)


# ----------------------------------------------------------------- stages
@dataclass
class Stage:
    """One notebook of the book and what the runner knows about it."""

    notebook: Path  # relative to the sources
    declared: dict[str, Any]
    summary: bool = False

    @property
    def stem(self) -> str:
        return self.notebook.stem


@dataclass
class StageResult:
    """What happened to a stage in one run: executed, cached, refreshed (prose only), failed, or not run."""

    stage: str
    status: str
    key: str | None = None
    seconds: float = 0.0
    record: dict[str, Any] | None = None


@dataclass
class BookRun:
    """The outcome of :func:`run_book`."""

    build_dir: Path
    stages: list[StageResult] = field(default_factory=list)
    html: Path | None = None
    pdf: Path | None = None
    stale: list[str] = field(default_factory=list)
    seconds: float = 0.0
    html_seconds: float | None = None

    @property
    def executed(self) -> list[str]:
        return [s.stage for s in self.stages if s.status == "executed"]

    @property
    def cached(self) -> list[str]:
        return [s.stage for s in self.stages if s.status in ("cached", "refreshed")]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    """Write through a temporary file in the same folder and rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_record(records: Path, stem: str) -> dict[str, Any] | None:
    """A stage's record, or None if it has none (or an unreadable one, which counts as none)."""
    try:
        record = json.loads((records / f"{stem}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def stage_records(records: str | Path) -> list[dict[str, Any]]:
    """Every stage record of a build folder's ``stages/`` (for the "Reproduce and extend" chapter)."""
    folder = Path(records)
    found = (read_record(folder, p.stem) for p in sorted(folder.glob("*.json")))
    return [r for r in found if r is not None]


@contextlib.contextmanager
def _build_lock(build: Path) -> Iterator[None]:
    """One run per build folder at a time: two would overwrite each other's stages."""
    build.mkdir(parents=True, exist_ok=True)
    with (build / LOCK_FILE).open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another `rcnnlib book` run is using this build folder", build) from None
        yield


def _format_value(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def parameters_markdown(
    stage: Stage,
    values: Mapping[str, Any],
    origins: Mapping[str, str],
    profile: str,
    record: Mapping[str, Any],
) -> str:
    """The box at the top of an executed chapter: every parameter, its value and where it came from."""
    rows = []
    for name, info in stage.declared.items():
        if name in values:
            value, origin = _format_value(values[name]), origins.get(name, "runner")
        else:
            value, origin = f"`{info.get('default', '')}`".replace("|", "\\|"), "notebook default"
        meaning = str(info.get("help") or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {value} | {origin} | {meaning} |")
    ok = record.get("status") == "ok"
    when = str(record.get("finished", ""))[:16].replace("T", " ")
    took = f"{record.get('seconds', 0):.0f} s"
    lines = [  # collapsed: the title says the essentials, the table is a click away
        f":::{{admonition}} Parameters of this run: profile `{profile}`, {when} UTC, {took}"
        + ("" if ok else " (**failed**)"),
        ":class: note dropdown" if ok else ":class: error",
        f"Profile `{profile}`; {'ran' if ok else '**failed**'} {when} UTC in {took}; "
        f"stage key `{str(record.get('key', ''))[:12]}`.",
        "",
    ]
    if rows:
        lines += ["| parameter | value | set by | meaning |", "|---|---|---|---|", *rows, ""]
    else:
        lines += ["This chapter has no parameters.", ""]
    if not stage.summary:
        lines.append(
            f"Re-run with other values: `rcnnlib book --profile {profile} --only {stage.stem} "
            f"-p {stage.stem}.KEY VALUE` (see *Reproduce and extend*)."
        )
    lines.append(":::")
    return "\n".join(lines)


SHOWN_OR_HIDDEN = {
    "parameters",  # the chapter's knobs: always shown
    "show-input",  # an author's "this code is the lesson" (how to call the library)
    "hide-input",
    "hide-cell",
    "remove-input",
    "remove-cell",
}
"""Tags that decide a code cell's display; any other code cell is folded (``hide-input``) in the book."""


def _decorate(executed: Any, box: str) -> Any:
    """Put the parameter box under the chapter title, fold code, hide papermill's injected cell.

    Code is one click away: every code cell without a display tag of its own
    (:data:`SHOWN_OR_HIDDEN`) gets ``hide-input``, so a chapter reads as narrative,
    figures and tables, and a new chapter is folded without anyone remembering to.
    """
    from nbformat.v4 import new_markdown_cell

    cells = [c for c in executed.cells if PARAMETERS_TAG not in c.metadata.get("tags", [])]
    injected = [c for c in cells if INJECTED_TAG in c.metadata.get("tags", [])]
    for cell in cells:
        if injected and "parameters" in cell.metadata.get("tags", []):
            cell.source = _with_run_values(cell.source, injected[0].source)
    for cell in cells:
        tags = cell.metadata.get("tags", [])
        if INJECTED_TAG in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
        elif cell.cell_type == "code" and not set(tags) & SHOWN_OR_HIDDEN:
            cell.metadata["tags"] = [*tags, "hide-input"]
    at = 1 if cells and cells[0].cell_type == "markdown" and cells[0].source.lstrip().startswith("#") else 0
    cells.insert(at, new_markdown_cell(box, metadata={"tags": [PARAMETERS_TAG]}))
    executed.cells = cells
    _default_alt_text(cells)
    return executed


def _with_run_values(defaults: str, injected: str) -> str:
    """The notebook's parameters cell with the values this run used, comments kept.

    Why: the shown cell is the chapter's knobs with their meanings; showing the
    notebook's defaults beside results computed with a profile's values would
    contradict the page. Runner-provided paths keep their placeholder (no local
    path on a page), and the box above the cell says where every value came from.
    """
    try:
        tree = ast.parse(injected)
    except SyntaxError:
        return defaults
    values = {
        node.targets[0].id: ast.get_source_segment(injected, node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }
    lines = []
    for line in defaults.splitlines():
        match = re.match(r"^(\w+)(\s*=\s*)(.*?)(\s+#.*)?$", line)
        if match and match.group(1) in values and match.group(1) not in RUNNER_PROVIDED:
            name, equals, _, comment = match.groups()
            line = f"{name}{equals}{values[name]}{comment or ''}"
        lines.append(line)
    return "\n".join(lines)


IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")


def _default_alt_text(cells: list[Any]) -> None:
    """Give figures without alt text (cell metadata ``mystnb.image.alt``) one naming their section.

    A fallback so that screen readers never read out an image's file name; the
    author's own ``"mystnb": {"image": {"alt": "..."}}`` always wins.
    """
    title = section = ""
    for cell in cells:
        if cell.cell_type == "markdown" and PARAMETERS_TAG not in cell.metadata.get("tags", []):
            for line in cell.source.splitlines():
                match = re.match(r"^(#{1,6})\s+(.+?)\s*#*$", line)
                if match:
                    text = re.sub(r"[*_`]", "", match.group(2))
                    title = title or text
                    section = text
            continue
        outputs = cell.get("outputs", []) if cell.cell_type == "code" else []
        if not any(t in o.get("data", {}) for o in outputs for t in IMAGE_TYPES):
            continue
        options = cell.metadata.setdefault("mystnb", {}).setdefault("image", {})
        if not options.get("alt"):
            where = f"section “{section}” of “{title}”" if section and section != title else f"“{title}”"
            options["alt"] = f"Figure of the {where}" if title else "Figure"


def _refresh_presentation(source: Path, executed_path: Path) -> bool:
    """Copy markdown and tags from the source into an executed copy whose code is unchanged.

    Returns False when the cells do not line up (then the stage is re-executed).
    """
    import nbformat

    src = nbformat.read(source, as_version=4)
    done = nbformat.read(executed_path, as_version=4)
    box = [c for c in done.cells if PARAMETERS_TAG in c.metadata.get("tags", [])]
    injected = [c for c in done.cells if INJECTED_TAG in c.metadata.get("tags", [])]
    code = [c for c in done.cells if c.cell_type == "code" and INJECTED_TAG not in c.metadata.get("tags", [])]
    if len(code) != sum(c.cell_type == "code" for c in src.cells):
        return False
    it = iter(code)
    cells = []
    for cell in src.cells:
        if cell.cell_type != "code":
            cells.append(cell)
            continue
        ran = next(it)
        shows_run_values = "parameters" in cell.metadata.get("tags", [])  # _decorate rewrote its values
        if ran.source != cell.source and not shows_run_values:
            return False
        keep = {k: v for k, v in ran.metadata.items() if k not in ("tags", "mystnb")}
        shown = {k: cell.metadata[k] for k in ("tags", "mystnb") if cell.metadata.get(k)}
        ran.metadata = {**keep, **copy.deepcopy(shown)}
        cells.append(ran)
        if "parameters" in cell.metadata.get("tags", []):
            cells.extend(injected)
    done.cells = cells
    if box:
        _decorate(done, box[0].source)
    _atomic_write(executed_path, nbformat.writes(done))
    return True


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


def _select(stages: list[Stage], only: Sequence[str] | None) -> set[str]:
    """Stems to bring up to date: ``--only`` names plus every regular stage before the last one named."""
    if not only:
        return {s.stem for s in stages}
    by_name = {}
    for stage in stages:
        nb = stage.notebook
        for alias in (nb.stem, nb.name, str(nb), str(nb.with_suffix(""))):
            by_name[alias] = stage
    unknown = [name for name in only if name not in by_name]
    if unknown:
        names = ", ".join(s.stem for s in stages)
        raise InputError(f"--only: unknown notebook(s) {', '.join(unknown)}; the book has {names}")
    chosen = [by_name[name] for name in only]
    regular = [s for s in stages if not s.summary]
    if any(s.summary for s in chosen):  # a summary reads every regular stage
        last = len(regular) - 1
    else:
        last = max(regular.index(s) for s in chosen)
    return {s.stem for s in regular[: last + 1]} | {s.stem for s in chosen}


def book_stages(source_dir: Path) -> list[Stage]:
    """The book's stages in execution order: ``_toc.yml`` order, summary stages last."""
    notebooks = toc_notebooks(source_dir)
    stages = [Stage(nb, declared_parameters(source_dir / nb)) for nb in notebooks]
    if len({s.stem for s in stages}) != len(stages):
        raise InputError("two notebooks in _toc.yml share a file name; stems must be unique", source_dir)
    for stage in stages:
        stage.summary = SUMMARY_PARAMETER in stage.declared
    return [s for s in stages if not s.summary] + [s for s in stages if s.summary]


def run_book(
    profile: str = "default",
    overrides: Mapping[str, Any] | None = None,
    build_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    html: bool = True,
    source_dir: str | Path | None = None,
    progress: bool = True,
    force: bool = False,
    dry_run: bool = False,
    pdf: bool = False,
) -> BookRun:
    """Bring the book's stages up to date with a profile (cached ones are skipped), then build the HTML.

    ``source_dir`` (default: the repository) holds ``_config.yml``, ``_toc.yml``,
    ``book/`` and ``params/``. ``only`` brings these stages (by stem) up to date,
    with the earlier stages they read; later stages are left as they are.
    ``force`` re-executes the selected stages even when their cache is valid.
    The HTML is built only if every stage is up to date. ``dry_run`` only says
    which stages would run and why (status ``"would run"``), changing nothing.
    ``pdf`` also prints the whole book to ``<build>/book.pdf`` (:mod:`rcnnlib.book.pdf`).
    """
    started = time.perf_counter()
    source_dir = Path(source_dir or paths.REPO_ROOT).resolve()
    prof = load_profile(profile, params_dir(source_dir))
    build = Path(build_dir or source_dir / "build" / prof["name"]).resolve()
    for folder in BOOK_DIRS:
        if build == source_dir or build.is_relative_to(source_dir / folder):
            raise InputError("the build folder must lie outside the book sources", build)

    stages = book_stages(source_dir)
    artifacts = build / ARTIFACTS_DIR
    records = build / RECORDS_DIR
    provided = {
        "hits_dir": str(paths.hits_dir()),
        "artifacts_dir": str(artifacts),
        "artefacts_dir": str(artifacts),
        SUMMARY_PARAMETER: str(records),
        "source_dir": str(source_dir),
        "profile_name": prof["name"],
    }
    origins: dict[str, dict[str, str]] = {}
    declared = {s.stem: s.declared for s in stages}
    parameters = resolve_parameters(declared, prof, overrides, provided, origins)
    selected = _select(stages, only)

    say = _printer(progress)
    result = BookRun(build)
    with _build_lock(build):
        artifacts.mkdir(parents=True, exist_ok=True)
        common = {"format": CACHE_FORMAT, "environment": environment_fingerprint()}
        book_sources = {  # summary stages tabulate every profile and every parameters cell
            "profiles": _hash_tree(params_dir(source_dir)),
            "code": [notebook_hashes(source_dir / s.notebook)[0] for s in stages],
        }
        data_fps: dict[str, str] = {}
        keys: list[str] = []
        runs: list[str | None] = []
        for stage in stages:
            values = parameters[stage.stem]
            hits = str(values.get("hits_dir") or paths.hits_dir())
            if hits not in data_fps:
                data_fps[hits] = data_fingerprint(Path(hits))
            code_hash, shown_hash = notebook_hashes(source_dir / stage.notebook)
            modules = library_modules(code_sources(source_dir / stage.notebook))
            parts = {
                **common,
                "notebook": stage.notebook.as_posix(),
                "code": code_hash,
                "parameters": values,
                "library": library_fingerprint(modules),
                "data": data_fps[hits],
                "upstream": keys,
                **({"book": book_sources} if stage.summary else {}),
            }
            key = _digest(parts)
            reasons = {name: _digest(value) for name, value in parts.items()}
            record = read_record(records, stage.stem)
            executed_path = build / stage.notebook
            use_cache = (
                record is not None
                and record.get("status") == "ok"
                and record.get("key") == key
                and record.get("upstream_runs") == runs
                and executed_path.is_file()
                and not (force and stage.stem in selected)
            )
            status = "cached"
            if use_cache and dry_run and record.get("shown") != shown_hash:
                status = "would refresh"
            elif use_cache and record.get("shown") != shown_hash:  # markdown or tags edited: re-render only
                use_cache = _refresh_presentation(source_dir / stage.notebook, executed_path)
                if use_cache:
                    record["shown"] = shown_hash
                    _atomic_write(records / f"{stage.stem}.json", json.dumps(record, indent=1, default=str))
                    status = "refreshed"
            regular_fresh = all(
                r.status in ("cached", "refreshed", "executed", "would run") for r in result.stages
            )
            if use_cache:
                result.stages.append(StageResult(stage.stem, status, key, 0.0, record))
                when, took = record.get("finished", "?"), record.get("seconds", 0)
                say(f"  {stage.stem}: {status} (executed {when} in {took:.0f} s)")
            elif not (stage.stem in selected or (stage.summary and regular_fresh)):
                result.stages.append(StageResult(stage.stem, "not run", key, 0.0, record))
                say(f"  {stage.stem}: out of date, not run")
            elif dry_run:
                result.stages.append(StageResult(stage.stem, "would run", key, 0.0, None))
                say(f"  {stage.stem}: would run ({_why(record, reasons, runs, executed_path)})")
            else:
                say(f"  {stage.stem}: running ({_why(record, reasons, runs, executed_path)})...")
                record = _execute_stage(
                    stage,
                    source_dir,
                    build,
                    values,
                    origins.get(stage.stem, {}),
                    prof["name"],
                    key,
                    shown_hash,
                    runs,
                    reasons,
                )
                if record["status"] != "ok":
                    result.stages.append(StageResult(stage.stem, "failed", key, record["seconds"], record))
                    _remove_html(build)
                    result.seconds = time.perf_counter() - started
                    _write_run(build, prof["name"], result, parameters, overrides)
                    raise InputError(f"{record['error']}; HTML not built", stage.notebook.as_posix())
                result.stages.append(StageResult(stage.stem, "executed", key, record["seconds"], record))
                say(f"  {stage.stem}: executed in {record['seconds']:.0f} s")
            keys.append(key)
            done = result.stages[-1].status
            if done == "would run":  # a dry run: whatever reads this stage would run after it
                runs.append("pending")
            else:
                runs.append(record.get("run_id") if done != "not run" and record else None)

        result.stale = [s.stage for s in result.stages if s.status == "not run"]
        if dry_run:
            result.seconds = time.perf_counter() - started
            return result
        copy_book_sources(source_dir, build)
        changed = any(s.status in ("executed", "refreshed") for s in result.stages)
        if result.stale:
            _remove_html(build)
            say(f"  HTML not built: {', '.join(result.stale)} out of date (run without --only to build them)")
        elif not html and changed:
            _remove_html(build)  # the old HTML no longer matches the executed notebooks
        elif html:
            start = time.perf_counter()
            result.html = build_html(build)
            result.html_seconds = time.perf_counter() - start
            say(f"  HTML built in {result.html_seconds:.0f} s")
            if pdf:
                from rcnnlib.book.pdf import build_pdf

                start = time.perf_counter()
                result.pdf = build_pdf(build)
                say(f"  PDF printed in {time.perf_counter() - start:.0f} s")
        result.seconds = time.perf_counter() - started
        _write_run(build, prof["name"], result, parameters, overrides)
    return result


def _printer(progress: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    return say


def _remove_html(build: Path) -> None:
    """No stale book: the HTML (and PDF) of an earlier build go when a stage fails or is left out of date."""
    shutil.rmtree(build / "_build" / "html", ignore_errors=True)
    shutil.rmtree(build / "_build" / "singlehtml", ignore_errors=True)
    (build / "book.pdf").unlink(missing_ok=True)


def _execute_stage(
    stage: Stage,
    source_dir: Path,
    build: Path,
    values: Mapping[str, Any],
    origins: Mapping[str, str],
    profile: str,
    key: str,
    shown_hash: str,
    runs: list[str | None],
    reasons: Mapping[str, str],
) -> dict[str, Any]:
    """Execute one stage into a scratch copy, then publish notebook and record atomically."""
    import nbformat

    records = build / RECORDS_DIR
    final = build / stage.notebook
    scratch = build / RUNNING_DIR / stage.notebook
    record: dict[str, Any] = {
        "stage": stage.stem,
        "notebook": stage.notebook.as_posix(),
        "profile": profile,
        "key": key,
        "shown": shown_hash,
        "status": "running",  # what an interrupted run leaves: not ok, so the next run re-executes
        "run_id": uuid.uuid4().hex,
        "upstream_runs": list(runs),
        "parts": dict(reasons),  # digest of each part of the key: says what changed next time
        "parameters": dict(values),
        "started": _now(),
    }
    _atomic_write(records / f"{stage.stem}.json", json.dumps(record, indent=1, default=str))
    stage_dir = build / ARTIFACTS_DIR / stage.stem
    shutil.rmtree(stage_dir, ignore_errors=True)
    stage_dir.mkdir(parents=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        execute_notebook(
            source_dir / stage.notebook,
            scratch,
            values,
            stage.notebook.as_posix(),
            cwd=final.parent,
            kept_at=final,
        )
        record["status"] = "ok"
    except InputError as exc:
        record["status"] = "failed"
        record["error"] = exc.problem
    record["seconds"] = round(time.perf_counter() - start, 2)
    record["finished"] = _now()
    if scratch.is_file():
        executed = nbformat.read(scratch, as_version=4)
        box = parameters_markdown(stage, values, origins, profile, record)
        _atomic_write(final, nbformat.writes(_decorate(executed, box)))
        scratch.unlink()
    elif record["status"] == "failed":
        record["error"] = record["error"].replace(
            f"partial notebook kept at {final}", "no notebook was written"
        )
    _atomic_write(records / f"{stage.stem}.json", json.dumps(record, indent=1, default=str))
    return record


def _write_run(
    build: Path,
    profile: str,
    result: BookRun,
    parameters: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
) -> None:
    """``book-run.json``: this run's stages (executed or cached), their wall times and parameters."""
    summary = {
        "profile": profile,
        "finished": _now(),
        "seconds": round(result.seconds, 2),
        "overrides": dict(overrides or {}),
        "html": str(result.html) if result.html else None,
        "html_seconds": None if result.html_seconds is None else round(result.html_seconds, 2),
        "stages": [
            {
                "stage": s.stage,
                "status": s.status,
                "key": s.key,
                "seconds_this_run": round(s.seconds, 2),
                "seconds_last_execution": (s.record or {}).get("seconds"),
                "executed": (s.record or {}).get("finished"),
                "parameters": parameters.get(s.stage, {}),
            }
            for s in result.stages
        ],
    }
    _atomic_write(build / RUN_FILE, json.dumps(summary, indent=1, default=str))


# ------------------------------------------------------------- the chapters
def parameter_table(source_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Every parameter of every notebook: default, meaning and value in each profile (for the book).

    Read from the notebooks' ``parameters`` cells (``name = value  # meaning``)
    and ``params/*.yaml``; runner-provided values are marked as such.
    """
    source_dir = Path(source_dir or paths.REPO_ROOT)
    stages = book_stages(source_dir)
    declared = {s.stem: s.declared for s in stages}
    profiles = {
        name: load_profile(name, params_dir(source_dir))
        for name in available_profiles(params_dir(source_dir))
    }
    resolved = {name: resolve_parameters(declared, prof) for name, prof in profiles.items()}
    rows = []
    for stem, params in declared.items():
        for name, info in params.items():
            row = {"notebook": stem, "parameter": name, "notebook default": info.get("default", "")}
            for profile, values in resolved.items():
                if name in RUNNER_PROVIDED:
                    row[profile] = "(runner)"
                else:
                    row[profile] = json.dumps(values[stem][name], default=str) if name in values[stem] else ""
            row["meaning"] = info.get("help") or ""
            rows.append(row)
    return rows
