"""The book runner: profiles, parameter injection and typing, and failing notebooks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from rcnnlib import runner
from rcnnlib.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def write_notebook(path: Path, parameters: str | None, *cells: str) -> None:
    """A tiny notebook: an optional ``parameters`` cell, then code cells."""
    nb = new_notebook(
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    )
    nb.cells.append(new_markdown_cell("# tiny"))
    if parameters is not None:
        nb.cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    nb.cells.extend(new_code_cell(src) for src in cells)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def tiny_book(tmp_path: Path) -> Path:
    """Sources of a three-chapter book: one parametrised, one without parameters, one that fails."""
    src = tmp_path / "src"
    write_notebook(
        src / "book" / "a.ipynb",
        "seed = 1\nx = 'default'\nhits_dir = None",
        "import json, sys\n"
        "json.dump({'seed': seed, 'x': x, 'hits_dir': hits_dir, 'python': sys.executable},"
        " open('a.json', 'w'))",
    )
    write_notebook(src / "book" / "b.ipynb", None, "import sys\nprint('no parameters here')")
    write_notebook(
        src / "book" / "c.ipynb", "seed = 0", "y = seed + 1", "z = 2\nraise ValueError('boom')", "w = 3"
    )
    (src / "book" / "intro.md").write_text("# Tiny book\n")
    (src / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        "  - file: book/a\n  - file: book/b\n  - file: book/c.ipynb\n"
    )
    (src / "_config.yml").write_text("title: tiny\nexecute:\n  execute_notebooks: 'off'\n")
    (src / "params").mkdir()
    (src / "params" / "tiny.yaml").write_text(
        "description: test\ncommon:\n  seed: 5\nnotebooks:\n  a:\n    x: from-profile\n"
    )
    return src


# ----------------------------------------------------------------- profiles
@pytest.mark.parametrize("name", ["ci", "default", "paper"])
def test_repository_profiles_match_the_notebooks(name: str):
    profile = runner.load_profile(name)
    assert set(profile) >= {"common", "notebooks"}
    notebooks = runner.toc_notebooks(REPO)
    assert notebooks and notebooks[0] == Path("book/01_hits_survey.ipynb")
    declared = {nb.stem: runner.declared_parameters(REPO / nb) for nb in notebooks}
    resolved = runner.resolve_parameters(declared, profile)  # raises on keys no notebook declares
    assert set(resolved) == set(declared)


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(InputError, match=r"no profile 'nope'.*ci, default, paper"):
        runner.load_profile("nope")


def test_malformed_profile(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("common: [1, 2]\n")
    with pytest.raises(InputError, match="must be mappings"):
        runner.load_profile("bad", tmp_path)
    (tmp_path / "typo.yaml").write_text("comon: {}\n")
    with pytest.raises(InputError, match="unknown top-level keys"):
        runner.load_profile("typo", tmp_path)


def test_toc_order(tiny_book: Path):
    assert runner.toc_notebooks(tiny_book) == [
        Path("book/a.ipynb"),
        Path("book/b.ipynb"),
        Path("book/c.ipynb"),
    ]


# ----------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        ("true", True),
        ("null", None),
        ("abc", "abc"),
        ("[1, 2]", [1, 2]),
    ],
)
def test_override_values_are_typed(text: str, value: object):
    parsed = runner.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_overrides_from_cli_pairs():
    assert runner.parse_overrides([["seed", "4"], ["a.x", "hello"]]) == {"seed": 4, "a.x": "hello"}


DECLARED = {"a": {"seed": {}, "x": {}, "hits_dir": {}}, "b": {}, "c": {"seed": {}}}


def test_only_declared_parameters_are_injected_with_precedence():
    profile = {"common": {"seed": 5}, "notebooks": {"a": {"x": "p"}}}
    resolved = runner.resolve_parameters(
        DECLARED, profile, {"seed": 7, "c.seed": 9}, provided={"hits_dir": "/data", "artifacts_dir": "/art"}
    )
    assert resolved == {"a": {"seed": 7, "x": "p", "hits_dir": "/data"}, "b": {}, "c": {"seed": 9}}


def test_unknown_override_lists_valid_keys():
    valid = r"valid keys: hits_dir, seed, x \(or NOTEBOOK\.KEY for one notebook: a, c\)"
    with pytest.raises(InputError, match=rf"unknown parameter 'sede'; {valid}"):
        runner.resolve_parameters(DECLARED, {}, {"sede": 1})
    with pytest.raises(InputError, match=r"unknown parameter 'b\.seed'"):
        runner.resolve_parameters(DECLARED, {}, {"b.seed": 1})


def test_profile_keys_must_exist_in_notebooks():
    with pytest.raises(InputError, match=r"common\.nope is declared by no notebook"):
        runner.resolve_parameters(DECLARED, {"common": {"nope": 1}})
    with pytest.raises(InputError, match=r"notebooks\.zz: no such notebook"):
        runner.resolve_parameters(DECLARED, {"notebooks": {"zz": {}}})
    with pytest.raises(InputError, match=r"notebooks\.b\.seed: b declares no such parameter"):
        runner.resolve_parameters(DECLARED, {"notebooks": {"b": {"seed": 1}}})


# -------------------------------------------------------------- execution
def test_run_book_executes_in_order_and_stops_at_failing_cell(tiny_book: Path, tmp_path: Path):
    build = tmp_path / "out"
    with pytest.raises(InputError) as err:
        runner.run_book(
            "tiny", {"a.x": "cli"}, build_dir=build, html=False, source_dir=tiny_book, progress=False
        )
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("book/c.ipynb: code cell 3 ('z = 2') raised ValueError: boom")
    partial = build / "book" / "c.ipynb"
    assert partial.is_file() and str(partial) in message
    # earlier notebooks ran, with only their declared parameters, in the venv's python
    got = json.loads((build / "book" / "a.json").read_text())
    assert got["seed"] == 5 and got["x"] == "cli" and got["hits_dir"]
    assert Path(got["python"]).resolve() == Path(sys.executable).resolve()
    b = nbformat.read(build / "book" / "b.ipynb", as_version=4)
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in b.cells)
    assert "no parameters here" in b.cells[-1].outputs[0]["text"]


def test_run_book_only_and_source_copy(tiny_book: Path, tmp_path: Path):
    build = tmp_path / "out"
    out = runner.run_book(
        "tiny", build_dir=build, only=["b"], html=False, source_dir=tiny_book, progress=False
    )
    assert out == build.resolve()
    assert (build / "_toc.yml").is_file() and (build / "book" / "intro.md").is_file()
    assert (build / "book" / "c.ipynb").is_file()  # never executed: the source copy stands in
    with pytest.raises(InputError, match=r"unknown notebook.*a, b, c"):
        runner.run_book("tiny", build_dir=build, only=["zz"], html=False, source_dir=tiny_book)


def test_build_dir_must_be_outside_sources(tiny_book: Path):
    with pytest.raises(InputError, match="outside the book sources"):
        runner.run_book("tiny", build_dir=tiny_book / "book" / "x", html=False, source_dir=tiny_book)


def test_cli_registers_book_command():
    import argparse

    parser = argparse.ArgumentParser()
    runner.add_cli(parser.add_subparsers())
    args = parser.parse_args(
        ["book", "--profile", "ci", "-p", "seed", "3", "--only", "01_hits_survey", "--no-html"]
    )
    assert args.profile == "ci" and args.param == [["seed", "3"]] and args.only == ["01_hits_survey"]
    assert args.no_html and args.func is runner._cmd_book
