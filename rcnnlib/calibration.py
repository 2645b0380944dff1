"""Are the class probabilities honest? Reliability, expected calibration error, temperature scaling.

A classifier is calibrated when, of the objects it calls with probability 0.8,
80 % are right. The reliability diagram bins the test objects by their top
probability (the *confidence*) and compares each bin's accuracy with its mean
confidence; the expected calibration error (ECE) is the count-weighted mean gap.
Temperature scaling divides the log-probabilities by one number ``T`` (``T > 1``
softens an over-confident model, ``T < 1`` sharpens an under-confident one): it
never changes the predicted class, so recall stays what it was. ``T`` must be
fitted on labelled data the model was not trained on and that is not the test
set: in the few-shot protocol, the adaptation sequences of a draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from rcnnlib.protocol import Draw

N_BINS = 10
"""Equal-width confidence bins of the reliability diagram and the ECE."""
TEMPERATURE_RANGE = (0.05, 20.0)
"""Temperatures searched: beyond these a model says nothing (all 1/K) or everything (one-hot)."""
TEMPERATURE_PRIOR_WIDTH = 1.0
"""Standard deviation of ``log T`` a priori (T within 0.14-7.4 at 95 %), set before looking at any data."""


def _tiny_log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(proba, dtype=np.float64), np.finfo(np.float32).tiny))


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` along the last axis: the same arg-max, softened (T > 1) or sharpened (T < 1)."""
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    if temperature == 1.0:
        return np.asarray(proba)
    log = _tiny_log(proba) / temperature
    log -= log.max(axis=-1, keepdims=True)
    out = np.exp(log)
    return out / out.sum(axis=-1, keepdims=True)


def class_balanced_weights(labels: np.ndarray) -> np.ndarray:
    """Weights that make every class count the same (as the macro recall does), summing to 1."""
    labels = np.asarray(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return w / w.sum()


def fit_temperature(proba: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The most probable temperature given ``labels`` under ``proba``: (weighted) likelihood and a weak prior.

    ``proba`` (N, classes) must come from objects the model did not learn from and
    that will not be scored with the result (the adaptation sequences of a draw).
    The prior, ``log T ~ Normal(0, TEMPERATURE_PRIOR_WIDTH)``, matters only for a
    handful of objects: when all of them are classified right the likelihood alone
    keeps rising as ``T -> 0`` and would declare a model certain from eight examples.
    """
    log = _tiny_log(proba)
    labels = np.asarray(labels)
    w = np.full(labels.size, 1.0 / labels.size) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()

    def neg_log_posterior(log_t: float) -> float:
        z = log / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(z).sum(axis=1))
        nll = -(w * (z[np.arange(labels.size), labels] - log_norm)).sum() * labels.size
        return float(nll + 0.5 * (log_t / TEMPERATURE_PRIOR_WIDTH) ** 2)

    lo, hi = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(neg_log_posterior, bounds=(lo, hi), method="bounded").x))


@dataclass(frozen=True)
class Reliability:
    """Accuracy against confidence in equal-width bins, and the expected calibration error (ECE)."""

    confidence: list[float]  # mean top probability in each bin (NaN when empty)
    accuracy: list[float]  # fraction correct in each bin (NaN when empty)
    weight: list[float]  # share of the (weighted) objects in each bin
    ece: float

    @classmethod
    def of(
        cls, proba: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, n_bins: int = N_BINS
    ) -> Reliability:
        proba, labels = np.asarray(proba), np.asarray(labels)
        w = np.ones(labels.size) if weights is None else np.asarray(weights, dtype=float)
        w = w / w.sum()
        confidence = proba.max(axis=1)
        correct = (proba.argmax(axis=1) == labels).astype(float)
        bins = np.clip((confidence * n_bins).astype(int), 0, n_bins - 1)  # confidence 1.0 in the last bin
        weight = np.bincount(bins, w, n_bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_conf = np.bincount(bins, w * confidence, n_bins) / weight
            accuracy = np.bincount(bins, w * correct, n_bins) / weight
        gap = np.where(weight > 0, np.abs(accuracy - mean_conf), 0.0)
        return cls(mean_conf.tolist(), accuracy.tolist(), weight.tolist(), float((weight * gap).sum()))

    def to_json(self) -> dict[str, Any]:
        """Empty bins as ``null`` (JSON has no NaN)."""
        bins = {k: [None if np.isnan(v) else v for v in getattr(self, k)] for k in ("confidence", "accuracy")}
        return {**bins, "weight": self.weight, "ece": self.ece}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Reliability:
        bins = {k: [np.nan if v is None else float(v) for v in data[k]] for k in ("confidence", "accuracy")}
        return cls(**bins, weight=[float(v) for v in data["weight"]], ece=float(data["ece"]))


def expected_calibration_error(
    proba: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, n_bins: int = N_BINS
) -> float:
    """Weighted mean |accuracy - confidence| over confidence bins (0: calibrated)."""
    return Reliability.of(proba, labels, weights, n_bins).ece


@dataclass(frozen=True)
class Calibration:
    """One method's calibration on the test sets of repeated draws (pooled), and its fitted temperatures.

    ``reliability`` weighs every test object alike (the real test sets are mostly
    non-variable stars); ``balanced_ece`` weighs every class alike, as the macro
    recall does. ``temperatures`` (one per draw) when the probabilities were scaled.
    """

    reliability: Reliability
    balanced_ece: float
    temperatures: list[float] | None = None

    @property
    def ece(self) -> float:
        return self.reliability.ece

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reliability": self.reliability.to_json(), "balanced_ece": self.balanced_ece}
        if self.temperatures is not None:
            out["temperatures"] = self.temperatures
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            Reliability.from_json(data["reliability"]), float(data["balanced_ece"]), data.get("temperatures")
        )


def fit_draw_temperatures(labels: np.ndarray, proba: np.ndarray, draws: Sequence[Draw]) -> list[float]:
    """One temperature per draw, fitted on that draw's adaptation sequences only (never its test set).

    ``proba[r]`` holds draw ``r``'s probabilities of every real sequence (N, classes);
    only the rows of ``draws[r].train`` are read, class-balanced.
    """
    labels = np.asarray(labels)
    return [
        fit_temperature(proba[r][d.train], labels[d.train], class_balanced_weights(labels[d.train]))
        for r, d in enumerate(draws)
    ]


def calibration_on_draws(
    labels: np.ndarray,
    proba: np.ndarray,
    draws: Sequence[Draw],
    temperatures: Sequence[float] | None = None,
    n_bins: int = N_BINS,
) -> Calibration:
    """Reliability and ECE of ``proba[r]`` on draw ``r``'s test set, pooled over draws (scaled by
    ``temperatures[r]`` when given)."""
    labels = np.asarray(labels)
    rows, truth = [], []
    for r, d in enumerate(draws):
        p = proba[r][d.test]
        rows.append(p if temperatures is None else apply_temperature(p, temperatures[r]))
        truth.append(labels[d.test])
    p, y = np.concatenate(rows), np.concatenate(truth)
    return Calibration(
        Reliability.of(p, y, n_bins=n_bins),
        Reliability.of(p, y, class_balanced_weights(y), n_bins).ece,
        None if temperatures is None else [float(t) for t in temperatures],
    )
