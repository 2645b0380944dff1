"""Simulate survey image sequences of the seven classes, sharded, on one machine or a Dask cluster.

Data flow: survey conditions (:mod:`rcnnlib.sim.survey`) -> light curves at the
field's epochs (:mod:`rcnnlib.sim.lightcurves`) -> images (:mod:`rcnnlib.sim.images`)
-> one :class:`~rcnnlib.dataset.SequenceDataset` per shard (:mod:`rcnnlib.shards`).

Work is cut into shards of at most ``shard_size`` sequences of one class in one
field. Shard ``i`` draws all its random numbers from
``SeedSequence(seed, spawn_key=(i,))``, so the output is bitwise identical
whatever the number of workers, the order they finish in, or whether they run
in this process, on a local Dask cluster or on a remote scheduler.

Stamps are digitised to integer ADU, as a camera's analogue-to-digital converter
does (the rounding adds 1/12 ADU^2 of variance, 0.3 % of the HiTS sky noise), and
stored as uint16: half the disk traffic of float32, and loading gives back
exactly what was fingerprinted.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rcnnlib import __version__
from rcnnlib.classes import CLASS_NAMES, label_of
from rcnnlib.dataset import COLUMN, STAMP_SIZE, SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.outputs import check_output_folder
from rcnnlib.shards import (
    ShardedDataset,
    check_replaceable,
    partial_name,
    publish_folder,
    sweep_stale_partials,
    write_manifest,
)
from rcnnlib.sim.images import REGISTRATION_FRACTION, epoch_mag_offsets, render_stamps
from rcnnlib.sim.lightcurves import ALPHA, sample_light_curves
from rcnnlib.sim.survey import Survey

HOST_FRACTION: dict[str, float] = {
    "SN": 0.5,
    "RRL": 0.05,
    "CEP": 0.05,
    "EB": 0.05,
    "NV": 0.05,
    "AST": 0.0,
    "EMPTY": 1.0,
}
"""Fraction of sequences with a host galaxy per class, as in the paper."""

UINT16_MAX = 65535.0
MAX_MAG_SLOPE = 5.0
"""Largest ``|mag_slope|`` accepted: real star counts are 0-0.6 dex/mag; beyond ~20 the law overflows."""
RENDER_BLOCK = 256
"""Sequences rendered at once; part of the random stream's definition, so changing it changes outputs."""


@dataclass(frozen=True)
class ShardTask:
    """Sequences ``start .. start + n`` of one class in one field."""

    index: int
    field: str
    class_name: str
    start: int
    n: int

    @property
    def file(self) -> str:
        return f"shard-{self.index:06d}.h5"


def plan_shards(
    survey: Survey,
    n_per_class: int,
    classes: tuple[str, ...] = CLASS_NAMES,
    fields: list[str] | None = None,
    shard_size: int = 2500,
) -> list[ShardTask]:
    """Cut the job into independent tasks: ``n_per_class`` sequences per class per field."""
    if n_per_class < 1:
        raise InputError(f"--n-per-class must be a positive integer, got {n_per_class}")
    if shard_size < 1:
        raise InputError(f"--shard-size must be a positive integer, got {shard_size}")
    for name in classes:
        if name not in CLASS_NAMES:
            raise InputError(f"unknown class {name!r}; expected some of {', '.join(CLASS_NAMES)}")
    available = survey.fields
    fields = available if fields is None else [str(f) for f in fields]
    unknown = sorted(set(fields) - set(available))
    if unknown:
        raise InputError(f"survey {survey.name!r} has no field(s) {', '.join(unknown)}")
    tasks = []
    for field_name in fields:
        survey.usable_epochs(field_name)  # fails early when a field has no usable epoch
        for class_name in classes:
            for start in range(0, n_per_class, shard_size):
                n = min(shard_size, n_per_class - start)
                tasks.append(ShardTask(len(tasks), field_name, class_name, start, n))
    return tasks


