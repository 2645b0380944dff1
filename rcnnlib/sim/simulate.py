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
import math
import multiprocessing
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
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
    fields: Sequence[str] | None = None,
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
    tasks: list[ShardTask] = []
    for field_name in fields:
        survey.usable_epochs(field_name)  # fails early when a field has no usable epoch
        for class_name in classes:
            for start in range(0, n_per_class, shard_size):
                n = min(shard_size, n_per_class - start)
                tasks.append(ShardTask(len(tasks), field_name, class_name, start, n))
    return tasks


@dataclass(frozen=True)
class SurveyArrays:
    """What a shard needs from its survey, as numpy arrays.

    Built once per run and shipped once to each worker: reading a field's
    conditions and the detector table through pandas costs ~10 ms, a tenth of a
    100-sequence shard.
    """

    name: str
    pixel_scale: float
    field_index: dict[str, int]
    """Each field's position among all the survey's fields: keys its per-epoch offsets' generator."""
    mjd: dict[str, np.ndarray]
    conditions: dict[str, np.ndarray]
    ccd_names: np.ndarray
    gain: np.ndarray
    read_noise: np.ndarray
    saturation: np.ndarray

    @classmethod
    def of(cls, survey: Survey, fields: list[str] | None = None) -> SurveyArrays:
        """The arrays of ``fields`` (default: all) of ``survey``."""
        every = list(survey.fields)
        per_field = {f: survey.field_conditions(f) for f in (every if fields is None else fields)}
        detectors = survey.camera.detector_table()
        return cls(
            name=survey.name,
            pixel_scale=survey.camera.pixel_scale,
            field_index={f: every.index(f) for f in per_field},
            mjd={f: mjd for f, (mjd, _) in per_field.items()},
            conditions={f: conditions for f, (_, conditions) in per_field.items()},
            ccd_names=detectors["name"].to_numpy(str),
            gain=detectors["gain"].to_numpy(float),
            read_noise=detectors["read_noise"].to_numpy(float),
            saturation=detectors["saturation"].to_numpy(float),
        )

    @property
    def stamp_dtype(self) -> str:
        """uint16 when every detector saturates within its range (digitised stamps fit exactly)."""
        return "uint16" if self.saturation.max() <= UINT16_MAX else "float32"


