"""The book runner: profiles, parameter injection and typing, and failing notebooks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from rcnnlib.book import cache, decorate, execute, profiles, runner
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
    profile = profiles.load_profile(name)
    assert set(profile) >= {"common", "notebooks"}
    notebooks = profiles.toc_notebooks(REPO)
    assert notebooks and notebooks[0] == Path("book/01_hits_survey.ipynb")
    declared = {nb.stem: profiles.declared_parameters(REPO / nb) for nb in notebooks}
    resolved = profiles.resolve_parameters(declared, profile)  # raises on keys no notebook declares
    assert set(resolved) == set(declared)


def test_unknown_profile_lists_the_available_ones():
    with pytest.raises(InputError, match=r"no profile 'nope'.*ci, default, paper"):
        profiles.load_profile("nope")


def test_malformed_profile(tmp_path: Path):
    (tmp_path / "bad.yaml").write_text("common: [1, 2]\n")
    with pytest.raises(InputError, match="must be mappings"):
        profiles.load_profile("bad", tmp_path)
    (tmp_path / "typo.yaml").write_text("comon: {}\n")
    with pytest.raises(InputError, match="unknown top-level keys"):
        profiles.load_profile("typo", tmp_path)


def test_toc_order(tiny_book: Path):
    assert profiles.toc_notebooks(tiny_book) == [
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
    parsed = profiles.parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_overrides_from_cli_pairs():
    assert profiles.parse_overrides([["seed", "4"], ["a.x", "hello"]]) == {"seed": 4, "a.x": "hello"}


DECLARED = {"a": {"seed": {}, "x": {}, "hits_dir": {}}, "b": {}, "c": {"seed": {}}}


def test_only_declared_parameters_are_injected_with_precedence():
    profile = {"common": {"seed": 5}, "notebooks": {"a": {"x": "p"}}}
    resolved = profiles.resolve_parameters(
        DECLARED, profile, {"seed": 7, "c.seed": 9}, provided={"hits_dir": "/data", "artifacts_dir": "/art"}
    )
    assert resolved == {"a": {"seed": 7, "x": "p", "hits_dir": "/data"}, "b": {}, "c": {"seed": 9}}


def test_unknown_override_lists_valid_keys():
    valid = r"valid keys: hits_dir, seed, x \(or NOTEBOOK\.KEY for one notebook: a, c\)"
    with pytest.raises(InputError, match=rf"unknown parameter 'sede'; {valid}"):
        profiles.resolve_parameters(DECLARED, {}, {"sede": 1})
    with pytest.raises(InputError, match=r"unknown parameter 'b\.seed'"):
        profiles.resolve_parameters(DECLARED, {}, {"b.seed": 1})


def test_profile_keys_must_exist_in_notebooks():
    with pytest.raises(InputError, match=r"common\.nope is declared by no notebook"):
        profiles.resolve_parameters(DECLARED, {"common": {"nope": 1}})
    with pytest.raises(InputError, match=r"notebooks\.zz: no such notebook"):
        profiles.resolve_parameters(DECLARED, {"notebooks": {"zz": {}}})
    with pytest.raises(InputError, match=r"notebooks\.b\.seed: b declares no such parameter"):
        profiles.resolve_parameters(DECLARED, {"notebooks": {"b": {"seed": 1}}})


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


def test_run_book_only_brings_earlier_stages_up_to_date(tiny_book: Path, tmp_path: Path):
    build = tmp_path / "out"
    out = runner.run_book(
        "tiny", build_dir=build, only=["b"], html=True, source_dir=tiny_book, progress=False
    )
    assert out.build_dir == build.resolve()
    assert out.executed == ["a", "b"]  # b may read a's artefacts: a is brought up to date too
    assert out.stale == ["c"] and out.html is None  # c not run: no HTML from a half-built book
    assert (build / "_toc.yml").is_file() and (build / "book" / "intro.md").is_file()
    assert not (build / "book" / "c.ipynb").exists()
    with pytest.raises(InputError, match=r"unknown notebook.*a, b, c"):
        runner.run_book("tiny", build_dir=build, only=["zz"], html=False, source_dir=tiny_book)


def test_build_dir_must_be_outside_sources(tiny_book: Path):
    with pytest.raises(InputError, match="outside the book sources"):
        runner.run_book("tiny", build_dir=tiny_book / "book" / "x", html=False, source_dir=tiny_book)


def test_cli_registers_book_command():
    from rcnnlib import cli

    args = cli.build_parser().parse_args(
        ["book", "--profile", "ci", "-p", "seed", "3", "--only", "01_hits_survey", "--no-html"]
    )
    assert args.profile == "ci" and args.param == [["seed", "3"]] and args.only == ["01_hits_survey"]
    assert args.no_html and args.func is cli._book


# ------------------------------------------------------------------ caching
ONE = (
    "from pathlib import Path\n"
    "stage = Path(artifacts_dir) / '01_one'\n"
    "(stage / 'value.txt').write_text(str(seed))\n"
    "with open(Path(artifacts_dir).parent / 'executions.log', 'a') as log:\n"
    "    log.write('01_one\\n')"
)
TWO = (
    "from pathlib import Path\n"
    "if fail:\n"
    "    raise RuntimeError('asked to fail')\n"
    "seed_one = int((Path(artifacts_dir) / '01_one' / 'value.txt').read_text())\n"
    "(Path(artifacts_dir) / '02_two' / 'value.txt').write_text(str(seed_one * scale))\n"
    "with open(Path(artifacts_dir).parent / 'executions.log', 'a') as log:\n"
    "    log.write('02_two\\n')"
)


@pytest.fixture
def cached_book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two stages: 02_two reads what 01_one wrote into its artefact folder.

    The library fingerprint is pinned: other work on ``rcnnlib/`` during a test run
    would (rightly) invalidate the cache; the test that changes it sets it itself.
    """
    monkeypatch.setattr(runner, "library_fingerprint", lambda *_: "pinned library")
    src = tmp_path / "src"
    write_notebook(src / "book" / "01_one.ipynb", "seed = 1  # the seed\nartifacts_dir = None", ONE)
    write_notebook(
        src / "book" / "02_two.ipynb",
        "scale = 2  # multiplies the seed\nfail = False  # raise, to test failures\nartifacts_dir = None",
        TWO,
    )
    (src / "book" / "intro.md").write_text("# Cached book\n")
    (src / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_one\n  - file: book/02_two\n"
    )
    (src / "_config.yml").write_text("title: cached\nexecute:\n  execute_notebooks: 'off'\n")
    (src / "params").mkdir()
    (src / "params" / "tiny.yaml").write_text("common:\n  seed: 3\nnotebooks: {}\n")
    return src


