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

import contextlib
import datetime as dt
import fcntl
import json
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rcnnlib import paths
from rcnnlib.book.cache import (
    CACHE_FORMAT,
    RECORDS_DIR,
    StageRecord,
    code_sources,
    data_fingerprint,
    digest,
    environment_fingerprint,
    hash_tree,
    library_fingerprint,
    library_modules,
    notebook_hashes,
    read_record,
    why_not_cached,
)
from rcnnlib.book.decorate import decorate, parameters_markdown, refresh_presentation
from rcnnlib.book.execute import execute_notebook
from rcnnlib.book.html import BOOK_DIRS, build_html, copy_book_sources, remove_html
from rcnnlib.book.profiles import (
    SUMMARY_PARAMETER,
    Stage,
    book_stages,
    load_profile,
    params_dir,
    resolve_parameters,
)
from rcnnlib.errors import InputError
from rcnnlib.outputs import write_atomic

ARTIFACTS_DIR = "artifacts"
RUN_FILE = "book-run.json"
RUNNING_DIR = ".running"
LOCK_FILE = ".lock"
DONE = ("cached", "refreshed", "executed", "would run")
"""Statuses of a stage that is up to date at the end of its turn (or would be, in a dry run)."""


@dataclass
class StageResult:
    """What happened to a stage in one run: executed, cached, refreshed (prose only), failed, or not run."""

    stage: str
    status: str
    key: str | None = None
    seconds: float = 0.0
    record: StageRecord | None = None


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


@dataclass
class BuildPlan:
    """What a run resolves before it executes anything: sources, build folder, stages and their values."""

    source_dir: Path
    build: Path
    profile: str
    stages: list[Stage]
    parameters: dict[str, dict[str, Any]]
    origins: dict[str, dict[str, str]]
    selected: set[str]
    overrides: dict[str, Any]

    @property
    def records(self) -> Path:
        return self.build / RECORDS_DIR

    @property
    def artifacts(self) -> Path:
        return self.build / ARTIFACTS_DIR


@dataclass
class StageKey:
    """A stage's cache key, the digest of each part of it, and the hash of its prose and tags."""

    key: str
    parts: dict[str, str]
    shown: str


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


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


def plan_build(
    profile: str,
    overrides: Mapping[str, Any] | None,
    build_dir: str | Path | None,
    only: Sequence[str] | None,
    source_dir: str | Path | None,
) -> BuildPlan:
    """Read the profile and the toc, resolve each stage's parameters; refuse a build folder in the sources."""
    source = Path(source_dir or paths.REPO_ROOT).resolve()
    prof = load_profile(profile, params_dir(source))
    build = Path(build_dir or source / "build" / prof["name"]).resolve()
    for folder in BOOK_DIRS:
        if build == source or build.is_relative_to(source / folder):
            raise InputError("the build folder must lie outside the book sources", build)
    stages = book_stages(source)
    provided = {
        "hits_dir": str(paths.hits_dir()),
        "artifacts_dir": str(build / ARTIFACTS_DIR),
        "artefacts_dir": str(build / ARTIFACTS_DIR),
        SUMMARY_PARAMETER: str(build / RECORDS_DIR),
        "source_dir": str(source),
        "profile_name": prof["name"],
    }
    origins: dict[str, dict[str, str]] = {}
    declared = {s.stem: s.declared for s in stages}
    parameters = resolve_parameters(declared, prof, overrides, provided, origins)
    selected = _select(stages, only)
    return BuildPlan(
        source, build, prof["name"], stages, parameters, origins, selected, dict(overrides or {})
    )


