"""Byte ranges of a local file or an HTTP(S) object, read as a stream.

HTTP reads use Range requests with a large read size, and survive dropped connections: the stream
reconnects and resumes at the byte it had reached, with a bounded number of consecutive retries
and exponential backoff. Local reads are plain buffered file reads. Neither ever loads a whole
file: callers pull `read(n)` chunks.

Every HTTP read is bounded in bytes and in time. A response never yields more than the range asked
for (nor past the object's size), whatever the server sends; one `read()` (at most READ_SIZE bytes)
must finish within a wall-clock deadline, so a server that trickles bytes forever is retried and
then reported, like one that drops connections. `preflight()` checks once, quickly and without
retries, that an archive is there, and names the cause when it is not.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse, urlsplit

import requests

from iq_etl.errors import SourceError, SourceMissing
from iq_etl.ingest.sources.car.http_stream import (
    _REDIRECTS,
    _RETRY_STATUS,
    CAR_RETRIES,
    MAX_REDIRECTS,
    READ_SIZE,
    STATS,
    THROTTLE,
    _HttpStream,
    _Retrier,
    _retry_after,
    describe_error,
    redirect_target,
    shared_session,
)
from iq_etl.ingest.sources.car.http_stream import DEFAULT_CONNECTIONS as DEFAULT_CONNECTIONS
from iq_etl.ingest.sources.car.http_stream import MAX_CONNECTIONS as MAX_CONNECTIONS
from iq_etl.ingest.sources.car.parallel import open_parallel
from iq_etl.net.redact import redact_location

log = logging.getLogger(__name__)

# The defaults of an HttpSource (the policy: http_stream.CAR_RETRIES).
DEFAULT_RETRIES = CAR_RETRIES.retries
DEFAULT_BACKOFF = CAR_RETRIES.backoff.first  # seconds, doubled per consecutive failure
DEFAULT_TIMEOUT = (10.0, 120.0)  # (connect, socket read) seconds
DEFAULT_DEADLINE = 75.0  # wall-clock seconds for one read() of at most READ_SIZE bytes (>= ~28 KB/s)
# Patience: the longest one stream (a sub-range's reads) goes without a read completing or, while
# failing, without any byte, whatever the retry count says. A host trickling 1 byte/s used to be
# retried for ~9 minutes (6 deadlines of 75 s); IQ_CAR_PATIENCE (minutes) sets it.
DEFAULT_PATIENCE = 180.0


class RangeStream(Protocol):
    offset: int  # file offset of the next byte read() returns

    def read(self, n: int = READ_SIZE) -> bytes: ...  # b"" at the end of the range or file

    def readinto(self, view: memoryview) -> int: ...  # 0 at the end of the range or file

    def close(self) -> None: ...


class ByteSource(Protocol):
    name: str

    def exists(self) -> bool: ...

    def size(self) -> int: ...

    def read_range(self, start: int, end: int) -> bytes: ...  # [start, end), shorter at end of file

    def open(self, start: int = 0, end: int | None = None) -> RangeStream: ...

    def identity(self) -> dict[str, str]: ...  # size and version marks (ETag, Last-Modified or mtime)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def open_byte_source(location: str | os.PathLike, **http_options) -> ByteSource:
    """A ByteSource for a path, file:// URL or http(s) URL (http_options go to HttpSource)."""
    text = str(location)
    if is_url(text):
        return HttpSource(text, **http_options)
    if text.startswith("file://"):
        text = unquote(urlparse(text).path)
    return LocalSource(text)


def sibling(location: str, name: str) -> str:
    """The location of file `name` in the same folder (or URL base) as `location`."""
    if is_url(location):
        base = location.split("?", 1)[0]
        return base.rsplit("/", 1)[0] + "/" + name
    return str(Path(location).with_name(name))


# --- local files ------------------------------------------------------------------------------------

class _LocalStream:
    def __init__(self, path: Path, start: int, end: int | None):
        self._f = open(path, "rb", buffering=0)
        self._f.seek(start)
        self.offset = start
        self._end = end

    def read(self, n: int = READ_SIZE) -> bytes:
        if self._end is not None:
            n = min(n, self._end - self.offset)
            if n <= 0:
                return b""
        data = self._f.read(n)
        self.offset += len(data)
        STATS.add("delivered", len(data))
        return data

    def readinto(self, view: memoryview) -> int:
        if self._end is not None:
            room = self._end - self.offset
            if room <= 0:
                return 0
            if len(view) > room:
                view = view[:room]
        got = self._f.readinto(view) or 0
        self.offset += got
        STATS.add("delivered", got)
        return got

    def close(self) -> None:
        self._f.close()


