"""The reader backend client: POST one upload's body, retrying what may succeed later.

Transient (retried within the run, with exponential backoff and jitter): connection errors,
timeouts, an attempt past its deadline, HTTP 5xx and 429 (its Retry-After is honoured, capped).
Permanent (not retried within the run): any other 4xx (401/403 name the settings to check), a
redirect, an invalid request. The bearer token never leaves this module: it is not in the recorded
target, in response excerpts or in error texts (they are scrubbed).

Hostile or broken backends cannot stall a run: every attempt has a wall-clock deadline (see
`RetryPolicy.deadline_s`) covering connect, sending, the response headers and the body. A
per-read timeout alone never fires while a server trickles one byte at a time, so a watchdog
thread shuts the attempt's socket down when its deadline passes, which ends any blocked read or
write at once. Of the response body at most `RESPONSE_READ_LIMIT` bytes are read (only an excerpt
is kept); the connection is then closed, however much more the server wants to send.
"""
from __future__ import annotations

import datetime as _dt
import email.utils
import functools
import heapq
import itertools
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from iq_etl.errors import SettingsError
from iq_etl.export.body import ReadyUpload, build_body
from iq_etl.export.ledger import DELIVERED, EXCERPT_LIMIT, FAILED, RETRYING, AttemptOutcome
from iq_etl.settings import ExportLimits

log = logging.getLogger(__name__)


class _NoHeaderParsingTraceback(logging.Filter):
    """urllib3 logs a WARNING with a full traceback for every answer whose headers it cannot parse
    (a slow-loris backend produces one per attempt). The attempt's outcome already names the failure
    in one line (ledger, summary, log): keep the warning's first line, drop the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Failed to parse headers"):
            record.exc_info, record.exc_text = None, None
        return True


logging.getLogger("urllib3.connection").addFilter(_NoHeaderParsingTraceback())

USER_AGENT = "iq-etl/0.1 (+export)"
# Of a response body only an excerpt is kept: read at most this much (UTF-8 is up to 4 bytes a
# character), then close the connection.
RESPONSE_READ_LIMIT = EXCERPT_LIMIT * 4
# The attempt deadline grows by one second per this many bytes of request body, so that a large
# upload over a slow link is not cut by a deadline sized for the answer.
UPLOAD_ALLOWANCE_BYTES_PER_S = 1024 * 1024
_SECRET_QUERY_KEYS = ("token", "key", "secret", "password", "passwd", "auth", "signature", "sig")


def redact_target(url: str) -> str:
    """The target as recorded in iq.exports: no user/password, secret-looking query values masked."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    query = "&".join(
        f"{k}=***" if any(s in k.lower() for s in _SECRET_QUERY_KEYS) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_LIMITS = ExportLimits()   # the defaults' one home: iq_etl.settings


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried within one run."""

    max_attempts: int = _LIMITS.max_attempts
    backoff_base_s: float = _LIMITS.backoff_s     # delay before attempt 2; doubles after each attempt
    backoff_max_s: float = 30.0
    jitter: float = 0.25            # each delay is stretched by up to this fraction, at random
    retry_after_cap_s: float = _LIMITS.retry_after_cap_s  # a server's Retry-After is honoured up to this
    connect_timeout_s: float = 10.0
    timeout_s: float = _LIMITS.timeout_s         # IQ_EXPORT_TIMEOUT: wall-clock deadline of one attempt (see deadline_s)
    # IQ_EXPORT_UPLOAD_BUDGET: wall-clock seconds one upload may take, its attempts and waits together;
    # a retry whose wait would end past it is not made (a 429 storm with a long Retry-After cost 241 s
    # per upload: 4 waits of the 60 s cap).
    upload_budget_s: float = _LIMITS.upload_budget_s

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise SettingsError(f"export max attempts must be at least 1, got {self.max_attempts}")

    def deadline_s(self, body_bytes: int = 0) -> float:
        """Wall-clock limit of one attempt (connect, send, response headers and body): `timeout_s`,
        plus one second per MiB of request body."""
        return self.timeout_s + body_bytes / UPLOAD_ALLOWANCE_BYTES_PER_S

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Delay after failed attempt number `attempt` (1-based)."""
        base = min(self.backoff_max_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return base * (1.0 + self.jitter * (rng or random).random())

    def retry_after(self, header: str | None, now: _dt.datetime | None = None) -> float | None:
        """Seconds from a Retry-After header (delta-seconds or HTTP date), capped; None if absent/bad."""
        if not header:
            return None
        header = header.strip()
        try:
            seconds = float(header)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                return None
            if when is None:
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=_dt.timezone.utc)
            seconds = (when - (now or _dt.datetime.now(_dt.timezone.utc))).total_seconds()
        return max(0.0, min(self.retry_after_cap_s, seconds))


