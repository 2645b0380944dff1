"""Calibration: the ECE sees over-confidence, temperature scaling undoes it, fitted on adaptation data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rcnnlib.calibration import (
    Calibration,
    Reliability,
    apply_temperature,
    calibration_on_draws,
    expected_calibration_error,
    fit_draw_temperatures,
    fit_temperature,
)
from rcnnlib.protocol import DrawSummary, Recall, few_shot_draws, score_draws


def calibrated_sample(n: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels drawn from those very probabilities: calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.0, (n, n_classes))
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = (rng.random((n, 1)) > proba.cumsum(1)).sum(1)
    return proba, labels


def test_ece_is_small_for_calibrated_and_large_for_over_confident_probabilities():
    proba, labels = calibrated_sample(20_000, 4, seed=0)
    assert expected_calibration_error(proba, labels) < 0.02
    sharp = apply_temperature(proba, 0.4)  # same arg-max, too sure of it
    assert (sharp.argmax(1) == proba.argmax(1)).all()
    assert expected_calibration_error(sharp, labels) > 0.1
    # a bin's gap is |accuracy - confidence|: always right at confidence 0.5 is as wrong as 0.5 off
    assert expected_calibration_error(np.array([[0.5, 0.5]] * 10), np.zeros(10, int)) == pytest.approx(0.5)


def test_temperature_scaling_recovers_the_temperature_and_the_calibration():
    proba, labels = calibrated_sample(20_000, 4, seed=1)
    sharp = apply_temperature(proba, 0.5)
    t = fit_temperature(sharp, labels)
    assert t == pytest.approx(2.0, rel=0.05)
    assert expected_calibration_error(apply_temperature(sharp, t), labels) < 0.02
    np.testing.assert_allclose(apply_temperature(apply_temperature(proba, 3.0), 1 / 3.0), proba, atol=1e-9)


def test_temperatures_are_fitted_on_the_adaptation_sequences_only():
    proba, labels = calibrated_sample(600, 3, seed=2)
    sharp = np.broadcast_to(apply_temperature(proba, 0.5), (3, *proba.shape)).copy()
    draws = few_shot_draws(labels, 30, 3, seed=0)
    fitted = fit_draw_temperatures(labels, sharp, draws)
    assert all(1.3 < t < 3.5 for t in fitted)  # ~2 from 90 sequences each
    # the test rows are never read: make them say anything at all, the temperatures stay
    spoiled = sharp.copy()
    for r, d in enumerate(draws):
        spoiled[r, d.test] = np.eye(3)[(labels[d.test] + 1) % 3] * 0.98 + 0.01  # confidently wrong
    assert fit_draw_temperatures(labels, spoiled, draws) == fitted
    # and the scaled test sets are calibrated
    scaled = calibration_on_draws(labels, sharp, draws, fitted)
    raw = calibration_on_draws(labels, sharp, draws)
    assert scaled.ece < raw.ece / 2 and scaled.temperatures == fitted and raw.temperatures is None


def test_results_round_trip_through_json():
    proba, labels = calibrated_sample(300, 3, seed=3)
    predictions = np.tile(proba.argmax(1), (2, 1))
    draws = few_shot_draws(labels, 5, 2, seed=0)
    other = np.tile(np.roll(proba.argmax(1), 1), (2, 1))
    summary = score_draws(labels, predictions, draws, ["A", "B", "C"], [0, 1, 2], other)
    assert summary.difference is not None and len(summary.per_repeat) == 2
    back = DrawSummary.from_json(json.loads(json.dumps(summary.to_json())))
    assert back == summary
    recall = Recall.of(labels, proba.argmax(1), ["A", "B", "C"], [0, 1, 2])
    assert Recall.from_json(json.loads(json.dumps(recall.to_json()))) == recall
    calibration = calibration_on_draws(labels, np.stack([proba, proba]), draws, [1.0, 1.2])
    text = json.dumps(calibration.to_json(), allow_nan=False)  # empty bins are null, not NaN
    again = Calibration.from_json(json.loads(text))
    assert again.ece == calibration.ece and again.temperatures == [1.0, 1.2]
    np.testing.assert_array_equal(again.reliability.accuracy, calibration.reliability.accuracy)
    assert isinstance(again.reliability, Reliability)


def test_early_classification_sees_the_first_k_epochs_only(real_hits):
    from rcnnlib.protocol import first_epochs, recall_after_epochs

    ds = real_hits.subset(np.arange(0, len(real_hits), 9))
    observed = ds.mask.sum(1)
    cut = first_epochs(ds, 5)
    assert (cut.mask.sum(1) == np.minimum(observed, 5)).all()
    assert (cut.mask <= ds.mask).all()
    last_kept = np.array([ds.mjd[i, cut.mask[i]].max() for i in range(len(ds))])
    first_dropped = np.array([ds.mjd[i, ds.mask[i] & ~cut.mask[i]].min() for i in range(len(ds))])
    assert (last_kept < first_dropped).all()  # the earliest epochs, not any five
    seen = {}

    def predict(part):  # a "classifier" that is right when it saw at least six epochs
        seen[int(part.mask.sum(1).max())] = part
        return np.where(part.mask.sum(1) >= 6, part.labels, -1)

    scores = recall_after_epochs(ds, [5, 6], predict)
    assert set(seen) == {5, 6} and scores[5].macro_recall == 0.0 and scores[6].macro_recall == 1.0
