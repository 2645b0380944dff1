"""The workshop: every exercise of ``book/workshop.md`` runs, as a class would, on a ci build.

Its own module (and so its own ci build, on the other test worker): the exercises
re-run chapters with other parameters, which takes as long as the book checks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO

from rcnnlib.book import checks as bookcheck

pytestmark = pytest.mark.slow


WORKSHOP = REPO / "book" / "workshop.md"
NOT_RUN = ("make setup", "make lab")  # set-up the suite already did; lab starts a server


def workshop_exercises() -> list[tuple[str, list[str]]]:
    """Every shell command of ``book/workshop.md`` by exercise, continuations joined, comments dropped."""
    exercises: list[tuple[str, list[str]]] = []
    title = "before the class"
    in_block = False
    for line in WORKSHOP.read_text().splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        if line.strip().startswith("```"):
            in_block = line.strip() == "```bash"
            if in_block:
                exercises.append((title, []))
            continue
        if in_block:
            commands = exercises[-1][1]
            if commands and commands[-1].endswith("\\"):
                commands[-1] = commands[-1][:-1] + " " + line.strip()
            elif line.strip():
                commands.append(re.sub(r"\s+#\s.*$", "", line.strip()))
    return [(title, cmds) for title, cmds in exercises if cmds]


def as_test_command(command: str, build: Path, scratch: Path, first: bool) -> list[str] | str | None:
    """The exercise's command against the shared test build (argv), a shell line, or None when not run.

    Each exercise's first command, and every command that simulates another survey (where new inputs
    meet the simulator), runs in full; the others are checked with ``--dry-run`` (parameters resolved,
    cache keys computed), since their code already runs in the book build itself. An unknown form of
    command fails the test, so a new exercise cannot escape it.
    """
    if command.startswith(NOT_RUN):
        return None
    command = command.replace("/tmp/", f"{scratch}/").replace("/path/to/", f"{scratch}/")
    if command.startswith("sed "):
        return command
    if command in ("time make book PROFILE=ci", "make book PROFILE=ci"):
        command = "rcnnlib book --profile ci"
    assert command.startswith("rcnnlib book "), f"workshop command not understood: {command!r}"
    argv = [sys.executable, "-m", "rcnnlib.cli", *command.split()[1:], "--build-dir", str(build)]
    if not (first or "survey_name" in command or "--dry-run" in argv):
        argv.append("--dry-run")
    return argv


def test_workshop_commands_are_all_found():
    """The parser sees every exercise of the workshop (a broken parser would run nothing and pass)."""
    exercises = workshop_exercises()
    headings = [line for line in WORKSHOP.read_text().splitlines() if re.match(r"## \d+\.", line)]
    with_commands = {title for title, _ in exercises}
    assert len(exercises) >= len(headings) - 1  # every numbered exercise but the discussion has commands
    assert sum(len(cmds) for _, cmds in exercises) >= 15, exercises
    assert any("survey_name ztf" in c for _, cmds in exercises for c in cmds)
    assert any(t.startswith("3.") for t in with_commands)


def test_every_workshop_exercise_runs(book: dict[str, Any], tmp_path: Path):
    """Exercise after exercise on the shared ci build, as a class would: every command exits 0, no noise."""
    # a custom survey for exercise 7 ("/path/to/my_survey.yaml"): the ztf preset's files, copied
    (tmp_path / "my_survey.yaml").write_text(
        re.sub(
            r"(?m)^epochs: ",
            f"epochs: {REPO / 'data' / 'surveys'}/",
            (REPO / "data" / "surveys" / "ztf.yaml").read_text(),
        )
    )
    failures = []
    for title, commands in workshop_exercises():
        for i, command in enumerate(commands):
            run = as_test_command(command, book["build"], tmp_path, first=i == 0)
            if run is None:
                continue
            proc = subprocess.run(
                run,
                shell=isinstance(run, str),
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            noise = bookcheck.LOG_LINE.search(proc.stdout + proc.stderr)
            if proc.returncode != 0 or noise:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                failures.append(f"{title}: {command!r} -> exit {proc.returncode}: {' | '.join(tail)}")
    assert not failures, "\n".join(failures)
