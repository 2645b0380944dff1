"""Download the real HiTS files and verify every byte against a packaged checksum list.

Why this module exists: the project's tests read a local copy of the data, but a user
starts with nothing. The original files live in github.com/rodrigcd/HiTS_simulations;
``rcnnlib/hits/hits_manifest.sha256`` pins each of them (sha256, size, path) at the commit
the reproduction was built against, so a download is checked against exactly those
bytes rather than whatever the repository holds today. Files are written under a
``.partial`` name, resumed with HTTP Range requests after an interruption, verified,
and only then renamed into place: a file under its final name is always a verified
one, so a later run (or the loader) never has to wonder.

Only the standard library talks to the network (``urllib``); ``file://`` base URLs
and plain folders work too, for mirrors and for tests.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from rcnnlib.errors import InputError

HITS_REPO = "rodrigcd/HiTS_simulations"
HITS_COMMIT = "275198b77abef1e1db4a669e7d824d9655501ab0"
DEFAULT_BASE_URL = f"https://raw.githubusercontent.com/{HITS_REPO}/{HITS_COMMIT}"
"""Raw files of the pinned commit; a commit (not a branch) so the checksums can never go stale."""

MANIFEST_PATH = Path(__file__).with_name("hits_manifest.sha256")
"""Byte-exact copy of the data folder's ``MANIFEST.sha256``: every real-data file, both halves."""

URL_ENV = "RCNNLIB_HITS_URL"
DIR_ENV = "RCNNLIB_HITS_DIR"
DEFAULT_DEST = Path("data") / "hits"
"""Default download folder, relative to the current directory (ignored by the project's git)."""

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_WORKERS = 8
"""About 3000 small files: one connection at a time would spend most of its time on handshakes."""

_CHUNK = 1 << 16
_BACKOFF_S = 0.5
_USER_AGENT = "rcnnlib-fetch-hits/0.1"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class ManifestEntry:
    """One file of the manifest: its lowercase hex sha256, its size in bytes and its relative path."""

    sha256: str
    size: int
    path: str