# -- the attempt deadline ---------------------------------------------------------------------
def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


class _AttemptClock:
    """The deadline of one attempt and the socket it uses. `expire()` (the watchdog's thread)
    shuts that socket down; the attempt's thread then sees its read or write end and asks
    `finish()` whether the deadline was the cause."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expires_at = time.monotonic() + seconds
        self.done = False
        self._lock = threading.Lock()
        self._conn: Any = None
        # The socket itself is kept too: http.client drops it from the connection when the answer
        # says "Connection: close", while the response body is still read from it.
        self._sock: Any = None
        self._phase = "connecting"
        self._expired_in: str | None = None

    def attach(self, conn: Any, phase: str) -> None:
        """Called by the attempt's thread as the connection moves on to `phase`."""
        sock = getattr(conn, "sock", None)
        with self._lock:
            if self.done:
                return
            self._conn, self._phase = conn, phase
            if sock is not None:
                self._sock = sock
            expired = self._expired_in is not None
        if expired:  # the deadline passed while no socket was known (e.g. during connect)
            _shutdown(sock)

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self._phase = phase

    def expire(self) -> None:
        with self._lock:
            if self.done or self._expired_in is not None:
                return
            self._expired_in = self._phase
            sock = self._sock if self._sock is not None else getattr(self._conn, "sock", None)
        _shutdown(sock)

    def finish(self) -> str | None:
        """End the attempt's watch; the phase the deadline passed in, or None if it did not."""
        with self._lock:
            self.done = True
            self._conn = self._sock = None
            return self._expired_in


def _shutdown(sock: Any) -> None:
    if sock is None:
        return
    try:
        # The plain socket's shutdown, also for an SSLSocket (whose own shutdown() would drop its
        # TLS state under the thread reading from it): the kernel ends blocked reads and writes.
        # A socket already closed has no descriptor any more (never another socket's).
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, ValueError, TypeError):
        pass