class _KeyMaker:
    """Stage keys in order: each includes the keys of every stage before it (a conservative chain)."""

    def __init__(self, plan: BuildPlan) -> None:
        self.plan = plan
        self.common = {"format": CACHE_FORMAT, "environment": environment_fingerprint()}
        self.book_sources = {  # summary stages tabulate every profile and every parameters cell
            "profiles": hash_tree(params_dir(plan.source_dir)),
            "code": [notebook_hashes(plan.source_dir / s.notebook)[0] for s in plan.stages],
        }
        self.data: dict[str, str] = {}
        self.upstream: list[str] = []

    def key(self, stage: Stage) -> StageKey:
        values = self.plan.parameters[stage.stem]
        hits = str(values.get("hits_dir") or paths.hits_dir())
        if hits not in self.data:
            self.data[hits] = data_fingerprint(Path(hits))
        notebook = self.plan.source_dir / stage.notebook
        code_hash, shown_hash = notebook_hashes(notebook)
        parts = {
            **self.common,
            "notebook": stage.notebook.as_posix(),
            "code": code_hash,
            "parameters": values,
            "library": library_fingerprint(library_modules(code_sources(notebook))),
            "data": self.data[hits],
            "upstream": list(self.upstream),
            **({"book": self.book_sources} if stage.summary else {}),
        }
        key = digest(parts)
        self.upstream.append(key)
        return StageKey(key, {name: digest(value) for name, value in parts.items()}, shown_hash)


def _reuse(
    plan: BuildPlan,
    stage: Stage,
    key: StageKey,
    record: StageRecord | None,
    runs: list,
    force: bool,
    dry_run: bool,
) -> str | None:
    """``cached``, ``refreshed`` or ``would refresh`` if the stage's last execution still holds, else None.

    A record holds when it is ok, has the same key, read the same upstream runs and
    its executed notebook exists. When only prose or tags changed, the executed
    notebook is re-rendered from the sources instead of re-executed.
    """
    executed = plan.build / stage.notebook
    if (
        record is None
        or not record.ok
        or record.key != key.key
        or record.upstream_runs != runs
        or not executed.is_file()
        or (force and stage.stem in plan.selected)
    ):
        return None
    if record.shown == key.shown:
        return "cached"
    if dry_run:
        return "would refresh"
    if not refresh_presentation(plan.source_dir / stage.notebook, executed):
        return None
    record.shown = key.shown
    record.write(plan.records)
    return "refreshed"


def _bring_up_to_date(
    plan: BuildPlan, result: BookRun, say: Callable[[str], None], force: bool, dry_run: bool, started: float
) -> None:
    """Each stage in order: reuse its last execution, leave it out of date, or execute it."""
    keys = _KeyMaker(plan)
    runs: list[str | None] = []  # run id of each earlier stage, as the stages after it read them
    for stage in plan.stages:
        key = keys.key(stage)
        record = read_record(plan.records, stage.stem)
        status = _reuse(plan, stage, key, record, runs, force, dry_run)
        upstream_fresh = all(r.status in DONE for r in result.stages)
        executed = plan.build / stage.notebook
        if status is not None and record is not None:
            result.stages.append(StageResult(stage.stem, status, key.key, 0.0, record))
            say(
                f"  {stage.stem}: {status} (executed {record.finished or '?'} in {record.seconds or 0:.0f} s)"
            )
        elif not (stage.stem in plan.selected or (stage.summary and upstream_fresh)):
            result.stages.append(StageResult(stage.stem, "not run", key.key, 0.0, record))
            say(f"  {stage.stem}: out of date, not run")
        elif dry_run:
            result.stages.append(StageResult(stage.stem, "would run", key.key, 0.0, None))
            say(f"  {stage.stem}: would run ({why_not_cached(record, key.parts, runs, executed)})")
        else:
            say(f"  {stage.stem}: running ({why_not_cached(record, key.parts, runs, executed)})...")
            record = _execute_stage(plan, stage, key, runs)
            seconds = record.seconds or 0.0
            if not record.ok:
                result.stages.append(StageResult(stage.stem, "failed", key.key, seconds, record))
                remove_html(plan.build)
                result.seconds = time.perf_counter() - started
                _write_run(plan, result)
                raise InputError(f"{record.error}; HTML not built", stage.notebook.as_posix())
            result.stages.append(StageResult(stage.stem, "executed", key.key, seconds, record))
            say(f"  {stage.stem}: executed in {seconds:.0f} s")
        done = result.stages[-1]
        if done.status == "would run":  # a dry run: whatever reads this stage would run after it
            runs.append("pending")
        else:
            runs.append(done.record.run_id if done.status != "not run" and done.record else None)
    result.stale = [s.stage for s in result.stages if s.status == "not run"]


