"""``python -m rcnnlib.bench rcnn``: training throughput, batch inference and streaming latency of the RCNN.

All three are measured in one run on the same simulated sequences, repeated,
and reported as medians, because a shared 2-core machine drifts from minute to
minute. Training counts the whole pipeline (reading shards, pre-processing with
augmentation, the Keras step); inference is reported with and without the
pre-processing.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rcnn", help="RCNN training, inference and streaming speed")
    p.add_argument("--n-per-class", type=int, default=300, help="simulated sequences per class (one field)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--stream-updates", type=int, default=2000)
    p.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import keras

    from rcnnlib.rcnn.model import build_model, last_step_proba, load_model, predict_proba
    from rcnnlib.rcnn.preprocess import prepare
    from rcnnlib.rcnn.stream import StreamingClassifier
    from rcnnlib.rcnn.train import TrainConfig, plan_blocks, training_dataset
    from rcnnlib.shards import ShardedDataset
    from rcnnlib.sim.simulate import simulate_to_disk
    from rcnnlib.sim.survey import Survey

    model, config, _ = load_model(args.model)
    survey = Survey.preset("hits2015")
    tmp = Path(tempfile.mkdtemp(prefix="rcnnlib-bench-"))
    try:
        fields = survey.fields[:1]
        simulate_to_disk(survey, tmp / "sims", args.n_per_class, seed=0, fields=fields, progress=False)
        sims = ShardedDataset(tmp / "sims")
        blocks = plan_blocks(sims, 256)
        ds = sims.load()
        n = len(ds)
        print(f"rcnn: {n:,} simulated sequences of {ds.n_epochs} epochs; {model.count_params():,} parameters")

        # training: the full streaming pipeline, one pass over the data per repeat
        keras.utils.set_random_seed(0)
        trainee = build_model(config)
        train_config = TrainConfig(seed=0)
        data, n_batches = training_dataset(blocks, train_config, config)
        trainee.fit(data.take(2), epochs=1, shuffle=False, verbose=0)  # build and trace
        rates = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            trainee.fit(data, epochs=1, shuffle=False, verbose=0)
            rates.append(n_batches * train_config.batch_size / (time.perf_counter() - start))
        _report("training (read + augment + step)", rates, "sequences/s")

        # batch inference, with and without pre-processing
        inputs = prepare(ds, config.preprocess)
        predict_proba(model, inputs.x[:512], inputs.step_mask[:512])
        model_only, end_to_end, prepare_only = [], [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            inputs = prepare(ds, config.preprocess)
            middle = time.perf_counter()
            last_step_proba(predict_proba(model, inputs.x, inputs.step_mask), inputs.step_mask)
            stop = time.perf_counter()
            prepare_only.append(n / (middle - start))
            model_only.append(n / (stop - middle))
            end_to_end.append(n / (stop - start))
        stamps = ds.n_epochs
        _report("inference, network only", model_only, "sequences/s")
        _report("inference, prepare only", prepare_only, "sequences/s")
        _report("inference, prepare + network", end_to_end, "sequences/s")
        ratio = statistics.median(end_to_end) / statistics.median(model_only)
        print(
            f"  = {ratio:.2f} of network-only throughput; "
            f"{statistics.median(end_to_end) * stamps:,.0f} stamps/s end to end ({stamps} epochs each)"
        )

        # streaming: one update per new epoch, sequences replayed one after another
        stream = StreamingClassifier(model=model, config=config)
        latencies: list[float] = []
        i = 0
        while len(latencies) < args.stream_updates + 50:
            stream.reset()
            for t in range(ds.n_epochs):
                start = time.perf_counter()
                stream.update(ds.stamps[i % n, t], float(ds.mjd[i % n, t]), ds.conditions[i % n, t])
                latencies.append(time.perf_counter() - start)
            i += 1
        ms = np.array(latencies[50:]) * 1e3  # the first calls trace the graph
        print(
            f"streaming update: median {np.median(ms):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms "
            f"({ms.size:,} updates)"
        )
        # its numpy part (calibration, PSF matching, stretch), replayed alone on the same epochs
        numpy_part = []
        for replayed in range(i):
            stream.reset()
            for t in range(ds.n_epochs):
                stamp, cond = ds.stamps[replayed % n, t], ds.conditions[replayed % n, t]
                start = time.perf_counter()
                stream.step_input(stamp, cond)
                numpy_part.append(time.perf_counter() - start)
        ms = np.array(numpy_part) * 1e3
        print(f"  numpy pre-processing: median {np.median(ms):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(what: str, rates: list[float], unit: str) -> None:
    print(
        f"{what}: median {statistics.median(rates):,.0f} {unit} "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {len(rates)} runs)"
    )
