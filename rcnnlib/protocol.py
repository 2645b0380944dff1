"""The paper's evaluation protocol on real data: few-shot draws and recall.

The RCNN (``rcnnlib evaluate``) and the light-curve forest (``rcnnlib
baseline``) are compared on identical real test sets. Both get their draws
from :func:`few_shot_draws` with the same seed, so repeat ``r`` of one is
repeat ``r`` of the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError


@dataclass(frozen=True)
class Draw:
    """One repeat of the protocol: indices of the real sequences used to adapt, and to test."""

    repeat: int
    train: np.ndarray
    test: np.ndarray


def few_shot_draws(labels: np.ndarray, n_per_class: int, repeats: int, seed: int) -> list[Draw]:
    """``repeats`` random draws of ``n_per_class`` sequences of every class present; the rest is the test set.

    Draw ``r`` depends only on ``(labels, n_per_class, seed, r)``: asking for
    more repeats adds draws without changing the earlier ones. A class with
    fewer than ``n_per_class + 1`` sequences is refused, since it would leave
    nothing to test.
    """
    labels = np.asarray(labels)
    if n_per_class < 0 or repeats < 1:
        raise InputError(f"need n_per_class >= 0 and repeats >= 1, got {n_per_class} and {repeats}")
    classes, counts = np.unique(labels, return_counts=True)
    short = [int(c) for c, n in zip(classes, counts, strict=True) if n <= n_per_class]
    if short:
        raise InputError(
            f"class label(s) {short} have at most {n_per_class} sequences: nothing would be left to test"
        )
    draws = []
    for r in range(repeats):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(r,)))
        train = np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), size=n_per_class, replace=False) for c in classes]
        ).astype(np.int64)
        train.sort()
        test = np.setdiff1d(np.arange(labels.size), train)
        draws.append(Draw(r, train, test))
    return draws


def recall_per_class(
    true: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], classes: Sequence[int]
) -> dict[str, float]:
    """Recall of each class in ``classes`` (label indices): the fraction of its sequences predicted as it."""
    true, predicted = np.asarray(true), np.asarray(predicted)
    out = {}
    for c in classes:
        sel = true == c
        out[class_names[c]] = float(np.mean(predicted[sel] == c)) if sel.any() else float("nan")
    return out


def macro_recall(recall: dict[str, float]) -> float:
    """Average recall over classes: the paper's headline figure."""
    return float(np.nanmean(list(recall.values())))


