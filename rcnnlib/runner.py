"""``rcnnlib book``: execute the stage notebooks with a parameter profile, then build the HTML book.

The notebooks are the paper's stages (survey, simulation, training, evaluation).
They are thin: parameters cell, library calls, figures. This runner

1. reads a profile ``params/<name>.yaml`` (``ci`` small and fast, ``default``
   laptop-sized, ``paper`` published scale) with ``common:`` values and one
   section per notebook under ``notebooks:``;
2. executes the notebooks listed in ``_toc.yml``, in that order, with papermill
   into a build folder outside the sources (``build/<profile>/`` by default),
   injecting only the parameters each notebook declares in its cell tagged
   ``parameters``;
3. copies the book sources beside the executed notebooks and runs
   ``jupyter-book build`` there (the book config has execution off: papermill
   already ran everything), giving ``build/<profile>/_build/html``.

Adding a chapter is adding its notebook to ``_toc.yml`` and, if it needs
non-default values, a section named after the notebook (file stem) in the
profiles. Precedence, lowest first: the notebook's own default, values the
runner provides (``hits_dir``, ``artifacts_dir``), the profile's ``common``, the
profile's notebook section, ``-p KEY VALUE``, ``-p NOTEBOOK.KEY VALUE``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
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
) -> dict[str, dict[str, Any]]:
    """Parameters to inject into each notebook (by stem), keeping only the ones it declares.

    ``declared`` maps notebook stem -> declared parameters; ``provided`` are
    runner values (paths) injected where declared. Keys that no notebook
    declares are errors that list the valid ones, so a typo never passes silently.
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
        layers = (
            provided,
            profile.get("common", {}),
            profile.get("notebooks", {}).get(stem, {}),
            plain,
            qualified.get(stem, {}),
        )
        values: dict[str, Any] = {}
        for layer in layers:
            values.update({k: v for k, v in layer.items() if k in params})
        resolved[stem] = values
    return resolved


# -------------------------------------------------------------- execution
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