class LocalSource:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.name = str(self.path)

    def exists(self) -> bool:
        return self.path.is_file()

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            raise SourceMissing(f"{self.name}: file not found") from None

    def read_range(self, start: int, end: int) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start))
        except FileNotFoundError:
            raise SourceMissing(f"{self.name}: file not found") from None

    def identity(self) -> dict[str, str]:
        """What tells this file's version apart from a rebuilt one: size and modification time."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise SourceMissing(f"{self.name}: file not found") from None
        return {"size": str(st.st_size), "modified": str(st.st_mtime_ns)}

    def open(self, start: int = 0, end: int | None = None) -> RangeStream:
        try:
            return _LocalStream(self.path, start, end)
        except FileNotFoundError:
            raise SourceMissing(f"{self.name}: file not found") from None
        except IsADirectoryError:
            raise SourceError(f"{self.name}: is a folder, not a file") from None


# HEAD answers and small whole objects (the slot-ranges index: ~5 MB per epoch) kept per process,
# so each epoch's index is read once per process, not once per sub-range.
_HEAD_TTL = 600.0
_WHOLE_MAX = 64 << 20
_WHOLE_KEEP = 8
_CACHE_LOCK = threading.Lock()
_HEADS: dict[str, tuple[float, int | None]] = {}     # url -> (when, size; None = 404)
_WHOLE: dict[str, bytes] = {}


def _cached_whole(url: str) -> bool:
    return urlsplit(url).path.endswith("-slot-ranges.raw")


class HttpSource:
    """An HTTP(S) object read with Range requests.

    retries/backoff: consecutive failures tolerated and the first delay (doubled each time);
    timeout: (connect, socket read) seconds; deadline: wall-clock seconds one read() of at most
    READ_SIZE bytes may take, connecting included; session: a requests.Session to reuse (default:
    the process's shared pool). connections: K concurrent ranged GETs per stream (parallel.py; 1 = one
    sequential stream); stall: seconds without a byte after which a parallel connection is replaced;
    slow: seconds of transfer over which a connection far below its peers' rate (< slow_ratio of
    their median) is replaced."""

    def __init__(self, url: str, *, session: requests.Session | None = None, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF, timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 deadline: float = DEFAULT_DEADLINE, patience: float | None = DEFAULT_PATIENCE,
                 connections: int | None = None, piece: int | None = None, stall: float = 15.0,
                 slow: float = 30.0, slow_ratio: float = 0.25):
        self.url = url
        self.patience = patience
        self.name = redact_location(url)  # never log credentials or query strings (may hold tokens)
        self.session = session or shared_session()
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.deadline = deadline
        self.connections = max(1, min(int(connections or DEFAULT_CONNECTIONS), MAX_CONNECTIONS))
        self.piece = piece
        self.stall = stall
        self.slow = slow
        self.slow_ratio = slow_ratio

    def _head(self) -> requests.Response | None:
        retry = _Retrier(self.name, self.retries, self.backoff, self.patience)
        redirects = 0
        while True:
            THROTTLE.wait()
            try:
                resp = self.session.head(self.url, timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                retry.failed(f"HEAD: {describe_error(exc)}")
                continue
            if resp.status_code in _REDIRECTS and redirects < MAX_REDIRECTS:
                redirects += 1
                self.url = redirect_target(self.url, resp)
                continue
            if resp.status_code in _RETRY_STATUS:
                retry.failed(f"HEAD: HTTP {resp.status_code}", _retry_after(resp))
                continue
            if resp.status_code == 404:
                return None
            if resp.status_code >= 400:
                raise SourceError(f"{self.name}: HEAD answered HTTP {resp.status_code}")
            return resp

    def _head_size(self) -> tuple[bool, int | None]:
        """(exists, Content-Length or None), asked once per URL and process (for ten minutes)."""
        key = self.url
        with _CACHE_LOCK:
            hit = _HEADS.get(key)
        if hit is not None and time.monotonic() - hit[0] < _HEAD_TTL:
            return hit[1] != -1, (hit[1] if hit[1] not in (None, -1) else None)
        resp = self._head()
        if resp is None:
            size: int | None = -1
        else:
            length = resp.headers.get("Content-Length", "")
            size = int(length) if length.isdigit() else None
        with _CACHE_LOCK:
            _HEADS[key] = (time.monotonic(), size)
        return size != -1, (size if size != -1 else None)

    def exists(self) -> bool:
        if _cached_whole(self.url):
            with _CACHE_LOCK:
                if self.url in _WHOLE:
                    return True
        return self._head_size()[0]

    def identity(self) -> dict[str, str]:
        """What tells this object's version apart from a rebuilt one (an epoch regenerated in place,
        yellowstone-faithful #275): size, ETag and Last-Modified from one HEAD."""
        resp = self._head()
        if resp is None:
            raise SourceMissing(f"{self.name}: not found (HTTP 404)")
        return {"size": resp.headers.get("Content-Length", ""), "etag": resp.headers.get("ETag", ""),
                "modified": resp.headers.get("Last-Modified", "")}

    def size(self) -> int:
        found, length = self._head_size()
        if not found:
            raise SourceMissing(f"{self.name}: not found (HTTP 404)")
        if length is None:
            raise SourceError(f"{self.name}: server did not give a Content-Length")
        return length

    def _whole(self) -> bytes | None:
        """The whole object, fetched once per process (small indexes only); None when too large."""
        with _CACHE_LOCK:
            data = _WHOLE.get(self.url)
        if data is not None:
            return data
        size = self.size()
        if size > _WHOLE_MAX:
            return None
        stream = _HttpStream(self, 0, size)  # one GET: a few MB
        try:
            parts = []
            while chunk := stream.read(READ_SIZE):
                parts.append(chunk)
        finally:
            stream.close()
        data = b"".join(parts)
        if len(data) != size:
            raise SourceError(f"{self.name}: read {len(data)} of {size} bytes")
        with _CACHE_LOCK:
            while len(_WHOLE) >= _WHOLE_KEEP:
                _WHOLE.pop(next(iter(_WHOLE)))
            _WHOLE[self.url] = data
        return data

    def _read(self, start: int, end: int) -> bytes:
        stream = self.open(start, end)
        try:
            parts = []
            while chunk := stream.read(READ_SIZE):
                parts.append(chunk)
            return b"".join(parts)
        finally:
            stream.close()

    def read_range(self, start: int, end: int) -> bytes:
        if _cached_whole(self.url):
            whole = self._whole()
            if whole is not None:
                return whole[start:max(start, end)]
        return self._read(start, end)

    def open(self, start: int = 0, end: int | None = None) -> RangeStream:
        return open_parallel(self, start, end) or _HttpStream(self, start, end)


