"""The book's shape: the parameter profiles (``params/*.yaml``), the stages of ``_toc.yml``, their parameters.

Precedence of values, lowest first: the notebook's default, values the runner
provides, the profile's ``common``, its notebook section, ``-p KEY``, ``-p NOTEBOOK.KEY``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rcnnlib import paths
from rcnnlib.errors import InputError

PROFILE_KEYS = ("description", "common", "notebooks")


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


def _valid_keys(declared: Mapping[str, Mapping[str, Any]]) -> str:
    """The keys a profile or ``-p`` may set, for error messages."""
    names = sorted({name for params in declared.values() for name in params})
    if not names:
        return "none (no notebook declares parameters)"
    stems = ", ".join(stem for stem, params in declared.items() if params)
    return f"{', '.join(names)} (or NOTEBOOK.KEY for one notebook: {stems})"


def _check_profile(declared: Mapping[str, Mapping[str, Any]], profile: Mapping[str, Any]) -> None:
    """Every key of the profile is declared by a notebook it applies to: a typo never passes silently."""
    all_names = {name for params in declared.values() for name in params}
    source = profile.get("path")
    for key in profile.get("common", {}):
        if key not in all_names:
            raise InputError(
                f"common.{key} is declared by no notebook; valid keys: {_valid_keys(declared)}", source
            )
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


def _split_overrides(
    declared: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``-p KEY`` values (for every notebook declaring KEY) and ``-p NOTEBOOK.KEY`` values, by notebook."""
    all_names = {name for params in declared.values() for name in params}
    plain: dict[str, Any] = {}
    qualified: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        stem, dot, name = key.rpartition(".")
        if dot and stem in declared and name in declared[stem]:
            qualified.setdefault(stem, {})[name] = value
        elif not dot and key in all_names:
            plain[key] = value
        else:
            raise InputError(f"unknown parameter {key!r}; valid keys: {_valid_keys(declared)}")
    return plain, qualified


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
    _check_profile(declared, profile)
    plain, qualified = _split_overrides(declared, dict(overrides or {}))
    name = profile.get("name", "profile")
    resolved: dict[str, dict[str, Any]] = {}
    for stem, params in declared.items():
        layers = (  # lowest precedence first
            ("runner", dict(provided or {})),
            (f"profile {name}, common", profile.get("common", {})),
            (f"profile {name}, chapter", profile.get("notebooks", {}).get(stem, {})),
            ("command line", plain),
            ("command line, chapter", qualified.get(stem, {})),
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


SUMMARY_PARAMETER = "stage_records"


RUNNER_PROVIDED = (
    "hits_dir",
    "artifacts_dir",
    "artefacts_dir",
    SUMMARY_PARAMETER,
    "source_dir",
    "profile_name",
)
"""Parameters the runner sets (see the module docstring), injected where a notebook declares them."""


@dataclass
class Stage:
    """One notebook of the book and what the runner knows about it."""

    notebook: Path  # relative to the sources
    declared: dict[str, Any]
    summary: bool = False

    @property
    def stem(self) -> str:
        return self.notebook.stem


def book_stages(source_dir: Path) -> list[Stage]:
    """The book's stages in execution order: ``_toc.yml`` order, summary stages last."""
    notebooks = toc_notebooks(source_dir)
    stages = [Stage(nb, declared_parameters(source_dir / nb)) for nb in notebooks]
    if len({s.stem for s in stages}) != len(stages):
        raise InputError("two notebooks in _toc.yml share a file name; stems must be unique", source_dir)
    for stage in stages:
        stage.summary = SUMMARY_PARAMETER in stage.declared
    return [s for s in stages if not s.summary] + [s for s in stages if s.summary]


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
