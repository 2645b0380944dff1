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
