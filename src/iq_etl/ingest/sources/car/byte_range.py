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

import http.client
import logging
import os
import random
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse, urlsplit, urlunsplit

import requests
import urllib3

from iq_etl.errors import SourceError, SourceMissing

log = logging.getLogger(__name__)

# 2 MiB per read: few syscalls, and a chunk small enough to stay in the CPU caches while the CAR walk
# makes its passes over it (key search, then the section walk): measured faster than 8 MiB for both
# walkers (bench/RESULTS.md, issue 15 addendum)
READ_SIZE = 2 << 20
DEFAULT_RETRIES = 6
DEFAULT_BACKOFF = 0.5  # seconds, doubled per consecutive failure
DEFAULT_TIMEOUT = (10.0, 120.0)  # (connect, socket read) seconds
DEFAULT_DEADLINE = 75.0  # wall-clock seconds for one read() of at most READ_SIZE bytes (>= ~28 KB/s)
# Patience: the longest one stream (a sub-range's reads) goes without a read completing or, while
# failing, without any byte, whatever the retry count says. A host trickling 1 byte/s used to be
# retried for ~9 minutes (6 deadlines of 75 s); IQ_CAR_PATIENCE (minutes) sets it.
DEFAULT_PATIENCE = 180.0
# Parallel ranged reads (parallel.py): K connections per stream (IQ_CAR_CONNECTIONS, `--car-connections`).
# 16 measured best at 25 MB/s per connection and 50 ms first-byte latency (bench/bench_http.py).
DEFAULT_CONNECTIONS = 16
MAX_CONNECTIONS = 64
THROTTLE_STATUS = {429, 503}  # the host asks us to slow down: every connection of the process pauses
_THROTTLE_BACKOFF_CAP = 30.0  # seconds: the longest pause without a Retry-After
_RETRY_AFTER_CAP = 600.0      # seconds: the longest Retry-After honoured (the patience decides beyond)
_PIECE = 4 << 20  # most bytes asked of one socket read (it returns what has arrived; the deadline is checked between)
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


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


def redact_location(url: str) -> str:
    """The URL safe to print: no user/password, no query string (may hold tokens), no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return url.split("?", 1)[0].rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def describe_error(exc: BaseException) -> str:
    """What went wrong with a connection, in words: "connection refused", "name not resolved (DNS)",
    "timed out connecting", ... (never the exception text, which may hold the URL)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen) or len(seen) > 20:
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None)]
        todo += [a for a in getattr(e, "args", ()) if isinstance(a, BaseException)]

    def has(*types) -> bool:
        return any(isinstance(e, types) for e in seen)

    if has(ConnectionRefusedError):
        return "connection refused"
    if has(socket.gaierror, urllib3.exceptions.NameResolutionError):
        return "name not resolved (DNS)"
    # urllib3's NewConnectionError (any failure to connect) subclasses ConnectTimeoutError
    if has(requests.exceptions.ConnectTimeout) or any(
            isinstance(e, urllib3.exceptions.ConnectTimeoutError)
            and not isinstance(e, urllib3.exceptions.NewConnectionError) for e in seen):
        return "timed out connecting"
    if has(requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError, socket.timeout):
        return "timed out waiting for data"
    if has(requests.exceptions.SSLError, urllib3.exceptions.SSLError):
        return "TLS/SSL error"
    if has(ConnectionResetError):
        return "connection reset by the server"
    if has(urllib3.exceptions.IncompleteRead, http.client.IncompleteRead, urllib3.exceptions.ProtocolError,
           ConnectionAbortedError, BrokenPipeError):
        return "connection closed mid-response"
    for e in seen:
        if isinstance(e, OSError) and e.strerror:
            return f"network error ({e.strerror.lower()})"
    return type(exc).__name__


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


# --- HTTP -------------------------------------------------------------------------------------------

