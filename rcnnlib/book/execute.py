"""Executing one notebook with papermill in a fresh kernel; a failure becomes one :class:`InputError` line."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rcnnlib.errors import InputError

KERNEL_NAME = "python3"


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


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
                    # The kernel's own log is noise in a build log: start-up warnings (TCP
                    # transport...) and, since jupyter_client interrupts every kernel before
                    # shutting it down, "KeyboardInterrupt caught in kernel" at ERROR level
                    # when the kernel is still finishing a reply. A cell's error reaches
                    # papermill as a message, not through this log.
                    extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
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
