"""What readers and users see: figures as images in notebooks, no TensorFlow log lines, tables for reading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from rcnnlib.book import checks as bookcheck
from rcnnlib.book import execute, profiles
from rcnnlib.book.forest_figures import KronAgreement, plot_feature_distributions, plot_feature_importance
from rcnnlib.book.tables import MISSING, class_set_table, paper_table, readable_columns, recall_table
from rcnnlib.protocol import DrawSummary, Intervals, Recall

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ figures reach the notebook as images
def run_cells(tmp_path: Path, *cells: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / "in.ipynb"
    nbformat.write(nb, source)
    out = tmp_path / "out.ipynb"
    execute.execute_notebook(source, out, {}, "figure test", cwd=tmp_path)
    return nbformat.read(out, as_version=4)


@pytest.mark.slow
def test_a_figure_drawn_without_pyplot_is_an_image_in_the_executed_notebook(tmp_path: Path):
    """The cause of chapters 3 and 4 showing ``<Figure size ...>``: no pyplot, no inline backend."""
    executed = run_cells(
        tmp_path,
        "from rcnnlib.book.figures import new_figure\n"
        "fig = new_figure(2, 2)\nfig.subplots().plot([1, 2])\nfig",
        "import sys\n'matplotlib.pyplot' in sys.modules",
    )
    found = bookcheck.notebook_figures(executed)
    assert (found.images, found.reprs) == (1, 0), executed.cells[0].outputs
    # the chapter never imported pyplot: the formatter is ours, not the inline backend's
    assert executed.cells[1].outputs[0]["data"]["text/plain"] == "False"


def test_the_notebook_figure_count_sees_a_figure_printed_as_text():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("fig")
    cell.outputs = [
        nbformat.v4.new_output(
            "execute_result", data={"text/plain": "<Figure size 720x280 with 2 Axes>"}, execution_count=1
        )
    ]
    nb.cells = [cell]
    assert bookcheck.notebook_figures(nb).reprs == 1


# ------------------------------------------------------------------ quiet TensorFlow
def python_stderr(code: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "RCNNLIB_VERBOSE")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**clean, **env}, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.mark.slow
def test_importing_rcnnlib_silences_tensorflow_and_verbose_brings_it_back():
    code = (
        "import rcnnlib, tensorflow as tf, keras\n"
        "m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
        "tf.get_logger().warning('a python-level tensorflow warning')\n"
        "m(tf.zeros((1, 3)))\n"
    )
    assert python_stderr(code) == ""
    loud = python_stderr(code, RCNNLIB_VERBOSE="1")
    assert "a python-level tensorflow warning" in loud  # the check above could fail
    assert bookcheck.LOG_LINE.search(loud) or "cpu_feature_guard" in loud or "oneDNN" in loud


# ------------------------------------------------------------------ tables for reading
def test_paper_table_prints_counts_as_integers_and_no_nan():
    table = pd.DataFrame({"count": [36.0, 44.0], "recall": [0.5, np.nan]}, index=["SN", "RRL"])
    html = paper_table(table, "Table 9.9: a test.", index_name="class").to_html()
    assert "Table 9.9: a test." in html and "class" in html
    assert ">36<" in html and "36.000" not in html
    assert "nan" not in html.lower() and MISSING in html
    assert ">0.500<" in html
    # an anonymous 0..n index is hidden: no row labelled 0
    plain = paper_table(pd.DataFrame({"a": [1.5, 2.5]}), "T").to_html()
    assert 'class="row_heading' not in plain


def test_class_set_table_puts_all_and_real_classes_side_by_side():
    every = DrawSummary(
        recall={"SN": 0.9}, recall_std={"SN": 0.0}, macro_recall=0.9, macro_recall_std=0.02
    ).with_intervals(
        Intervals(macro_recall_ci=[0.85, 0.95], recall_ci={"SN": [0.85, 0.95]}, bootstrap_samples=100)
    )
    real_only = Recall(0.95, {"SN": 0.95})
    table = class_set_table({"RCNN": (every, real_only), "forest": (every, None)})
    assert table.loc["RCNN", ("all classes", "macro recall")] == "0.900 ± 0.020"
    assert table.loc["RCNN", ("all classes", "95 % CI")] == "0.85–0.95"
    assert table.loc["RCNN", ("real classes only", "macro recall")] == "0.950"
    assert table.loc["forest", ("real classes only", "macro recall")] == MISSING
    assert MISSING in table.loc["RCNN", ("real classes only", "95 % CI")]


def test_recall_table_gives_spread_counts_and_the_papers_figure():
    sim = Recall(0.9, {"SN": 0.8, "NV": 1.0})
    tuned = DrawSummary(
        recall={"SN": 0.9, "NV": 1.0},
        recall_std={"SN": 0.05, "NV": 0.0},
        macro_recall=0.95,
        macro_recall_std=0.02,
    )
    table = recall_table(
        {"sim": sim, "tuned": tuned}, ["SN", "NV"], {"SN": 36, "NV": 222}, paper={"sim": 0.85, "tuned": None}
    )
    assert table.loc["SN", "tuned"] == "0.900 ± 0.050"
    assert table.loc["SN", "sim"] == "0.800"  # no per-class spread given: the mean alone
    assert table.loc["macro recall", "test sequences"] == 258
    assert table.loc["paper: macro recall", "sim"] == "0.85"
    assert table.loc["paper: macro recall", "tuned"] == MISSING
    assert not table.isna().any().any()


def test_readable_columns_give_units():
    out = readable_columns(pd.DataFrame(columns=["seeing", "n_epochs", "something_else"]))
    assert list(out.columns) == ["seeing [arcsec]", "epochs", "something else"]


# ------------------------------------------------------------------ chapter 5's analysis, now in the library
def test_kron_agreement_summarises_per_epoch_and_per_object():
    kron = pd.DataFrame(
        {
            "id": ["a", "a", "b", "b"],
            "offset": [0.1, 0.1, -0.1, -0.1],
            "dmag": [0.01, -0.03, 0.02, 0.0],
            "err_psf": [0.01, 0.02, 0.03, 0.04],
            "err_kron": [0.02, 0.02, 0.02, 0.02],
        }
    )
    summary = KronAgreement.of(kron)
    assert (summary.n_epochs, summary.n_objects) == (4, 2)
    assert summary.median_abs_dmag == pytest.approx(0.015)
    assert summary.offset_median == pytest.approx(0.0)
    assert summary.offset_spread == pytest.approx(np.std([0.1, -0.1], ddof=1))


def test_feature_figures_draw_one_panel_per_class_and_feature():
    rng = np.random.default_rng(0)
    names = ["mag_weighted_mean", "mag_amplitude", "flux_chi2"]
    sim_x, real_x = rng.lognormal(size=(200, 3)), rng.lognormal(size=(40, 3))
    sim_y, real_y = rng.integers(0, 2, 200), rng.integers(0, 2, 40)
    fig = plot_feature_distributions(sim_x, sim_y, real_x, real_y, names, ["SN", "RRL"], ["SN", "RRL"], names)
    assert len(fig.axes) == 6
    assert fig.axes[2 * 2].get_xscale() == "log"  # flux_chi2 spans decades
    assert all(ax.patches for ax in fig.axes)
    importance = pd.Series(rng.random(30), index=[f"f{i}" for i in range(30)])
    bars = plot_feature_importance(importance, top=20).axes[0]
    assert len(bars.patches) == 20
    assert bars.get_yticklabels()[-1].get_text() == importance.idxmax()


def test_every_figure_cell_of_the_book_has_a_caption_and_alt_text():
    """In the committed notebooks: a cell whose code draws a figure declares a numbered caption."""
    problems = []
    for notebook in profiles.toc_notebooks(REPO):
        for index, cell in enumerate(nbformat.read(REPO / notebook, as_version=4).cells):
            options = cell.metadata.get("mystnb", {})
            if "figure" in options:
                fig = options["figure"]
                if not (fig.get("name", "").startswith("fig-") and fig.get("caption")):
                    problems.append(f"{notebook}: cell {index}: {fig}")
                if not options.get("image", {}).get("alt"):
                    problems.append(f"{notebook}: cell {index}: no alt text")
    assert not problems, problems
    names = [
        c.metadata["mystnb"]["figure"]["name"]
        for nb in profiles.toc_notebooks(REPO)
        for c in nbformat.read(REPO / nb, as_version=4).cells
        if "figure" in c.metadata.get("mystnb", {})
    ]
    assert len(names) == len(set(names)), "figure names must be unique in the book"


def test_the_book_config_renders_markdown_outputs_as_myst():
    """Chapter 5's conclusions cite figures from a code cell's Markdown output."""
    config = (REPO / "_config.yml").read_text()
    assert "nb_render_markdown_format: myst" in config
    assert json.dumps("{{numref}}`fig-features`")[1:-1] in (REPO / "book" / "05_baseline.ipynb").read_text()


def test_tensorflow_warnings_stay_off_a_chapter_page(tmp_path: Path):
    """In a kernel TensorFlow sets its logger to INFO when first asked; ours must still hold it at ERROR.

    Chapter 4 once showed "triggered tf.function retracing" after scoring several models.
    """
    executed = run_cells(
        tmp_path,
        "from rcnnlib.rcnn import model\nimport tensorflow as tf\n"
        "for f in [tf.function(lambda x: x * 2) for _ in range(8)]:\n    f(tf.constant(1.0))",
    )
    texts = [o.get("text", "") for o in executed.cells[0].outputs]
    assert not any("WARNING" in t for t in texts), texts


def test_the_kernels_own_log_stays_out_of_the_build_log(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """jupyter_client interrupts every kernel before shutting it down; a kernel still busy then logs
    "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." to the console of ``rcnnlib book``.
    """
    run_cells(
        tmp_path,
        "from ipykernel.kernelapp import IPKernelApp\n"
        "IPKernelApp.instance().log.error('KeyboardInterrupt caught in kernel.')",
    )
    printed = capfd.readouterr()
    assert not bookcheck.LOG_LINE.search(printed.out + printed.err), printed.err