def run_cached(src: Path, build: Path, overrides: dict | None = None, **kwargs) -> runner.BookRun:
    kwargs.setdefault("html", False)
    kwargs.setdefault("progress", False)
    return runner.run_book("tiny", overrides, build_dir=build, source_dir=src, **kwargs)


def executions(build: Path) -> list[str]:
    log = build / "executions.log"
    return log.read_text().split() if log.is_file() else []


def test_unchanged_rerun_executes_nothing_and_changes_rerun_downstream(
    cached_book: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    build = tmp_path / "out"
    first = run_cached(cached_book, build)
    assert first.executed == ["01_one", "02_two"] and executions(build) == ["01_one", "02_two"]
    assert (build / "artifacts" / "02_two" / "value.txt").read_text() == "6"
    # records: key, wall time, parameters; the run summary lists every stage
    record = json.loads((build / "stages" / "01_one.json").read_text())
    assert record["status"] == "ok" and record["seconds"] > 0 and record["parameters"]["seed"] == 3
    summary = json.loads((build / "book-run.json").read_text())
    assert [s["status"] for s in summary["stages"]] == ["executed", "executed"]

    again = run_cached(cached_book, build)
    assert again.executed == [] and again.cached == ["01_one", "02_two"]
    assert executions(build) == ["01_one", "02_two"]

    changed = run_cached(cached_book, build, {"02_two.scale": 5}, progress=True)  # the last stage only
    assert changed.executed == ["02_two"]
    assert "02_two: running (changed: parameters)" in capsys.readouterr().out
    assert (build / "artifacts" / "02_two" / "value.txt").read_text() == "15"

    upstream = run_cached(cached_book, build, {"seed": 4, "02_two.scale": 5})  # the first: both re-run
    assert upstream.executed == ["01_one", "02_two"]
    assert (build / "artifacts" / "02_two" / "value.txt").read_text() == "20"
    assert run_cached(cached_book, build, {"seed": 4, "02_two.scale": 5}).executed == []


def test_parameter_box_at_the_top_of_each_executed_chapter(cached_book: Path, tmp_path: Path):
    build = tmp_path / "out"
    run_cached(cached_book, build, {"02_two.scale": 7}, only=["02_two"])
    nb = nbformat.read(build / "book" / "02_two.ipynb", as_version=4)
    assert nb.cells[0].source == "# tiny"
    box = nb.cells[1].source
    assert "rcnnlib-parameters" in nb.cells[1].metadata["tags"]
    assert "| `scale` | `7` | command line, chapter | multiplies the seed |" in box
    assert "| `fail` | `False` | notebook default |" in box
    assert "Profile `tiny`" in box
    assert "artifacts_dir" in box and str(tmp_path) not in box  # folders relative to the sources: narrow
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]


