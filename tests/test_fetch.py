"""``rcnnlib.hits.fetch``: download, verify, resume and fail safely, against a loopback HTTP server.

The server serves a temporary copy of a few real HiTS files; the manifest is the
packaged one restricted to those files, so the checksums under test are the real ones.
Nothing here leaves 127.0.0.1, and every network call has a short timeout.
"""

from __future__ import annotations

import http.server
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pooch
import pytest

from rcnnlib.errors import InputError
from rcnnlib.hits import fetch
from rcnnlib.hits.fetch import FetchError, ManifestEntry, fetch_hits, read_manifest
from rcnnlib.paths import REPO_ROOT, hits_dir

SUBSET = [
    "LICENSE",
    "lightcurve_sampling/lc_data/RRLYR_HiTS_std.csv",
    "real_obs/HiTS_tables/ResultsTable2015.csv",
    "real_obs/Blind15A_info/Blind15A_01_02_g.npy",
    "real_obs/real_stamps/RRLyrae/Blind15A_04_N16_183_3343_g_stamp.npy",
    "real_obs/real_stamps/RRLyrae/lightcurves/Blind15A_04_N16_0183_3343_g.dat",
]
BIG = "real_obs/real_stamps/RRLyrae/Blind15A_04_N16_183_3343_g_stamp.npy"
TIMEOUT = 5.0

HITS = hits_dir()
needs_hits = pytest.mark.usefixtures("hits_root")  # fails, never skips, without the real data


