"""Benchmarks: ``python -m rcnnlib.bench {simulate,rcnn,baseline} [options]``.

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
from pathlib import Path

from rcnnlib.bench.device import describe
from rcnnlib.sim.simulate import simulate_to_disk
from rcnnlib.sim.survey import Survey


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest finished child, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, child


def bench_simulate(
    n_per_class: int,
    workers: int,
    repeat: int,
    fields: list[str] | None,
    shard_size: int,
    out_dir: Path | None,
) -> None:
    survey = Survey.preset("hits2015")
    fields = fields or survey.fields
    rates = []
    for i in range(repeat):
        tmp = Path(tempfile.mkdtemp(prefix="rcnnlib-bench-", dir=out_dir))
        try:
            start = time.perf_counter()
            ds = simulate_to_disk(
                survey,
                tmp / "sim",
                n_per_class,
                seed=i,
                workers=workers,
                fields=fields,
                shard_size=shard_size,
                progress=False,
            )
            elapsed = time.perf_counter() - start
            size = sum(f.stat().st_size for f in (tmp / "sim").iterdir()) / 1e9
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        rates.append(len(ds) / elapsed)
        print(
            f"  run {i + 1}: {len(ds):,} sequences in {elapsed:.1f} s = {rates[-1]:,.0f} seq/s, "
            f"{size:.2f} GB on disk"
        )
    own, child = peak_rss_mb()
    print(
        f"simulate: workers={workers} fields={len(fields)} n_per_class={n_per_class} shard_size={shard_size}"
    )
    print(
        f"  median {statistics.median(rates):,.0f} seq/s "
        f"(min {min(rates):,.0f}, max {max(rates):,.0f}, {repeat} runs)"
    )
    print(f"  peak RSS: main process {own:,.0f} MB, largest worker {child:,.0f} MB")


EXTRA_BENCHMARKS = ("rcnn", "baseline")


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
    print(describe(tensorflow=args.what == "rcnn"))
    args.func(args)


def _run_simulate(args: argparse.Namespace) -> None:
    if args.paper:
        args.n_per_class, args.repeat, args.fields = 2500, 1, None
    bench_simulate(args.n_per_class, args.workers, args.repeat, args.fields, args.shard_size, args.out_dir)


if __name__ == "__main__":
    main()