def simulate_shard(survey: Survey, task: ShardTask, seed: int, mag_slope: float = ALPHA) -> SequenceDataset:
    """All sequences of one task, from their own random stream.

    The per-epoch magnitude offsets (:func:`rcnnlib.sim.images.epoch_mag_offsets`) are
    shared by every object of a field-epoch, as on real images, so they come from a
    generator keyed by ``(seed, field)`` instead of the task's. A random
    :data:`~rcnnlib.sim.images.REGISTRATION_FRACTION` of the sequences (every class) is
    resampled as if registered to a template grid; which ones is in
    ``metadata["resampled"]``.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(task.index,)))
    mjd, conditions = survey.field_conditions(task.field)
    n, t = task.n, mjd.size
    mjd_n = np.broadcast_to(mjd, (n, t))
    conditions_n = np.broadcast_to(conditions, (n, t, conditions.shape[1]))
    limit = conditions_n[..., COLUMN["limit_mag_5sigma"]].astype(np.float64)
    field_rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(2**32 - 1, list(survey.fields).index(task.field)))
    )
    epoch_offset = epoch_mag_offsets(conditions[:, COLUMN["seeing"]], field_rng)

    curves = sample_light_curves(task.class_name, mjd_n, limit, rng, mag_slope=mag_slope)

    detectors = survey.camera.detector_table()
    ccd = rng.integers(len(detectors), size=n)
    has_host = rng.random(n) < HOST_FRACTION[task.class_name]
    resampled = rng.random(n) < REGISTRATION_FRACTION
    gain = detectors["gain"].to_numpy(float)[ccd]
    read_noise = detectors["read_noise"].to_numpy(float)[ccd]
    saturation = detectors["saturation"].to_numpy(float)[ccd]
    stamps = np.empty((n, t, STAMP_SIZE, STAMP_SIZE), dtype=np.float32)
    # Render in blocks: the renderer's temporaries stay ~10 MB whatever the shard size.
    for lo in range(0, n, RENDER_BLOCK):
        block = slice(lo, min(lo + RENDER_BLOCK, n))
        rendered = render_stamps(
            curves.mag[block],
            np.ascontiguousarray(conditions_n[block]),
            survey.camera.pixel_scale,
            gain[block],
            read_noise[block],
            saturation[block],
            has_host[block],
            rng,
            epoch_mag_offset=epoch_offset,
            resample=resampled[block],
        )
        np.rint(rendered.stamps, out=stamps[block])
    ids = np.array(
        [f"sim_{survey.name}_{task.field}_{task.class_name}_{task.start + i:06d}" for i in range(n)]
    )
    return SequenceDataset(
        stamps=stamps,
        mjd=np.array(mjd_n),
        conditions=np.array(conditions_n),
        mask=np.ones((n, t), dtype=bool),
        labels=np.full(n, label_of(task.class_name)),
        ids=ids,
        metadata={
            "source": "simulation",
            "survey": survey.name,
            "seed": seed,
            "task": task.__dict__,
            "ccd": detectors["name"].to_numpy(str)[ccd].tolist(),
            "resampled": resampled.tolist(),
            "epoch_mag_offset": np.round(epoch_offset, 6).tolist(),
            "brightest_mag": [
                round(m, 4) if np.isfinite(m) else None for m in curves.mag.min(axis=1).tolist()
            ],
            "mag_slope": mag_slope,
            "rcnnlib_version": __version__,
        },
    )


def _run_task(
    survey: Survey, task: ShardTask, seed: int, folder: str, mag_slope: float = ALPHA
) -> dict[str, Any]:
    """Simulate and write one shard; returns its manifest entry (small, cheap to ship back)."""
    ds = simulate_shard(survey, task, seed, mag_slope)
    stamp_dtype = "uint16" if survey.camera.detector_table()["saturation"].max() <= UINT16_MAX else "float32"
    ds.save(Path(folder) / task.file, compression=None, stamp_dtype=stamp_dtype, durable=False)
    return {
        "index": task.index,
        "file": task.file,
        "field": task.field,
        "class": task.class_name,
        "start": task.start,
        "n": task.n,
        "n_epochs": ds.n_epochs,
        "counts": ds.class_counts(),
        "fingerprint": ds.metadata["fingerprint"],
    }


def simulate_to_disk(
    survey: Survey | str,
    out: str | Path,
    n_per_class: int,
    seed: int = 0,
    workers: int = 1,
    scheduler: str | None = None,
    classes: tuple[str, ...] = CLASS_NAMES,
    fields: list[str] | None = None,
    shard_size: int = 2500,
    overwrite: bool = False,
    progress: bool = True,
    mag_slope: float = ALPHA,
) -> ShardedDataset:
    """Simulate a whole dataset into a shard folder, atomically (the folder appears when complete).

    ``workers == 1`` without a scheduler runs in this process; otherwise shards
    run on Dask: a local cluster of ``workers`` processes, or the scheduler at
    ``scheduler`` (whose workers must see ``out`` on a shared filesystem).
    """
    if isinstance(workers, bool) or not isinstance(workers, int | np.integer) or workers < 1:
        raise InputError(f"--workers must be at least 1, got {workers}")
    check_seed(seed)
    check_mag_slope(mag_slope)
    survey = Survey.load(survey) if isinstance(survey, str | Path) else survey
    tasks = plan_shards(survey, n_per_class, classes, fields, shard_size)
    # every check on the output before any work: a bad --out fails now, not after the simulation
    shown = Path(out)
    out = check_output_folder(shown, replace=True)
    check_replaceable(out, overwrite, shown)
    sweep_stale_partials(out)
    tmp = partial_name(out)
    entries: list[dict[str, Any]] = []
    bar = tqdm(
        total=sum(t.n for t in tasks),
        unit="seq",
        desc=f"simulate {survey.name}",
        disable=None if progress else True,
    )
    with _sigterm_raises():
        try:
            tmp.mkdir(parents=True)
        except FileExistsError:  # our PID's, yet not swept: it holds files we did not write
            raise InputError(f"remove {tmp}: it holds files rcnnlib did not write", shown) from None
        try:
            if workers == 1 and scheduler is None:
                for task in tasks:
                    entries.append(_run_task(survey, task, seed, str(tmp), mag_slope))
                    bar.update(task.n)
            else:
                entries = _run_on_dask(survey, tasks, seed, tmp, workers, scheduler, bar, mag_slope)
            metadata = {
                "source": "simulation",
                "survey": survey.name,
                "seed": seed,
                "n_per_class": n_per_class,
                "classes": list(classes),
                "fields": sorted({t.field for t in tasks}),
                "shard_size": shard_size,
                "host_fraction": HOST_FRACTION,
                "mag_slope": mag_slope,
                "rcnnlib_version": __version__,
            }
            write_manifest(tmp, entries, metadata)
            publish_folder(tmp, out, overwrite=overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            bar.close()
    return ShardedDataset(out)


def check_seed(seed: Any) -> None:
    """Seeds are non-negative integers (what ``numpy.random.SeedSequence`` accepts)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}")


