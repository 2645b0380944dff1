"""The forest baseline: scikit-learn conformance, tuning, the shared few-shot protocol, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.utils.estimator_checks import check_estimator

from rcnnlib.cli import main
from rcnnlib.forest import baseline
from rcnnlib.forest.baseline import ForestResult, LightCurveForest, evaluate_forest, tune_forest
from rcnnlib.hits.loader import load_hits
from rcnnlib.protocol import few_shot_draws


def blobs(n_per_class: int, n_classes: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters, one per class, separable but not trivially."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(0, 2.0, (n_classes, n_features))
    return centres[y] + rng.normal(0, 1.0, (y.size, n_features)), y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")  # array-API check needs SciPy flags
def test_forest_passes_scikit_learn_estimator_checks():
    check_estimator(LightCurveForest(n_estimators=5, random_state=0))


def test_forest_accepts_nan_features_and_exposes_importances():
    X, y = blobs(40, 3, 6, seed=0)
    X[::7, 2] = np.nan  # a feature missing for short light curves
    forest = LightCurveForest(n_estimators=30, random_state=0).fit(X, y)
    proba = forest.predict_proba(X)
    assert proba.shape == (120, 3) and np.allclose(proba.sum(axis=1), 1.0)
    assert (forest.predict(X) == y).mean() > 0.9
    importance = forest.feature_importances_
    assert importance.shape == (6,) and importance.sum() == pytest.approx(1.0)
    # a feature that is pure noise matters less than the informative ones
    X_noise = np.column_stack([X, np.random.default_rng(1).normal(size=len(y))])
    assert LightCurveForest(n_estimators=50, random_state=0).fit(X_noise, y).feature_importances_[-1] < 0.1


def test_small_batch_probabilities_equal_the_forest_s():
    X, y = blobs(60, 4, 5, seed=3)
    X[::4, 1] = np.nan
    forest = LightCurveForest(n_estimators=25, random_state=0).fit(X, y)
    for rows in (X[:1], X[: baseline.SMALL_BATCH], X):  # fast path, fast path, scikit-learn's path
        np.testing.assert_allclose(
            forest.predict_proba(rows), forest.forest_.predict_proba(rows), rtol=0, atol=1e-12
        )


def test_grid_search_picks_from_the_grid_and_scores_macro_recall():
    X, y = blobs(30, 4, 5, seed=2)
    grid = {"max_depth": [1, None], "min_samples_leaf": [1]}
    search = tune_forest(X, y, grid=grid, cv=3, seed=0, n_estimators=20)
    assert search.best_params_["max_depth"] is None  # stumps cannot separate four classes
    assert search.scoring == "balanced_accuracy" and 0.8 < search.best_score_ <= 1.0
    assert hasattr(search.best_estimator_, "feature_importances_")


@pytest.fixture(scope="module")
def real(hits_root):
    return load_hits(hits_root)


def test_augmented_protocol_uses_the_rcnn_draws(real):
    seed, n, repeats = 7, 10, 3
    rng = np.random.default_rng(0)
    real_y = real.labels.astype(int)
    real_X = rng.normal(size=(len(real), 4)) + real_y[:, None]  # informative, imperfect features
    sim_X, sim_y = blobs(20, 7, 4, seed=1)
    sim_X = rng.normal(size=(140, 4)) + sim_y[:, None]
    result = evaluate_forest(sim_X, sim_y, real_X, real_y, {"n_estimators": 20}, n, repeats, seed)
    expected = few_shot_draws(real.labels, n, repeats, seed)  # the call `rcnnlib evaluate` makes
    assert len(result.draws) == repeats
    for ours, theirs in zip(result.draws, expected, strict=True):
        np.testing.assert_array_equal(ours.train, theirs.train)
        np.testing.assert_array_equal(ours.test, theirs.test)
    counts = real.class_counts()
    assert result.n_test == {name: counts[name] - n for name in ("SN", "RRL", "EB", "NV")}
    for block in (result.sim_only, result.augmented):
        assert set(block.recall) == {"SN", "RRL", "EB", "NV"}
        assert all(0.0 <= v <= 1.0 for v in block.recall.values())
    assert result.sim_only.macro_recall == pytest.approx(np.mean(list(result.sim_only.recall.values())))
    # sim-only is scored on the same test sets, like the RCNN's; and on every real sequence
    all_recall = {
        name: np.mean(
            result.sim_only_predicted[real_y == real.class_names.index(name)] == real.class_names.index(name)
        )
        for name in ("SN", "RRL", "EB", "NV")
    }
    assert result.sim_only_all.recall == pytest.approx(all_recall)
    rrl = real.class_names.index("RRL")
    on_draws = [np.mean(result.sim_only_predicted[d.test][real_y[d.test] == rrl] == rrl) for d in expected]
    assert result.sim_only.recall["RRL"] == pytest.approx(np.mean(on_draws))
    macros = [np.mean(list(r.values())) for r in result.augmented.per_repeat_recall]
    assert result.augmented.per_repeat == pytest.approx(macros)
    assert result.augmented.macro_recall == pytest.approx(np.mean(macros))
    assert result.augmented.macro_recall_std == pytest.approx(np.std(macros, ddof=1))
    rrl_per_draw = [r["RRL"] for r in result.augmented.per_repeat_recall]
    assert result.augmented.recall_std["RRL"] == pytest.approx(np.std(rrl_per_draw, ddof=1))
    # the JSON part reads back as it was written
    data = json.loads(json.dumps(result.to_json()))
    back = ForestResult.from_json(data)
    assert back.to_json() == data
    assert back.augmented.macro_recall_ci == result.augmented.macro_recall_ci
    assert back.augmented.difference == result.augmented.difference
    # the probabilities behind the predictions are kept for calibration
    for draw in result.draws:
        np.testing.assert_array_equal(
            result.augmented_proba[draw.repeat, draw.test].argmax(1),
            result.augmented_predictions[draw.repeat, draw.test],
        )


def test_cli_writes_the_json_schema(hits_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(baseline, "DEFAULT_GRID", {"max_features": ["sqrt"], "min_samples_leaf": [1, 3]})
    out = tmp_path / "baseline.json"
    argv = ["baseline", "--hits-dir", str(hits_root), "--n-sim-per-class", "14", "--fields", "01", "02"]
    argv += ["--repeats", "2", "--seed", "3", "--n-estimators", "15", "--json", str(out)]
    argv += ["--train-classes", "SN", "RRL", "EB", "NV", "AST"]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert set(data) == {"sim_only", "augmented", "n_test", "augmented_predictions"}
    assert set(data["sim_only"]) == {"macro_recall", "recall", "macro_recall_ci", "recall_ci"}
    assert set(data["augmented"]) == {
        "macro_recall",
        "macro_recall_std",
        "recall",
        "macro_recall_ci",
        "recall_ci",
        "difference",
    }
    for block in ("sim_only", "augmented"):  # the interval holds the figure it bounds
        lo, hi = data[block]["macro_recall_ci"]
        assert lo <= data[block]["macro_recall"] <= hi
    assert len(data["augmented_predictions"]) == 2  # one row per draw, for paired comparisons
    assert set(data["n_test"]) == set(data["sim_only"]["recall"]) == {"SN", "RRL", "EB", "NV"}
    values = [data["sim_only"]["macro_recall"], data["augmented"]["macro_recall"]]
    values += list(data["sim_only"]["recall"].values()) + list(data["augmented"]["recall"].values())
    assert all(0.0 <= v <= 1.0 for v in values)
    assert list(tmp_path.iterdir()) == [out]  # no temporary left behind
    assert "augmented" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--repeats", "0"], "--repeats"),
        (["--augment-per-class", "40"], "nothing would be left to test"),  # only 32 real EBs
        (["--n-sim-per-class", "0"], "--n-sim-per-class"),
        (["--fields", "99"], "no field"),
        (["--train-classes", "SN", "QSO"], "unknown class"),
        (["--json", "/nonexistent/dir/out.json"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(hits_root, capsys, extra, message):
    assert main(["baseline", "--hits-dir", str(hits_root), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rcnnlib: error:") and message in err[0]


def test_cli_missing_hits_dir(tmp_path, capsys):
    assert main(["baseline", "--hits-dir", str(tmp_path / "nope")]) == 2
    assert "no such HiTS folder" in capsys.readouterr().err


def test_bootstrap_intervals_follow_the_test_set_size():
    """The 95 % interval of a recall is the luck of the test objects: wide for 30, narrow for 3,000."""
    from rcnnlib.protocol import bootstrap_recall, few_shot_draws

    rng = np.random.default_rng(0)
    widths = {}
    for n in (30, 3000):
        labels = np.repeat([0, 1], n)
        predictions = np.where(rng.random(2 * n) < 0.8, labels, 1 - labels)[None]  # recall 0.8 each
        draws = few_shot_draws(labels, 0, 1, seed=0)
        ci = bootstrap_recall(labels, predictions, draws, ["A", "B"], [0, 1], seed=0)
        lo, hi = ci.macro_recall_ci
        assert lo < 0.8 < hi
        widths[n] = hi - lo
    # binomial: 2 * 1.96 * sqrt(0.8 * 0.2 / (2 n)) = 0.20 for n = 30
    assert widths[30] == pytest.approx(0.20, rel=0.25) and widths[3000] < widths[30] / 5


def test_paired_difference_sees_a_better_method():
    from rcnnlib.protocol import bootstrap_recall, few_shot_draws

    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 60)
    worse = np.where(rng.random(labels.size) < 0.6, labels, (labels + 1) % 3)
    better = np.where(rng.random(labels.size) < 0.5, labels, worse)  # fixes half of the errors
    draws = few_shot_draws(labels, 5, 3, seed=0)
    stack = lambda p: np.tile(p, (3, 1))  # noqa: E731
    found = bootstrap_recall(labels, stack(better), draws, ["A", "B", "C"], [0, 1, 2], stack(worse))
    assert found.difference.macro_recall > 0.1 and found.difference.ci[0] > 0
    assert found.difference.p_not_better < 0.01
    same = bootstrap_recall(labels, stack(worse), draws, ["A", "B", "C"], [0, 1, 2], stack(worse))
    assert same.difference.macro_recall == 0 and same.difference.p_not_better == 1.0
