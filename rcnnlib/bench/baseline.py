"""``python -m rcnnlib.bench baseline``: the forest's cost per new alert epoch and per whole sequence.

An alert stream delivers one new stamp of an object at a time. For the
light-curve forest, each new epoch costs: photometry of the new stamp (at the
object's centre from the stack so far), the features of the whole light curve
so far (periodogram included: they are not incremental), and one
``predict_proba``. A whole sequence costs the same three steps once over all
its epochs. Timed on real HiTS sequences with a forest trained on a small
simulated set (the cost does not depend on what it learned, only on its size),
single-threaded, as one alert at a time is. The shipped RCNN
(:class:`rcnnlib.rcnn.stream.StreamingClassifier`) streams the same sequences in the
same run, so both costs come from one machine at one moment. Prints medians
and 99th percentiles; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np

from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.forest.baseline import N_ESTIMATORS, LightCurveForest, simulate_training_set
from rcnnlib.forest.features import MIN_EPOCHS, dataset_features, extract_features
from rcnnlib.hits.loader import load_hits
from rcnnlib.photometry import flux_to_microjansky, object_centres, psf_weighted_flux
from rcnnlib.stamps import ring_background

STEPS = ("photometry", "features", "predict")


def train_forest(
    n_per_class: int, seed: int, n_estimators: int, fields: list[str] | None
) -> LightCurveForest:
    """A forest of the baseline's size on a small simulated set (timings only)."""
    sim = simulate_training_set(n_per_class, seed=seed, fields=fields)
    return LightCurveForest(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(
        dataset_features(sim), sim.labels
    )


def stream_sequence(forest: LightCurveForest, stamps: np.ndarray, mjd: np.ndarray, cond: dict) -> np.ndarray:
    """Classify one object epoch by epoch as alerts arrive; returns (T, 3) seconds per step and epoch.

    State kept between alerts: the light curve so far and the running stack of
    sky-subtracted stamps (which gives the object's centre, as in
    :func:`rcnnlib.photometry.psf_photometry`). Epochs before
    :data:`MIN_EPOCHS` only get photometry (no features yet).
    """
    t_len = mjd.size
    cost = np.full((t_len, len(STEPS)), np.nan)
    flux = np.empty(t_len)
    err = np.empty(t_len)
    stack = np.zeros((1, 1, *stamps.shape[1:]))  # running sum of sky-subtracted stamps: the object's centre
    one = np.ones((1, 1), dtype=bool)
    for k in range(t_len):
        start = time.perf_counter()
        sky, _, _ = ring_background(stamps[k])
        stack[0, 0] += stamps[k] - sky
        centre = object_centres(stack, one)[0]
        f, e, _, _ = psf_weighted_flux(stamps[k], cond["seeing"][k], centre)
        flux[k] = flux_to_microjansky(f, cond["zero_point"][k], cond["exp_time"][k])
        err[k] = flux_to_microjansky(e, cond["zero_point"][k], cond["exp_time"][k])
        done = time.perf_counter()
        cost[k, 0] = done - start
        if k + 1 < MIN_EPOCHS:
            continue
        features = extract_features(mjd[None, : k + 1], flux[None, : k + 1], err[None, : k + 1])
        featured = time.perf_counter()
        forest.predict_proba(features)
        cost[k, 1] = featured - done
        cost[k, 2] = time.perf_counter() - featured
    return cost


def rcnn_stream_costs(sub: SequenceDataset, repeat: int, model_dir: str | None = None) -> dict[str, Any]:
    """The RCNN's :class:`rcnnlib.rcnn.stream.StreamingClassifier` on the same sequences, epoch by epoch.

    Same statistics as the forest's (median over repeats per object and epoch,
    then median and p99 over epochs), so the two are compared alert for alert.
    Epochs the RCNN skips (seeing cut, first ``epochs_per_step - 1``) are
    counted as the cheap calls they are: every alert gets an ``update``.
    """
    from rcnnlib.rcnn.stream import StreamingClassifier

    stream = StreamingClassifier(model_dir)
    lengths = sub.mask.sum(axis=1)

    def replay(i: int) -> np.ndarray:
        stream.reset()
        out = np.empty(lengths[i])
        for t in range(lengths[i]):
            start = time.perf_counter()
            stream.update(sub.stamps[i, t], sub.mjd[i, t], sub.conditions[i, t])
            out[t] = time.perf_counter() - start
        return out

    replay(0)  # the first calls trace the graph
    runs = [[replay(i) for i in range(len(sub))] for _ in range(repeat)]
    per_epoch = np.concatenate([np.median([run[i] for run in runs], axis=0) for i in range(len(sub))])
    whole = np.array([np.median([run[i].sum() for run in runs]) for i in range(len(sub))])
    return {
        "per_epoch_ms": {
            "median": float(np.median(per_epoch) * 1e3),
            "p99": float(np.percentile(per_epoch, 99) * 1e3),
        },
        "per_sequence_ms": {
            "median": float(np.median(whole) * 1e3),
            "p99": float(np.percentile(whole, 99) * 1e3),
        },
    }


def bench_baseline(
    n_sequences: int,
    repeat: int,
    n_per_class: int,
    n_estimators: int,
    seed: int,
    fields: list[str] | None,
    rcnn: bool = True,
) -> dict[str, Any]:
    """Time streaming and whole-sequence classification of ``n_sequences`` real HiTS sequences.

    With ``rcnn``, the shipped RCNN streams the same sequences in the same run
    (``"rcnn"`` in the result; ``"rcnn_error"`` says why when it cannot load).
    """
    forest = train_forest(n_per_class, seed, n_estimators, fields)
    real = load_hits()
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(real), size=min(n_sequences, len(real)), replace=False))
    sub = real.subset(chosen)
    per_epoch = []  # (repeat, object, epoch, step)
    whole = []  # (repeat, object) seconds
    batch = []  # (repeat,) seconds per sequence when all are classified at once
    for _ in range(repeat):
        epochs, singles = [], []
        for i in range(len(sub)):
            one = sub.subset([i])
            t_len = int(one.mask[0].sum())
            cond = {name: one.condition(name)[0, :t_len] for name in ("seeing", "zero_point", "exp_time")}
            cost = np.full((sub.n_epochs, len(STEPS)), np.nan)
            cost[:t_len] = stream_sequence(
                forest, one.stamps[0, :t_len].astype(np.float64), one.mjd[0, :t_len], cond
            )
            epochs.append(cost)
            start = time.perf_counter()
            forest.predict_proba(dataset_features(one))
            singles.append(time.perf_counter() - start)
        per_epoch.append(np.stack(epochs))
        whole.append(singles)
        start = time.perf_counter()
        forest.predict_proba(dataset_features(sub))
        batch.append((time.perf_counter() - start) / len(sub))
    cost = np.median(np.stack(per_epoch), axis=0)  # median over repeats, per object and epoch
    total = cost.sum(axis=-1)
    full = np.all(np.isfinite(cost), axis=-1)  # epochs with features and a prediction
    single = np.median(np.array(whole), axis=0)
    report: dict[str, Any] = {}
    if rcnn:
        try:
            report["rcnn"] = rcnn_stream_costs(sub, repeat)
        except (InputError, ImportError) as exc:
            report["rcnn_error"] = str(exc)
    return {
        **report,
        "n_sequences": len(sub),
        "n_epochs_timed": int(full.sum()),
        "per_epoch_ms": {
            "median": float(np.median(total[full]) * 1e3),
            "p99": float(np.percentile(total[full], 99) * 1e3),
            **{f"{s}_median": float(np.median(cost[..., j][full]) * 1e3) for j, s in enumerate(STEPS)},
        },
        "per_sequence_ms": {
            "median": float(np.median(single) * 1e3),
            "p99": float(np.percentile(single, 99) * 1e3),
            "batched_median": float(statistics.median(batch) * 1e3),
        },
        "n_estimators": n_estimators,
        "repeat": repeat,
    }