def check_mag_slope(mag_slope: Any) -> None:
    """A finite star-count slope within +-:data:`MAX_MAG_SLOPE` dex/mag."""
    try:
        value = float(mag_slope)
    except (TypeError, ValueError):
        raise InputError(f"--mag-slope must be a number, got {mag_slope!r}") from None
    if not math.isfinite(value) or abs(value) > MAX_MAG_SLOPE:
        raise InputError(
            f"--mag-slope must be a finite number in [-{MAX_MAG_SLOPE:g}, {MAX_MAG_SLOPE:g}] "
            f"(dex per magnitude; {ALPHA} follows the survey's counts, 0 is flat), got {mag_slope}"
        )


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` for the duration, so cleanup runs as it does on Ctrl-C.

    Python's default SIGTERM action kills the process without unwinding, leaving the
    ``.partial`` folder behind. Only the main thread may install handlers; elsewhere
    (a Dask worker, a thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_on_dask(
    survey: Survey,
    tasks: list[ShardTask],
    seed: int,
    folder: Path,
    workers: int,
    scheduler: str | None,
    bar: tqdm,
    mag_slope: float = ALPHA,
) -> list[dict[str, Any]]:
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    if scheduler is None:
        # Dask's default MALLOC_TRIM_THRESHOLD_ turns off glibc's adaptive mmap threshold, so
        # every 100 MB shard array is mmapped afresh and page-faulted in: 10x the system time.
        # Large thresholds keep freed shard buffers for reuse (memory stays bounded by a shard).
        environ = {
            "MALLOC_TRIM_THRESHOLD_": str(2**30),
            "MALLOC_MMAP_THRESHOLD_": str(2**30),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                # None still binds the scheduler's HTTP server on 8787 and warns when another
                # cluster holds it (parallel tests, two builds): any free port, no warning
                dashboard_address=":0",
                silence_logs=logging.ERROR,
            )
        client = Client(cluster)
    else:
        cluster = None
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    try:
        survey_future = client.scatter(survey, broadcast=True)
        futures = [
            client.submit(
                _run_task,
                survey_future,
                task,
                seed,
                str(folder.resolve()),
                mag_slope,
                pure=False,
                key=f"shard-{task.index}",
            )
            for task in tasks
        ]
        entries = []
        for future in as_completed(futures):
            entry = future.result()
            entries.append(entry)
            bar.update(entry["n"])
            future.release()
        return entries
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
