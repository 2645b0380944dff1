"""Hostile and clumsy input to the simulator and the shard folders (issue 14).

Every case runs the way a user meets it (the CLI as a subprocess, or the public API)
and asserts: exit status 2 with exactly one line on stderr and no traceback (or an
:class:`InputError` naming the file), nothing left behind (no ``.partial`` folder, no
half-written output) and the input untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_one_line_error, run_cli

from rcnnlib.errors import InputError
from rcnnlib.shards import ShardedDataset
from rcnnlib.sim.simulate import simulate_to_disk


def leftovers(root: Path) -> list[Path]:
    """Temporary folders or files of an interrupted or refused write, anywhere under ``root``."""
    return [
        p for p in root.rglob("*") if ".partial" in p.name or p.name.endswith(".old") or ".old-" in p.name
    ]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sims(tmp_path_factory) -> Path:
    """A small valid shard folder: 2 fields x 7 classes x 4 sequences (two blocks per class, so trainable)."""
    out = tmp_path_factory.mktemp("sims") / "sims"
    simulate_to_disk("hits2015", out, 4, seed=3, fields=["01", "02"], progress=False)
    return out


@pytest.fixture
def sims_copy(sims: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data" / "sims"
    shutil.copytree(sims, copy)
    return copy


def flip_stamp_byte(shard: Path) -> None:
    """Flip one bit in the middle of the stored stamps of ``shard`` (what a bad disk or copy does)."""
    with h5py.File(shard, "r") as f:
        info = f["stamps"].id.get_chunk_info(0)
    offset = info.byte_offset + info.size // 2
    data = bytearray(shard.read_bytes())
    data[offset] ^= 0x04
    shard.write_bytes(bytes(data))


# ------------------------------------------------------------------ silent corruption
def test_flipped_byte_in_a_shard_fails_load_and_iteration(sims_copy: Path) -> None:
    shard = sims_copy / "shard-000005.h5"
    flip_stamp_byte(shard)
    dataset = ShardedDataset(sims_copy)  # opening reads only the manifest
    with pytest.raises(InputError, match=r"shard-000005\.h5") as err:
        dataset.load()
    assert err.value.path == shard
    with pytest.raises(InputError, match=r"shard-000005\.h5"):
        list(dataset.iter_shards())
    with pytest.raises(InputError, match=r"shard-000005\.h5"):
        dataset.load(max_per_class=1)


def test_every_flipped_byte_is_caught_or_harmless(sims: Path, tmp_path: Path) -> None:
    """Flip bytes all over one shard: loading either fails with InputError or gives the original content."""
    folder = tmp_path / "one"
    folder.mkdir()
    source = ShardedDataset(sims)
    entry = dict(source.shards[0])
    shutil.copy(sims / entry["file"], folder / entry["file"])
    (folder / "manifest.json").write_text(
        json.dumps(dict(source.manifest, n=entry["n"], fingerprint=_combined([entry]), shards=[entry]))
    )
    original = ShardedDataset(folder).load().stamps
    shard = folder / entry["file"]
    pristine = shard.read_bytes()
    caught = 0
    for offset in np.random.default_rng(0).choice(len(pristine), 60, replace=False):
        data = bytearray(pristine)
        data[offset] ^= 0x10
        shard.write_bytes(bytes(data))
        try:
            np.testing.assert_array_equal(ShardedDataset(folder).load().stamps, original)
        except InputError as exc:
            assert exc.path == shard, exc
            caught += 1
    assert caught > 30  # most of the file is stamps: most flips must be caught


def _combined(entries: list[dict]) -> str:
    from rcnnlib.shards import combined_fingerprint

    return combined_fingerprint([e["fingerprint"] for e in entries])


def test_train_refuses_a_flipped_shard_before_training(sims_copy: Path, tmp_path: Path) -> None:
    flip_stamp_byte(sims_copy / "shard-000003.h5")
    model = tmp_path / "model"
    start = time.perf_counter()
    proc = run_cli("train", str(sims_copy), "--out", str(model), "--epochs", "1", "--batch-size", "4")
    assert_one_line_error(proc, "shard-000003.h5", "fingerprint")
    assert time.perf_counter() - start < 60  # fails on the check, not after a training
    assert not model.exists() and not leftovers(tmp_path)


# ------------------------------------------------------------------ malformed manifests
def _edit(manifest: dict, path: str, value: object) -> None:
    """Set ``manifest[a][b]...`` for ``path`` "a.b.0.c"; a value of ``...`` deletes the key."""
    *parents, last = path.split(".")
    node = manifest
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last_key: int | str = int(last) if isinstance(node, list) else last
    if value is Ellipsis:
        del node[last_key]
    else:
        node[last_key] = value


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("shards", ..., "'shards' is missing"),
        ("shards", {"a": 1}, "'shards' must be a list"),
        ("n", "many", "'n' must be a non-negative integer"),
        ("n", 3, "'n' is 3 but the shards hold"),
        ("fingerprint", 7, "'fingerprint' must be 64"),
        ("shards.0", "shard-000000.h5", "'shards[0]' must be a JSON object"),
        ("shards.0.file", "../outside.h5", "'shards[0].file' must be a file name inside the folder"),
        ("shards.0.file", "/etc/hostname", "'shards[0].file' must be a file name inside the folder"),
        ("shards.1.file", "shard-000000.h5", "'shards[1].file' repeats"),
        ("shards.0.n", -1, "'shards[0].n' must be a non-negative integer"),
        ("shards.0.n", 5, "'shards[0].counts' add up to 4, not n = 5"),
        ("shards.0.counts", {"QSO": 4}, "'shards[0].counts' must map class names"),
        ("shards.0.fingerprint", ..., "'shards[0].fingerprint' is missing"),
        ("metadata", [], "'metadata' must be a JSON object"),
    ],
)
def test_malformed_manifest_names_the_field(sims_copy: Path, path: str, value: object, field: str) -> None:
    manifest_path = sims_copy / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    _edit(manifest, path, value)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(InputError) as err:
        ShardedDataset(sims_copy).load()
    assert err.value.path == manifest_path and field in err.value.problem, err.value


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not JSON"),
        ("\xff\xfe garbage", "not JSON"),
        ("[1, 2, 3]", "must be a JSON object"),
        ('"rcnnlib.ShardedSequenceDataset"', "must be a JSON object"),
    ],
)
def test_unparsable_manifest_is_one_line(sims_copy: Path, tmp_path: Path, text: str, problem: str) -> None:
    manifest = sims_copy / "manifest.json"
    manifest.write_bytes(text.encode("latin-1"))
    with pytest.raises(InputError) as err:
        ShardedDataset(sims_copy)
    assert err.value.path == manifest and problem in err.value.problem
    if text.startswith("{"):  # and once through the command line
        proc = run_cli("train", str(sims_copy), "--out", str(tmp_path / "model"), "--batch-size", "4")
        assert_one_line_error(proc, "manifest.json", problem)
        assert not (tmp_path / "model").exists()


def test_shard_swapped_for_another_is_caught(sims_copy: Path) -> None:
    """A valid shard of another class under a listed name: the manifest's fingerprint says no."""
    shutil.copy(sims_copy / "shard-000001.h5", sims_copy / "shard-000000.h5")
    with pytest.raises(InputError, match=r"shard-000000\.h5"):
        ShardedDataset(sims_copy).load()