# --- preflight --------------------------------------------------------------------------------------

_STATUS_WORDS = {401: "authentication required", 403: "access denied", 404: "no such file",
                 410: "gone", 429: "too many requests"}


def preflight(location: str | os.PathLike, *, connect_timeout: float = 3.0, answer_timeout: float = 10.0,
              session: requests.Session | None = None, **_http_options) -> None:
    """Check once, fast and without retries, that the archive at `location` can be read; raise
    SourceError naming the location and the cause otherwise.

    Local paths and file:// URLs: the file exists, is a file, and is not empty. HTTP(S): one HEAD
    (a GET of byte 0 if the server refuses HEAD), with its own short timeouts, must answer 2xx and
    not a zero length. Other HttpSource options (retries, backoff, deadline, the normal timeout) are
    accepted and ignored, so a CarSource's `http_options` can be passed as they are.
    """
    text = str(location)
    if not is_url(text):
        path = Path(unquote(urlparse(text).path) if text.startswith("file://") else text)
        if not path.exists():
            raise SourceMissing(f"{path}: CAR archive not found: no such file")
        if not path.is_file():
            raise SourceMissing(f"{path}: CAR archive not found: a folder, not a file")
        if path.stat().st_size == 0:
            raise SourceError(f"{path}: CAR archive is empty (0 bytes)")
        return
    name = redact_location(text)
    timeout = (connect_timeout, answer_timeout)
    http = session or requests.Session()
    try:
        try:
            resp = http.head(text, timeout=timeout, allow_redirects=False)
            for _ in range(MAX_REDIRECTS):
                if resp.status_code not in _REDIRECTS:
                    break
                text = redirect_target(text, resp)
                resp = http.head(text, timeout=timeout, allow_redirects=False)
            if resp.status_code in (405, 501):  # HEAD not allowed: ask for the first byte instead
                resp = http.get(text, headers={"Range": "bytes=0-0", "Accept-Encoding": "identity"},
                                timeout=timeout, stream=True)
                resp.close()
        except requests.RequestException as exc:
            cause = describe_error(exc)
            if cause == "timed out connecting":
                cause = f"timed out connecting (no connection within {timeout[0]:g} s)"
            elif cause == "timed out waiting for the reply":
                cause = f"timed out (no answer within {timeout[1]:g} s)"
            raise SourceError(f"{name}: cannot reach the CAR archive: {cause}") from None
    finally:
        if session is None:
            http.close()
    code = resp.status_code
    if code == 404 or code == 410:
        raise SourceMissing(f"{name}: CAR archive not found: HTTP {code} ({_STATUS_WORDS[code]})")
    if code >= 400:
        words = _STATUS_WORDS.get(code) or ("server error" if code >= 500 else resp.reason or "client error")
        raise SourceError(f"{name}: CAR archive not readable: HTTP {code} ({words})")
    if code >= 300:
        raise SourceError(f"{name}: CAR archive not readable: HTTP {code} (redirect not followed)")
    if resp.headers.get("Content-Length") == "0" and code == 200:
        raise SourceError(f"{name}: CAR archive is empty (Content-Length 0)")