@dataclass
class FetchReport:
    """What a :func:`fetch_hits` run did; paths are manifest paths, relative to ``dest``."""

    dest: Path
    base_url: str
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    """``(path, problem)`` for each file that could not be fetched and verified."""
    bytes_downloaded: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line for the command line."""
        return (
            f"{len(self.downloaded)} downloaded, {len(self.present)} already present, "
            f"{len(self.failed)} failed ({self.bytes_downloaded:,} bytes transferred) in {self.dest}"
        )


class FetchError(InputError):
    """Some files could not be fetched or failed verification; ``report`` holds the whole run.

    An :class:`InputError`, so the command line prints one line and exits with status 2.
    """

    def __init__(self, problem: str, path: str | Path | None, report: FetchReport):
        super().__init__(problem, path)
        self.report = report


# --------------------------------------------------------------------------- manifest


def read_manifest(path: str | Path | None = None) -> list[ManifestEntry]:
    """Parse a manifest (``sha256  size  path`` lines, ``#`` comments); default: the packaged one.

    The paths become file names under the download folder, so anything that could
    escape it (absolute paths, ``..``) is rejected here rather than trusted later.
    """
    manifest = MANIFEST_PATH if path is None else Path(path)
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("manifest file not found", manifest) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", manifest) from None

    entries: list[ManifestEntry] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 2)
        if len(parts) != 3:
            raise InputError(f"line {number}: expected 'sha256  size  path', got {stripped[:80]!r}", manifest)
        digest, size_text, rel = parts[0].lower(), parts[1], parts[2].strip()
        if not _SHA256.fullmatch(digest):
            raise InputError(f"line {number}: {parts[0][:80]!r} is not a sha256 (64 hex digits)", manifest)
        if not size_text.isdigit():
            problem = f"line {number}: size {size_text[:40]!r} is not a whole number of bytes"
            raise InputError(problem, manifest)
        pure = PurePosixPath(rel)
        if "\\" in rel or pure.is_absolute() or ".." in pure.parts or rel.endswith("/") or rel != str(pure):
            raise InputError(f"line {number}: {rel[:80]!r} is not a plain relative file path", manifest)
        if rel in seen:
            raise InputError(f"line {number}: {rel!r} is listed twice", manifest)
        seen.add(rel)
        entries.append(ManifestEntry(digest, int(size_text), rel))
    if not entries:
        raise InputError("the manifest lists no files", manifest)
    return entries


def select_entries(entries: Sequence[ManifestEntry], include: Sequence[str] | None) -> list[ManifestEntry]:
    """Keep the entries matching any pattern: a glob (``*?[``, matched on the whole path) or a path prefix.

    A pattern that matches nothing is an error: it is almost always a typo, and a
    silent "0 downloaded" would hide it.
    """
    if not include:
        return list(entries)
    chosen: set[str] = set()
    for pattern in include:
        if any(ch in pattern for ch in "*?["):
            hits = {e.path for e in entries if fnmatch.fnmatchcase(e.path, pattern)}
        else:
            hits = {e.path for e in entries if e.path.startswith(pattern)}
        if not hits:
            raise InputError(f"--include {pattern!r} matches no file of the manifest")
        chosen |= hits
    return [e for e in entries if e.path in chosen]


# --------------------------------------------------------------------------- helpers


def resolve_base_url(base_url: str | None = None) -> str:
    """The explicit argument, else ``$RCNNLIB_HITS_URL``, else the pinned GitHub commit."""
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL
    return url.rstrip("/")


def _local_root(base_url: str) -> Path | None:
    """The folder of a ``file://`` URL or a plain path; ``None`` for network URLs."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"file:// URL with a remote host is not supported: {base_url}")
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme in ("http", "https"):
        return None
    if "://" in base_url:
        raise InputError(f"unsupported base URL {base_url!r}: use http://, https:// or file://")
    return Path(base_url).expanduser()


def _file_url(base_url: str, rel: str) -> str:
    return f"{base_url}/{urllib.parse.quote(rel, safe='/')}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(path: Path, entry: ManifestEntry) -> str | None:
    """``None`` when ``path`` holds exactly the manifest's bytes, else what is wrong with it."""
    size = path.stat().st_size
    if size != entry.size:
        return f"size mismatch: expected {entry.size} bytes, got {size}"
    actual = sha256_of(path)
    if actual != entry.sha256:
        return f"sha256 mismatch: expected {entry.sha256}, got {actual}"
    return None


def _partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class _Unreachable(Exception):
    """Transport failure (no route, refused, timeout, reset): the whole run stops, partials are kept."""

    def __init__(self, url: str, reason: str):
        super().__init__(reason)
        self.url = url
        self.reason = reason


class _FileFailed(Exception):
    """This file cannot be fetched and verified; the other files carry on."""


class _Retry(Exception):
    """Worth another attempt: a server hiccup or a corrupted transfer."""


class _Restart(Exception):
    """The partial cannot be resumed; delete it and start from byte 0."""


class _Cancelled(Exception):
    """Another file hit a fatal error or the user interrupted: stop quietly, keep the partial."""


class _Progress:
    """Bytes of one file shown on the shared tqdm bar (worker threads share the bar, hence the lock).

    ``set`` re-syncs the bar with what is really on disk after a restart or a failure,
    so the bar never counts a byte twice.
    """

    def __init__(self, bar: tqdm, lock: threading.Lock) -> None:
        self._bar = bar
        self._lock = lock
        self.shown = 0

    def add(self, n: int) -> None:
        if n:
            with self._lock:
                self._bar.update(n)
            self.shown += n

    def set(self, n: int) -> None:
        self.add(n - self.shown)


# --------------------------------------------------------------------------- one transfer


def _write_stream(
    read: Callable[[int], bytes],
    partial: Path,
    mode: str,
    start: int,
    size: int,
    stop: threading.Event,
    progress: _Progress,
    url: str,
    expected: int | None = None,
) -> int:
    """Copy a body into the partial; returns bytes written. Read errors are transport errors.

    ``expected`` is the announced body length: ``http.client`` returns a short body
    without complaint when the connection drops, so the check has to happen here,
    where the partial can be kept for resuming instead of failing verification.
    """
    written = start
    with partial.open(mode) as out:
        while True:
            if stop.is_set():
                raise _Cancelled
            try:
                chunk = read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                reason = f"connection lost after {written} bytes ({exc or type(exc).__name__})"
                raise _Unreachable(url, reason) from None
            if not chunk:
                break
            if written + len(chunk) > size:
                # A server answering with more than the manifest's size is sending the wrong file.
                raise _Retry(
                    f"{url} sent more than the expected {size} bytes (the partial download was deleted)"
                )
            out.write(chunk)
            written += len(chunk)
            progress.add(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if expected is not None and written - start < expected:
        raise _Unreachable(url, f"connection lost after {written} bytes")
    return written - start


def _transfer_local(
    source: Path,
    partial: Path,
    offset: int,
    size: int,
    stop: threading.Event,
    progress: _Progress,
) -> int:
    """A mirror folder: resuming is a seek."""
    try:
        handle = source.open("rb")
    except FileNotFoundError:
        raise _FileFailed(f"not in the mirror: {source}") from None
    except OSError as exc:
        raise _FileFailed(f"cannot read {source}: {exc.strerror}") from None
    with handle:
        handle.seek(offset)
        return _write_stream(
            handle.read, partial, "ab" if offset else "wb", offset, size, stop, progress, source.as_uri()
        )


def _transfer_http(
    url: str,
    partial: Path,
    offset: int,
    size: int,
    timeout: float,
    stop: threading.Event,
    progress: _Progress,
) -> int:
    """GET (with ``Range`` from ``offset`` when resuming) into the partial; returns bytes written."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416:  # our partial is not a prefix of what the server has
            raise _Restart from None
        message = f"HTTP {exc.code} {exc.reason} for {url}"
        if exc.code in (408, 425, 429) or exc.code >= 500:
            raise _Retry(message) from None
        raise _FileFailed(message) from None
    except urllib.error.URLError as exc:
        raise _Unreachable(url, str(exc.reason)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Unreachable(url, str(exc) or type(exc).__name__) from None

    with response:
        mode, start = "wb", 0
        if offset and response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match[1]) != offset:
                raise _Restart
            mode, start = "ab", offset
        # Anything else (a 200 to a Range request) is the whole file: start over from byte 0.
        progress.set(start)
        length = response.headers.get("Content-Length", "")
        expected = int(length) if length.strip().isdigit() else None
        return _write_stream(response.read, partial, mode, start, size, stop, progress, url, expected)


def _fetch_one(
    entry: ManifestEntry,
    dest: Path,
    base_url: str,
    local_root: Path | None,
    timeout: float,
    retries: int,
    stop: threading.Event,
    bar: tqdm,
    lock: threading.Lock,
) -> int:
    """Fetch, verify and atomically install one file; returns the bytes transferred.

    Transport errors keep the partial (the next attempt or run resumes it); a
    verification failure deletes it, because a bad prefix would poison every resume.
    """
    final = dest / entry.path
    partial = _partial_path(final)
    url = _file_url(base_url, entry.path)
    progress = _Progress(bar, lock)
    transferred = 0
    attempt = 0
    last_problem = "no attempt made"
    unreachable: _Unreachable | None = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        while attempt <= retries:
            if stop.is_set():
                raise _Cancelled
            offset = partial.stat().st_size if partial.is_file() else 0
            if offset > entry.size:
                _unlink(partial)
                offset = 0
            progress.set(offset)
            network_used = offset < entry.size or entry.size == 0
            unreachable = None
            try:
                if network_used:
                    if local_root is not None:
                        got = _transfer_local(
                            local_root / entry.path, partial, offset, entry.size, stop, progress
                        )
                    else:
                        got = _transfer_http(url, partial, offset, entry.size, timeout, stop, progress)
                    transferred += got
                problem = _mismatch(partial, entry)
                if problem is None:
                    os.replace(partial, final)
                    return transferred
                _unlink(partial)
                last_problem = f"{problem} (from {url}; the partial download was deleted)"
            except _Restart:
                _unlink(partial)
                last_problem = f"the server refused to resume the partial download of {url}"
            except _Retry as exc:
                _unlink(partial)
                last_problem = str(exc)
            except _Unreachable as exc:
                unreachable = exc
                last_problem = exc.reason
            if not network_used:
                continue  # a complete partial left by an earlier run was bad: that cost no attempt
            attempt += 1
            if attempt <= retries and stop.wait(_BACKOFF_S * 2 ** (attempt - 1)):
                raise _Cancelled
        if unreachable is not None:
            raise unreachable
        raise _FileFailed(last_problem)
    except OSError as exc:
        # Local disk trouble (full, read-only, permissions) stops everything: nothing else would succeed.
        raise InputError(f"cannot write: {exc.strerror or exc}", exc.filename or partial) from None
    finally:
        progress.set(entry.size)


# --------------------------------------------------------------------------- the run


def _unreachable_message(exc: _Unreachable) -> str:
    return (
        f"cannot download {exc.url}: {exc.reason}. Check the internet connection and run again "
        "(verified files are kept and partial downloads resume), "
        f"set {URL_ENV} to a mirror of {DEFAULT_BASE_URL} (http(s):// or file://), "
        f"or copy an existing download and point {DIR_ENV} to it"
    )


def _write_manifest_copy(dest: Path, data: bytes) -> None:
    """Leave ``MANIFEST.sha256`` beside the files, as in the project's data folder, so a download
    has the same layout as that folder and can be re-verified later without the package."""
    target = dest / "MANIFEST.sha256"
    if target.is_file() and target.read_bytes() == data:
        return
    tmp = _partial_path(target)
    tmp.write_bytes(data)
    os.replace(tmp, target)


def fetch_hits(
    dest: str | Path,
    base_url: str | None = None,
    manifest: str | Path | Sequence[ManifestEntry] | None = None,
    include: Sequence[str] | None = None,
    progress: bool = True,
    retries: int = 3,
    *,
    workers: int = DEFAULT_WORKERS,
    timeout: float = DEFAULT_TIMEOUT_S,
    strict: bool = True,
) -> FetchReport:
    """Make ``dest`` hold every manifest file (or those matching ``include``), verified by sha256.

    ``base_url``: ``None`` means ``$RCNNLIB_HITS_URL``, else the pinned GitHub commit;
    ``http(s)://``, ``file://`` or a plain folder. ``manifest``: a manifest file, a
    list of entries, or ``None`` for the packaged one. ``include``: path prefixes or
    globs. ``retries``: extra attempts per file after the first.

    Files already present with the right bytes are not fetched again. Files that
    cannot be fetched or verified are listed in the report; with ``strict`` (the
    default) the run then raises :class:`FetchError` (an ``InputError``) naming the
    first of them with the expected and actual hash. An unreachable server stops the
    run at once with an ``InputError`` that says what to do.
    """
    dest_dir = Path(dest).expanduser()
    base = resolve_base_url(base_url)
    local_root = _local_root(base)
    if isinstance(manifest, str | Path) or manifest is None:
        entries = read_manifest(manifest)
        manifest_bytes = (MANIFEST_PATH if manifest is None else Path(manifest)).read_bytes()
    else:
        entries = list(manifest)
        manifest_bytes = "".join(f"{e.sha256}  {e.size:>9}  {e.path}\n" for e in entries).encode()
    selected = select_entries(entries, include)
    if retries < 0 or workers < 1:
        raise InputError(f"retries must be >= 0 and workers >= 1 (got {retries}, {workers})")
    if local_root is not None and not local_root.is_dir():
        missing = _Unreachable(base, f"mirror folder {local_root} does not exist")
        raise InputError(_unreachable_message(missing))
    if dest_dir.exists() and not dest_dir.is_dir():
        raise InputError("the download destination exists and is not a folder", dest_dir)
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the download folder: {exc.strerror}", dest_dir) from None

    report = FetchReport(dest=dest_dir, base_url=base)
    todo: list[ManifestEntry] = []
    for entry in selected:
        final = dest_dir / entry.path
        if final.is_file() and _mismatch(final, entry) is None:
            report.present.append(entry.path)
        else:
            todo.append(entry)

    if todo:
        stop = threading.Event()
        with (
            tqdm(
                total=sum(e.size for e in todo),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc="HiTS files",
                disable=not progress,
                leave=False,
            ) as bar,
            ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool,
        ):
            lock = threading.Lock()
            futures: dict[Future[int], ManifestEntry] = {
                pool.submit(_fetch_one, e, dest_dir, base, local_root, timeout, retries, stop, bar, lock): e
                for e in todo
            }
            try:
                for future in as_completed(futures):
                    entry = futures[future]
                    try:
                        report.bytes_downloaded += future.result()
                    except _FileFailed as exc:
                        report.failed.append((entry.path, str(exc)))
                    else:
                        report.downloaded.append(entry.path)
            except _Unreachable as exc:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise InputError(_unreachable_message(exc)) from None
            except BaseException:
                stop.set()
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    for items in (report.downloaded, report.present):
        items.sort()
    report.failed.sort()
    if not report.failed:
        _write_manifest_copy(dest_dir, manifest_bytes)
    elif strict:
        path, problem = report.failed[0]
        more = len(report.failed) - 1
        if more:
            problem += f" ({more} more file{'s' if more > 1 else ''} failed)"
        raise FetchError(problem, dest_dir / path, report)
    return report


# --------------------------------------------------------------------------- command line
