"""The layout's rules, read from the source: folders import only what lies below them, no re-exports."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rcnnlib"
FOLDERS = ("hits", "sim", "rcnn", "forest", "book", "bench")
ALLOWED = {
    "shared": {"shared"},  # classes, errors, paths, dataset, shards, protocol, stamps, psf, photometry...
    "hits": {"shared"},
    "sim": {"shared"},
    "rcnn": {"shared"},
    "forest": {"shared", "hits", "sim"},  # the forest trains on simulations, is scored on real data
    "book": {"shared", "hits", "sim", "rcnn", "forest"},
    "bench": {"shared", "hits", "sim", "rcnn", "forest"},
    "cli": {"shared", "hits", "sim", "rcnn", "forest", "book"},
}


def group(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    return "cli" if parts[1:2] == ["cli"] else "shared"


def import_edges(package: Path) -> dict[tuple[str, str], set[str]]:
    """``{(from group, to group): {"module -> imported"}}`` for every rcnnlib import in the package."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in package.rglob("*.py"):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rcnnlib":
                targets = [node.module]
                if node.module == "rcnnlib":
                    targets = [f"rcnnlib.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "rcnnlib"]
            for target in targets:
                if target != "rcnnlib":
                    edges[(group(module), group(target))].add(f"{module} -> {target}")
    return edges


def violations(edges: dict[tuple[str, str], set[str]]) -> list[str]:
    return sorted(e for (a, b), found in edges.items() if b != a and b not in ALLOWED[a] for e in found)


def test_no_arrow_runs_back_up():
    assert violations(import_edges(PACKAGE)) == []


def test_the_arrow_check_can_fail(tmp_path: Path):
    """Plant photometry importing the simulator (an arrow that ran the wrong way before the redesign)."""
    fake = tmp_path / "rcnnlib"
    (fake / "sim").mkdir(parents=True)
    (fake / "sim" / "survey.py").write_text("X = 1\n")
    (fake / "photometry.py").write_text("from rcnnlib.sim.survey import X\n")
    assert violations(import_edges(fake)) == ["rcnnlib.photometry -> rcnnlib.sim.survey"]


@pytest.mark.parametrize("folder", FOLDERS)
def test_folder_init_files_hold_no_re_exports(folder: str):
    """The runner's cache follows imports module by module: an __init__ that imports would tie them."""
    tree = ast.parse((PACKAGE / folder / "__init__.py").read_text())
    assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in tree.body), folder


def test_command_line_code_lives_in_cli_only():
    """Science modules raise InputError; only cli.py (and the developers' bench) parse arguments."""
    users = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if "argparse" in p.read_text() and p.name != "cli.py" and "bench" not in p.parts
    ]
    assert users == []
