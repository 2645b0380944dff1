"""The paper's evaluation protocol on real data: few-shot draws and recall.

The RCNN (``rcnnlib evaluate``) and the light-curve forest (``rcnnlib
baseline``) are compared on identical real test sets. Both get their draws
from :func:`few_shot_draws` with the same seed, so repeat ``r`` of one is
repeat ``r`` of the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

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


def bootstrap_recall(
    labels: np.ndarray,
    predictions: np.ndarray,
    draws: Sequence[Draw],
    class_names: Sequence[str],
    classes: Sequence[int],
    other: np.ndarray | None = None,
    seed: int = 0,
    n_boot: int = BOOTSTRAP_SAMPLES,
) -> dict[str, object]:
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
    out: dict[str, object] = {
        "macro_recall_ci": np.nanpercentile(macro, [2.5, 97.5]).tolist(),
        "recall_ci": {
            class_names[c]: np.nanpercentile(recall[:, j], [2.5, 97.5]).tolist()
            for j, c in enumerate(classes)
        },
        "bootstrap_samples": n_boot,
    }
    if other is not None:
        difference = macro - np.nanmean(
            _boot_recall(labels, np.asarray(other), draws, classes, picks), axis=1
        )
        out["difference"] = {
            "macro_recall": float(np.nanmean(difference)),
            "ci": np.nanpercentile(difference, [2.5, 97.5]).tolist(),
            "p_not_better": float(np.mean(difference <= 0)),
        }
    return out
