"""The paper's light-curve baseline: a random forest on features of PSF-photometry light curves.

Pipeline: image sequences -> :func:`rcnnlib.photometry.psf_light_curve` ->
:func:`rcnnlib.forest.features.extract_features` -> :class:`LightCurveForest`, the same
code for simulated and real sequences (the forest ignores the brightness
features, whose real-vs-simulated shift is the catalogues' selection). The forest is tuned by grid search
(:func:`tune_forest`, scored by balanced accuracy, i.e. macro recall, the
paper's figure) on simulated light curves simulated in-process
(:func:`simulate_training_set`), then evaluated on the real HiTS sequences:

- **sim-only**: trained on simulations, tested on the same test sets as the
  augmented forests (mean over draws; also on every real sequence);
- **augmented** (the paper's protocol): simulations plus ``n`` real sequences
  per class, tested on the remaining real ones, over the draws of
  :func:`rcnnlib.protocol.few_shot_draws` -- the very draws ``rcnnlib
  evaluate`` uses for the RCNN with the same seed.

By default the forest is trained on all seven simulated classes, like the
RCNN, so a real star called "empty" or "Cepheid" counts as an error; recall is
averaged over the real classes present (SN, RRL, EB, NV). ``train_classes``
(``--train-classes``) restricts training to some classes, e.g. the four real
ones, which removes those confusions.

Results are :class:`ForestResult` objects, whose ``to_json`` is the ``rcnnlib baseline
--json`` schema; recall is summarised over draws by :func:`rcnnlib.protocol.score_draws`,
as the RCNN's is.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm import tqdm

from rcnnlib.calibration import Calibration, calibration_on_draws, fit_draw_temperatures
from rcnnlib.classes import CLASS_NAMES, label_of
from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.forest.features import SELECTION_FEATURES, dataset_features, feature_names
from rcnnlib.protocol import Draw, DrawSummary, Recall, few_shot_draws, score_draws
from rcnnlib.sim.simulate import plan_shards, simulate_shard
from rcnnlib.sim.survey import Survey

DEFAULT_GRID: dict[str, list[Any]] = {
    "max_features": ["sqrt", 0.3],
    "min_samples_leaf": [1, 4],
}
"""Grid searched on simulated light curves: features per split and leaf size (tree count is fixed;
a depth limit of 12 scored the same as unlimited depth within 0.005 and was dropped to halve the search)."""
N_ESTIMATORS = 200
SMALL_BATCH = 64
"""Rows up to which :meth:`LightCurveForest.predict_proba` calls the trees directly (streaming)."""
CV_FOLDS = 3
"""Folds of the grid search's stratified cross-validation: every class needs at least this many sequences."""
PAPER_MACRO_RECALL = {"rcnn_sim_only": 0.85, "rcnn_fine_tuned": 0.94}
"""The paper's published average recalls on real HiTS; the forest's is only said to be "about the same"."""


