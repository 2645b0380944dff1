"""The RCNN on real HiTS sequences: simulation-only, and fine-tuned the paper's way.

Recall is computed with the arg-max over all seven classes the network knows:
calling a real RR Lyrae a Cepheid is an error, even though the real set has no
Cepheids. The paper's protocol: draw N real sequences per class, fine-tune on
them, test on the others, repeat; the draws come from
:func:`rcnnlib.protocol.few_shot_draws`, so ``rcnnlib baseline`` uses the very
same test sets for the same seed. The simulation-only model is scored on the
same test sets (mean over draws) and on every real sequence.

The fine-tuned prediction blends the fine-tuned and the simulation-only model
(:func:`rcnnlib.rcnn.model.blend_proba`, weight ``FineTuneConfig.base_weight``); the
fine-tuned network's own scores are reported beside it as ``fine_tuned_alone``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.protocol import bootstrap_recall, confusion, few_shot_draws, macro_recall, recall_per_class
from rcnnlib.rcnn.preprocess import ModelInput, prepare


def predict_sequences(model: Any, config: Any, ds: SequenceDataset) -> tuple[ModelInput, np.ndarray]:
    """Prepared inputs and per-step probabilities (N, steps, classes) of every sequence."""
    from rcnnlib.rcnn.model import predict_proba

    inputs = prepare(ds, config.preprocess)
    return inputs, predict_proba(model, inputs.x, inputs.step_mask)


def early_recall(
    proba: np.ndarray, inputs: ModelInput, class_names: tuple[str, ...], classes: list[int]
) -> dict[str, list[float]]:
    """Recall of each class after each step: the prediction once ``j + epochs_per_step`` epochs are seen.

    A sequence shorter than ``j`` steps keeps its last prediction.
    """
    n_valid = inputs.step_mask.sum(1)
    steps = inputs.step_mask.shape[1]
    out: dict[str, list[float]] = {class_names[c]: [] for c in classes}
    for j in range(steps):
        at = np.clip(np.minimum(j, n_valid - 1), 0, None)
        predicted = proba[np.arange(len(at)), at].argmax(-1)
        for name, value in recall_per_class(inputs.labels, predicted, class_names, classes).items():
            out[name].append(value)
    return out


def _scores(true: np.ndarray, predicted: np.ndarray, names: tuple[str, ...], classes: list[int]) -> dict:
    recall = recall_per_class(true, predicted, names, classes)
    return {"macro_recall": macro_recall(recall), "recall": recall}


def _mean_std(runs: list[dict], names: list[str]) -> dict[str, Any]:
    macro = np.array([r["macro_recall"] for r in runs])
    recall = np.array([[r["recall"][n] for n in names] for r in runs])
    return {
        "macro_recall": float(macro.mean()),
        "macro_recall_std": float(macro.std(ddof=1)) if len(runs) > 1 else 0.0,
        "recall": dict(zip(names, recall.mean(0).tolist(), strict=True)),
        "recall_std": dict(
            zip(names, (recall.std(0, ddof=1) if len(runs) > 1 else 0 * recall[0]).tolist(), strict=True)
        ),
        "per_repeat": [r["macro_recall"] for r in runs],
    }


def evaluate_on_real(
    real: SequenceDataset,
    model: str | Path | None = None,
    finetune_per_class: int = 10,
    repeats: int = 5,
    seed: int = 0,
    finetune_config: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores of the simulation-only and fine-tuned RCNN on ``real``; the ``rcnnlib evaluate --json`` schema.

    ``model`` is a saved model folder (the shipped pretrained model by default).
    ``finetune_per_class=0`` skips fine-tuning.
    """
    from rcnnlib.rcnn.model import blend_proba, last_step_proba, load_model, predict_proba
    from rcnnlib.rcnn.train import FineTuneConfig, fine_tune

    if finetune_per_class:  # refuses a draw that leaves a class untested before any work
        few_shot_draws(real.labels, finetune_per_class, repeats, seed)
    base, config, card = load_model(model)
    if tuple(real.class_names) != tuple(config.class_names):
        raise InputError("the real dataset's class names differ from the model's")
    names = config.class_names
    classes = [int(c) for c in np.unique(real.labels)]
    present = [names[c] for c in classes]
    inputs, proba = predict_sequences(base, config, real)
    predicted = last_step_proba(proba, inputs.step_mask).argmax(-1)
    result: dict[str, Any] = {
        "model": {
            "path": str(model or "pretrained"),
            "card": {k: card.get(k) for k in ("model", "seed", "training_time_s", "validation")},
        },
        "classes": present,
        "n_sequences": {names[c]: int((real.labels == c).sum()) for c in classes},
        "sim_only_all": {
            **_scores(inputs.labels, predicted, names, classes),
            "confusion": confusion(inputs.labels, predicted, len(names)).tolist(),
            "early_recall": early_recall(proba, inputs, names, classes),
        },
    }
    if finetune_per_class == 0:
        result["sim_only"] = {k: result["sim_only_all"][k] for k in ("macro_recall", "recall")}
        result["n_test"] = result["n_sequences"]
        return result

    finetune_config = finetune_config or FineTuneConfig()
    draws = few_shot_draws(real.labels, finetune_per_class, repeats, seed)
    sim_runs, tuned_runs, alone_runs = [], [], []
    tuned_confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    tuned_early = []
    tuned_predictions = np.full((repeats, len(real)), -1, dtype=np.int64)
    alone_predictions = np.full((repeats, len(real)), -1, dtype=np.int64)
    tuned = None  # one fine-tuned model, reset to the base weights per draw (one traced graph)
    start = time.perf_counter()
    for draw in _progress(draws, progress):
        test = draw.test
        sim_runs.append(_scores(inputs.labels[test], predicted[test], names, classes))
        tuned = fine_tune(
            base, config, real.subset(draw.train), finetune_config, seed=seed * 1000 + draw.repeat, into=tuned
        )
        test_inputs = _take(inputs, test)
        alone = predict_proba(tuned, test_inputs.x, test_inputs.step_mask)
        alone_predictions[draw.repeat, test] = last_step_proba(alone, test_inputs.step_mask).argmax(-1)
        alone_runs.append(_scores(test_inputs.labels, alone_predictions[draw.repeat, test], names, classes))
        p = blend_proba(alone, proba[test], finetune_config.base_weight)
        pred = last_step_proba(p, test_inputs.step_mask).argmax(-1)
        tuned_predictions[draw.repeat, test] = pred
        tuned_runs.append(_scores(test_inputs.labels, pred, names, classes))
        tuned_confusion += confusion(test_inputs.labels, pred, len(names))
        tuned_early.append(early_recall(p, test_inputs, names, classes))
    # 95 % intervals from the luck of the test objects (same resamples for every method: paired)
    sim_predictions = np.tile(predicted, (repeats, 1))
    result["sim_only_all"]["predicted"] = predicted.tolist()
    result["sim_only"] = {
        **_mean_std(sim_runs, present),
        **bootstrap_recall(inputs.labels, sim_predictions, draws, names, classes, seed=seed),
    }
    result["fine_tuned"] = {
        **_mean_std(tuned_runs, present),
        "confusion": tuned_confusion.tolist(),
        "early_recall": {n: np.mean([e[n] for e in tuned_early], axis=0).tolist() for n in present},
        "predictions": tuned_predictions.tolist(),
        # "difference": fine-tuned minus simulation-only, on the same resamples of the same test sets
        **bootstrap_recall(inputs.labels, tuned_predictions, draws, names, classes, sim_predictions, seed),
        "seconds_per_repeat": round((time.perf_counter() - start) / repeats, 1),
        "config": {k: v for k, v in vars(finetune_config).items() if k != "augmentation"},
    }
    result["fine_tuned_alone"] = {
        **_mean_std(alone_runs, present),
        **bootstrap_recall(inputs.labels, alone_predictions, draws, names, classes, seed=seed),
    }
    result["n_test"] = {names[c]: int((real.labels[draws[0].test] == c).sum()) for c in classes}
    result["protocol"] = {"finetune_per_class": finetune_per_class, "repeats": repeats, "seed": seed}
    return result


