"""Set-up files agree with each other."""

from __future__ import annotations

import re
import tomllib

import yaml

from rcnnlib.paths import REPO_ROOT


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = [  # the CUDA TensorFlow is an opt-in, outside the (CPU) environment
        r for name, group in project["optional-dependencies"].items() if name != "gpu" for r in group
    ]
    wanted = {r: _name(r) for r in project["dependencies"] + extras}
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())
    pip_block = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = [r for r in pip_block if not r.startswith("-")]
    assert sorted(map(_name, listed)) == sorted(wanted.values())
    assert sorted(listed) == sorted(wanted), (
        "version ranges differ between environment.yml and pyproject.toml"
    )


def test_constraints_pin_every_dependency():
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    for requirement in project["dependencies"] + extras:
        assert _name(requirement) in pins, f"{requirement} is not pinned in constraints.txt"


def test_the_gpu_extra_pins_the_cpu_tensorflow_version():
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lines if "==" in line)
    gpu = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert [_name(r) for r in gpu] == ["tensorflow"] and "and-cuda" in gpu[0]
    assert pins["tensorflow"] == pins["tensorflow_cpu"]


def test_jupyter_book_is_v1():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("jupyter-book") and "<2" in r for r in project["optional-dependencies"]["book"])


def test_the_core_install_classifies_without_the_book_stack():
    """``pip install rcnnlib``: no module outside rcnnlib/book imports book or Dask packages at top."""
    import ast

    optional = {
        "matplotlib",
        "papermill",
        "jupyter_book",
        "IPython",
        "nbformat",
        "bs4",
        "dask",
        "distributed",
    }
    offenders = []
    for path in (REPO_ROOT / "rcnnlib").rglob("*.py"):
        if "book" in path.relative_to(REPO_ROOT / "rcnnlib").parts[:1]:
            continue
        for node in ast.parse(path.read_text()).body:  # module level only: lazy imports are fine
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in optional]
    assert offenders == []
