"""Benchmarks: ``python -m rcnnlib.bench {simulate,rcnn,train,baseline} [options]``.

Prints figures (sequences per second, peak memory); asserts nothing. Timings
are medians over repeats, all measured in one run, because this machine's
speed varies from minute to minute.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import resource
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rcnnlib.bench.device import describe
from rcnnlib.dataset import STAMP_SIZE
from rcnnlib.sim.simulate import simulate_to_disk
from rcnnlib.sim.survey import Survey


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, child


@dataclass
class SimulateRun:
    """One simulation and the noise-only draw for as many stamps, in the same number of processes."""

    sequences: int
    stamps: int
    seconds: float
    noise_seconds: float
    gigabytes: float

    @property
    def rate(self) -> float:
        return self.sequences / self.seconds

    @property
    def noise_rate(self) -> float:
        return self.sequences / self.noise_seconds


NOISE_BLOCK = 2**22
"""Deviates per draw in the noise-only reference (16 MB, like a block of a shard)."""


def _draw_noise(n_values: int) -> None:
    """Draw ``n_values`` float32 N(0, 1) deviates with numpy, into a reused buffer: the reference rate."""
    rng = np.random.default_rng()
    buffer = np.empty(min(n_values, NOISE_BLOCK), dtype=np.float32)
    for lo in range(0, n_values, NOISE_BLOCK):
        part = buffer[: min(NOISE_BLOCK, n_values - lo)]
        rng.standard_normal(part.size, dtype=np.float32, out=part)


def noise_only_seconds(n_values: int, processes: int) -> float:
    """Wall time to draw ``n_values`` float32 Gaussian deviates split over ``processes`` started processes."""
    shares = [n_values // processes + (i < n_values % processes) for i in range(processes)]
    if processes == 1:
        start = time.perf_counter()
        _draw_noise(shares[0])
        return time.perf_counter() - start
    with ProcessPoolExecutor(processes) as pool:
        list(pool.map(_draw_noise, [1] * processes))  # start the processes outside the timing
        start = time.perf_counter()
        list(pool.map(_draw_noise, shares))
        return time.perf_counter() - start


def simulate_once(
    survey: Survey,
    n_per_class: int,
    workers: int,
    seed: int,
    fields: list[str],
    shard_size: int,
    out_dir: Path | None,
) -> SimulateRun:
    tmp = Path(tempfile.mkdtemp(prefix="rcnnlib-bench-", dir=out_dir))
    try:
        start = time.perf_counter()
        ds = simulate_to_disk(
            survey,
            tmp / "sim",
            n_per_class,
            seed=seed,
            workers=workers,
            fields=fields,
            shard_size=shard_size,
            progress=False,
        )
        elapsed = time.perf_counter() - start
        size = sum(f.stat().st_size for f in (tmp / "sim").iterdir()) / 1e9
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    stamps = sum(s["n"] * s["n_epochs"] for s in ds.shards)
    noise = noise_only_seconds(stamps * STAMP_SIZE * STAMP_SIZE, workers)
    return SimulateRun(len(ds), stamps, elapsed, noise, size)


def _median(values: list[float]) -> str:
    return f"median {statistics.median(values):,.0f} (min {min(values):,.0f}, max {max(values):,.0f})"


def bench_simulate(
    n_per_class: int,
    workers: int,
    repeat: int,
    fields: list[str] | None,
    shard_size: int,
    out_dir: Path | None,
    scaling: bool = True,
) -> None:
    """Simulator throughput against drawing its Gaussian noise alone, and its 1-to-``workers`` scaling.

    Each repeat runs the simulation with ``workers`` processes, then draws float32
    N(0, 1) noise with numpy for as many stamps in as many processes (a reference
    that moves with the machine's speed, so the ratio compares across runs), then,
    with ``scaling``, the same simulation in one process.
    """
    survey = Survey.preset("hits2015")
    fields = fields or survey.fields
    runs, single = [], []
    for i in range(repeat):
        runs.append(simulate_once(survey, n_per_class, workers, i, fields, shard_size, out_dir))
        run = runs[-1]
        line = (
            f"  run {i + 1}: {run.sequences:,} sequences in {run.seconds:.1f} s = {run.rate:,.0f} seq/s, "
            f"{run.gigabytes:.2f} GB on disk; noise alone {run.noise_seconds:.1f} s "
            f"= {run.noise_rate:,.0f} seq/s"
        )
        if scaling and workers > 1:
            single.append(simulate_once(survey, n_per_class, 1, i, fields, shard_size, out_dir))
            line += f"; 1 worker {single[-1].rate:,.0f} seq/s"
        print(line)
    own, child = peak_rss_mb()
    print(
        f"simulate: workers={workers} fields={len(fields)} n_per_class={n_per_class} shard_size={shard_size} "
        f"({repeat} runs)"
    )
    print(f"  simulator: {_median([r.rate for r in runs])} seq/s")
    print(
        f"  noise alone (float32 standard_normal, {workers} process{'es' if workers > 1 else ''}): "
        f"{_median([r.noise_rate for r in runs])} seq/s"
    )
    ratios = [r.rate / r.noise_rate for r in runs]
    print(
        f"  simulator / noise alone: median {statistics.median(ratios):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    if single:
        speedups = [r.rate / s.rate for r, s in zip(runs, single, strict=True)]
        print(
            f"  1 worker: {_median([s.rate for s in single])} seq/s; {workers} workers / 1: "
            f"median {statistics.median(speedups):.2f}x (min {min(speedups):.2f}, max {max(speedups):.2f})"
        )
    print(f"  peak RSS: main process {own:,.0f} MB, largest worker {child:,.0f} MB")


EXTRA_BENCHMARKS = ("rcnn", "baseline", "train")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m rcnnlib.bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("simulate", help="simulation throughput and memory")
    p.add_argument("--n-per-class", type=int, default=100, help="per class per field")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--fields", nargs="+", default=None)
    p.add_argument("--shard-size", type=int, default=2500)
    p.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time each repeat in 1 worker, for the 1-to-N speed-up (default: on)",
    )
    p.add_argument(
        "--paper", action="store_true", help="the published scale: 2,500 per class per field, once"
    )
    p.add_argument(
        "--out-dir", type=Path, default=None, help="where temporary output goes (needs ~20 GB for --paper)"
    )
    p.set_defaults(func=_run_simulate)
    # The other benchmarks: rcnnlib/bench/<name>.py provides add_parser(sub), which registers a
    # sub-command with set_defaults(func=...).
    for name in EXTRA_BENCHMARKS:
        if importlib.util.find_spec(f"rcnnlib.bench.{name}") is not None:
            importlib.import_module(f"rcnnlib.bench.{name}").add_parser(sub)
    args = parser.parse_args(argv)
    print(describe(tensorflow=args.what in ("rcnn", "train")))
    args.func(args)


def _run_simulate(args: argparse.Namespace) -> None:
    if args.paper:
        args.n_per_class, args.repeat, args.fields, args.scaling = 2500, 1, None, False
    bench_simulate(
        args.n_per_class, args.workers, args.repeat, args.fields, args.shard_size, args.out_dir, args.scaling
    )


if __name__ == "__main__":
    main()
