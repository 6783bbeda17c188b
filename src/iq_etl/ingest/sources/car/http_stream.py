"""One HTTP object read as a stream of byte ranges, and what every such stream of the process shares.

`_HttpStream` reads bytes [start, end) over Range GETs, bounded in bytes and in time (see its
docstring); byte_range.HttpSource opens one per read, and parallel.py runs K of them as lanes. The
process-wide pieces live here too: the connection pool, the 429/503 throttle, the transfer figures.
This module sits below both byte_range.py and parallel.py, so neither imports the other back.

The CAR reader's retry policy (`CAR_RETRIES`): 6 consecutive failures tolerated (7 attempts), the
first retry after 0.5 s, doubling, no jitter (one stream retries alone); a server's Retry-After
honoured up to 600 s; whatever the count says, the patience (IQ_CAR_PATIENCE) bounds a streak. A
429/503 pauses every connection of the process together (Retry-After, else the backoff capped at
30 s, stretched by up to a quarter so they do not come back at once)."""
from __future__ import annotations

import http.client
import logging
import os
import random
import re
import threading
import time
from typing import Any, Protocol

import requests
import urllib3

from iq_etl.errors import SourceError, SourceMissing
from iq_etl.net.deadline import shutdown_socket
from iq_etl.net.errors import classify
from iq_etl.net.redact import redact_location
from iq_etl.net.retry import Backoff, Retries, parse_retry_after

log = logging.getLogger(__name__)

# 2 MiB per read: few syscalls, and a chunk small enough to stay in the CPU caches while the CAR walk
# makes its passes over it (key search, then the section walk): measured faster than 8 MiB for both
# walkers (bench/RESULTS.md, issue 15 addendum)
READ_SIZE = 2 << 20
CAR_RETRIES = Retries(retries=6, backoff=Backoff(0.5), retry_after_cap=600.0)
# Parallel ranged reads (parallel.py): K connections per stream (IQ_CAR_CONNECTIONS, `--car-connections`).
# 16 measured best at 25 MB/s per connection and 50 ms first-byte latency (bench/bench_http.py).
DEFAULT_CONNECTIONS = 16
MAX_CONNECTIONS = 64
THROTTLE_STATUS = {429, 503}  # the host asks us to slow down: every connection of the process pauses
_THROTTLE_BACKOFF_CAP = 30.0  # seconds: the longest pause without a Retry-After
_PIECE = 4 << 20  # most bytes asked of one socket read (it returns what has arrived; the deadline is checked between)
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HttpObject(Protocol):
    """What a stream reads from: byte_range.HttpSource (parallel.py knows it by that name)."""

    url: str        # where the bytes are; a same-origin redirect moves it
    name: str       # the URL safe to print
    session: requests.Session
    retries: int
    backoff: float
    timeout: tuple[float, float]
    deadline: float
    patience: float | None
    connections: int
    piece: int | None
    stall: float
    slow: float
    slow_ratio: float

    def size(self) -> int: ...


def describe_error(exc: BaseException) -> str:
    """What went wrong with a connection, in the network layer's words (never the exception text,
    which may hold the URL)."""
    return classify(exc)[1]


class _Retrier:
    """Bounded consecutive failures with exponential backoff; progress resets the count. `patience`
    bounds the whole streak in seconds: from the last progress (or `fresh()`), a failure whose retry
    would end past it gives up, however many retries are left."""

    def __init__(self, name: str, retries: int, backoff: float, patience: float | None = None):
        self.name = name
        self.retries = retries
        self.backoff = backoff
        self._delays = Backoff(backoff, CAR_RETRIES.backoff.cap, CAR_RETRIES.backoff.spread)
        self.patience = patience
        self.failures = 0
        self.last_good = time.monotonic()

    def failed(self, what: str, retry_after: float | None = None) -> None:
        self.failures += 1
        if self.failures > self.retries:
            raise SourceError(f"{self.name}: {what} (gave up after {self.retries} retries)")
        delay = retry_after if retry_after is not None else self._delays.delay(self.failures)
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
    """The server's Retry-After (seconds or an HTTP date), up to CAR_RETRIES.retry_after_cap (the
    patience decides beyond)."""
    return parse_retry_after(resp.headers.get("Retry-After"), cap=CAR_RETRIES.retry_after_cap)


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

    def __init__(self, src: HttpObject, start: int, end: int | None, session: requests.Session | None = None):
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
        shutdown_socket(sock)

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
        delay = retry_after if retry_after is not None else \
            Backoff(src.backoff, _THROTTLE_BACKOFF_CAP).delay(self._throttled)
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
            # The wait for the answer is cut to what is left of the read's deadline (`narrowed`).
            narrowed = left < self._socket_timeout
            timeout = (src.timeout[0], max(min(self._socket_timeout, left), 0.001))
            try:
                resp = self._session.get(src.url, headers={"Range": f"bytes={self.offset}-{last}",
                                                         "Accept-Encoding": "identity"},
                                       stream=True, timeout=timeout, allow_redirects=False)
            except requests.RequestException as exc:
                if self._remaining() <= 0 or (narrowed and isinstance(exc, requests.ReadTimeout)):
                    # The deadline cut the wait, not the host: the caller counts a deadline (as _pull
                    # does for a narrowed read), never a used-up retry.
                    return True
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
        sock = getattr(getattr(getattr(self._resp, "raw", None), "connection", None), "sock", None)
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
