"""The reader backend client: POST one upload's body, retrying what may succeed later.

Transient (retried within the run, with exponential backoff and jitter): connection errors,
timeouts, HTTP 5xx and 429 (its Retry-After is honoured, capped). Permanent (not retried within the
run): any other 4xx, a redirect, an invalid request. The bearer token never leaves this module:
it is not in the recorded target, in response excerpts or in error texts (they are scrubbed).
"""
from __future__ import annotations

import datetime as _dt
import email.utils
import json
import logging
import random
import threading
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

from iq_etl.errors import SettingsError

from iq_etl.export.body import ReadyUpload, build_body
from iq_etl.export.ledger import DELIVERED, EXCERPT_LIMIT, FAILED, RETRYING, AttemptOutcome

log = logging.getLogger(__name__)

USER_AGENT = "iq-etl/0.1 (+export)"
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


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried within one run."""

    max_attempts: int = 5
    backoff_base_s: float = 0.5     # delay before attempt 2; doubles after each attempt
    backoff_max_s: float = 30.0
    jitter: float = 0.25            # each delay is stretched by up to this fraction, at random
    retry_after_cap_s: float = 60.0  # a server's Retry-After is honoured up to this
    connect_timeout_s: float = 10.0
    timeout_s: float = 60.0         # read timeout of one attempt

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise SettingsError(f"export max attempts must be at least 1, got {self.max_attempts}")

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


class HttpTarget:
    """POSTs uploads to one reader backend URL. Safe to use from several threads at once
    (each thread gets its own `requests.Session`)."""

    def __init__(self, url: str, token: str | None = None, retry: RetryPolicy | None = None,
                 stop: threading.Event | None = None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(f"export target {redact_target(url)!r} is not an http(s):// URL")
        self.url = url
        self.target_id = redact_target(url)
        self.retry = retry or RetryPolicy()
        self._token = token or None
        query_secrets = [v for k, _, v in (item.partition("=") for item in parts.query.split("&"))
                         if v and any(s in k.lower() for s in _SECRET_QUERY_KEYS)]
        # Longest first, so a secret containing another is masked whole.
        self._secrets = sorted({s for s in (self._token, parts.password, *query_secrets) if s}, key=len, reverse=True)
        self._stop = stop or threading.Event()
        self._local = threading.local()
        self._sessions: list = []
        self._sessions_lock = threading.Lock()
        self._rng = random.Random()

    # -- plumbing -----------------------------------------------------------------------------
    def _session(self):
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

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
        while True:
            attempt += 1
            outcome, transient, wait_s = self._post_once(body, headers, attempt)
            if transient and attempt < self.retry.max_attempts and not self._stop.is_set():
                report(attempt, AttemptOutcome(RETRYING, outcome.http_status, outcome.response_excerpt, outcome.error))
                log.info("export %s: attempt %d to %s failed (%s), retrying in %.2fs", upload.upload_key, attempt,
                         self.target_id, outcome.error or outcome.http_status, wait_s)
                if self._stop.wait(wait_s):
                    stopped = AttemptOutcome(FAILED, None, "", "export interrupted before the next attempt")
                    report(attempt + 1, stopped)
                    return stopped
                continue
            if transient:
                reason = "export interrupted" if self._stop.is_set() else f"gave up after {attempt} attempt(s)"
                outcome = AttemptOutcome(FAILED, outcome.http_status, outcome.response_excerpt,
                                         self.scrub(f"{outcome.error}; {reason}"))
            report(attempt, outcome)
            return outcome

    def _post_once(self, body: bytes, headers: dict[str, str], attempt: int) -> tuple[AttemptOutcome, bool, float]:
        """One POST: (outcome, transient?, seconds to wait before the next attempt)."""
        import requests

        try:
            response = self._session().post(
                self.url, data=body, headers=headers, allow_redirects=False, stream=True,
                timeout=(self.retry.connect_timeout_s, self.retry.timeout_s),
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            error = self.scrub(f"{type(exc).__name__}: {exc}")
            return AttemptOutcome(FAILED, None, "", error), True, self.retry.backoff(attempt, self._rng)
        except requests.RequestException as exc:
            error = self.scrub(f"{type(exc).__name__}: {exc}")
            return AttemptOutcome(FAILED, None, "", error), False, 0.0
        status = response.status_code
        excerpt = self.scrub(_excerpt(response))
        response.close()
        if 200 <= status < 300:
            return AttemptOutcome(DELIVERED, status, excerpt, ""), False, 0.0
        if status == 429 or status >= 500:
            wait_s = self.retry.retry_after(response.headers.get("Retry-After"))
            if wait_s is None:
                wait_s = self.retry.backoff(attempt, self._rng)
            return AttemptOutcome(FAILED, status, excerpt, f"HTTP {status} {response.reason or ''}".strip()), True, wait_s
        return AttemptOutcome(FAILED, status, excerpt, f"HTTP {status} {response.reason or ''}".strip()), False, 0.0


def _excerpt(response) -> str:
    # Read at most a little more than is kept; a hostile server may answer with a huge body.
    # The response is streamed, so only this much is ever read.
    try:
        raw = response.raw.read(EXCERPT_LIMIT * 4, decode_content=True) or b""
    except Exception as exc:  # noqa: BLE001 - the excerpt is best-effort; the status code decides
        return f"<response body unreadable: {type(exc).__name__}>"
    return raw.decode("utf-8", errors="replace")