def print_report(report: dict[str, Any]) -> None:
    e, s = report["per_epoch_ms"], report["per_sequence_ms"]
    print(
        f"baseline forest ({report['n_estimators']} trees, 1 thread): "
        f"{report['n_sequences']} real sequences, {report['n_epochs_timed']} streamed epochs, "
        f"medians over {report['repeat']} repeats"
    )
    print(f"  per new epoch: median {e['median']:.2f} ms, p99 {e['p99']:.2f} ms")
    print("    of which (medians): " + ", ".join(f"{step} {e[f'{step}_median']:.2f} ms" for step in STEPS))
    print(f"  whole sequence, one at a time: median {s['median']:.2f} ms, p99 {s['p99']:.2f} ms")
    print(f"  whole sequences, all at once: {s['batched_median']:.2f} ms per sequence")
    if "rcnn" in report:
        e, s = report["rcnn"]["per_epoch_ms"], report["rcnn"]["per_sequence_ms"]
        print("RCNN (shipped model, StreamingClassifier) on the same sequences:")
        print(f"  per new epoch: median {e['median']:.2f} ms, p99 {e['p99']:.2f} ms")
        print(f"  whole sequence, streamed: median {s['median']:.2f} ms, p99 {s['p99']:.2f} ms")
    elif "rcnn_error" in report:
        print(f"RCNN not timed: {report['rcnn_error']}")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="forest cost per new alert epoch and per sequence",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n-sequences", type=int, default=40, help="real HiTS sequences timed")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-per-class", type=int, default=100, help="simulated training sequences per class")
    p.add_argument("--n-estimators", type=int, default=N_ESTIMATORS)
    p.add_argument("--fields", nargs="+", default=["01", "02", "04"], help="fields of the training set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-rcnn", action="store_true", help="skip the RCNN's streaming on the same sequences")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> None:
    print_report(
        bench_baseline(
            args.n_sequences,
            args.repeat,
            args.n_per_class,
            args.n_estimators,
            args.seed,
            args.fields,
            rcnn=not args.no_rcnn,
        )
    )