def _publish(plan: BuildPlan, result: BookRun, html: bool, pdf: bool, say: Callable[[str], None]) -> None:
    """Copy the book sources beside the executed stages, build the HTML (and PDF), or remove a stale one."""
    copy_book_sources(plan.source_dir, plan.build)
    changed = any(s.status in ("executed", "refreshed") for s in result.stages)
    if result.stale:
        remove_html(plan.build)
        say(f"  HTML not built: {', '.join(result.stale)} out of date (run without --only to build them)")
    elif not html and changed:
        remove_html(plan.build)  # the old HTML no longer matches the executed notebooks
    elif html:
        start = time.perf_counter()
        result.html = build_html(plan.build)
        result.html_seconds = time.perf_counter() - start
        say(f"  HTML built in {result.html_seconds:.0f} s")
        if pdf:
            from rcnnlib.book.pdf import build_pdf

            start = time.perf_counter()
            result.pdf = build_pdf(plan.build)
            say(f"  PDF printed in {time.perf_counter() - start:.0f} s")


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
    plan = plan_build(profile, overrides, build_dir, only, source_dir)
    say = _printer(progress)
    result = BookRun(plan.build)
    with _build_lock(plan.build):
        plan.artifacts.mkdir(parents=True, exist_ok=True)
        _bring_up_to_date(plan, result, say, force, dry_run, started)
        if not dry_run:
            _publish(plan, result, html, pdf, say)
        result.seconds = time.perf_counter() - started
        if not dry_run:
            _write_run(plan, result)
    return result


def _printer(progress: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if progress:
            print(text, flush=True)

    return say


def _execute_stage(plan: BuildPlan, stage: Stage, key: StageKey, runs: list[str | None]) -> StageRecord:
    """Execute one stage into a scratch copy, then publish notebook and record atomically."""
    import nbformat

    final = plan.build / stage.notebook
    scratch = plan.build / RUNNING_DIR / stage.notebook
    values = plan.parameters[stage.stem]
    record = StageRecord(
        stage=stage.stem,
        notebook=stage.notebook.as_posix(),
        profile=plan.profile,
        key=key.key,
        shown=key.shown,
        upstream_runs=list(runs),
        parts=dict(key.parts),
        parameters=dict(values),
        started=_now(),
    )
    record.write(plan.records)  # status "running" until it finishes
    stage_dir = plan.artifacts / stage.stem
    shutil.rmtree(stage_dir, ignore_errors=True)
    stage_dir.mkdir(parents=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        execute_notebook(
            plan.source_dir / stage.notebook,
            scratch,
            values,
            stage.notebook.as_posix(),
            cwd=final.parent,
            kept_at=final,
        )
        record.status = "ok"
    except InputError as exc:
        record.status = "failed"
        record.error = exc.problem
    record.seconds = round(time.perf_counter() - start, 2)
    record.finished = _now()
    if scratch.is_file():
        executed = nbformat.read(scratch, as_version=4)
        box = parameters_markdown(
            stage, values, plan.origins.get(stage.stem, {}), plan.profile, record, plan.source_dir
        )
        write_atomic(final, nbformat.writes(decorate(executed, box)))
        scratch.unlink()
    elif record.error:
        record.error = record.error.replace(f"partial notebook kept at {final}", "no notebook was written")
    record.write(plan.records)
    return record


def _write_run(plan: BuildPlan, result: BookRun) -> None:
    """``book-run.json``: this run's stages (executed or cached), their wall times and parameters."""
    summary = {
        "profile": plan.profile,
        "finished": _now(),
        "seconds": round(result.seconds, 2),
        "overrides": plan.overrides,
        "html": str(result.html) if result.html else None,
        "html_seconds": None if result.html_seconds is None else round(result.html_seconds, 2),
        "stages": [
            {
                "stage": s.stage,
                "status": s.status,
                "key": s.key,
                "seconds_this_run": round(s.seconds, 2),
                "seconds_last_execution": s.record.seconds if s.record else None,
                "executed": s.record.finished if s.record else None,
                "parameters": plan.parameters.get(s.stage, {}),
            }
            for s in result.stages
        ],
    }
    write_atomic(plan.build / RUN_FILE, json.dumps(summary, indent=1, default=str))