# --------------------------------------------------------------------------- loopback server


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _RangeHandler)
        self.root = root
        self.honour_range = True
        self.drop_after: int | None = None
        """Cut the next response after this many body bytes, as a dropped connection would."""
        self.unavailable = 0
        """Answer this many of the next requests with 503, as a server hiccup would."""
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def ranges(self) -> list[str]:
        return [r for _, r in self.requests if r is not None]


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """GET with ``Range: bytes=N-`` support (206 / 416), or plain 200 when ranges are switched off."""

    server: _Server

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        if self.server.unavailable:
            self.server.unavailable -= 1
            self.send_error(503)
            return
        file = self.server.root / urllib.parse.unquote(self.path.lstrip("/"))
        if not file.is_file():
            self.send_error(404)
            return
        data = file.read_bytes()
        status, body = 200, data
        if rng is not None and self.server.honour_range:
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            assert match, rng
            start = int(match[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, body = 206, data[start:]
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {len(data) - len(body)}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.drop_after is not None:
            body, self.server.drop_after = body[: self.server.drop_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A writable copy of the subset, which a test may corrupt."""
    root = tmp_path / "served"
    for rel in SUBSET:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HITS / rel, root / rel)
    return root


@pytest.fixture
def server(served: Path) -> Iterator[_Server]:
    srv = _Server(served)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(TIMEOUT)


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    """The packaged manifest's header and the lines of the subset, as a file."""
    lines = fetch.MANIFEST_PATH.read_text().splitlines(keepends=True)
    keep = [ln for ln in lines if ln.startswith("#") or ln.split()[-1] in SUBSET]
    assert len(keep) - sum(ln.startswith("#") for ln in keep) == len(SUBSET)
    path = tmp_path / "sub.sha256"
    path.write_text("".join(keep))
    return path


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flip(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def _get(**kwargs: object) -> dict[str, object]:
    return {"progress": False, "timeout": TIMEOUT, **kwargs}


# --------------------------------------------------------------------------- manifest


def test_packaged_manifest_is_the_data_folder_manifest(hits_root: Path) -> None:
    entries = read_manifest()
    assert len(entries) == 2939
    assert len({e.path for e in entries}) == len(entries)
    assert all(len(e.sha256) == 64 and e.size > 0 for e in entries)
    # the real-data folder is required (conftest): its manifest must be the packaged one, byte for byte
    assert fetch.MANIFEST_PATH.read_bytes() == (hits_root / "MANIFEST.sha256").read_bytes()


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("abc  12  LICENSE", "not a sha256"),
        ("a" * 64 + "  twelve  LICENSE", "whole number"),
        ("a" * 64 + "  12", "expected 'sha256  size  path'"),
        ("a" * 64 + "  12  ../escape", "plain relative file path"),
        ("a" * 64 + "  12  /etc/passwd", "plain relative file path"),
    ],
)
def test_malformed_manifest_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "bad.sha256"
    path.write_text("# header\n" + "b" * 64 + "  5  ok.txt\n" + line + "\n")
    with pytest.raises(InputError, match=re.escape(problem)) as info:
        read_manifest(path)
    assert info.value.path == path
    assert "line 3" in str(info.value)


def test_include_pattern_matching_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="matches no file"):
        fetch_hits(tmp_path / "d", base_url=str(tmp_path), include=["no_such_folder/"], **_get())


# --------------------------------------------------------------------------- downloads


@needs_hits
def test_download_verifies_and_second_run_downloads_nothing(
    server: _Server, manifest: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "dest"
    report = fetch_hits(dest, base_url=server.url, manifest=manifest, **_get())
    assert sorted(report.downloaded) == sorted(SUBSET)
    assert report.present == [] and report.failed == []
    assert report.bytes_downloaded == sum((HITS / p).stat().st_size for p in SUBSET)
    for rel in SUBSET:
        assert (dest / rel).read_bytes() == (HITS / rel).read_bytes()
    assert not list(dest.rglob("*.partial"))
    assert (dest / "MANIFEST.sha256").read_bytes() == manifest.read_bytes()

    server.requests.clear()
    again = fetch_hits(dest, base_url=server.url, manifest=manifest, **_get())
    assert again.downloaded == [] and sorted(again.present) == sorted(SUBSET)
    assert server.requests == []


@needs_hits
def test_include_restricts_the_download(server: _Server, manifest: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    report = fetch_hits(
        dest, base_url=server.url, manifest=manifest, include=["real_obs/real_stamps/", "*.csv"], **_get()
    )
    assert sorted(report.downloaded) == sorted(p for p in SUBSET if "real_stamps" in p or p.endswith(".csv"))
    assert not (dest / "LICENSE").exists()


@needs_hits
def test_corrupted_file_is_rejected_and_never_installed(
    server: _Server, served: Path, manifest: Path, tmp_path: Path
) -> None:
    _flip(served / BIG)
    dest = tmp_path / "dest"
    entry = next(e for e in read_manifest(manifest) if e.path == BIG)
    with pytest.raises(FetchError) as info:
        fetch_hits(dest, base_url=server.url, manifest=manifest, retries=1, **_get())
    message = str(info.value)
    assert str(dest / BIG) in message
    assert f"expected {entry.sha256}" in message
    assert f"got {pooch.file_hash(served / BIG)}" in message
    assert "\n" not in message
    assert not (dest / BIG).exists()
    assert not (dest / (BIG + ".partial")).exists()
    # One retry, from scratch: two full GETs of the bad file.
    assert [r for p, r in server.requests if p.endswith(BIG.rsplit("/", 1)[1])] == [None, None]
    # The others still landed, and the report says so.
    report = info.value.report
    assert report.failed[0][0] == BIG and len(report.downloaded) == len(SUBSET) - 1
    assert not (dest / "MANIFEST.sha256").exists()
    # Nothing else either: no partial, no temporary file of pooch's.
    assert _files(dest) == sorted(report.downloaded)


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@needs_hits
def test_corrupted_existing_file_is_replaced(server: _Server, manifest: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    fetch_hits(dest, base_url=server.url, manifest=manifest, **_get())
    _flip(dest / BIG)
    report = fetch_hits(dest, base_url=server.url, manifest=manifest, **_get())
    assert report.downloaded == [BIG]
    assert (dest / BIG).read_bytes() == (HITS / BIG).read_bytes()


@needs_hits
def test_resume_sends_a_range_request(server: _Server, manifest: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    original = (HITS / BIG).read_bytes()
    half = len(original) // 2
    partial = dest / (BIG + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(original[:half])
    report = fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], **_get())
    assert report.downloaded == [BIG]
    assert server.ranges() == [f"bytes={half}-"]
    assert report.bytes_downloaded == len(original) - half
    assert (dest / BIG).read_bytes() == original
    assert not partial.exists()


@needs_hits
def test_dropped_connection_is_resumed(server: _Server, manifest: Path, tmp_path: Path) -> None:
    server.drop_after = 10_000
    dest = tmp_path / "dest"
    report = fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], retries=1, **_get())
    assert report.downloaded == [BIG]
    assert server.ranges() == ["bytes=10000-"]
    assert (dest / BIG).read_bytes() == (HITS / BIG).read_bytes()


@needs_hits
def test_dropped_connection_without_retries_keeps_the_partial(
    server: _Server, manifest: Path, tmp_path: Path
) -> None:
    server.drop_after = 10_000
    dest = tmp_path / "dest"
    with pytest.raises(InputError, match="connection lost after 10000 bytes"):
        fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], retries=0, **_get())
    assert not (dest / BIG).exists()
    assert (dest / (BIG + ".partial")).stat().st_size == 10_000
    assert _files(dest) == [BIG + ".partial"]
    fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], retries=0, **_get())
    assert server.ranges() == ["bytes=10000-"]
    assert (dest / BIG).read_bytes() == (HITS / BIG).read_bytes()


