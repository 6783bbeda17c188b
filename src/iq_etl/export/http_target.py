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
import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from iq_etl.errors import SettingsError
from iq_etl.export.body import ReadyUpload, build_body
from iq_etl.export.ledger import DELIVERED, EXCERPT_LIMIT, FAILED, RETRYING, AttemptOutcome
from iq_etl.net.deadline import Exchange, Watchdog, set_current
from iq_etl.net.redact import redact_target, scrub, target_secrets
from iq_etl.net.retry import Backoff, parse_retry_after
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
        """Delay after failed attempt number `attempt` (1-based): doubling from `backoff_base_s` up to
        `backoff_max_s`, stretched by up to `jitter` of itself at random."""
        return Backoff(self.backoff_base_s, self.backoff_max_s, (1.0, 1.0 + self.jitter)).delay(attempt, rng)

    def retry_after(self, header: str | None, now: _dt.datetime | None = None) -> float | None:
        """Seconds from a Retry-After header (delta-seconds or HTTP date), capped; None if absent/bad."""
        return parse_retry_after(header, cap=self.retry_after_cap_s, now=now)


# -- the attempt deadline ---------------------------------------------------------------------
def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "s"


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
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in (self._token, *target_secrets(url)) if s}, key=len, reverse=True)
        self._stop = stop or threading.Event()
        self._local = threading.local()
        self._sessions: list = []
        self._sessions_lock = threading.Lock()
        self._rng = random.Random()
        self._watchdog = Watchdog("iq-export-deadline")  # one thread per target, started on first use

    # -- plumbing -----------------------------------------------------------------------------
    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            from iq_etl.net.hooks import HookedAdapter  # imports requests: only once a target sends

            adapter = HookedAdapter()
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
        return scrub(text, self._secrets)[:EXCERPT_LIMIT]

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
        clock = Exchange(self.retry.deadline_s(len(body)))
        self._watchdog.watch(clock)
        set_current(clock)
        try:
            return self._post_clocked(clock, body, headers, attempt)
        finally:
            set_current(None)
            clock.finish()

    def _deadline_error(self, clock: Exchange, phase: str) -> str:
        return (f"attempt deadline of {_seconds(clock.seconds)} exceeded while {phase} "
                f"(IQ_EXPORT_TIMEOUT={_seconds(self.retry.timeout_s)}, plus 1s per MiB of request body)")

    def _post_clocked(self, clock: Exchange, body: bytes, headers: dict[str, str],
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
            error = self._deadline_error(clock, phase) if phase else _network_error(exc)
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


def _network_error(exc: BaseException) -> str:
    """The one wording of a network failure (net.errors), then the library's own text."""
    from iq_etl.net.errors import classify  # imports requests, which is loaded by now

    return f"{classify(exc)[1]} ({type(exc).__name__}: {exc})"


def _excerpt(response) -> str:
    # At most RESPONSE_READ_LIMIT bytes: a hostile server may answer with a huge (or endless) body.
    # The response is streamed, so only this much is ever read; the attempt's deadline ends a
    # body that trickles in.
    try:
        raw = response.raw.read(RESPONSE_READ_LIMIT, decode_content=True) or b""
    except Exception as exc:  # noqa: BLE001 - the excerpt is best-effort; the status code decides
        return f"<response body unreadable: {type(exc).__name__}>"
    return raw.decode("utf-8", errors="replace")
