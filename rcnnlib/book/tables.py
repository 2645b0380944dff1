"""Result tables as a paper prints them: captioned, no ``NaN`` cells, counts as integers, named rows.

The book shows pandas tables through :func:`paper_table`, a ``Styler`` with the
caption above the table, a dash for missing values and a fixed number of decimals
for measured figures, so no chapter prints a data dump such as ``36.000`` or
``NaN``. The recall tables of the RCNN (chapter 4) and of the forest (chapter 5)
are built here from the typed results of the library, the paper's figure beside
ours where the paper gives one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.io.formats.style import Styler

from rcnnlib.calibration import Calibration
from rcnnlib.protocol import DrawSummary, Recall

MISSING = "–"  # what a reader sees where a table has no value (the paper gives none, not applicable)
PAPER_MACRO_RECALL: dict[str, float] = {"rcnn_sim_only": 0.85, "rcnn_fine_tuned": 0.94}
"""Average (macro) recall on real HiTS sequences reported by Carrasco-Davis et al. (2019).

The paper gives no number for its random forest, only that it performs about as
well as the fine-tuned RCNN."""


def paper_table(
    table: pd.DataFrame,
    caption: str,
    *,
    decimals: int = 3,
    index_name: str | None = None,
) -> Styler:
    """A captioned, reader-ready view of ``table`` (the data stay untouched for code that reads them).

    Integer columns print as integers, floats with ``decimals`` digits, missing
    values as a dash; an anonymous 0..n index is hidden, a named one keeps its name
    (``index_name`` sets it).
    """
    shown = table.copy()
    if index_name is not None:
        shown.index.name = index_name or None  # "": no header row for the index
    for column in shown.columns:
        values = shown[column]
        if (
            values.dtype.kind == "f"
            and values.dropna().apply(float.is_integer).all()
            and values.notna().any()
        ):
            if values.dropna().abs().max() >= 1 or values.dropna().eq(0).all():
                shown[column] = values.astype("Int64")  # counts stored as floats (36.0) print as 36
    styler = shown.style.format(precision=decimals, na_rep=MISSING, thousands=",")
    caption = re.sub(r"`([^`]+)`", r"<code>\1</code>", caption)  # a caption is HTML, not Markdown
    styler = styler.format_index(na_rep=MISSING).set_caption(caption)
    if isinstance(shown.index, pd.RangeIndex) and shown.index.name is None:
        styler = styler.hide(axis="index")
    return styler.set_table_styles(
        [
            {"selector": "caption", "props": "caption-side: top; text-align: left; font-weight: normal;"},
            {"selector": "td, th", "props": "padding: 0.2em 0.5em; text-align: right;"},
            {"selector": "td", "props": "white-space: nowrap;"},  # "0.944 ± 0.022" on one line
            {"selector": "", "props": "font-size: 0.85em;"},  # five methods side by side fit the page
        ]
    )


def mean_pm(mean: float, std: float | None, decimals: int = 3) -> str:
    """``0.943 ± 0.015`` (or just the mean when there is no spread)."""
    if std is None or not np.isfinite(std):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def recall_column(
    scores: Recall | DrawSummary, classes: Sequence[str], spread: bool = True
) -> dict[str, str]:
    """One method's per-class and macro recall as strings, ``mean ± std`` over draws when known."""
    std = getattr(scores, "recall_std", {}) if spread else {}
    macro_std = getattr(scores, "macro_recall_std", None) if spread else None
    column = {c: mean_pm(scores.recall[c], std.get(c)) if c in scores.recall else MISSING for c in classes}
    column["macro recall"] = mean_pm(scores.macro_recall, macro_std)
    return column


def recall_table(
    columns: Mapping[str, Recall | DrawSummary],
    classes: Sequence[str],
    n_test: Mapping[str, int],
    paper: Mapping[str, float | None] | None = None,
) -> pd.DataFrame:
    """Recall per class (rows) for several methods (columns), the test counts and the paper's macro recall.

    ``columns`` maps a method's name to its scores (a :class:`~rcnnlib.protocol.Recall`,
    or a :class:`~rcnnlib.protocol.DrawSummary` over repeated draws, whose spread and
    95 % interval are shown); ``paper`` maps the same names to the paper's macro
    recall (``None`` where the paper gives none).
    """
    table = pd.DataFrame({name: recall_column(scores, classes) for name, scores in columns.items()})
    counts = {c: int(n_test.get(c, 0)) for c in classes}
    table.insert(0, "test sequences", pd.Series({**counts, "macro recall": sum(counts.values())}))
    table = table.astype(object)  # strings and counts side by side; the paper's row adds dashes
    intervals = {name: getattr(scores, "macro_recall_ci", None) for name, scores in columns.items()}
    if any(ci is not None for ci in intervals.values()):
        row = {
            name: MISSING if ci is None else "–".join(f"{v:.2f}" for v in ci)
            for name, ci in intervals.items()
        }
        table.loc["macro recall, 95 % CI"] = pd.Series({"test sequences": MISSING, **row})
    if paper is not None:
        row = {"test sequences": MISSING}
        row.update({name: MISSING if paper.get(name) is None else f"{paper[name]:.2f}" for name in columns})
        table.loc["paper: macro recall"] = pd.Series(row)
    table.index.name = "class"
    return table