class _Retrier:
    """Bounded consecutive failures with exponential backoff; progress resets the count. `patience`
    bounds the whole streak in seconds: from the last progress (or `fresh()`), a failure whose retry
    would end past it gives up, however many retries are left."""

    def __init__(self, name: str, retries: int, backoff: float, patience: float | None = None):
        self.name = name
        self.retries = retries
        self.backoff = backoff
        self.patience = patience
        self.failures = 0
        self.last_good = time.monotonic()

    def failed(self, what: str, retry_after: float | None = None) -> None:
        self.failures += 1
        if self.failures > self.retries:
            raise SourceError(f"{self.name}: {what} (gave up after {self.retries} retries)")
        delay = retry_after if retry_after is not None else self.backoff * 2 ** (self.failures - 1)
        waited = time.monotonic() - self.last_good
        if self.patience is not None and waited + delay > self.patience:
            raise SourceError(f"{self.name}: {what} (gave up after {waited:.0f} s without progress: "
                              f"IQ_CAR_PATIENCE={self.patience / 60:g} min)")
        log.warning("%s: %s; retry %d/%d in %.2fs", self.name, what, self.failures, self.retries, delay)
        time.sleep(delay)

    def progressed(self) -> None:
        self.failures = 0
        self.last_good = time.monotonic()

    def fresh(self) -> None:
        """A new read starts: outside a failure streak, its patience counts from now."""
        if self.failures == 0:
            self.last_good = time.monotonic()


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value and value.strip().isdigit():
        return min(float(value), _RETRY_AFTER_CAP)
    return None


# --- process-wide state: one connection pool, one throttle, transfer figures --------------------------

class TransferStats:
    """Figures of this process's CAR reads (shown by `car scan`, the ingest summary can read them):
    bytes handed to the walker, bytes fetched over HTTP, connections in use now and at most,
    connections replaced (stalled or slow), throttle pauses (429/503)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered = 0
        self.fetched = 0
        self.active = 0
        self.peak = 0
        self.replaced_stalled = 0
        self.replaced_slow = 0
        self.throttle_pauses = 0

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def connection(self, delta: int) -> None:
        with self.lock:
            self.active += delta
            self.peak = max(self.peak, self.active)

    def snapshot(self) -> dict:
        with self.lock:
            return {k: getattr(self, k) for k in ("delivered", "fetched", "active", "peak", "replaced_stalled",
                                                  "replaced_slow", "throttle_pauses")}

    def reset_peak(self) -> None:
        with self.lock:
            self.peak = self.active


STATS = TransferStats()


class Throttle:
    """One per process: a 429/503 from the host pauses every connection of the process until the
    same moment (its Retry-After, or a doubling backoff, plus up to 25 % jitter so the connections
    do not come back all at once)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.until = 0.0

    def hold(self, name: str, what: str, seconds: float) -> None:
        with self.lock:
            until = time.monotonic() + seconds * (1.0 + random.uniform(0.0, 0.25))
            if until <= self.until:
                return
            extended = self.until < time.monotonic()
            self.until = until
        STATS.add("throttle_pauses")
        if extended:
            log.warning("%s: %s; every connection of this process pauses %.1f s", name, what, until - time.monotonic())

    def wait(self, cancel: threading.Event | None = None) -> None:
        while True:
            left = self.until - time.monotonic()
            if left <= 0 or (cancel is not None and cancel.is_set()):
                return
            if cancel is not None:
                cancel.wait(min(left, 0.25))
            else:
                time.sleep(min(left, 0.25))


THROTTLE = Throttle()
_SESSION: tuple[int, requests.Session] | None = None
_SESSION_LOCK = threading.Lock()