def confusion(true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts ``[true, predicted]``, shape (n_classes, n_classes)."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(true), np.asarray(predicted)), 1)
    return m


BOOTSTRAP_SAMPLES = 2000
"""Resamples of the test objects behind every 95 % interval (Monte-Carlo error of a bound ~0.002)."""


def _boot_recall(
    labels: np.ndarray, predictions: np.ndarray, draws: Sequence[Draw], classes: Sequence[int], picks: list
) -> np.ndarray:
    """(B, classes) recall averaged over draws, for the bootstrap samples ``picks`` (one per draw)."""
    total = np.zeros((picks[0].shape[0], len(classes)))
    for draw, pick in zip(draws, picks, strict=True):
        y = labels[draw.test][pick]  # (B, m)
        p = predictions[draw.repeat][draw.test][pick]
        for j, c in enumerate(classes):
            members = y == c
            with np.errstate(invalid="ignore"):
                total[:, j] += ((p == c) & members).sum(1) / members.sum(1)
    return total / len(draws)


@dataclass(frozen=True)
class PairedDifference:
    """One method's macro recall minus another's on the same draws and the same bootstrap resamples."""

    macro_recall: float
    ci: list[float]
    p_not_better: float  # fraction of resamples where the difference is not positive (one-sided)

    def to_json(self) -> dict[str, Any]:
        return {"macro_recall": self.macro_recall, "ci": self.ci, "p_not_better": self.p_not_better}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairedDifference:
        return cls(float(data["macro_recall"]), list(data["ci"]), float(data["p_not_better"]))


@dataclass(frozen=True)
class Intervals:
    """95 % bootstrap intervals (over test objects) of the macro and per-class recall; a paired difference."""

    macro_recall_ci: list[float]
    recall_ci: dict[str, list[float]]
    bootstrap_samples: int
    difference: PairedDifference | None = None


def bootstrap_recall(
    labels: np.ndarray,
    predictions: np.ndarray,
    draws: Sequence[Draw],
    class_names: Sequence[str],
    classes: Sequence[int],
    other: np.ndarray | None = None,
    seed: int = 0,
    n_boot: int = BOOTSTRAP_SAMPLES,
) -> Intervals:
    """95 % confidence intervals of the macro and per-class recall from the luck of the test objects.

    ``predictions[r]`` holds draw ``r``'s predicted label of every real sequence
    (only its test set is read). Each bootstrap sample redraws every draw's test
    set with replacement and averages the recalls over draws, as the reported
    figure is. With ``other`` (a second method's predictions on the same draws) the
    same samples give the paired difference (this method minus the other): its
    interval and the one-sided fraction of samples where it is not positive.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2026,)))
    picks = [rng.integers(0, d.test.size, size=(n_boot, d.test.size)) for d in draws]
    recall = _boot_recall(labels, predictions, draws, classes, picks)
    macro = np.nanmean(recall, axis=1)
    difference = None
    if other is not None:
        delta = macro - np.nanmean(_boot_recall(labels, np.asarray(other), draws, classes, picks), axis=1)
        difference = PairedDifference(
            float(np.nanmean(delta)),
            np.nanpercentile(delta, [2.5, 97.5]).tolist(),
            float(np.mean(delta <= 0)),
        )
    return Intervals(
        macro_recall_ci=np.nanpercentile(macro, [2.5, 97.5]).tolist(),
        recall_ci={
            class_names[c]: np.nanpercentile(recall[:, j], [2.5, 97.5]).tolist()
            for j, c in enumerate(classes)
        },
        bootstrap_samples=n_boot,
        difference=difference,
    )


# --------------------------------------------------------------------------- typed results
@dataclass(frozen=True)
class Recall:
    """Macro and per-class recall of one set of predictions."""

    macro_recall: float
    recall: dict[str, float]

    @classmethod
    def of(
        cls, true: np.ndarray, predicted: np.ndarray, class_names: Sequence[str], classes: Sequence[int]
    ) -> Recall:
        recall = recall_per_class(true, predicted, class_names, classes)
        return cls(macro_recall(recall), recall)

    def to_json(self) -> dict[str, Any]:
        return {"macro_recall": self.macro_recall, "recall": dict(self.recall)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recall:
        return cls(float(data["macro_recall"]), {k: float(v) for k, v in data["recall"].items()})


@dataclass(frozen=True, kw_only=True)
class DrawSummary:
    """One method over repeated draws: mean and spread of its recall, per-draw figures, 95 % intervals.

    The spread (``_std``, over draws) is the luck of the adaptation draw; the
    intervals (``_ci``, bootstrap over test objects) the luck of which objects are
    in the test sets. Both RCNN (``rcnnlib evaluate``) and forest (``rcnnlib baseline``)
    are summarised by this one type, so their tables read alike.
    """

    macro_recall: float
    macro_recall_std: float = 0.0
    recall: dict[str, float]
    recall_std: dict[str, float] = field(default_factory=dict)
    per_repeat: list[float] = field(default_factory=list)  # macro recall of each draw
    # per-class recall of each draw (not in the JSON)
    per_repeat_recall: list[dict[str, float]] = field(default_factory=list, repr=False, compare=False)
    macro_recall_ci: list[float] | None = None
    recall_ci: dict[str, list[float]] | None = None
    bootstrap_samples: int | None = None
    difference: PairedDifference | None = None

    def with_intervals(self, intervals: Intervals) -> DrawSummary:
        """This summary with the bootstrap intervals (and paired difference) of the same draws."""
        return replace(
            self,
            macro_recall_ci=intervals.macro_recall_ci,
            recall_ci=intervals.recall_ci,
            bootstrap_samples=intervals.bootstrap_samples,
            difference=intervals.difference,
        )

    def to_json(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The JSON block (``difference`` and the intervals only when measured); ``keys`` picks a subset."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "per_repeat_recall" or value is None:
                continue
            out[f.name] = value.to_json() if isinstance(value, PairedDifference) else value
        return out if keys is None else {k: out[k] for k in keys if k in out}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DrawSummary:
        known = {f.name for f in fields(cls)} - {"per_repeat_recall", "difference"}
        difference = data.get("difference")
        return cls(
            **{k: v for k, v in data.items() if k in known},
            difference=None if difference is None else PairedDifference.from_json(difference),
        )


def summarise_draws(runs: Sequence[Recall]) -> DrawSummary:
    """Mean over draws of the macro and per-class recall, their standard deviation (ddof 1), per-draw values.

    The one draw summary of the package: RCNN and forest alike.
    """
    names = list(runs[0].recall)
    macro = np.array([r.macro_recall for r in runs])
    recall = np.array([[r.recall[n] for n in names] for r in runs])
    spread = recall.std(0, ddof=1) if len(runs) > 1 else np.zeros(len(names))
    return DrawSummary(
        macro_recall=float(macro.mean()),
        recall=dict(zip(names, recall.mean(0).tolist(), strict=True)),
        macro_recall_std=float(macro.std(ddof=1)) if len(runs) > 1 else 0.0,
        recall_std=dict(zip(names, spread.tolist(), strict=True)),
        per_repeat=macro.tolist(),
        per_repeat_recall=[dict(r.recall) for r in runs],
    )


def score_draws(
    labels: np.ndarray,
    predictions: np.ndarray,
    draws: Sequence[Draw],
    class_names: Sequence[str],
    classes: Sequence[int],
    other: np.ndarray | None = None,
    seed: int = 0,
) -> DrawSummary:
    """Recall of ``predictions[r]`` on draw ``r``'s test set, summarised over draws, with 95 % intervals.

    ``other``: a second method's predictions on the same draws, for the paired difference.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    runs = [Recall.of(labels[d.test], predictions[d.repeat][d.test], class_names, classes) for d in draws]
    intervals = bootstrap_recall(labels, predictions, draws, class_names, classes, other, seed)
    return summarise_draws(runs).with_intervals(intervals)


# --------------------------------------------------------------------------- early classification
def first_epochs(ds: SequenceDataset, k: int) -> SequenceDataset:
    """Every sequence cut to its first ``k`` observed epochs: what a classifier knows after ``k`` alerts."""
    return replace(ds, mask=ds.mask & (np.cumsum(ds.mask, axis=1) <= k))


def recall_after_epochs(
    ds: SequenceDataset, epochs: Sequence[int], predict: Callable[[SequenceDataset], np.ndarray]
) -> dict[int, Recall]:
    """Recall of ``predict`` (a dataset -> predicted labels) on the first ``k`` epochs, for each ``k``.

    Both methods see exactly the same epochs of the same sequences, whatever each does with them.
    """
    classes = [int(c) for c in np.unique(ds.labels)]
    return {k: Recall.of(ds.labels, predict(first_epochs(ds, k)), ds.class_names, classes) for k in epochs}