def _take(inputs: ModelInput, index: np.ndarray) -> ModelInput:
    return replace(
        inputs,
        x=inputs.x[index],
        step_mask=inputs.step_mask[index],
        labels=inputs.labels[index],
        last_epoch=inputs.last_epoch[index],
        n_good_epochs=inputs.n_good_epochs[index],
    )


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="fine-tuning draws", unit="draw", file=sys.stderr)


def recall_table(result: dict[str, Any]) -> str:
    """Plain-text table of per-class and macro recall: simulation-only, fine-tuned (blended), tuned alone."""
    classes = result["classes"]
    tuned, alone = result.get("fine_tuned"), result.get("fine_tuned_alone")
    header = f"{'class':<8}{'n_test':>8}{'sim-only':>12}"
    if tuned:
        header += f"{'fine-tuned':>17}{'tuned alone':>17}" if alone else f"{'fine-tuned':>17}"
    rows = [header]

    def cells(scores: dict | None, key: str, std_key: str, name: str | None) -> str:
        if not scores:
            return ""
        value = scores[key][name] if name else scores[key]
        std = scores[std_key][name] if name else scores[std_key]
        return f"{value:>9.3f} ± {std:.3f}"

    for name in classes:
        line = f"{name:<8}{result['n_test'][name]:>8}{result['sim_only']['recall'][name]:>12.3f}"
        rows.append(
            line + cells(tuned, "recall", "recall_std", name) + cells(alone, "recall", "recall_std", name)
        )
    line = f"{'macro':<8}{'':>8}{result['sim_only']['macro_recall']:>12.3f}"
    rows.append(
        line
        + cells(tuned, "macro_recall", "macro_recall_std", None)
        + cells(alone, "macro_recall", "macro_recall_std", None)
    )
    return "\n".join(rows)