def class_set_table(
    rows: Mapping[str, tuple[Recall | DrawSummary | None, Recall | DrawSummary | None]],
) -> pd.DataFrame:
    """Macro recall of each method (rows) over all its classes and over the real data's classes only.

    ``rows`` maps a method's name to its scores ``(all classes, real classes only)``;
    ``None`` shows as a dash. Each gets ``mean ± std`` over draws and its 95 % interval.
    """

    def cells(scores: Recall | DrawSummary | None) -> tuple[str, str]:
        if scores is None:
            return MISSING, MISSING
        ci = getattr(scores, "macro_recall_ci", None)
        spread = getattr(scores, "macro_recall_std", None)
        interval = MISSING if ci is None else "–".join(f"{v:.2f}" for v in ci)
        return mean_pm(scores.macro_recall, spread), interval

    columns = pd.MultiIndex.from_product([["all classes", "real classes only"], ["macro recall", "95 % CI"]])
    table = pd.DataFrame(
        [[*cells(every), *cells(real_only)] for every, real_only in rows.values()],
        index=pd.Index(list(rows), name="method"),
        columns=columns,
    )
    return table


def layer_table(model: Any) -> pd.DataFrame:
    """A Keras model's layers, one row each: kind, output shape (batch axis left out) and weights.

    What ``model.summary()`` prints, as a table a chapter can caption; a last row
    gives the total.
    """
    rows = [
        {
            "layer": layer.name,
            "kind": type(layer).__name__,
            "output shape": " × ".join(str(d) for d in tuple(layer.output.shape)[1:]),
            "weights": layer.count_params(),
        }
        for layer in model.layers
    ]
    rows.append({"layer": "total", "kind": "", "output shape": "", "weights": model.count_params()})
    return pd.DataFrame(rows).set_index("layer")


def learning_curve_table(
    curves: Mapping[str, Mapping[int, DrawSummary]], classes: Sequence[str]
) -> pd.DataFrame:
    """Macro and per-class recall (``mean ± std`` over draws) of each method against real sequences per class.

    ``curves`` maps a method's name to ``{real sequences per class: scores}``.
    """
    rows = {}
    for method, points in curves.items():
        for n, scores in sorted(points.items()):
            rows[(method, n)] = recall_column(scores, classes)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["method", "real per class"]
    return table


def calibration_table(calibrations: Mapping[str, Calibration]) -> pd.DataFrame:
    """ECE of each method (all test objects, and every class weighted alike) and its temperatures."""
    rows = {}
    for name, c in calibrations.items():
        t = c.temperatures
        rows[name] = {
            "ECE": c.ece,
            "ECE, classes alike": c.balanced_ece,
            "temperature": MISSING
            if t is None
            else mean_pm(float(np.mean(t)), float(np.std(t, ddof=1)) if len(t) > 1 else None, 2),
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("probabilities")


COLUMN_LABELS: dict[str, str] = {
    "n_epochs": "epochs",
    "n_nights": "nights",
    "span_days": "span [days]",
    "seeing": "seeing [arcsec]",
    "sky": "sky [ADU]",
    "zero_point": "zero point [mag]",
    "exp_time": "exposure [s]",
    "limit_mag_5sigma": "5σ depth [mag]",
    "airmass": "airmass",
}
"""Reader-facing names, with units, of :meth:`rcnnlib.sim.survey.Survey.summary`'s columns."""


def readable_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its known column names replaced by :data:`COLUMN_LABELS` (others kept)."""
    return table.rename(columns=lambda c: COLUMN_LABELS.get(str(c), str(c).replace("_", " ")))


REALISM_LABELS: dict[str, str] = {
    "n_real": "real",
    "n_sim": "simulated",
    "median_real": "median, real",
    "median_sim": "median, simulated",
    "median_ratio": "ratio sim / real",
    "ks_statistic": "KS statistic",
    "ks_pvalue": "KS p-value",
    "noise_real": "noise, real [ADU]",
    "noise_sim": "noise, simulated [ADU]",
    "ratio": "ratio sim / real (per expected noise)",
}


def realism_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A :func:`rcnnlib.sim.realism.compare` or ``noise_ratio_at_sky`` table for reading.

    Rows are named (class, or the sky bin in ADU), the statistic's name goes to the
    caption rather than repeating in a column, quantile columns are left to the JSON,
    and the column names say what they hold.
    """
    out = frame.copy()
    if {"sky_min", "sky_max"} <= set(out.columns):
        out.index = pd.Index(
            [f"{a:,.0f}–{b:,.0f}" for a, b in zip(out["sky_min"], out["sky_max"], strict=True)]
        )
        out.index.name = "sky [ADU]"
    elif "class_name" in out.columns:
        out = out.set_index("class_name").rename_axis("class")
    keep = [c for c in REALISM_LABELS if c in out.columns]
    return out[keep].rename(columns=REALISM_LABELS)
