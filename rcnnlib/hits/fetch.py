"""Download the real HiTS files with pooch and verify every byte against a packaged checksum list.

Why this module exists: the project's tests read a local copy of the data, but a user
starts with nothing. The original files live in github.com/rodrigcd/HiTS_simulations;
``rcnnlib/hits/hits_manifest.sha256`` pins each of them (sha256, size, path) at the commit
the reproduction was built against, so a download is checked against exactly those
bytes rather than whatever the repository holds today.

pooch does the bookkeeping: a file already present with the right sha256 is kept, a
download lands under a temporary name and replaces the file only once its sha256
matches (a file under its final name is always a verified one), and a broken transfer
or a corrupted download is tried again (after 1 s, 2 s, ...). Which failures it retries
goes by the exception's type: a ``requests`` error or a ``ValueError`` (checksum) is
retried, anything else is not. What pooch lacks is :class:`ResumingDownloader`:
``file://`` mirrors, and a ``.partial`` file that keeps what arrived so that an
interrupted download continues with an HTTP Range request instead of starting over.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pooch
import requests
import urllib3
from tqdm import tqdm

from rcnnlib.errors import InputError
from rcnnlib.logs import verbose_requested

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
_USER_AGENT = "rcnnlib-fetch-hits/0.2"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE_START = re.compile(r"bytes\s+(\d+)-")


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
    """Parse a manifest (``sha256  size  path`` lines, ``#`` comments); default: the packaged one."""
    manifest = MANIFEST_PATH if path is None else Path(path)
    try:
        text = manifest.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("manifest file not found", manifest) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the manifest: {exc}", manifest) from None
    entries: dict[str, ManifestEntry] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            entry = _parse_line(line.strip(), number, manifest)
            if entry.path in entries:
                raise InputError(f"line {number}: {entry.path!r} is listed twice", manifest)
            entries[entry.path] = entry
    if not entries:
        raise InputError("the manifest lists no files", manifest)
    return list(entries.values())


def _parse_line(line: str, number: int, manifest: Path) -> ManifestEntry:
    """One ``sha256  size  path`` line. The path becomes a file name under the download folder,
    so anything that could escape it (absolute paths, ``..``) is rejected here rather than trusted later."""
    parts = line.split(None, 2)
    if len(parts) != 3:
        raise InputError(f"line {number}: expected 'sha256  size  path', got {line[:80]!r}", manifest)
    digest, size, rel = parts[0].lower(), parts[1], parts[2].strip()
    pure = PurePosixPath(rel)
    if not _SHA256.fullmatch(digest):
        problem = f"{parts[0][:80]!r} is not a sha256 (64 hex digits)"
    elif not size.isdigit():
        problem = f"size {size[:40]!r} is not a whole number of bytes"
    elif "\\" in rel or pure.is_absolute() or ".." in pure.parts or rel.endswith("/") or rel != str(pure):
        problem = f"{rel[:80]!r} is not a plain relative file path"
    else:
        return ManifestEntry(digest, int(size), rel)
    raise InputError(f"line {number}: {problem}", manifest)


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


def resolve_base_url(base_url: str | None = None) -> str:
    """The explicit argument, else ``$RCNNLIB_HITS_URL``, else the pinned GitHub commit."""
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL
    return url.rstrip("/")


def _download_root(base_url: str) -> str:
    """``base_url`` as an ``http(s)://`` or ``file://`` URL; a plain folder becomes a ``file://`` one."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme in ("http", "https"):
        return base_url
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InputError(f"file:// URL with a remote host is not supported: {base_url}")
        folder = Path(urllib.request.url2pathname(parsed.path))
    elif "://" in base_url:
        raise InputError(f"unsupported base URL {base_url!r}: use http://, https:// or file://")
    else:
        folder = Path(base_url).expanduser()
    if not folder.is_dir():
        raise InputError(_unreachable_message(base_url, f"mirror folder {folder} does not exist"))
    return folder.resolve().as_uri()


def _unreachable_message(url: str, reason: str) -> str:
    return (
        f"cannot download {url}: {reason}. Check the internet connection and run again "
        "(verified files are kept and partial downloads resume), "
        f"set {URL_ENV} to a mirror of {DEFAULT_BASE_URL} (http(s):// or file://), "
        f"or copy an existing download and point {DIR_ENV} to it"
    )


# --------------------------------------------------------------------------- one file


@dataclass
class ResumingDownloader:
    """A pooch downloader for one file that keeps what arrived in ``partial`` and continues from there.

    pooch passes a temporary file name and checks the sha256 of what lands there
    (deleting it, so a bad prefix never poisons a later resume). A broken transfer
    raises ``requests.ConnectionError``, which pooch retries, and leaves the partial
    for the next attempt or run. A file the source does not have raises
    ``FileNotFoundError``, which pooch does not retry. ``stop`` ends it between chunks.
    """

    partial: Path
    size: int
    timeout: float
    stop: threading.Event
    transferred: int = 0
    """Bytes received, over all attempts."""
    received: tuple[int, str] | None = None
    """Size and sha256 of the last complete transfer, to say what is wrong with it when pooch rejects it."""

    def __call__(self, url: str, output_file: str, _pooch: object = None) -> None:
        if self.stop.is_set():
            raise CancelledError
        self.received = None
        offset = self.partial.stat().st_size if self.partial.is_file() else 0
        if offset > self.size:
            self.partial.unlink()
            offset = 0
        if offset < self.size or not self.partial.is_file():  # a complete one is left by an earlier run
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme == "file":
                self._copy(Path(urllib.request.url2pathname(parsed.path)), offset)
            else:
                self._get(url, offset)
        self.received = (self.partial.stat().st_size, pooch.file_hash(str(self.partial)))
        os.replace(self.partial, output_file)

    def _copy(self, source: Path, offset: int) -> None:
        """From a mirror folder: resuming is a seek."""
        try:
            handle = source.open("rb")
        except FileNotFoundError:
            raise FileNotFoundError(f"not in the mirror: {source}") from None
        with handle:
            handle.seek(offset)
            self._write(iter(lambda: handle.read(_CHUNK), b""), offset)

    def _get(self, url: str, offset: int) -> None:
        """GET, with ``Range`` from ``offset`` when resuming; a server that cannot resume starts over."""
        headers = {"User-Agent": _USER_AGENT} | ({"Range": f"bytes={offset}-"} if offset else {})
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as response:
            status = response.status_code
            resumed = status == 206 and _range_start(response) == offset
            if offset and (status == 416 or (status == 206 and not resumed)):
                self.partial.unlink()  # our partial is not a prefix of what the server has
            elif status in (404, 410):
                raise FileNotFoundError(f"HTTP {status} {response.reason} for {url}")
            elif status >= 400:
                raise requests.HTTPError(f"HTTP {status} {response.reason} for {url}", response=response)
            else:  # a 200 to a Range request is the whole file
                self._write(_body(response), offset if resumed else 0)
                return
        self._get(url, 0)

    def _write(self, chunks: Iterable[bytes], start: int) -> None:
        """Append to the partial from byte ``start``; a transport error mid-body keeps what arrived."""
        written = start
        try:
            with self.partial.open("ab" if start else "wb") as out:
                for chunk in chunks:
                    if self.stop.is_set():
                        raise CancelledError
                    out.write(chunk)
                    written += len(chunk)
                    self.transferred += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        except urllib3.exceptions.HTTPError as exc:
            raise requests.ConnectionError(f"connection lost after {written} bytes") from exc


def _range_start(response: requests.Response) -> int | None:
    match = _CONTENT_RANGE_START.match(response.headers.get("Content-Range", "").strip())
    return int(match[1]) if match else None


def _body(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: ``read1`` hands over every byte received before a dropped connection,
    which ``iter_content`` (buffering whole chunks) would throw away."""
    while chunk := response.raw.read1(_CHUNK, decode_content=True):
        yield chunk


def _problem(exc: BaseException, entry: ManifestEntry, download: ResumingDownloader, url: str) -> str:
    """One line on why a file failed; transport and disk failures stop the whole run instead."""
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        cause = exc.args[0] if exc.args else exc
        reason = str(getattr(cause, "reason", cause)).split("): ", 1)[-1]  # drop urllib3's pool prefix
        raise InputError(_unreachable_message(url, reason)) from None
    if isinstance(exc, ValueError):  # pooch's sha256 check
        if download.received is None:
            return str(exc)
        size, sha256 = download.received
        if size != entry.size:
            return f"size mismatch: expected {entry.size} bytes, got {size} (from {url})"
        return (
            f"sha256 mismatch: expected {entry.sha256}, got {sha256} (from {url}; the download was deleted)"
        )
    if isinstance(exc, FileNotFoundError | requests.RequestException):  # not there, HTTP errors
        return str(exc)
    if isinstance(exc, OSError):  # local disk trouble (full, read-only): nothing else would succeed
        raise InputError(exc.strerror or str(exc), exc.filename) from None
    raise exc


# --------------------------------------------------------------------------- the run


def _only_when_verbose(_record: logging.LogRecord) -> bool:
    """pooch logs every download and retry at INFO: noise around the one line an error is.

    A filter rather than a level: pooch's logger is outside logging's tree, so a
    level changed after its first message would not take effect.
    """
    return verbose_requested()


def _action(_path: str, action: str, _pooch: object) -> str:
    """A pooch processor that tells what happened: ``fetch`` (present), ``download`` or ``update``."""
    return action


def _fetch_all(
    store: pooch.Pooch,
    entries: list[ManifestEntry],
    report: FetchReport,
    workers: int,
    timeout: float,
    progress: bool,
) -> None:
    """Fetch the entries in parallel into ``report``; the first fatal error cancels the rest."""
    stop = threading.Event()
    downloads = {
        e.path: ResumingDownloader(store.abspath / f"{e.path}.partial", e.size, timeout, stop)
        for e in entries
    }
    bar = tqdm(total=len(entries), unit="file", desc="HiTS files", disable=not progress, leave=False)
    with bar, ThreadPoolExecutor(max_workers=max(1, min(workers, len(entries)))) as pool:
        futures: dict[Future[str], ManifestEntry] = {
            pool.submit(store.fetch, e.path, processor=_action, downloader=downloads[e.path]): e
            for e in entries
        }
        try:
            for future in as_completed(futures):
                entry = futures[future]
                _record(report, entry, future, downloads[entry.path], store.get_url(entry.path))
                bar.update()
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _record(
    report: FetchReport, entry: ManifestEntry, future: Future[str], download: ResumingDownloader, url: str
) -> None:
    """Add one finished file to the report."""
    report.bytes_downloaded += download.transferred
    if (exc := future.exception()) is not None:
        report.failed.append((entry.path, _problem(exc, entry, download, url)))
    else:
        (report.present if future.result() == "fetch" else report.downloaded).append(entry.path)


def _load_manifest(
    manifest: str | Path | Sequence[ManifestEntry] | None,
) -> tuple[list[ManifestEntry], bytes]:
    """The entries and the bytes of the manifest to leave beside the files."""
    if manifest is None or isinstance(manifest, str | Path):
        return read_manifest(manifest), (MANIFEST_PATH if manifest is None else Path(manifest)).read_bytes()
    entries = list(manifest)
    return entries, "".join(f"{e.sha256}  {e.size:>9}  {e.path}\n" for e in entries).encode()


def _make_folders(dest: Path, entries: Sequence[ManifestEntry]) -> None:
    """Every folder up front: pooch's check-then-create of a file's folder races between threads."""
    if dest.exists() and not dest.is_dir():
        raise InputError("the download destination exists and is not a folder", dest)
    try:
        for folder in {(dest / e.path).parent for e in entries} | {dest}:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the download folder: {exc.strerror}", exc.filename) from None


def _finish(report: FetchReport, manifest_bytes: bytes, strict: bool) -> FetchReport:
    """Sort the report; leave the manifest beside a complete download, or raise for the failures."""
    for items in (report.downloaded, report.present, report.failed):
        items.sort()
    if not report.failed:
        # As in the project's data folder, so a download can be re-verified later without the package.
        target, partial = report.dest / "MANIFEST.sha256", report.dest / "MANIFEST.sha256.partial"
        if not (target.is_file() and target.read_bytes() == manifest_bytes):
            partial.write_bytes(manifest_bytes)
            os.replace(partial, target)
    elif strict:
        path, problem = report.failed[0]
        if more := len(report.failed) - 1:
            problem += f" ({more} more file{'s' if more > 1 else ''} failed)"
        raise FetchError(problem, report.dest / path, report)
    return report


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
    entries, manifest_bytes = _load_manifest(manifest)
    selected = select_entries(entries, include)
    if retries < 0 or workers < 1:
        raise InputError(f"retries must be >= 0 and workers >= 1 (got {retries}, {workers})")
    base = resolve_base_url(base_url)
    root = _download_root(base)
    dest_dir = Path(dest).expanduser()
    _make_folders(dest_dir, selected)
    store = pooch.create(
        path=dest_dir,
        base_url=root,
        registry={e.path: f"sha256:{e.sha256}" for e in selected},
        urls={e.path: f"{root}/{urllib.parse.quote(e.path, safe='/')}" for e in selected},
        retry_if_failed=retries,
    )
    pooch.get_logger().addFilter(_only_when_verbose)  # adding it again is a no-op
    report = FetchReport(dest=dest_dir, base_url=base)
    _fetch_all(store, selected, report, workers, timeout, progress)
    return _finish(report, manifest_bytes, strict)