def test_library_data_and_code_changes_invalidate(cached_book: Path, tmp_path: Path, monkeypatch):
    build = tmp_path / "out"
    data = tmp_path / "hits"
    data.mkdir()
    (data / "MANIFEST.sha256").write_text("abc  1  x\n")
    monkeypatch.setenv("RCNNLIB_HITS_DIR", str(data))
    run_cached(cached_book, build)
    monkeypatch.setattr(runner, "library_fingerprint", lambda *_: "edited library")
    assert run_cached(cached_book, build).executed == ["01_one", "02_two"]
    (data / "MANIFEST.sha256").write_text("def  1  x\n")
    assert run_cached(cached_book, build).executed == ["01_one", "02_two"]
    # code of the second stage: only it re-runs
    nb_path = cached_book / "book" / "02_two.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.cells[-1].source += "\nprint('edited')"
    nbformat.write(nb, nb_path)
    assert run_cached(cached_book, build).executed == ["02_two"]
    # prose only: re-rendered from the cache, not executed
    nb.cells[0].source = "# A better title"
    nbformat.write(nb, nb_path)
    prose = run_cached(cached_book, build)
    assert prose.executed == [] and [s.status for s in prose.stages] == ["cached", "refreshed"]
    executed = nbformat.read(build / "book" / "02_two.ipynb", as_version=4)
    assert (
        executed.cells[0].source == "# A better title"
        and "Parameters of this run" in executed.cells[1].source
    )
    assert executed.cells[-1].source.endswith("print('edited')") and executed.cells[-1].outputs


def test_failed_stage_keeps_its_notebook_removes_stale_html_and_resumes(cached_book: Path, tmp_path: Path):
    build = tmp_path / "out"
    run_cached(cached_book, build)
    stale = build / "_build" / "html" / "index.html"  # a book from an earlier build
    stale.parent.mkdir(parents=True)
    stale.write_text("old book")
    with pytest.raises(InputError) as err:
        run_cached(cached_book, build, {"fail": True}, html=True)
    message = str(err.value)
    kept = build / "book" / "02_two.ipynb"
    assert message.startswith(
        "book/02_two.ipynb: code cell 2 ('from pathlib import Path') raised RuntimeError"
    )
    assert f"partial notebook kept at {kept}" in message and "\n" not in message
    nb = nbformat.read(kept, as_version=4)
    assert any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
    box = [c.source for c in nb.cells if "rcnnlib-parameters" in c.metadata.get("tags", [])]
    assert len(box) == 1 and "**failed**" in box[0]
    assert not stale.exists(), "the HTML of an earlier build must not survive a failed stage"
    assert json.loads((build / "stages" / "02_two.json").read_text())["status"] == "failed"
    # fixed: the completed first stage comes from the cache, the failed one runs again
    assert run_cached(cached_book, build).executed == ["02_two"]
    # an interrupted run leaves a 'running' record: that stage runs again
    record_path = build / "stages" / "02_two.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "status": "running"}))
    assert run_cached(cached_book, build).executed == ["02_two"]
    # --no-html after a re-execution: the previous HTML would no longer match, it goes too
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("old book")
    assert run_cached(cached_book, build, {"02_two.scale": 4}).executed == ["02_two"]
    assert not stale.exists()


def test_force_and_only_leave_later_stages_out_of_date(cached_book: Path, tmp_path: Path):
    build = tmp_path / "out"
    run_cached(cached_book, build)
    # a dry run predicts without executing: forcing the first stage would re-run both
    dry = run_cached(cached_book, build, only=["01_one"], force=True, dry_run=True, progress=True)
    assert [s.status for s in dry.stages] == ["would run", "not run"] and executions(build) == [
        "01_one",
        "02_two",
    ]
    dry = run_cached(cached_book, build, {"02_two.scale": 3}, dry_run=True)
    assert [s.status for s in dry.stages] == ["cached", "would run"]
    dry = run_cached(cached_book, build, force=True, dry_run=True)
    assert [s.status for s in dry.stages] == ["would run", "would run"]
    forced = run_cached(cached_book, build, only=["01_one"], force=True, html=True)
    assert forced.executed == ["01_one"] and forced.stale == ["02_two"] and forced.html is None
    assert run_cached(cached_book, build).executed == ["02_two"]  # it read the old 01_one outputs