def test_manifest_pointing_outside_the_folder_is_refused(sims_copy: Path) -> None:
    """A shard path escaping the folder (``../``) is never read, even when the file exists there."""
    shutil.copy(sims_copy / "shard-000000.h5", sims_copy.parent / "outside.h5")
    manifest = json.loads((sims_copy / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../outside.h5"
    (sims_copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli("train", str(sims_copy), "--out", str(sims_copy.parent / "model"), "--batch-size", "4")
    assert_one_line_error(proc, "manifest.json", "shards[0].file")


# ------------------------------------------------------------------ data loss: --overwrite and --out
def test_overwrite_refuses_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.tex").write_text("three years of work")
    (mine / "sub" / "data.csv").write_text("1,2,3\n")
    before = snapshot(mine)
    proc = run_cli("simulate", "--n-per-class", "1", "--fields", "01", "--out", str(mine), "--overwrite")
    assert_one_line_error(proc, "mine", "not a dataset")
    assert snapshot(mine) == before
    assert not leftovers(tmp_path)


def test_overwrite_refuses_a_dataset_holding_other_files(tmp_path: Path) -> None:
    """A dataset folder where the user also put a file: replacing it would delete that file."""
    out = tmp_path / "sim"
    simulate_to_disk("hits2015", out, 1, fields=["01"], classes=("NV",), progress=False)
    (out / "my_notes.txt").write_text("keep me")
    before = snapshot(out)
    proc = run_cli("simulate", "--n-per-class", "1", "--fields", "01", "--out", str(out), "--overwrite")
    assert_one_line_error(proc, "sim")
    assert snapshot(out) == before and not leftovers(tmp_path)


def test_overwrite_replaces_a_dataset_and_only_it(tmp_path: Path) -> None:
    out = tmp_path / "sim"
    first = simulate_to_disk("hits2015", out, 1, seed=1, fields=["01"], classes=("NV",), progress=False)
    (tmp_path / ".sim.old").mkdir()  # a user's folder that merely looks like ours
    (tmp_path / ".sim.old" / "keep.txt").write_text("keep")
    second = simulate_to_disk(
        "hits2015", out, 1, seed=2, fields=["01"], classes=("NV",), overwrite=True, progress=False
    )
    assert first.fingerprint != second.fingerprint == ShardedDataset(out).fingerprint
    assert (tmp_path / ".sim.old" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sim.old", "sim"]


@pytest.mark.parametrize("out", [".", "..", "/", "work/.."])
def test_out_is_the_current_folder_or_a_parent(tmp_path: Path, out: str) -> None:
    cwd = tmp_path / "outer" / "work"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("keep")
    before = snapshot(tmp_path)
    proc = run_cli(
        "simulate", "--n-per-class", "1", "--fields", "01", "--out", out, "--overwrite", cwd=cwd, timeout=300
    )
    assert_one_line_error(proc, "current folder or one of its parents")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)
    assert not list(Path("/").glob(".*partial*"))


@pytest.mark.parametrize("command", ["simulate", "train"])
@pytest.mark.parametrize("where", ["file", "under_file", "proc"])
def test_unusable_out_fails_before_any_work(sims: Path, tmp_path: Path, command: str, where: str) -> None:
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("not a folder")
    out = {"file": blocker, "under_file": blocker / "out", "proc": Path("/proc/rcnnlib-out")}[where]
    args = (
        ["simulate", "--n-per-class", "1", "--fields", "01", "--overwrite"]
        if command == "simulate"
        else ["train", str(sims), "--epochs", "1", "--batch-size", "4"]
    )
    start = time.perf_counter()
    proc = run_cli(*args, "--out", str(out))
    assert_one_line_error(proc, str(out))
    assert time.perf_counter() - start < 60
    assert blocker.read_text() == "not a folder" and not leftovers(tmp_path)


def test_train_refuses_an_existing_folder_that_is_not_a_model(sims: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.csv").write_text("a,b\n")
    proc = run_cli("train", str(sims), "--out", str(mine), "--epochs", "1", "--batch-size", "4")
    assert_one_line_error(proc, "not a model folder")
    assert snapshot(mine) == {"results.csv": b"a,b\n"}


# ------------------------------------------------------------------ nonsense parameters
@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--seed", "-1"], "--seed must be a non-negative integer"),
        (["--mag-slope", "nan"], "--mag-slope must be a finite number"),
        (["--mag-slope", "inf"], "--mag-slope must be a finite number"),
        (["--mag-slope=-inf"], "--mag-slope must be a finite number"),
        (["--mag-slope", "1e6"], "--mag-slope must be a finite number"),
    ],
)
def test_nonsense_simulation_parameters(tmp_path: Path, args: list[str], problem: str) -> None:
    out = tmp_path / "sim"
    proc = run_cli("simulate", "--n-per-class", "1", "--fields", "01", "--out", str(out), *args)
    assert_one_line_error(proc, problem)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ interrupted work
def test_sigterm_during_simulate_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "big"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rcnnlib.cli", "simulate", "--n-per-class", "3000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".big.partial-*")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the simulation never started"
            time.sleep(0.05)
        time.sleep(0.5)  # well inside the work: shards being written
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (143, -signal.SIGTERM), stderr
    assert "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def _dead_pid() -> int:
    """A process id that no process has now."""
    for pid in range(4_000_000, 3_000_000, -7919):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    pytest.fail("no free process id found")


def test_stale_partial_folders_are_swept_and_only_ours(tmp_path: Path) -> None:
    """A run killed hard (SIGKILL, power loss) leaves ``.NAME.partial-PID``; the next run removes it."""
    dead = _dead_pid()
    stale = tmp_path / f".sim.partial-{dead}"
    stale.mkdir()
    (stale / "shard-000000.h5").write_bytes(b"half a shard")
    (stale / f".shard-000001.h5.partial-{dead}").write_bytes(b"")
    foreign = tmp_path / f".sim.partial-{dead + 1}"  # holds a file we never write: not ours, kept
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    alive = tmp_path / f".sim.partial-{os.getppid()}"  # a running process's: kept
    alive.mkdir()
    proc = run_cli(
        "simulate", "--n-per-class", "1", "--fields", "01", "--classes", "NV", "--out", str(tmp_path / "sim")
    )
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert (foreign / "notes.txt").read_text() == "keep" and alive.is_dir()
