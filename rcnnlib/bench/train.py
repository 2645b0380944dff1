"""``python -m rcnnlib.bench train``: where a training step waits, input pipeline or model.

Per repeat, on the same simulated shards: one epoch of the input pipeline alone
(reading blocks, augmented pre-processing, batching), the model's steps alone on
batches already in memory, and the whole pipeline as :func:`rcnnlib.rcnn.train.train`
runs it (``model.fit`` on :func:`~rcnnlib.rcnn.train.training_dataset`). Medians,
all from one run: the whole pipeline can be no faster than its slower part, and
no slower than the two one after the other.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="RCNN training throughput: input pipeline, model step, both")
    p.add_argument("--n-per-class", type=int, default=300, help="simulated sequences per class (one field)")
    p.add_argument("--repeat", type=int, default=3)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    from rcnnlib.rcnn.model import ModelConfig, build_model
    from rcnnlib.rcnn.train import TrainConfig, epoch_batches, plan_blocks, training_dataset
    from rcnnlib.shards import ShardedDataset
    from rcnnlib.sim.simulate import simulate_to_disk
    from rcnnlib.sim.survey import Survey

    survey = Survey.preset("hits2015")
    tmp = Path(tempfile.mkdtemp(prefix="rcnnlib-bench-"))
    try:
        simulate_to_disk(
            survey, tmp / "sims", args.n_per_class, seed=0, fields=survey.fields[:1], progress=False
        )
        blocks = plan_blocks(ShardedDataset(tmp / "sims"), TrainConfig().block_size)
        model_config, train_config = ModelConfig(), TrainConfig(seed=0)
        keras.utils.set_random_seed(0)
        model = build_model(model_config)
        data, n_batches = training_dataset(blocks, train_config, model_config)
        n = n_batches * train_config.batch_size
        print(f"train: {n:,} sequences an epoch, batch {train_config.batch_size}")
        model.fit(data.take(2), epochs=1, verbose=0)  # build and trace
        batches = list(epoch_batches(blocks, train_config, model_config, epoch=0))
        in_memory = tf.data.Dataset.from_tensor_slices(
            tuple(
                {k: np.concatenate([b[0][k] for b in batches]) for k in ("x", "step_mask")}
                if i == 0
                else np.concatenate([b[i] for b in batches])
                for i in range(3)
            )
        ).batch(train_config.batch_size)
        rates: dict[str, list[float]] = {"input pipeline alone": [], "model steps alone": [], "whole": []}
        for epoch in range(args.repeat):
            start = time.perf_counter()
            for _ in epoch_batches(blocks, train_config, model_config, epoch + 1):
                pass
            rates["input pipeline alone"].append(n / (time.perf_counter() - start))
            start = time.perf_counter()
            model.fit(in_memory, epochs=1, verbose=0)
            rates["model steps alone"].append(n / (time.perf_counter() - start))
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            rates["whole"].append(n / (time.perf_counter() - start))
        for what, values in rates.items():
            print(
                f"  {what}: median {statistics.median(values):,.0f} sequences/s "
                f"(min {min(values):,.0f}, max {max(values):,.0f}, {len(values)} runs)"
            )
        parts = [statistics.median(rates[k]) for k in ("input pipeline alone", "model steps alone")]
        serial = 1.0 / sum(1.0 / r for r in parts)
        print(
            f"  whole / slower part: {statistics.median(rates['whole']) / min(parts):.2f} "
            f"(1 = fully overlapped; {serial / min(parts):.2f} = one after the other)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