def simulate_shard(
    survey: Survey | SurveyArrays, task: ShardTask, seed: int, mag_slope: float = ALPHA
) -> SequenceDataset:
    """All sequences of one task, from their own random stream.

    The per-epoch magnitude offsets (:func:`rcnnlib.sim.images.epoch_mag_offsets`) are
    shared by every object of a field-epoch, as on real images, so they come from a
    generator keyed by ``(seed, field)`` instead of the task's. A random
    :data:`~rcnnlib.sim.images.REGISTRATION_FRACTION` of the sequences (every class) is
    resampled as if registered to a template grid; which ones is in
    ``metadata["resampled"]``.
    """
    arrays = survey if isinstance(survey, SurveyArrays) else SurveyArrays.of(survey, [task.field])
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(task.index,)))
    mjd, conditions = arrays.mjd[task.field], arrays.conditions[task.field]
    n, t = task.n, mjd.size
    mjd_n = np.broadcast_to(mjd, (n, t))
    conditions_n = np.broadcast_to(conditions, (n, t, conditions.shape[1]))
    limit = conditions_n[..., COLUMN["limit_mag_5sigma"]].astype(np.float64)
    field_rng = np.random.default_rng(
        np.random.SeedSequence(seed, spawn_key=(2**32 - 1, arrays.field_index[task.field]))
    )
    epoch_offset = epoch_mag_offsets(conditions[:, COLUMN["seeing"]], field_rng)

    curves = sample_light_curves(task.class_name, mjd_n, limit, rng, mag_slope=mag_slope)

    ccd = rng.integers(len(arrays.ccd_names), size=n)
    has_host = rng.random(n) < HOST_FRACTION[task.class_name]
    resampled = rng.random(n) < REGISTRATION_FRACTION
    gain, read_noise, saturation = arrays.gain[ccd], arrays.read_noise[ccd], arrays.saturation[ccd]
    stamps = np.empty((n, t, STAMP_SIZE, STAMP_SIZE), dtype=np.float32)
    # Render in blocks: the renderer's temporaries stay ~10 MB whatever the shard size.
    for lo in range(0, n, RENDER_BLOCK):
        block = slice(lo, min(lo + RENDER_BLOCK, n))
        rendered = render_stamps(
            curves.mag[block],
            np.ascontiguousarray(conditions_n[block]),
            arrays.pixel_scale,
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
        [f"sim_{arrays.name}_{task.field}_{task.class_name}_{task.start + i:06d}" for i in range(n)]
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
            "survey": arrays.name,
            "seed": seed,
            "task": task.__dict__,
            "ccd": arrays.ccd_names[ccd].tolist(),
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
    arrays: SurveyArrays, task: ShardTask, seed: int, folder: str, mag_slope: float = ALPHA
) -> dict[str, Any]:
    """Simulate and write one shard; returns its manifest entry (small, cheap to ship back)."""
    ds = simulate_shard(arrays, task, seed, mag_slope)
    ds.save(Path(folder) / task.file, compression=None, stamp_dtype=arrays.stamp_dtype, durable=False)
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
    fields: Sequence[str] | None = None,
    shard_size: int = 2500,
    overwrite: bool = False,
    progress: bool = True,
    mag_slope: float = ALPHA,
) -> ShardedDataset:
    """Simulate a whole dataset into a shard folder, atomically (the folder appears when complete).

    ``workers == 1`` without a scheduler runs in this process; otherwise shards run
    on ``workers`` local processes, or on the Dask scheduler at ``scheduler``
    (whose workers must see ``out`` on a shared filesystem).
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
    arrays = SurveyArrays.of(survey, sorted({t.field for t in tasks}))
    with _sigterm_raises():
        try:
            tmp.mkdir(parents=True)
        except FileExistsError:  # our PID's, yet not swept: it holds files we did not write
            raise InputError(f"remove {tmp}: it holds files rcnnlib did not write", shown) from None
        try:
            # the workers finish (or are cancelled) before the folder is written or removed
            with _shard_runner(arrays, min(workers, len(tasks)), scheduler) as run:
                entries = _run_with_progress(run, tasks, seed, tmp, mag_slope, survey.name, progress)
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
    return ShardedDataset(out)


def _run_with_progress(
    run: ShardRunner,
    tasks: list[ShardTask],
    seed: int,
    folder: Path,
    mag_slope: float,
    survey_name: str,
    progress: bool,
) -> list[dict[str, Any]]:
    """Manifest entries of every task, with a progress bar."""
    entries = []
    total = sum(t.n for t in tasks)
    desc = f"simulate {survey_name}"
    with tqdm(total=total, unit="seq", desc=desc, disable=None if progress else True) as bar:
        for entry in run(tasks, seed, str(folder.resolve()), mag_slope):
            entries.append(entry)
            bar.update(entry["n"])
    return entries


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


ShardRunner = Callable[[list[ShardTask], int, str, float], Iterator[dict[str, Any]]]
"""Runs shard tasks ``(tasks, seed, folder, mag_slope)``, yielding manifest entries as shards finish."""


@contextlib.contextmanager
def _shard_runner(arrays: SurveyArrays, workers: int, scheduler: str | None) -> Iterator[ShardRunner]:
    """In this process, on ``workers`` local processes, or on a Dask scheduler."""
    if scheduler is not None:
        with _dask_client(scheduler) as client:
            yield partial(_run_on_dask, client, arrays)
    elif workers > 1:
        with _process_pool(arrays, workers) as pool:
            yield partial(_run_on_pool, pool)
    else:
        yield lambda tasks, seed, folder, mag_slope: (
            _run_task(arrays, task, seed, folder, mag_slope) for task in tasks
        )


def _start_method() -> str:
    """How worker processes start: ``fork`` where it is safe, else ``forkserver`` (or ``spawn``).

    Forked workers start in milliseconds and inherit this process's imports and survey
    arrays; a fresh interpreter spends ~1.5 s importing numpy, scipy, pandas and h5py,
    a sixth of a 34,000-sequence run on two cores. Forking is safe only without other
    threads (a lock one of them holds would stay locked in the child): the command line
    and scripts qualify; a Jupyter kernel or a process that has started TensorFlow's
    thread pools gets ``forkserver``. macOS system libraries are not fork-safe.
    tqdm's monitor thread, alive once any bar was made, does not count: it only
    looks at the bars, which a worker never touches.
    """
    methods = multiprocessing.get_all_start_methods()
    others = [t for t in threading.enumerate() if t not in (threading.current_thread(), tqdm.monitor)]
    if sys.platform == "linux" and not others and "fork" in methods:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


_worker_arrays: SurveyArrays | None = None
"""The survey arrays of a worker process, set once when it starts (:func:`_start_worker`)."""


def _start_worker(arrays: SurveyArrays) -> None:
    global _worker_arrays
    _worker_arrays = arrays
    # Ctrl-C reaches every process of the terminal's group: the parent cancels the pending
    # shards and waits for the running ones, instead of each worker printing a traceback
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_worker_task(task: ShardTask, seed: int, folder: str, mag_slope: float) -> dict[str, Any]:
    assert _worker_arrays is not None, "_start_worker sets the survey arrays"
    return _run_task(_worker_arrays, task, seed, folder, mag_slope)


@contextlib.contextmanager
def _process_pool(arrays: SurveyArrays, workers: int) -> Iterator[ProcessPoolExecutor]:
    context = multiprocessing.get_context(_start_method())
    if context.get_start_method() == "forkserver":
        context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(arrays,))
    try:
        pool.submit(int).result()  # start the workers now (a forked pool starts them all at once)
        yield pool
    finally:
        # on an error or Ctrl-C: drop the queued shards, let the running ones finish
        pool.shutdown(wait=True, cancel_futures=True)


def _run_on_pool(
    pool: ProcessPoolExecutor, tasks: list[ShardTask], seed: int, folder: str, mag_slope: float
) -> Iterator[dict[str, Any]]:
    futures = [pool.submit(_run_worker_task, task, seed, folder, mag_slope) for task in tasks]
    for future in as_completed(futures):
        yield future.result()


@contextlib.contextmanager
def _dask_client(scheduler: str) -> Iterator[Any]:
    from dask.distributed import Client

    try:
        client = Client(scheduler, timeout="10s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
    try:
        yield client
    finally:
        client.close()


def _run_on_dask(
    client: Any, arrays: SurveyArrays, tasks: list[ShardTask], seed: int, folder: str, mag_slope: float
) -> Iterator[dict[str, Any]]:
    from dask.distributed import as_completed as dask_as_completed

    arrays_future = client.scatter(arrays, broadcast=True)
    futures = [
        client.submit(
            _run_task,
            arrays_future,
            task,
            seed,
            folder,
            mag_slope,
            pure=False,
            key=f"shard-{task.index}",
        )
        for task in tasks
    ]
    for future in dask_as_completed(futures):
        entry = future.result()
        future.release()
        yield entry
