"""How an executed chapter is presented: the parameter box, folded code, run values, default alt text."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rcnnlib.book.cache import StageRecord
from rcnnlib.book.profiles import RUNNER_PROVIDED, Stage
from rcnnlib.outputs import write_atomic

PARAMETERS_TAG = "rcnnlib-parameters"
INJECTED_TAG = "injected-parameters"


def _format_value(value: Any, root: Path | None = None) -> str:
    if isinstance(value, str) and root is not None and Path(value).is_absolute():
        value = os.path.relpath(value, root)  # a folder the runner chose, as the reader would type it
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def parameters_markdown(
    stage: Stage,
    values: Mapping[str, Any],
    origins: Mapping[str, str],
    profile: str,
    record: StageRecord,
    root: Path | None = None,
) -> str:
    """The box at the top of an executed chapter: every parameter, its value and where it came from.

    Absolute paths show relative to ``root`` (the book's sources), so the box stays narrow.
    """
    rows = []
    for name, info in stage.declared.items():
        if name in values:
            value, origin = _format_value(values[name], root), origins.get(name, "runner")
        else:
            value, origin = f"`{info.get('default', '')}`".replace("|", "\\|"), "notebook default"
        meaning = str(info.get("help") or "").replace("|", "\\|")
        rows.append(f"| `{name}` | {value} | {origin} | {meaning} |")
    ok = record.ok
    when = (record.finished or "")[:16].replace("T", " ")
    took = f"{record.seconds or 0:.0f} s"
    lines = [  # collapsed: the title says the essentials, the table is a click away
        f":::{{admonition}} Parameters of this run: profile `{profile}`, {when} UTC, {took}"
        + ("" if ok else " (**failed**)"),
        ":class: note dropdown" if ok else ":class: error",
        f"Profile `{profile}`; {'ran' if ok else '**failed**'} {when} UTC in {took}; "
        f"stage key `{record.key[:12]}`.",
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


def decorate(executed: Any, box: str) -> Any:
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
        shown = ast.parse(defaults)
    except SyntaxError:
        return defaults
    values = {
        node.targets[0].id: ast.get_source_segment(injected, node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
    }
    lines = defaults.splitlines()
    for node in reversed(shown.body):  # bottom up: replacing a span keeps the line numbers above it
        if not (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):
            continue
        name = node.targets[0].id
        if name not in values or name in RUNNER_PROVIDED or node.end_lineno is None:
            continue
        first, last = node.lineno - 1, node.end_lineno - 1
        comment = re.search(r"\s+#.*$", lines[last][node.end_col_offset or 0 :])
        equals = re.match(r"^\w+(\s*=\s*)", lines[first])
        lines[first : last + 1] = [
            f"{name}{equals.group(1) if equals else ' = '}{values[name]}{comment.group(0) if comment else ''}"
        ]
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


def refresh_presentation(source: Path, executed_path: Path) -> bool:
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
        decorate(done, box[0].source)
    write_atomic(executed_path, nbformat.writes(done))
    return True