class _Watchdog:
    """One thread per target that expires attempts past their deadline (a timer thread per
    attempt would cost more than a fast backend's whole answer). Started on first use."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _AttemptClock]] = []
        self._seq = itertools.count()
        self._compact_at = 256
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, clock: _AttemptClock) -> None:
        with self._cond:
            heap = self._heap
            if len(heap) >= self._compact_at:  # finished attempts are dropped lazily; bound the heap
                heap[:] = [entry for entry in heap if not entry[2].done]
                heapq.heapify(heap)
                self._compact_at = max(256, 2 * len(heap))
            heapq.heappush(heap, (clock.expires_at, next(self._seq), clock))
            if self._thread is None or not self._thread.is_alive():
                self._closed = False
                self._thread = threading.Thread(target=self._run, name="iq-export-deadline", daemon=True)
                self._thread.start()
            elif heap[0][2] is clock:
                self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    heap = self._heap
                    while heap and heap[0][2].done:
                        heapq.heappop(heap)
                    if not heap:
                        self._cond.wait()
                        continue
                    delay = heap[0][0] - time.monotonic()
                    if delay <= 0:
                        clock = heapq.heappop(heap)[2]
                        break
                    self._cond.wait(delay)
            clock.expire()


# The attempt running on this thread, if any (each sending thread has its own session).
_active = threading.local()


def _attach(conn: Any, phase: str) -> None:
    clock = getattr(_active, "clock", None)
    if clock is not None:
        clock.attach(conn, phase)


class _ClockedConnection:
    """Mixed into urllib3's connection classes: tells the running attempt's clock which
    connection (socket) to shut down when the deadline passes, and what it is doing."""

    def connect(self) -> None:
        _attach(self, "connecting")
        super().connect()  # type: ignore[misc]
        _attach(self, "sending the request")

    def send(self, data: Any) -> None:
        _attach(self, "sending the request")
        super().send(data)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _attach(self, "waiting for the response headers")
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


@functools.lru_cache(maxsize=None)
def _clocked_adapter_class() -> type:
    """A requests adapter whose connections report to the attempt clock (built on first use:
    requests is imported lazily). Through a SOCKS proxy the plain connections are used, and only
    the per-operation timeouts apply."""
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class _HTTPConnection(_ClockedConnection, HTTPConnection):
        pass

    class _HTTPSConnection(_ClockedConnection, HTTPSConnection):
        pass

    class _HTTPPool(HTTPConnectionPool):
        ConnectionCls = _HTTPConnection

    class _HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = _HTTPSConnection

    pools = {"http": _HTTPPool, "https": _HTTPSPool}

    class _ClockedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = dict(pools)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            manager = super().proxy_manager_for(proxy, **proxy_kwargs)
            if not proxy.lower().startswith("socks"):
                manager.pool_classes_by_scheme = dict(pools)
            return manager

    return _ClockedAdapter


def _auth_hint(token_sent: bool, token_withheld: bool) -> str:
    """What to check after a 401/403 (names settings, never the token)."""
    if token_sent:
        return "the backend refused the token; set IQ_READER_TOKEN (and check IQ_READER_ENDPOINT_PATH)"
    if token_withheld:
        return ("no token was sent: IQ_READER_TOKEN goes only to the reader backend's origin "
                "(IQ_READER_BASE_URL), and this target is elsewhere")
    return "no token was sent; set IQ_READER_TOKEN (and check IQ_READER_ENDPOINT_PATH)"


class HttpTarget:
    """POSTs uploads to one reader backend URL. Safe to use from several threads at once
    (each thread gets its own `requests.Session`). `token_withheld`: a token is configured but
    not for this target's origin (only changes the hint after a 401/403)."""

    def __init__(self, url: str, token: str | None = None, retry: RetryPolicy | None = None,
                 stop: threading.Event | None = None, *, token_withheld: bool = False):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"export target {redact_target(url)!r} is not an http(s):// URL")
        self.url = url
        self.target_id = redact_target(url)
        self.retry = retry or RetryPolicy()
        self._token = token or None
        self._token_withheld = token_withheld and not self._token
        query_secrets = [v for k, _, v in (item.partition("=") for item in parts.query.split("&"))
                         if v and any(s in k.lower() for s in _SECRET_QUERY_KEYS)]
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in (self._token, parts.password, *query_secrets) if s}, key=len, reverse=True)
        self._stop = stop or threading.Event()
        self._local = threading.local()
        self._sessions: list = []
        self._sessions_lock = threading.Lock()
        self._rng = random.Random()
        self._watchdog = _Watchdog()

    # -- plumbing -----------------------------------------------------------------------------
    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            adapter = _clocked_adapter_class()()
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._watchdog.close()

    def scrub(self, text: str) -> str:
        """`text` without any secret of this target, cut to the ledger's excerpt length."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:EXCERPT_LIMIT]

    # -- delivering ---------------------------------------------------------------------------
    def deliver(self, upload: ReadyUpload, report: Callable[[int, AttemptOutcome], None]) -> AttemptOutcome:
        """Send `upload` until it is delivered, fails permanently or attempts run out. Every
        attempt is passed to `report(attempt_number, outcome)`; the last outcome is returned."""
        body = json.dumps(build_body(upload), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "Idempotency-Key": upload.idempotency_key}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            outcome, transient, wait_s = self._post_once(body, headers, attempt)
            spent = time.monotonic() - started
            over_budget = spent + wait_s > self.retry.upload_budget_s
            if transient and attempt < self.retry.max_attempts and not self._stop.is_set() and not over_budget:
                report(attempt, AttemptOutcome(RETRYING, outcome.http_status, outcome.response_excerpt, outcome.error))
                log.info("export %s: attempt %d to %s failed (%s), retrying in %.2fs", upload.upload_key, attempt,
                         self.target_id, outcome.error or outcome.http_status, wait_s)
                if self._stop.wait(wait_s):
                    stopped = AttemptOutcome(FAILED, None, "", "export interrupted before the next attempt")
                    report(attempt + 1, stopped)
                    return stopped
                continue
            if transient:
                reason = "export interrupted" if self._stop.is_set() else (
                    f"gave up after {attempt} attempt(s) and {spent:.0f} s: the next wait of {wait_s:.0f} s would pass "
                    f"IQ_EXPORT_UPLOAD_BUDGET={self.retry.upload_budget_s:g} s"
                    if over_budget and attempt < self.retry.max_attempts else f"gave up after {attempt} attempt(s)")
                outcome = AttemptOutcome(FAILED, outcome.http_status, outcome.response_excerpt,
                                         self.scrub(f"{outcome.error}; {reason}"))
            report(attempt, outcome)
            return outcome

    def _post_once(self, body: bytes, headers: dict[str, str], attempt: int) -> tuple[AttemptOutcome, bool, float]:
        """One POST within its deadline: (outcome, transient?, seconds to wait before the next attempt)."""
        clock = _AttemptClock(self.retry.deadline_s(len(body)))
        self._watchdog.watch(clock)
        _active.clock = clock
        try:
            return self._post_clocked(clock, body, headers, attempt)
        finally:
            _active.clock = None
            clock.finish()

    def _deadline_error(self, clock: _AttemptClock, phase: str) -> str:
        return (f"attempt deadline of {_seconds(clock.seconds)} exceeded while {phase} "
                f"(IQ_EXPORT_TIMEOUT={_seconds(self.retry.timeout_s)}, plus 1s per MiB of request body)")

    def _post_clocked(self, clock: _AttemptClock, body: bytes, headers: dict[str, str],
                      attempt: int) -> tuple[AttemptOutcome, bool, float]:
        import requests

        # The deadline ends a stalled read (the watchdog); the read timeout, a little longer, is
        # only the backstop where the watchdog cannot reach the socket (a SOCKS proxy).
        try:
            response = self._session().post(
                self.url, data=body, headers=headers, allow_redirects=False, stream=True,
                timeout=(min(self.retry.connect_timeout_s, clock.seconds), clock.seconds + 1.0),
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            phase = clock.finish()
            error = self._deadline_error(clock, phase) if phase else f"{type(exc).__name__}: {exc}"
            return AttemptOutcome(FAILED, None, "", self.scrub(error)), True, self.retry.backoff(attempt, self._rng)
        except requests.RequestException as exc:
            phase = clock.finish()
            if phase:
                error = self._deadline_error(clock, phase)
                return AttemptOutcome(FAILED, None, "", self.scrub(error)), True, self.retry.backoff(attempt, self._rng)
            error = self.scrub(f"{type(exc).__name__}: {exc}")
            return AttemptOutcome(FAILED, None, "", error), False, 0.0
        status = response.status_code
        clock.set_phase("reading the response body")
        try:
            excerpt = self.scrub(_excerpt(response))
        finally:
            response.close()
        phase = clock.finish()
        if phase:
            # No complete answer in time, whatever its status said: the next attempt carries the
            # same Idempotency-Key, so a backend that did store it answers as for the first.
            return (AttemptOutcome(FAILED, status, excerpt, self.scrub(self._deadline_error(clock, phase))), True,
                    self.retry.backoff(attempt, self._rng))
        reason = f"HTTP {status} {response.reason or ''}".strip()
        if 200 <= status < 300:
            return AttemptOutcome(DELIVERED, status, excerpt, ""), False, 0.0
        if status == 429 or status >= 500:
            wait_s = self.retry.retry_after(response.headers.get("Retry-After"))
            if wait_s is None:
                wait_s = self.retry.backoff(attempt, self._rng)
            return AttemptOutcome(FAILED, status, excerpt, self.scrub(reason)), True, wait_s
        if status in (401, 403):
            reason = f"{reason}: {_auth_hint(bool(self._token), self._token_withheld)}"
        return AttemptOutcome(FAILED, status, excerpt, self.scrub(reason)), False, 0.0


def _excerpt(response) -> str:
    # At most RESPONSE_READ_LIMIT bytes: a hostile server may answer with a huge (or endless) body.
    # The response is streamed, so only this much is ever read; the attempt's deadline ends a
    # body that trickles in.
    try:
        raw = response.raw.read(RESPONSE_READ_LIMIT, decode_content=True) or b""
    except Exception as exc:  # noqa: BLE001 - the excerpt is best-effort; the status code decides
        return f"<response body unreadable: {type(exc).__name__}>"
    return raw.decode("utf-8", errors="replace")