class LightCurveForest(ClassifierMixin, BaseEstimator):
    """Random forest on light-curve features, balanced over classes, NaN features allowed.

    A thin scikit-learn estimator around :class:`~sklearn.ensemble.RandomForestClassifier`:
    it fixes what the baseline needs (class-balanced weights, since simulated and
    real class mixes differ; missing features from too-short light curves passed
    through to the trees) and exposes ``feature_importances_``.

    ``ignored_features`` name columns of :func:`~rcnnlib.forest.features.extract_features`
    the trees never see (default: the brightness features, whose real-vs-simulated
    shift is the catalogues' selection, see :data:`~rcnnlib.forest.features.SELECTION_FEATURES`).
    They apply only to a matrix of exactly those columns; any other matrix is used whole.
    """

    def __init__(
        self,
        n_estimators: int = N_ESTIMATORS,
        max_depth: int | None = None,
        max_features: str | float = "sqrt",
        min_samples_leaf: int = 1,
        class_weight: str | dict | None = "balanced",
        random_state: int | None = None,
        n_jobs: int | None = None,
        ignored_features: tuple[str, ...] = SELECTION_FEATURES,
    ):
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.ignored_features = ignored_features

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> LightCurveForest:
        X, y = validate_data(self, X, y, ensure_all_finite="allow-nan")
        check_classification_targets(y)
        self.used_columns_ = used_columns(X.shape[1], self.ignored_features)
        self.forest_ = RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            class_weight=self.class_weight,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        ).fit(X[:, self.used_columns_], y)
        self.classes_ = self.forest_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities: the mean of the trees' leaf class fractions.

        For up to :data:`SMALL_BATCH` rows (an alert stream classifies one object at a
        time) the trees are called directly, which gives the same numbers as
        ``RandomForestClassifier.predict_proba`` without its per-tree dispatch
        overhead (~7x faster for one row of a 200-tree forest).
        """
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")[:, self.used_columns_]
        if X.shape[0] > SMALL_BATCH:
            return self.forest_.predict_proba(X)
        X32 = np.ascontiguousarray(X, dtype=np.float32)  # the trees' own input type
        trees = self.forest_.estimators_
        proba = np.zeros((X.shape[0], len(self.classes_)))
        for tree in trees:
            proba += tree.predict_proba(X32, check_input=False)
        return proba / len(trees)

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    @property
    def feature_importances_(self) -> np.ndarray:
        """Mean decrease in impurity of each input column (sums to 1; 0 for ignored features)."""
        check_is_fitted(self)
        importances = np.zeros(self.n_features_in_)
        importances[self.used_columns_] = self.forest_.feature_importances_
        return importances


def used_columns(n_columns: int, ignored_features: Sequence[str]) -> np.ndarray:
    """Columns a :class:`LightCurveForest` trains on: all, unless ``X`` is exactly the features."""
    names = feature_names()
    if n_columns != len(names):
        return np.arange(n_columns)
    return np.flatnonzero([name not in ignored_features for name in names])


def tune_forest(
    X: np.ndarray,
    y: np.ndarray,
    grid: dict[str, list[Any]] | None = None,
    cv: int = CV_FOLDS,
    seed: int = 0,
    n_jobs: int | None = None,
    n_estimators: int = N_ESTIMATORS,
) -> GridSearchCV:
    """Grid search of :class:`LightCurveForest` on (simulated) features, scored by macro recall.

    ``balanced_accuracy`` is the mean per-class recall, the paper's figure, so the
    forest is tuned for what it is judged on. Refits the best on all of ``X``.
    """
    search = GridSearchCV(
        LightCurveForest(n_estimators=n_estimators, random_state=seed, n_jobs=n_jobs),
        DEFAULT_GRID if grid is None else grid,
        scoring="balanced_accuracy",
        cv=StratifiedKFold(cv, shuffle=True, random_state=seed),
        refit=True,
    )
    return search.fit(X, y)


# --------------------------------------------------------------------------- training data
def simulate_training_set(
    n_per_class: int,
    seed: int = 0,
    fields: Sequence[str] | None = None,
    classes: Sequence[str] = CLASS_NAMES,
    survey: Survey | None = None,
    progress: bool = False,
) -> SequenceDataset:
    """``n_per_class`` simulated HiTS sequences per class, spread evenly over ``fields`` (default: all).

    Simulates ``ceil(n / fields)`` per class and field with :func:`rcnnlib.sim.simulate.simulate_shard`
    (in this process, seeded), then keeps a seeded random ``n_per_class`` of each class.
    """
    if n_per_class < 1:
        raise InputError(f"--n-sim-per-class must be a positive integer, got {n_per_class}")
    survey = Survey.preset("hits2015") if survey is None else survey
    fields = list(survey.fields if fields is None else fields)
    classes = tuple(dict.fromkeys(classes))
    per_field = math.ceil(n_per_class / max(len(fields), 1))
    tasks = plan_shards(survey, per_field, classes=tuple(classes), fields=fields)
    parts = [
        simulate_shard(survey, task, seed)
        for task in tqdm(tasks, desc="simulating", unit="shard", file=sys.stderr, disable=not progress)
    ]
    ds = SequenceDataset.concatenate(parts, metadata={"source": "simulation", "seed": seed})
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1,)))
    keep = np.concatenate(
        [rng.choice(np.flatnonzero(ds.labels == label_of(c)), n_per_class, replace=False) for c in classes]
    )
    return ds.subset(np.sort(keep))


# --------------------------------------------------------------------------- protocol
@dataclass(frozen=True, kw_only=True)
class ForestResult:
    """The forest on real sequences: sim-only and augmented, on the draws of :func:`few_shot_draws`.

    ``sim_only_all`` is the simulations-only forest on every real sequence;
    ``sim_only`` and ``augmented`` are scored on the draws' test sets. :meth:`to_json`
    is the schema of ``rcnnlib baseline --json``; the fields after it (draws,
    probabilities, the grid search's outcome) stay in memory for the book.
    """

    classes: list[str]
    n_test: dict[str, int]
    sim_only_all: Recall
    sim_only: DrawSummary
    augmented: DrawSummary
    augmented_predictions: np.ndarray  # (repeats, N), -1 outside a draw's test set
    sim_only_predicted: np.ndarray = field(repr=False)  # (N,) on every real sequence
    draws: list[Draw] = field(default_factory=list, repr=False)
    sim_only_proba: np.ndarray | None = field(default=None, repr=False)  # (N, classes)
    augmented_proba: np.ndarray | None = field(
        default=None, repr=False
    )  # (repeats, N, classes), NaN off test
    best_params: dict[str, Any] | None = None
    cv_macro_recall: float | None = None
    feature_importances: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        """Exactly the schema of ``rcnnlib baseline --json``: sim_only, augmented, predictions, n_test."""
        return {
            "sim_only": self.sim_only.to_json(("macro_recall", "recall", "macro_recall_ci", "recall_ci")),
            "augmented": self.augmented.to_json(
                ("macro_recall", "macro_recall_std", "recall", "macro_recall_ci", "recall_ci", "difference")
            ),
            "augmented_predictions": self.augmented_predictions.tolist(),
            "n_test": self.n_test,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ForestResult:
        """The JSON part of a result read back (per-draw spreads the JSON does not hold are left empty)."""
        sim_only = DrawSummary.from_json(data["sim_only"])
        return cls(
            classes=list(data["n_test"]),
            n_test=data["n_test"],
            sim_only_all=Recall(sim_only.macro_recall, sim_only.recall),
            sim_only=sim_only,
            augmented=DrawSummary.from_json(data["augmented"]),
            augmented_predictions=np.array(data["augmented_predictions"], dtype=np.int64),
            sim_only_predicted=np.array([], dtype=np.int64),
        )

    def probabilities_calibration(self, real_y: np.ndarray) -> dict[str, Calibration]:
        """Reliability and ECE of the sim-only forest (raw, and temperature-scaled on each draw's
        adaptation sequences) and of the augmented forests, on the test sets of the draws."""
        if self.sim_only_proba is None or self.augmented_proba is None:
            raise ValueError("no probabilities in this result (they are not part of its JSON)")
        repeats = len(self.draws)
        sim = np.broadcast_to(self.sim_only_proba, (repeats, *self.sim_only_proba.shape))
        return {
            "sim_only": calibration_on_draws(real_y, sim, self.draws),
            "sim_only_scaled": calibration_on_draws(
                real_y, sim, self.draws, fit_draw_temperatures(real_y, sim, self.draws)
            ),
            "augmented": calibration_on_draws(real_y, self.augmented_proba, self.draws),
        }


def _all_class_proba(forest: LightCurveForest, X: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, n_classes) probabilities over every label, zero for a class the forest never saw."""
    out = np.zeros((X.shape[0], n_classes))
    out[:, forest.classes_] = forest.predict_proba(X)
    return out


def evaluate_forest(
    sim_X: np.ndarray,
    sim_y: np.ndarray,
    real_X: np.ndarray,
    real_y: np.ndarray,
    params: dict[str, Any],
    augment_per_class: int = 10,
    repeats: int = 10,
    seed: int = 0,
    class_names: Sequence[str] = CLASS_NAMES,
    progress: bool = False,
    n_jobs: int | None = None,
) -> ForestResult:
    """Sim-only and augmented recall on real sequences; ``rcnnlib baseline --json`` writes its ``to_json()``.

    ``params`` are :class:`LightCurveForest` parameters (e.g. a grid search's
    ``best_params_``). Draws come from :func:`few_shot_draws` on ``real_y`` in the
    order given: pass the labels of :func:`rcnnlib.hits.loader.load_hits` unchanged to
    test on the RCNN's test sets. ``sim_only`` is the simulations-only forest
    scored on the same test sets (mean over draws, as ``rcnnlib evaluate`` does).
    """
    real_y = np.asarray(real_y)
    classes = [int(c) for c in np.unique(real_y)]
    draws = few_shot_draws(real_y, augment_per_class, repeats, seed)  # refuses bad inputs early
    n_classes = len(class_names)

    sim_only = LightCurveForest(random_state=seed, n_jobs=n_jobs, **params).fit(sim_X, sim_y)
    sim_proba = _all_class_proba(sim_only, real_X, n_classes)
    predicted = sim_only.classes_[np.argmax(sim_proba[:, sim_only.classes_], axis=1)]

    augmented_predictions = np.full((len(draws), real_y.size), -1, dtype=np.int64)
    augmented_proba = np.full((len(draws), real_y.size, n_classes), np.nan)
    for draw in tqdm(draws, desc="augmented repeats", unit="repeat", file=sys.stderr, disable=not progress):
        forest = LightCurveForest(random_state=seed + 1 + draw.repeat, n_jobs=n_jobs, **params).fit(
            np.concatenate([sim_X, real_X[draw.train]]), np.concatenate([sim_y, real_y[draw.train]])
        )
        proba = _all_class_proba(forest, real_X[draw.test], n_classes)
        augmented_proba[draw.repeat, draw.test] = proba
        augmented_predictions[draw.repeat, draw.test] = forest.classes_[
            np.argmax(proba[:, forest.classes_], axis=1)
        ]
    # sim-only is scored on the augmented protocol's test sets too (mean over draws), as `rcnnlib
    # evaluate` does, so sim-only and augmented figures come from identical test sequences
    sim_predictions = np.tile(predicted, (len(draws), 1))
    test_labels = real_y[draws[0].test]
    return ForestResult(
        classes=[class_names[c] for c in classes],
        n_test={class_names[c]: int(np.sum(test_labels == c)) for c in classes},
        sim_only_all=Recall.of(real_y, predicted, class_names, classes),
        sim_only=score_draws(real_y, sim_predictions, draws, class_names, classes, seed=seed),
        augmented=score_draws(
            real_y, augmented_predictions, draws, class_names, classes, sim_predictions, seed
        ),
        augmented_predictions=augmented_predictions,
        sim_only_predicted=predicted,
        draws=draws,
        sim_only_proba=sim_proba,
        augmented_proba=augmented_proba,
    )


def forest_learning_curve(
    sim_X: np.ndarray,
    sim_y: np.ndarray,
    real_X: np.ndarray,
    real_y: np.ndarray,
    params: dict[str, Any],
    per_class: Sequence[int] = (0, 1, 2, 5, 10, 20),
    repeats: int = 10,
    seed: int = 0,
    class_names: Sequence[str] = CLASS_NAMES,
    n_jobs: int | None = None,
) -> list[ForestResult]:
    """:func:`evaluate_forest` for each number of real sequences per class added, on the RCNN's draws.

    The point at ``n`` is tested on the draws of ``few_shot_draws(real_y, n, repeats,
    seed)``, those of :func:`rcnnlib.rcnn.evaluate.learning_curve` at the same ``n``.
    """
    for n in per_class:  # refuse before any work
        few_shot_draws(real_y, n, repeats, seed)
    return [
        evaluate_forest(sim_X, sim_y, real_X, real_y, params, n, repeats, seed, class_names, n_jobs=n_jobs)
        for n in per_class
    ]


def run_baseline(
    hits_dir: Path | str | None = None,
    n_sim_per_class: int = 1000,
    augment_per_class: int = 10,
    repeats: int = 10,
    seed: int = 0,
    fields: Sequence[str] | None = None,
    grid: dict[str, list[Any]] | None = None,
    n_estimators: int = N_ESTIMATORS,
    train_classes: Sequence[str] = CLASS_NAMES,
    progress: bool = False,
) -> ForestResult:
    """The whole baseline: simulate, measure, tune on simulations, evaluate on real HiTS.

    Returns :func:`evaluate_forest`'s result with the grid search's outcome: ``best_params``,
    ``cv_macro_recall`` (on simulations) and ``feature_importances`` (of the tuned
    sim-only forest, by name).
    """
    from rcnnlib.hits.loader import load_hits

    if n_sim_per_class < CV_FOLDS:
        raise InputError(
            f"--n-sim-per-class must be at least {CV_FOLDS} (the grid search's {CV_FOLDS}-fold "
            f"cross-validation needs that many sequences per class), got {n_sim_per_class}"
        )
    if seed < 0:
        raise InputError(f"--seed must be a whole number >= 0, got {seed}")
    plan_shards(
        Survey.preset("hits2015"), 1, classes=tuple(train_classes), fields=fields
    )  # bad names: fail now
    real = load_hits(hits_dir)  # natural order: the RCNN evaluation draws on these very labels
    few_shot_draws(real.labels, augment_per_class, repeats, seed)  # fail before the slow part
    sim = simulate_training_set(
        n_sim_per_class, seed=seed, fields=fields, classes=train_classes, progress=progress
    )
    if progress:
        print(f"photometry and features of {len(sim):,} simulated sequences", file=sys.stderr)
    sim_X, sim_y = dataset_features(sim), sim.labels.astype(np.int64)
    real_X, real_y = dataset_features(real), real.labels.astype(np.int64)
    if progress:
        print("grid search on simulated light curves", file=sys.stderr)
    search = tune_forest(sim_X, sim_y, grid=grid, seed=seed, n_jobs=-1, n_estimators=n_estimators)
    result = evaluate_forest(
        sim_X,
        sim_y,
        real_X,
        real_y,
        {**search.best_params_, "n_estimators": n_estimators},
        augment_per_class,
        repeats,
        seed,
        class_names=real.class_names,
        progress=progress,
        n_jobs=-1,
    )
    return replace(
        result,
        best_params=search.best_params_,
        cv_macro_recall=float(search.best_score_),
        feature_importances=dict(
            zip(feature_names(), search.best_estimator_.feature_importances_.tolist(), strict=True)
        ),
    )


# --------------------------------------------------------------------------- CLI


def format_result(result: ForestResult) -> str:
    """A small text table of per-class and macro recall."""
    names = list(result.n_test)
    lines = [f"{'':12s}" + "".join(f"{n:>8s}" for n in names) + f"{'macro':>9s}"]
    sim, aug = result.sim_only, result.augmented
    lines.append(
        f"{'sim-only':12s}" + "".join(f"{sim.recall[n]:8.3f}" for n in names) + f"{sim.macro_recall:9.3f}"
    )
    lines.append(
        f"{'augmented':12s}"
        + "".join(f"{aug.recall[n]:8.3f}" for n in names)
        + f"{aug.macro_recall:9.3f} +- {aug.macro_recall_std:.3f}"
    )
    lines.append(f"{'n_test':12s}" + "".join(f"{result.n_test[n]:8d}" for n in names))
    if result.best_params is not None:
        lines.append(
            f"grid search on simulations: best {result.best_params}, "
            f"cross-validated macro recall {result.cv_macro_recall:.3f}"
        )
    return "\n".join(lines)


def evaluate_real_classes_only(
    sim_X: np.ndarray,
    sim_y: np.ndarray,
    real_X: np.ndarray,
    real_y: np.ndarray,
    params: dict[str, Any],
    augment_per_class: int = 10,
    repeats: int = 10,
    seed: int = 0,
    class_names: Sequence[str] = CLASS_NAMES,
    n_jobs: int | None = None,
) -> ForestResult | None:
    """The ablation of chapter 5: :func:`evaluate_forest` trained on the real classes' simulations only.

    Why: no real Cepheid, asteroid or empty stamp exists in the test set, so a forest
    that never learns those classes cannot mistake a real star for one; this measures
    how much of the seven-class forest's error comes from them. Same draws as the
    seven-class evaluation; ``None`` when the simulations hold no other class.
    """
    keep = np.isin(sim_y, np.unique(real_y))
    if keep.all():
        return None
    return evaluate_forest(
        sim_X[keep],
        sim_y[keep],
        real_X,
        real_y,
        params,
        augment_per_class,
        repeats,
        seed,
        class_names=class_names,
        n_jobs=n_jobs,
    )
