"""User-facing errors: the command line prints them as one line and exits with status 2."""

from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input from the user: a missing folder, a truncated or foreign file, bad values.

    The message always names the offending file (when there is one) and the problem.
    """

    def __init__(self, problem: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