def execute_notebook(source: Path, output: Path, parameters: Mapping[str, Any], label: str) -> None:
    """Run one notebook with papermill into ``output``; a failure is one :class:`InputError` line.

    The partial notebook stays at ``output`` so the traceback can be read there.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output.parent.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("MPLBACKEND")
    # A headless MPLBACKEND=Agg inherited from the caller would stop the kernel from
    # rendering figures into the notebook; the inline backend is headless too.
    os.environ["MPLBACKEND"] = INLINE_BACKEND
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=dict(parameters),
            kernel_name=KERNEL_NAME,
            cwd=str(output.parent),
            progress_bar=False,
            log_output=False,
            # the kernel's own start-up warnings (TCP transport...) are noise in a build log
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
        )
    except PapermillExecutionError as exc:
        number = _code_cell_number(source, exc.source)
        where = f"code cell {number}" if number is not None else f"cell In [{exc.exec_count}]"
        evalue = " ".join(str(exc.evalue).split())
        raise InputError(
            f"{where} ({_first_line(exc.source)!r}) raised {exc.ename}: {evalue}; "
            f"partial notebook kept at {output}",
            label,
        ) from None
    except Exception as exc:  # dead kernel, timeout, missing kernel...
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"execution failed: {message}; partial notebook kept at {output}", label) from None
    finally:
        if previous is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = previous


def copy_book_sources(source_dir: Path, build_dir: Path) -> None:
    """Copy the book config and non-notebook sources beside the executed notebooks."""
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
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)


def build_html(build_dir: Path) -> Path:
    """``jupyter-book build`` on the build folder; returns ``_build/html``."""
    cmd = [
        sys.executable,
        "-c",
        "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
        "build",
        str(build_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log = build_dir / "_build" / "jupyter-book.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + proc.stderr)
    html = build_dir / "_build" / "html"
    if proc.returncode != 0 or not (html / "index.html").is_file():
        tail = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()][-1:]
        raise InputError(f"jupyter-book build failed ({' '.join(tail)}); full log in {log}", build_dir)
    return html


def _select(notebooks: list[Path], only: Sequence[str] | None) -> list[Path]:
    if not only:
        return notebooks
    by_name = {}
    for nb in notebooks:
        for alias in (nb.stem, nb.name, str(nb), str(nb.with_suffix(""))):
            by_name[alias] = nb
    unknown = [name for name in only if name not in by_name]
    if unknown:
        names = ", ".join(nb.stem for nb in notebooks)
        raise InputError(f"--only: unknown notebook(s) {', '.join(unknown)}; the book has {names}")
    chosen = {by_name[name] for name in only}
    return [nb for nb in notebooks if nb in chosen]


def run_book(
    profile: str = "default",
    overrides: Mapping[str, Any] | None = None,
    build_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    html: bool = True,
    source_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Execute the book's notebooks with a profile and build the HTML; returns the build folder.

    ``source_dir`` (default: the repository) holds ``_config.yml``, ``_toc.yml``,
    ``book/`` and ``params/``. ``only`` runs a subset of notebooks (by stem);
    the others keep their previous executed copy in the build folder.
    """
    from tqdm import tqdm

    source_dir = Path(source_dir or paths.REPO_ROOT).resolve()
    prof = load_profile(profile, params_dir(source_dir))
    build = Path(build_dir or source_dir / "build" / prof["name"]).resolve()
    for folder in BOOK_DIRS:
        if build == source_dir or build.is_relative_to(source_dir / folder):
            raise InputError("the build folder must lie outside the book sources", build)

    notebooks = toc_notebooks(source_dir)
    declared = {nb.stem: declared_parameters(source_dir / nb) for nb in notebooks}
    if len(declared) != len(notebooks):
        raise InputError("two notebooks in _toc.yml share a file name; stems must be unique", source_dir)
    artifacts = build / ARTIFACTS_DIR
    provided = {"hits_dir": str(paths.hits_dir()), "artifacts_dir": str(artifacts)}
    parameters = resolve_parameters(declared, prof, overrides, provided)
    selected = _select(notebooks, only)

    build.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(exist_ok=True)
    with tqdm(selected, desc=f"book [{prof['name']}]", unit="notebook", disable=not progress) as bar:
        for nb in bar:
            bar.set_postfix_str(nb.stem)
            start = time.perf_counter()
            execute_notebook(source_dir / nb, build / nb, parameters[nb.stem], label=str(nb))
            bar.write(f"  {nb.stem}: {time.perf_counter() - start:.0f} s")
    for nb in notebooks:  # not selected this time and never executed: show the source
        if not (build / nb).is_file():
            (build / nb).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source_dir / nb, build / nb)
    copy_book_sources(source_dir, build)
    if html:
        build_html(build)
    return build


# --------------------------------------------------------------------- CLI
def add_cli(sub: argparse._SubParsersAction) -> None:
    """Register ``rcnnlib book``."""
    parser = sub.add_parser(
        "book",
        help="execute the notebooks with a parameter profile and build the HTML book",
        description="Execute the stage notebooks with a parameter profile, then build the HTML book.",
    )
    parser.add_argument("--profile", default="default", help="params/<NAME>.yaml: ci, default or paper")
    parser.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("KEY", "VALUE"),
        default=[],
        help="override a parameter (KEY or NOTEBOOK.KEY); VALUE is read as YAML (3, 0.5, true, null)",
    )
    parser.add_argument("--build-dir", type=Path, help="output folder (default build/<profile>)")
    parser.add_argument("--only", nargs="+", metavar="NOTEBOOK", help="execute only these notebooks")
    parser.add_argument("--no-html", action="store_true", help="execute the notebooks but skip jupyter-book")
    parser.set_defaults(func=_cmd_book)


def _cmd_book(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    build = run_book(
        profile=args.profile,
        overrides=parse_overrides(args.param),
        build_dir=args.build_dir,
        only=args.only,
        html=not args.no_html,
    )
    elapsed = time.perf_counter() - start
    if args.no_html:
        print(f"executed notebooks in {build} ({elapsed:.0f} s)")
    else:
        print(f"book built in {elapsed:.0f} s: {build / '_build' / 'html' / 'index.html'}")
    return 0