def test_one_run_per_build_folder(cached_book: Path, tmp_path: Path):
    import fcntl

    build = tmp_path / "out"
    build.mkdir()
    with (build / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(InputError, match="another `rcnnlib book` run is using this build folder"):
            run_cached(cached_book, build)


def test_library_modules_follow_imports_through_the_package():
    uses = cache.library_modules(["%matplotlib inline\nfrom rcnnlib.book import figures\nimport numpy"])
    assert uses is not None and {"rcnnlib.book.figures", "rcnnlib.sim.survey", "rcnnlib.photometry"} <= uses
    assert "rcnnlib.sim.simulate" not in uses and "rcnnlib.book.runner" not in uses
    assert cache.library_modules(["import numpy"]) == {"rcnnlib"}
    assert cache.library_modules(["def broken(:"]) is None  # unknown: the caller hashes everything
    # editing a module a stage does not import leaves its fingerprint alone
    assert cache.library_fingerprint({"rcnnlib", "rcnnlib.paths"}) != cache.library_fingerprint(None)


def test_figures_without_alt_text_get_one_naming_their_section():
    from nbformat.v4 import new_output

    figure = new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    cells = [
        new_markdown_cell("# The survey"),
        new_markdown_cell("## Observing *conditions*"),
        new_code_cell("fig", outputs=[figure]),
        new_code_cell("fig", outputs=[figure], metadata={"mystnb": {"image": {"alt": "Seeing against MJD"}}}),
        new_code_cell("print(1)", outputs=[new_output("stream", name="stdout", text="1")]),
    ]
    decorate._default_alt_text(cells)
    assert (
        cells[2].metadata["mystnb"]["image"]["alt"]
        == "Figure of the section “Observing conditions” of “The survey”"
    )
    assert cells[3].metadata["mystnb"]["image"]["alt"] == "Seeing against MJD"  # the author's wins
    assert "mystnb" not in cells[4].metadata


@pytest.mark.parametrize(
    ("error", "calls"),
    [
        (RuntimeError("Kernel died before replying to kernel_info"), 2),  # start-up collision: retried
        (RuntimeError("some other failure"), 1),  # anything else: reported at once
    ],
)
def test_a_kernel_that_dies_at_start_up_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, calls: int
):
    import papermill

    seen: list[str] = []

    def flaky(source, output, **_):
        seen.append(output)
        if len(seen) == 1:
            raise error
        Path(output).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    monkeypatch.setattr(execute.time, "sleep", lambda _: None)
    notebook = tmp_path / "a.ipynb"
    write_notebook(notebook, None, "x = 1")
    out = tmp_path / "out" / "a.ipynb"
    if calls == 1:
        with pytest.raises(InputError, match="some other failure"):
            execute.execute_notebook(notebook, out, {}, "a.ipynb")
    else:
        execute.execute_notebook(notebook, out, {}, "a.ipynb")
        assert out.exists()
    assert len(seen) == calls


def test_shown_parameters_cell_holds_the_values_of_the_run(tiny_book: Path, tmp_path: Path):
    """The open parameters cell must not contradict the page: it shows the run's values, not the defaults."""
    import nbformat

    build = tmp_path / "out"
    runner.run_book(
        "tiny",
        {"a.x": "from-command-line"},
        build_dir=build,
        source_dir=tiny_book,
        html=False,
        progress=False,
        only=["a"],
    )
    cells = nbformat.read(build / "book" / "a.ipynb", as_version=4).cells
    shown = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    assert "seed = 5" in shown.source  # the profile's common value
    assert "x = 'from-command-line'" in shown.source or 'x = "from-command-line"' in shown.source
    assert "hits_dir = None" in shown.source  # a runner-provided path keeps its placeholder
    assert "'default'" not in shown.source


def test_shown_parameters_replace_a_value_written_over_several_lines():
    """A list the formatter spread over lines is replaced whole: the shown cell stays valid Python."""
    import ast

    defaults = "\n".join(
        [
            "seed = 0  # the seed",
            "curve = [",
            "    0,",
            "    1,",
            "    20,",
            "]  # points of the curve",
            "hits_dir = None  # data",
        ]
    )
    shown = decorate._with_run_values(defaults, "seed = 3\ncurve = [0]\nhits_dir = '/somewhere'\n")
    ast.parse(shown)
    assert shown.splitlines() == [
        "seed = 3  # the seed",
        "curve = [0]  # points of the curve",
        "hits_dir = None  # data",
    ]
