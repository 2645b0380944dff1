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

Results are :class:`Evaluation` objects (``to_json``/``from_json``: the schema of
``rcnnlib evaluate --json``). :func:`learning_curve` repeats the protocol for several
numbers of real sequences per class. The calibration of the last-step probabilities
(:mod:`rcnnlib.calibration`) is measured on the same test sets; the simulation-only
model's temperature is fitted on each draw's fine-tuning sequences, which it never saw.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.calibration import Calibration, calibration_on_draws, fit_draw_temperatures
from rcnnlib.dataset import SequenceDataset, atomic_path
from rcnnlib.errors import InputError
from rcnnlib.protocol import DrawSummary, Recall, confusion, few_shot_draws, recall_per_class, score_draws
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


@dataclass(frozen=True)
class FewShotProtocol:
    """The few-shot draws' settings: ``rcnnlib baseline`` with the same values tests on the same draws."""

    finetune_per_class: int
    repeats: int
    seed: int

    def to_json(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """Scores of the RCNN on real sequences: what ``rcnnlib evaluate --json`` writes.

    ``sim_only_all`` is the simulation-only model on every real sequence (with its
    confusion, early recall and predictions); ``sim_only``, ``fine_tuned`` (the blend)
    and ``fine_tuned_alone`` are scored on the test sets of the draws. Without
    fine-tuning (``finetune_per_class=0``) ``sim_only`` is a plain :class:`Recall` on every
    sequence and the fine-tuned fields are ``None``. ``real_classes_only`` scores the same
    draws with the arg-max taken over the classes present in the real data only (SN, RRL,
    EB, NV for HiTS), the counterpart of a forest trained on those classes. The last-step
    probabilities (``*_proba``) are kept for calibration and are not written to JSON.
    """

    model: dict[str, Any]
    classes: list[str]
    n_sequences: dict[str, int]
    n_test: dict[str, int]
    sim_only_all: Recall
    sim_only_confusion: np.ndarray
    sim_only_early_recall: dict[str, list[float]]
    sim_only_predicted: np.ndarray  # (N,) on every real sequence
    sim_only: Recall | DrawSummary
    fine_tuned: DrawSummary | None = None
    fine_tuned_alone: DrawSummary | None = None
    fine_tuned_confusion: np.ndarray | None = None  # summed over the draws' test sets
    fine_tuned_early_recall: dict[str, list[float]] | None = None  # mean over draws
    fine_tuned_predictions: np.ndarray | None = None  # (repeats, N), -1 outside a draw's test set
    seconds_per_repeat: float | None = None
    finetune_config: dict[str, Any] | None = None
    protocol: FewShotProtocol | None = None
    calibration: dict[str, Calibration] | None = None
    real_classes_only: dict[str, DrawSummary] | None = None  # "sim_only", "fine_tuned": see below
    sim_only_proba: np.ndarray | None = field(default=None, repr=False)  # (N, classes)
    fine_tuned_proba: np.ndarray | None = field(
        default=None, repr=False
    )  # (repeats, N, classes), NaN off test

    @property
    def adapted(self) -> DrawSummary:
        """Scores with ``finetune_per_class`` real sequences: fine-tuned, or sim-only at 0 (a curve point)."""
        if self.fine_tuned is not None:
            return self.fine_tuned
        s = self.sim_only
        return DrawSummary(
            macro_recall=s.macro_recall,
            recall=dict(s.recall),
            recall_std=dict.fromkeys(s.recall, 0.0),  # one model, no draws: no spread
            per_repeat=[s.macro_recall],
        )

    def to_json(self) -> dict[str, Any]:
        """The ``rcnnlib evaluate --json`` schema."""
        tuned = self.fine_tuned is not None
        out: dict[str, Any] = {
            "model": self.model,
            "classes": self.classes,
            "n_sequences": self.n_sequences,
            "sim_only_all": {
                **self.sim_only_all.to_json(),
                "confusion": self.sim_only_confusion.tolist(),
                "early_recall": self.sim_only_early_recall,
                **({"predicted": self.sim_only_predicted.tolist()} if tuned else {}),
            },
            "sim_only": self.sim_only.to_json(),
        }
        if self.fine_tuned is not None:  # then every fine_tuned_* field is set (evaluate_on_real)
            assert self.fine_tuned_alone is not None and self.fine_tuned_confusion is not None
            assert self.fine_tuned_predictions is not None
            block = self.fine_tuned.to_json()
            intervals = {k: block.pop(k) for k in INTERVAL_KEYS if k in block}
            out["fine_tuned"] = {
                **block,
                "confusion": self.fine_tuned_confusion.tolist(),
                "early_recall": self.fine_tuned_early_recall,
                "predictions": self.fine_tuned_predictions.tolist(),
                **intervals,
                "seconds_per_repeat": self.seconds_per_repeat,
                "config": self.finetune_config,
            }
            out["fine_tuned_alone"] = self.fine_tuned_alone.to_json()
        out["n_test"] = self.n_test
        if self.protocol is not None:
            out["protocol"] = self.protocol.to_json()
        if self.calibration is not None:
            out["calibration"] = {name: c.to_json() for name, c in self.calibration.items()}
        if self.real_classes_only is not None:
            out["real_classes_only"] = {name: d.to_json() for name, d in self.real_classes_only.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Evaluation:
        """An :class:`Evaluation` read back from :meth:`to_json` (e.g. chapter 4's ``evaluation.json``)."""
        all_real = data["sim_only_all"]
        tuned = data.get("fine_tuned")
        extra: dict[str, Any] = {}
        if tuned is not None:
            extra = dict(
                fine_tuned=DrawSummary.from_json(tuned),
                fine_tuned_alone=DrawSummary.from_json(data["fine_tuned_alone"]),
                fine_tuned_confusion=np.array(tuned["confusion"], dtype=np.int64),
                fine_tuned_early_recall=tuned["early_recall"],
                fine_tuned_predictions=np.array(tuned["predictions"], dtype=np.int64),
                seconds_per_repeat=tuned.get("seconds_per_repeat"),
                finetune_config=tuned.get("config"),
            )
        protocol = data.get("protocol")
        calibration = data.get("calibration")
        if "real_classes_only" in data:  # absent from files of earlier versions
            extra["real_classes_only"] = {
                name: DrawSummary.from_json(d) for name, d in data["real_classes_only"].items()
            }
        return cls(
            model=data["model"],
            classes=list(data["classes"]),
            n_sequences=data["n_sequences"],
            n_test=data["n_test"],
            sim_only_all=Recall.from_json(all_real),
            sim_only_confusion=np.array(all_real["confusion"], dtype=np.int64),
            sim_only_early_recall=all_real["early_recall"],
            sim_only_predicted=np.array(all_real.get("predicted", []), dtype=np.int64),
            sim_only=DrawSummary.from_json(data["sim_only"]) if tuned else Recall.from_json(data["sim_only"]),
            protocol=None if protocol is None else FewShotProtocol(**protocol),
            calibration=None
            if calibration is None
            else {name: Calibration.from_json(c) for name, c in calibration.items()},
            **extra,
        )

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`to_json` atomically (a reader never sees half a file)."""
        with atomic_path(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def read_json(cls, path: str | Path) -> Evaluation:
        path = Path(path)
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not an evaluation written by rcnnlib evaluate ({exc})") from None


INTERVAL_KEYS = ("macro_recall_ci", "recall_ci", "bootstrap_samples", "difference")


class _Base:
    """The simulation-only model and its predictions on every real sequence, computed once."""

    def __init__(self, real: SequenceDataset, model: str | Path | None):
        from rcnnlib.rcnn.model import last_step_proba, load_model

        self.model, self.config, self.card = load_model(model)
        if tuple(real.class_names) != tuple(self.config.class_names):
            raise InputError("the real dataset's class names differ from the model's")
        self.path = str(model or "pretrained")
        self.inputs, self.proba = predict_sequences(self.model, self.config, real)
        self.last = last_step_proba(self.proba, self.inputs.step_mask)


def evaluate_on_real(
    real: SequenceDataset,
    model: str | Path | None = None,
    finetune_per_class: int = 10,
    repeats: int = 5,
    seed: int = 0,
    finetune_config: Any = None,
    progress: bool = True,
) -> Evaluation:
    """Scores of the simulation-only and fine-tuned RCNN on ``real`` (the ``rcnnlib evaluate --json`` schema).

    ``model`` is a saved model folder (the shipped pretrained model by default).
    ``finetune_per_class=0`` skips fine-tuning.
    """
    if finetune_per_class:  # refuses a draw that leaves a class untested before any work
        few_shot_draws(real.labels, finetune_per_class, repeats, seed)
    return _evaluate(real, _Base(real, model), finetune_per_class, repeats, seed, finetune_config, progress)


def learning_curve(
    real: SequenceDataset,
    model: str | Path | None = None,
    per_class: Sequence[int] = (0, 1, 2, 5, 10, 20),
    repeats: int = 5,
    seed: int = 0,
    finetune_config: Any = None,
    progress: bool = True,
) -> list[Evaluation]:
    """:func:`evaluate_on_real` for each number of real sequences per class in ``per_class``.

    The model loads and predicts once. Each value draws with :func:`few_shot_draws`
    (``n``, ``repeats``, ``seed``), so the point at ``n`` is ``rcnnlib evaluate
    --finetune-per-class n`` and is tested on the draws ``rcnnlib baseline
    --augment-per-class n`` uses for the forest.
    """
    for n in per_class:  # refuse before any work
        if n < 0:
            raise InputError(f"--finetune-per-class must be >= 0, got {n}")
        if n:
            few_shot_draws(real.labels, n, repeats, seed)
    base = _Base(real, model)
    return [_evaluate(real, base, n, repeats, seed, finetune_config, progress) for n in per_class]


def _evaluate(
    real: SequenceDataset,
    base: _Base,
    finetune_per_class: int,
    repeats: int,
    seed: int,
    finetune_config: Any,
    progress: bool,
) -> Evaluation:
    from rcnnlib.rcnn.model import blend_proba, last_step_proba, predict_proba
    from rcnnlib.rcnn.train import FineTuneConfig, fine_tune

    config, inputs, proba = base.config, base.inputs, base.proba
    names = config.class_names
    classes = [int(c) for c in np.unique(real.labels)]
    present = [names[c] for c in classes]
    predicted = base.last.argmax(-1)
    n_sequences = {names[c]: int((real.labels == c).sum()) for c in classes}
    common: dict[str, Any] = dict(
        model={
            "path": base.path,
            "card": {k: getattr(base.card, k) for k in ("model", "seed", "training_time_s", "validation")},
        },
        classes=present,
        n_sequences=n_sequences,
        sim_only_all=Recall.of(inputs.labels, predicted, names, classes),
        sim_only_confusion=confusion(inputs.labels, predicted, len(names)),
        sim_only_early_recall=early_recall(proba, inputs, names, classes),
        sim_only_predicted=predicted,
        sim_only_proba=base.last,
    )
    if finetune_per_class == 0:
        return Evaluation(**common, sim_only=common["sim_only_all"], n_test=n_sequences)

    finetune_config = finetune_config or FineTuneConfig()
    draws = few_shot_draws(real.labels, finetune_per_class, repeats, seed)
    tuned_confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    tuned_early = []
    tuned_predictions = np.full((repeats, len(real)), -1, dtype=np.int64)
    alone_predictions = np.full((repeats, len(real)), -1, dtype=np.int64)
    tuned_proba = np.full((repeats, len(real), len(names)), np.nan)
    alone_proba = np.full((repeats, len(real), len(names)), np.nan)
    tuned = None  # one fine-tuned model, reset to the base weights per draw (one traced graph)
    start = time.perf_counter()
    for draw in _progress(draws, progress):
        test = draw.test
        tuned = fine_tune(
            base.model,
            config,
            real.subset(draw.train),
            finetune_config,
            seed=seed * 1000 + draw.repeat,
            into=tuned,
        )
        test_inputs = _take(inputs, test)
        alone = predict_proba(tuned, test_inputs.x, test_inputs.step_mask)
        alone_proba[draw.repeat, test] = last_step_proba(alone, test_inputs.step_mask)
        alone_predictions[draw.repeat, test] = alone_proba[draw.repeat, test].argmax(-1)
        p = blend_proba(alone, proba[test], finetune_config.base_weight)
        tuned_proba[draw.repeat, test] = last_step_proba(p, test_inputs.step_mask)
        pred = tuned_proba[draw.repeat, test].argmax(-1)
        tuned_predictions[draw.repeat, test] = pred
        tuned_confusion += confusion(test_inputs.labels, pred, len(names))
        tuned_early.append(early_recall(p, test_inputs, names, classes))
    seconds = round((time.perf_counter() - start) / repeats, 1)
    # 95 % intervals from the luck of the test objects (same resamples for every method: paired)
    labels = inputs.labels
    sim_predictions = np.tile(predicted, (repeats, 1))
    sim_proba = np.broadcast_to(base.last, (repeats, *base.last.shape))
    temperatures = fit_draw_temperatures(labels, sim_proba, draws)
    sim_among = np.tile(argmax_among(base.last, classes), (repeats, 1))
    tuned_among = argmax_among(tuned_proba, classes)
    return Evaluation(
        **common,
        sim_only=score_draws(labels, sim_predictions, draws, names, classes, seed=seed),
        # "difference": fine-tuned minus simulation-only, on the same resamples of the same test sets
        fine_tuned=score_draws(labels, tuned_predictions, draws, names, classes, sim_predictions, seed),
        fine_tuned_alone=score_draws(labels, alone_predictions, draws, names, classes, seed=seed),
        fine_tuned_confusion=tuned_confusion,
        fine_tuned_early_recall={n: np.mean([e[n] for e in tuned_early], axis=0).tolist() for n in present},
        fine_tuned_predictions=tuned_predictions,
        seconds_per_repeat=seconds,
        finetune_config={k: v for k, v in vars(finetune_config).items() if k != "augmentation"},
        n_test={names[c]: int((real.labels[draws[0].test] == c).sum()) for c in classes},
        protocol=FewShotProtocol(finetune_per_class, repeats, seed),
        calibration={
            "sim_only": calibration_on_draws(labels, sim_proba, draws),
            "sim_only_scaled": calibration_on_draws(labels, sim_proba, draws, temperatures),
            "fine_tuned": calibration_on_draws(labels, tuned_proba, draws),
            "fine_tuned_alone": calibration_on_draws(labels, alone_proba, draws),
        },
        real_classes_only={
            "sim_only": score_draws(labels, sim_among, draws, names, classes, seed=seed),
            "fine_tuned": score_draws(labels, tuned_among, draws, names, classes, sim_among, seed),
        },
        fine_tuned_proba=tuned_proba,
    )


def argmax_among(proba: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """The most probable of ``classes`` only (indices into the model's classes); -1 where ``proba`` is NaN.

    What the network says when told the object is one of the real data's classes: it
    cannot call an RR Lyrae a Cepheid, as a forest trained on the four real classes cannot.
    """
    index = np.asarray(classes)
    among = np.nan_to_num(proba[..., index], nan=-1.0)
    labels = index[among.argmax(-1)]
    return np.where(np.isnan(proba[..., 0]), -1, labels)


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


def recall_table(result: Evaluation) -> str:
    """Plain-text table of per-class and macro recall: simulation-only, fine-tuned (blended), tuned alone."""
    tuned, alone = result.fine_tuned, result.fine_tuned_alone
    header = f"{'class':<8}{'n_test':>8}{'sim-only':>12}"
    if tuned:
        header += f"{'fine-tuned':>17}{'tuned alone':>17}" if alone else f"{'fine-tuned':>17}"
    rows = [header]

    def cells(scores: DrawSummary | None, name: str | None) -> str:
        if not scores:
            return ""
        value = scores.recall[name] if name else scores.macro_recall
        std = scores.recall_std[name] if name else scores.macro_recall_std
        return f"{value:>9.3f} ± {std:.3f}"

    for name in result.classes:
        line = f"{name:<8}{result.n_test[name]:>8}{result.sim_only.recall[name]:>12.3f}"
        rows.append(line + cells(tuned, name) + cells(alone, name))
    line = f"{'macro':<8}{'':>8}{result.sim_only.macro_recall:>12.3f}"
    rows.append(line + cells(tuned, None) + cells(alone, None))
    return "\n".join(rows)


def learning_curve_json(curve: Sequence[Evaluation]) -> dict[str, Any]:
    """``rcnnlib evaluate`` with several ``--finetune-per-class``: the curve's means, and every evaluation."""
    names = curve[0].classes
    points = [e.adapted for e in curve]
    n = [e.protocol.finetune_per_class if e.protocol else 0 for e in curve]
    return {
        "learning_curve": {
            "finetune_per_class": n,
            "macro_recall": [p.macro_recall for p in points],
            "macro_recall_std": [p.macro_recall_std for p in points],
            "recall": {c: [p.recall[c] for p in points] for c in names},
            "recall_std": {c: [p.recall_std.get(c, 0.0) for p in points] for c in names},
        },
        "evaluations": [e.to_json() for e in curve],
    }


def learning_curve_table(curve: Sequence[Evaluation]) -> str:
    """Plain-text learning curve: macro and per-class recall (mean ± std over draws) for each value."""
    names = curve[0].classes
    rows = [f"{'per class':>9}" + "".join(f"{c:>16}" for c in names) + f"{'macro':>16}"]
    for e in curve:
        p = e.adapted
        n = e.protocol.finetune_per_class if e.protocol else 0
        cells = [f"{p.recall[c]:.3f} ± {p.recall_std.get(c, 0.0):.3f}" for c in names]
        cells.append(f"{p.macro_recall:.3f} ± {p.macro_recall_std:.3f}")
        rows.append(f"{n:>9}" + "".join(f"{c:>16}" for c in cells))
    return "\n".join(rows)