@needs_hits
def test_resume_when_server_ignores_range(server: _Server, manifest: Path, tmp_path: Path) -> None:
    server.honour_range = False
    dest = tmp_path / "dest"
    original = (HITS / BIG).read_bytes()
    partial = dest / (BIG + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(original[:1000])
    fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], **_get())
    assert server.ranges() == ["bytes=1000-"]  # asked, got a 200 with the whole file, started over
    assert (dest / BIG).read_bytes() == original


@needs_hits
def test_stale_partial_is_discarded_and_refetched(server: _Server, manifest: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    original = (HITS / BIG).read_bytes()
    partial = dest / (BIG + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1000)  # not a prefix of the real file
    fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], retries=1, **_get())
    assert server.ranges() == ["bytes=1000-"]
    assert (dest / BIG).read_bytes() == original


@needs_hits
def test_oversized_or_416_partial_restarts(
    server: _Server, served: Path, manifest: Path, tmp_path: Path
) -> None:
    # The server's copy is shorter than the partial: it answers 416, the partial goes, the GET restarts.
    entry = next(e for e in read_manifest(manifest) if e.path == BIG)
    dest = tmp_path / "dest"
    partial = dest / (BIG + ".partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes((HITS / BIG).read_bytes()[:2000])
    (served / BIG).write_bytes((HITS / BIG).read_bytes()[:1500])
    with pytest.raises(FetchError, match="size mismatch"):
        fetch_hits(dest, base_url=server.url, manifest=[entry], retries=1, **_get())
    assert server.requests[0][1] == "bytes=2000-"
    assert not partial.exists() and not (dest / BIG).exists()


@needs_hits
def test_complete_partial_is_verified_and_installed_without_a_request(
    server: _Server, manifest: Path, tmp_path: Path
) -> None:
    # An earlier run stopped between the last byte and the rename.
    dest = tmp_path / "dest"
    partial = dest / (BIG + ".partial")
    partial.parent.mkdir(parents=True)
    shutil.copyfile(HITS / BIG, partial)
    report = fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], **_get())
    assert report.downloaded == [BIG] and report.bytes_downloaded == 0
    assert server.requests == []
    assert (dest / BIG).read_bytes() == (HITS / BIG).read_bytes() and not partial.exists()


@needs_hits
def test_server_hiccup_is_retried(server: _Server, manifest: Path, tmp_path: Path) -> None:
    server.unavailable = 1
    dest = tmp_path / "dest"
    report = fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], retries=1, **_get())
    assert report.downloaded == [BIG] and len(server.requests) == 2
    server.unavailable = 1
    (dest / BIG).unlink()
    with pytest.raises(FetchError, match="HTTP 503"):
        fetch_hits(dest, base_url=server.url, manifest=manifest, include=[BIG], retries=0, **_get())
    assert not (dest / BIG).exists()


def test_parallel_downloads_into_one_new_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "a" / "b").mkdir(parents=True)
    entries = []
    for i in range(8):
        path = mirror / "a" / "b" / f"{i}.txt"
        path.write_text(f"file {i}\n" * (i + 1))
        entries.append(ManifestEntry(pooch.file_hash(str(path)), path.stat().st_size, f"a/b/{i}.txt"))
    real_makedirs = os.makedirs

    def slow_makedirs(name: str, *args: object, **kwargs: object) -> None:
        time.sleep(0.05)  # widens the window between "does the folder exist?" and creating it
        real_makedirs(name, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", slow_makedirs)
    report = fetch_hits(tmp_path / "d", base_url=str(mirror), manifest=entries, workers=8, **_get())
    assert len(report.downloaded) == 8 and _files(tmp_path / "d") == [
        "MANIFEST.sha256",
        *(e.path for e in entries),
    ]


def test_pooch_logs_only_when_verbose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "f.txt").write_text("data\n")
    entry = ManifestEntry(pooch.file_hash(str(mirror / "f.txt")), 5, "f.txt")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = pooch.get_logger()  # not in logging's tree: its own stream handler, bound at import
    logger.addHandler(handler)
    try:
        monkeypatch.delenv("RCNNLIB_VERBOSE", raising=False)
        fetch_hits(tmp_path / "quiet", base_url=str(mirror), manifest=[entry], **_get())
        assert records == []
        monkeypatch.setenv("RCNNLIB_VERBOSE", "1")
        fetch_hits(tmp_path / "verbose", base_url=str(mirror), manifest=[entry], **_get())
        assert "Downloading file 'f.txt'" in records[0].getMessage()
    finally:
        logger.removeHandler(handler)