def shared_session() -> requests.Session:
    """The process's one HTTP/1.1 connection pool (requests/urllib3), reused across sub-ranges and
    epochs; a forked child gets its own (sockets are never shared between processes)."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None or _SESSION[0] != os.getpid():
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=MAX_CONNECTIONS + 8,
                                                    max_retries=0, pool_block=False)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            _SESSION = (os.getpid(), session)
        return _SESSION[1]


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


_READ_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


_REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5


def redirect_target(url: str, resp: requests.Response) -> str:
    """Where a redirect answer sends `url`: followed only within the same origin (scheme, host and
    port). A CAR host that redirects elsewhere is refused in one line naming both: the archive bytes
    would come from a host nobody configured (credentials in the URL would follow them too)."""
    from urllib.parse import urljoin, urlsplit

    location = resp.headers.get("Location", "")
    resp.close()
    if not location:
        raise SourceError(f"{redact_location(url)}: HTTP {resp.status_code} redirect without a Location")
    target = urljoin(url, location)
    a, b = urlsplit(url), urlsplit(target)
    if (a.scheme, a.hostname, a.port) != (b.scheme, b.hostname, b.port):
        raise SourceError(f"{redact_location(url)}: HTTP {resp.status_code} redirects to another host "
                          f"({redact_location(target)}); refused: set IQ_CAR_URL to that host if you trust it")
    log.info("%s: HTTP %d redirects to %s (same host): followed", redact_location(url), resp.status_code,
             redact_location(target))
    return target


class _HttpStream:
    """Bytes [start, end) of an HTTP object over Range GETs.

    Bounds: a response is read up to the end of the range asked for (and of the object, and of what
    its Content-Range says it holds), never further, whatever the server sends; one read() must
    finish within `deadline` wall-clock seconds, connecting included (the socket timeout is narrowed
    to what is left). Failures: dropped connections and retryable statuses are retried with backoff
    (any bytes that arrive count as progress); a read that misses its deadline is retried too, but
    only a read that completes resets that count, so a server that trickles forever is given up on.
    """

    def __init__(self, src: "HttpSource", start: int, end: int | None, session: requests.Session | None = None):
        self._src = src
        self._session = session or src.session
        self.offset = start
        self._end = end  # exclusive; None = to the end of the object
        self._resp: requests.Response | None = None
        self._resp_end: int | None = None  # exclusive: the current response yields nothing past this
        self._retry = _Retrier(src.name, src.retries, src.backoff, src.patience)
        self._slow = _Retrier(src.name, src.retries, src.backoff, src.patience)
        self._object_size: int | None = None
        self._deadline = 0.0
        self._throttled = 0           # 429/503 answers in a row (bounded by the patience, not the retries)
        self.cancel = threading.Event()  # set by the owner (parallel reads) to end waits at once
        self._replace: str | None = None  # set by replace(): why the current connection is dropped
        self._socket_timeout = src.timeout[1]
        self.lane: Any = None         # parallel.py: the connection (Lane) measuring this stream

    def replace(self, why: str) -> None:
        """From another thread: drop the current connection (stalled, far slower than its peers, or
        the read is abandoned); the stream reconnects on a fresh one at the byte it reached."""
        self._replace = why
        resp = self._resp
        sock = getattr(getattr(getattr(resp, "raw", None), "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _remaining(self) -> float:
        return self._deadline - time.monotonic()

    def _restart_clock(self) -> None:
        self._deadline = time.monotonic() + self._src.deadline

    def _failed(self, what: str, retry_after: float | None = None) -> None:
        """A dropped connection, an early end or a retryable status: back off (the read's clock runs on)."""
        self._drop()
        if self.cancel.is_set():
            raise SourceError(f"{self._src.name}: read abandoned at byte {self.offset}")
        if self._replace is not None:  # replaced on purpose: a fresh connection now, no backoff
            why, self._replace = self._replace, None
            log.info("%s: connection replaced at byte %d (%s)", self._src.name, self.offset, why)
            return
        self._retry.failed(what, retry_after)

    def _throttle(self, status: int, retry_after: float | None) -> None:
        """429/503: every connection of the process pauses together (Retry-After, else a doubling
        backoff up to 30 s, with jitter); only the patience (IQ_CAR_PATIENCE) ends the wait."""
        self._drop()
        src = self._src
        self._throttled += 1
        delay = retry_after if retry_after is not None else min(src.backoff * 2 ** (self._throttled - 1),
                                                                _THROTTLE_BACKOFF_CAP)
        waited = time.monotonic() - self._retry.last_good
        what = f"HTTP {status} at byte {self.offset}"
        if src.patience is not None and waited + delay > src.patience:
            raise SourceError(f"{src.name}: {what} (throttled; gave up after {waited:.0f} s without progress: "
                              f"IQ_CAR_PATIENCE={src.patience / 60:g} min)")
        THROTTLE.hold(src.name, what, delay)
        THROTTLE.wait(self.cancel)
        self._restart_clock()  # a pause the host asked for is not the read being slow

    def _too_slow(self, since: int, want: int) -> None:
        """The read's deadline passed: drop the response, back off, and give the read a new clock."""
        self._drop()
        self._slow.failed(f"read deadline of {self._src.deadline:g} s passed at byte {self.offset} "
                          f"({since} of {want} bytes arrived)")
        self._restart_clock()

    def _connect(self) -> bool:
        """Open a response at self.offset. False when the range is already exhausted."""
        src = self._src
        while True:
            THROTTLE.wait(self.cancel)
            if self.cancel.is_set():
                raise SourceError(f"{src.name}: read abandoned at byte {self.offset}")
            last = "" if self._end is None else str(self._end - 1)
            left = self._remaining()
            if left <= 0:
                return True  # the caller notices the deadline
            timeout = (src.timeout[0], max(min(self._socket_timeout, left), 0.001))
            try:
                resp = self._session.get(src.url, headers={"Range": f"bytes={self.offset}-{last}",
                                                         "Accept-Encoding": "identity"},
                                       stream=True, timeout=timeout, allow_redirects=False)
            except requests.RequestException as exc:
                self._failed(f"connecting at byte {self.offset}: {describe_error(exc)}")
                continue
            if resp.status_code in _REDIRECTS:
                self._redirects = getattr(self, "_redirects", 0) + 1
                if self._redirects > MAX_REDIRECTS:
                    resp.close()
                    raise SourceError(f"{src.name}: more than {MAX_REDIRECTS} redirects")
                src.url = redirect_target(src.url, resp)
                continue
            if resp.status_code == 206:
                m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != self.offset or int(m.group(2)) < self.offset:
                    resp.close()
                    raise SourceError(f"{src.name}: server answered range at byte {self.offset} with "
                                      f"Content-Range {resp.headers.get('Content-Range')!r}")
                if m.group(3) != "*":
                    self._object_size = int(m.group(3))
                self._resp_end = int(m.group(2)) + 1
            elif resp.status_code == 200:
                if self.offset != 0:
                    resp.close()
                    raise SourceError(f"{src.name}: server ignores Range requests (asked for byte "
                                      f"{self.offset}, got the whole object)")
                length = resp.headers.get("Content-Length", "")
                if length.isdigit():
                    self._object_size = int(length)
                self._resp_end = self._object_size
            elif resp.status_code == 416:
                resp.close()
                return False  # offset is at or past the end of the object
            elif resp.status_code == 404:
                resp.close()
                raise SourceMissing(f"{src.name}: not found (HTTP 404)")
            elif resp.status_code in THROTTLE_STATUS:
                resp.close()
                self._throttle(resp.status_code, _retry_after(resp))
                continue
            elif resp.status_code in _RETRY_STATUS:
                resp.close()
                self._failed(f"HTTP {resp.status_code} at byte {self.offset}", _retry_after(resp))
                continue
            else:
                resp.close()
                raise SourceError(f"{src.name}: HTTP {resp.status_code} at byte {self.offset}")
            if self._end is not None and (self._resp_end is None or self._resp_end > self._end):
                self._resp_end = self._end
            if self._object_size is not None and (self._resp_end is None or self._resp_end > self._object_size):
                self._resp_end = self._object_size
            self._resp = resp
            return True

    def _done(self) -> bool:
        """At the end of the range (or of the object) once a response ended cleanly here."""
        if self._end is not None and self.offset >= self._end:
            return True
        if self._object_size is not None:
            return self.offset >= self._object_size
        return self._end is None  # an object of unknown size ends where its response does

    def _pull(self, want: int, sink) -> int:
        """Pass up to `want` bytes to `sink`, piece by piece; fewer only at the end of the range."""
        self._restart_clock()
        self._retry.fresh()
        self._slow.fresh()
        got = 0
        since = 0  # bytes since the clock started (for the deadline message)
        while got < want:
            if self._resp is None:
                if not self._connect():
                    break
                if self._resp is None:  # the deadline passed while connecting
                    self._too_slow(since, want - got + since)
                    since = 0
                    continue
            resp_end = self._resp_end
            if resp_end is not None and self.offset >= resp_end:
                self._drop()  # this response holds no more of what was asked
                if self._done():
                    break
                continue  # the server answered with a shorter range than asked: ask for the rest
            limit = min(want - got, _PIECE)
            if resp_end is not None:
                limit = min(limit, resp_end - self.offset)
            left = self._remaining()
            if left <= 0:
                self._too_slow(since, want - got + since)
                since = 0
                continue
            narrowed = self._narrow_socket_timeout(left)
            try:
                data = self._resp.raw.read1(limit, decode_content=False)
            except _READ_ERRORS as exc:
                cause = describe_error(exc)
                if self._replace is not None or self.cancel.is_set():
                    self._failed(cause)
                elif self._remaining() <= 0 or (narrowed and cause.startswith("timed out")):
                    self._too_slow(since, want - got + since)
                    since = 0
                elif cause.startswith("timed out") and self._socket_timeout < self._src.timeout[1]:
                    STATS.add("replaced_stalled")  # parallel reads: no byte for `stall` seconds
                    self._failed(f"no data for {self._socket_timeout:g} s at byte {self.offset}: "
                                 f"connection replaced")
                else:
                    self._failed(f"connection dropped at byte {self.offset}: {cause}")
                continue
            if data:
                if len(data) > limit:  # never more than asked, even from a misbehaving library
                    data = data[:limit]
                sink(data)
                self.offset += len(data)
                got += len(data)
                since += len(data)
                self._retry.progressed()
                self._throttled = 0
                if self.lane is not None:
                    self.lane.arrived(len(data))
                continue
            # Clean end of this response: either the range is done, or the server stopped short.
            self._drop()
            if self._done():
                break
            self._failed(f"response ended early at byte {self.offset}")
        self._slow.progressed()
        if got:
            STATS.add("fetched", got)
        return got

    def _narrow_socket_timeout(self, left: float) -> bool:
        """Wait on the socket no longer than the read's deadline allows; True when that is shorter
        than the normal read timeout."""
        read_timeout = self._socket_timeout
        sock = getattr(getattr(self._resp.raw, "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.settimeout(max(min(read_timeout, left), 0.001))
            except OSError:
                return False
        return sock is not None and left < read_timeout

    def _want(self, n: int) -> int:
        if self._end is not None:
            n = min(n, self._end - self.offset)
        return min(n, READ_SIZE)

    def read(self, n: int = READ_SIZE) -> bytes:
        n = self._want(n)
        if n <= 0:
            return b""
        parts: list[bytes] = []
        got = self._pull(n, parts.append)
        if self.lane is None:
            STATS.add("delivered", got)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, view: memoryview) -> int:
        n = self._want(len(view))
        if n <= 0:
            return 0
        pos = 0

        def sink(data: bytes) -> None:
            nonlocal pos
            view[pos:pos + len(data)] = data
            pos += len(data)

        got = self._pull(n, sink)
        if self.lane is None:
            STATS.add("delivered", got)
        return got

    def _drop(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        self._resp_end = None

    def close(self) -> None:
        self._drop()


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
        from iq_etl.ingest.sources.car.parallel import open_parallel

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
            elif cause == "timed out waiting for data":
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
