"""What no reader of the book should meet, checked on the executed notebooks and the built pages.

Every expectation is derived from the sources, not from a hand-kept list: the
figures a page must show are the image outputs of its executed notebook, the
pages are those of ``_toc.yml``. Each check returns a list of problems (empty
when the page is fine), so a test can plant a defect in a copy of a page and see
the check report it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
FIGURE_REPR = re.compile(r"<Figure size \d+x\d+ with \d+ Axes>")
LOG_LINE = re.compile(
    r"(?m)(^|\s)[IWEF]\d{4} \d\d:\d\d:\d\d[.\d]*\s+\d+ \S+\.cc:\d+\]"  # absl / TensorFlow C++
    r"|WARNING:(tensorflow|absl)"
    r"|All log messages before absl::InitializeLog"
    r"|oneDNN custom operations"
    r"|\[\w*App\] (WARNING|ERROR|CRITICAL)"  # a Jupyter application's log (the kernel's)
    r"|\b\w*Warning: "  # a Python warning printed by the warnings module
)
EMPTY_CELL = re.compile(r"^\s*(NaN|nan|<NA>)\s*$")  # a missing value printed raw (None is a value)
SHOWN_CODE_TAGS = ("parameters", "show-input")
"""Tags of code cells that stay open in the book: the chapter's knobs and code that is the lesson."""


@dataclass(frozen=True)
class NotebookFigures:
    """What an executed notebook holds: image outputs, figures printed as text, captioned figure cells."""

    images: int
    reprs: int
    figure_cells: int
    uncaptioned: list[int]  # indices of cells with an image output but no figure caption in their metadata


def notebook_figures(notebook: Any) -> NotebookFigures:
    """Count the figures of an executed notebook (an ``nbformat`` node or a path to one)."""
    if isinstance(notebook, str | Path):
        import nbformat

        notebook = nbformat.read(notebook, as_version=4)
    images = reprs = figure_cells = 0
    uncaptioned = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        n_images = 0
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            n_images += sum(kind in data for kind in IMAGE_TYPES)
            # a figure that reached the page only as text: a text/plain repr without an image beside it
            text = "" if any(k in data for k in IMAGE_TYPES) else data.get("text/plain", "")
            reprs += len(FIGURE_REPR.findall(text + output.get("text", "")))
        images += n_images
        if n_images:
            figure_cells += 1
            caption = cell.metadata.get("mystnb", {}).get("figure", {}).get("caption")
            if not caption:
                uncaptioned.append(index)
    return NotebookFigures(images, reprs, figure_cells, uncaptioned)


def _soup(html: str) -> Any:
    from bs4 import BeautifulSoup

    return BeautifulSoup(html, "html.parser")


def _main(soup: Any) -> Any:
    """The page's article: navigation and footers are the theme's, not the chapter's."""
    return soup.find("article") or soup.find("main") or soup


def page_images(html: str) -> list[str]:
    """Sources of the figures a page shows (images the notebook produced, under ``_images/``)."""
    return [
        img.get("src", "") for img in _main(_soup(html)).find_all("img") if "_images/" in img.get("src", "")
    ]


def check_page(html: str, expected_images: int | None = None) -> list[str]:
    """Problems a reader would see on one built page.

    ``expected_images``: the number of image outputs of the page's executed
    notebook (``None`` for pages that are not notebooks).
    """
    soup = _soup(html)
    main = _main(soup)
    text = main.get_text(" ")
    problems = []
    if figure := FIGURE_REPR.search(text):
        problems.append(f"a figure printed as text ({figure.group(0)})")
    log = LOG_LINE.search(text)
    if log:
        start = max(0, log.start() - 20)
        problems.append(f"a log line: {' '.join(text[start : log.end() + 60].split())!r}")
    empty = [cell.get_text() for cell in main.find_all("td") if EMPTY_CELL.match(cell.get_text())]
    if empty:
        problems.append(f"{len(empty)} table cell(s) showing {empty[0].strip()!r}")
    images = [img for img in main.find_all("img") if "_images/" in img.get("src", "")]
    if expected_images is not None and len(images) != expected_images:
        problems.append(
            f"{len(images)} figure image(s) on the page, {expected_images} in the executed notebook"
        )
    for img in images:
        figure = img.find_parent("figure")
        caption = figure.find("figcaption") if figure else None
        if caption is None or not caption.get_text(strip=True):
            problems.append(f"figure without a caption: {img.get('src')}")
        elif not re.search(r"Fig\.\s*\d+(\.\d+)*", caption.get_text()):
            problems.append(f"figure caption without a number: {caption.get_text(strip=True)[:60]!r}")
    open_code = [
        cell
        for cell in main.select("div.cell")
        if cell.select_one(".cell_input")
        and not any(f"tag_{tag}" in cell.get("class", []) for tag in (*SHOWN_CODE_TAGS, "hide-input"))
    ]
    if open_code:
        first = open_code[0].select_one(".cell_input").get_text(" ", strip=True)[:60]
        problems.append(f"{len(open_code)} code cell(s) shown unfolded, the first: {first!r}")
    return problems


def check_book(html_dir: Path, executed_dir: Path, pages: Iterable[str]) -> dict[str, list[str]]:
    """:func:`check_page` for every page of the table of contents; ``{page: problems}`` (problems only)."""
    found = {}
    for page in pages:
        path = html_dir / f"{page}.html"
        if not path.is_file():
            found[page] = ["page missing from the HTML"]
            continue
        notebook = executed_dir / f"{page}.ipynb"
        figures = notebook_figures(notebook) if notebook.is_file() else None
        problems = check_page(path.read_text(), figures.images if figures else None)
        if figures and figures.reprs:
            problems.append(f"{figures.reprs} figure(s) printed as text in the executed notebook")
        if figures and figures.uncaptioned:
            problems.append(f"figure cell(s) {figures.uncaptioned} without a caption in their metadata")
        if problems:
            found[page] = problems
    return found