@needs_hits
def test_missing_file_on_server_is_reported(server: _Server, tmp_path: Path) -> None:
    entry = ManifestEntry("0" * 64, 10, "not/there.txt")
    report = fetch_hits(tmp_path / "d", base_url=server.url, manifest=[entry], strict=False, **_get())
    assert report.failed == [("not/there.txt", f"HTTP 404 Not Found for {server.url}/not/there.txt")]
    assert len(server.requests) == 1  # a 404 is not retried


def test_unreachable_server_says_what_to_do(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    entry = ManifestEntry("0" * 64, 10, "LICENSE")
    with pytest.raises(InputError) as info:
        fetch_hits(tmp_path / "d", base_url=url, manifest=[entry], retries=0, **_get())
    message = str(info.value)
    assert url in message
    assert "internet connection" in message
    assert "RCNNLIB_HITS_URL" in message and "RCNNLIB_HITS_DIR" in message
    assert "\n" not in message
    assert not (tmp_path / "d" / "LICENSE").exists()


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RCNNLIB_HITS_URL", "http://mirror.invalid/x/")
    assert fetch.resolve_base_url() == "http://mirror.invalid/x"
    assert fetch.resolve_base_url("file:///m") == "file:///m"
    monkeypatch.delenv("RCNNLIB_HITS_URL")
    assert fetch.resolve_base_url() == fetch.DEFAULT_BASE_URL
    assert fetch.HITS_COMMIT in fetch.DEFAULT_BASE_URL


@needs_hits
def test_file_url_mirror(served: Path, manifest: Path, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    report = fetch_hits(dest, base_url=served.as_uri(), manifest=manifest, **_get())
    assert sorted(report.downloaded) == sorted(SUBSET)
    for rel in SUBSET:
        assert (dest / rel).read_bytes() == (HITS / rel).read_bytes()
    # Resume from a mirror folder too.
    (dest / BIG).unlink()
    original = (HITS / BIG).read_bytes()
    (dest / (BIG + ".partial")).write_bytes(original[:777])
    report = fetch_hits(dest, base_url=str(served), manifest=manifest, **_get())
    assert report.downloaded == [BIG] and report.bytes_downloaded == len(original) - 777
    assert (dest / BIG).read_bytes() == original


def test_missing_mirror_folder_says_what_to_do(tmp_path: Path) -> None:
    entry = ManifestEntry("0" * 64, 10, "LICENSE")
    with pytest.raises(InputError, match="RCNNLIB_HITS_DIR"):
        fetch_hits(tmp_path / "d", base_url=(tmp_path / "nope").as_uri(), manifest=[entry], **_get())


# --------------------------------------------------------------------------- command line


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RCNNLIB_HITS_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "rcnnlib.cli", "fetch-hits", "--no-progress", "--retries", "0", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@needs_hits
def test_cli_downloads_into_data_hits_by_default(server: _Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = _cli("--base-url", server.url, "--include", *SUBSET, cwd=work)
    assert result.returncode == 0, result.stderr
    dest = work / "data" / "hits"
    for rel in SUBSET:
        assert (dest / rel).read_bytes() == (HITS / rel).read_bytes()
    assert f"{len(SUBSET)} downloaded" in result.stdout
    assert f"RCNNLIB_HITS_DIR={dest.resolve()}" in result.stdout


@needs_hits
def test_cli_corrupted_file_exits_2_with_one_line(server: _Server, served: Path, tmp_path: Path) -> None:
    _flip(served / BIG)
    dest = tmp_path / "dest"
    result = _cli("--base-url", server.url, "--dest", str(dest), "--include", BIG, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rcnnlib: error: ")
    assert "sha256 mismatch" in lines[0]
    assert not (dest / BIG).exists()


@needs_hits
def test_add_cli_in_process(
    server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The sub-command in process, through the one parser of the command line."""
    from rcnnlib.cli import build_parser

    parser = build_parser()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RCNNLIB_HITS_URL", server.url)
    args = parser.parse_args(
        ["fetch-hits", "--no-progress", "--include", "LICENSE", "real_obs/HiTS_tables/Res"]
    )
    assert args.dest == Path("data") / "hits" and args.base_url is None
    assert args.func(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 downloaded, 0 already present, 0 failed")
    assert out[1] == f"Point RCNNLIB_HITS_DIR to it: export RCNNLIB_HITS_DIR={tmp_path / 'data' / 'hits'}"
    assert (tmp_path / "data" / "hits" / "LICENSE").read_bytes() == (HITS / "LICENSE").read_bytes()
    with pytest.raises(SystemExit):
        parser.parse_args(["fetch-hits", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "default: data/hits under the current directory" in help_text
