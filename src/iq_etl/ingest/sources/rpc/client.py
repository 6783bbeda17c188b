"""Solana JSON-RPC client: rate limited, concurrent, retrying, batching, never leaking credentials.

Defaults fit the public endpoint `api.mainnet-beta.solana.com`, whose published per-IP limits are
100 requests per 10 s overall, 40 requests per 10 s for any single method, 40 concurrent
connections and 100 MB per 30 s (solana.com/docs/references/clusters). A token bucket of rate r
and capacity 1 lets through at most 1 + 10·r requests in any 10 s, so:
- DEFAULT_RPS = 9 overall      -> at most 91 per 10 s (limit 100),
- DEFAULT_METHOD_RPS = 3.5     -> at most 36 per 10 s per method (limit 40); a scan uses mostly one
                                  method (getBlock, getTransaction or getSignaturesForAddress), so
                                  this is the limit that binds on the public endpoint,
- DEFAULT_CONCURRENCY = 4 requests in flight (the official IQ readers use 5; 40 is the cap).
Each item of a JSON-RPC batch takes one token from both buckets (conservative: providers count
batch items as requests). The budget is shared by every client of the process with the same URL and
settings (the ingest stage opens one client per sub-range, in threads). Full mainnet blocks can
exceed the 100 MB / 30 s data limit; the server's 429s then slow the scan down. Private providers
allow far more: raise `rps` / `method_rps` (0 or None = unlimited) and `concurrency`.

Failures: HTTP 429 (and JSON-RPC 429/-32429) pause every worker of the URL for `Retry-After`
(capped by `max_retry_after`); a batch refused twice is sent one call at a time. 5xx, timeouts,
dropped connections, unparseable bodies and the RPC codes -32004 (block not available), -32014
(block status not yet available) and -32005 (node behind) are retried with exponential backoff and
jitter, up to `max_retries` times. -32007 / -32009 (slot skipped, or missing) become a `SkippedSlot`
result at once, never retried (the dense source double-checks them with getBlocks). A server that
refuses batches gets single calls from then on. Any other error raises `RpcError` naming the
method, the params and the server's message. The URL's credentials (userinfo, query values,
token-like path segments) never appear in messages or logs, the HTTP library's included.
"""
from __future__ import annotations

import itertools
import json
import logging
import random
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Iterator, Sequence
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.limits import RpcStats, _limits_for
from iq_etl.ingest.sources.rpc.redact import _SCRUB, _secrets_of, redact_url
from iq_etl.settings import DEFAULT_RPC_URL, Settings

log = logging.getLogger(__name__)

DEFAULT_RPS = 9.0
DEFAULT_METHOD_RPS = 3.5
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT = 60.0          # a full mainnet getBlock can take tens of seconds to produce
DEFAULT_MAX_RETRIES = 8
DEFAULT_BACKOFF_BASE = 0.5
DEFAULT_BACKOFF_MAX = 30.0
DEFAULT_MAX_RETRY_AFTER = 120.0

SKIPPED_SLOT_CODES = frozenset({-32007, -32009})
RETRYABLE_CODES = frozenset({-32004, -32005, -32014})
RATE_LIMITED_CODES = frozenset({429, -32429})  # providers that answer HTTP 200 with a JSON-RPC rate-limit error


class RpcError(SourceError):
    """A JSON-RPC call failed for good. Names the method, the params and the server's message."""

    def __init__(self, method: str, params: Any, message: str, *, code: int | None = None,
                 http_status: int | None = None, url: str = ""):
        self.method = method
        self.params = params
        self.code = code
        self.http_status = http_status
        self.rpc_message = message
        where = f" at {url}" if url else ""
        code_text = f" (code {code})" if code is not None else ""
        super().__init__(f"RPC {method}({_short(params)}){where} failed{code_text}: {message}")


@dataclass(frozen=True, slots=True)
class SkippedSlot:
    """Result of a call answered with -32007/-32009: the slot produced no block (or the node lacks it)."""
    slot: int | None
    code: int
    message: str


def _short(params: Any, limit: int = 200) -> str:
    text = json.dumps(params, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- credentials --------------------------------------------------------------------------------


for _name in ("urllib3.connectionpool", "urllib3.connection", "requests"):
    logging.getLogger(_name).addFilter(_SCRUB)


def resolve_rpc_url(flag: str | None, settings: Settings | None = None) -> str:
    """`--rpc-url` flag, else IQ_RPC_URL, else SOLANA_RPC_URL (both via settings), else mainnet."""
    if flag:
        return flag
    if settings is not None and settings.rpc_url:
        return settings.rpc_url
    return DEFAULT_RPC_URL


# --- the client ---------------------------------------------------------------------------------

class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's wish in seconds, if it said one."""

    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class _BatchRejected(Exception):
    """The server refused a JSON-RPC batch as such (some providers forbid batches)."""


@dataclass(slots=True)
class Call:
    method: str
    params: list


class RpcClient:
    """JSON-RPC over one keep-alive HTTP session per worker thread.

    `call(method, params)` for one request; `call_many` / `imap` for many, run on a pool of
    `concurrency` workers, `batch_size` calls per HTTP POST. `commitment` is what sources add to
    their params. `progress(stats)` is called after every HTTP exchange (from worker threads)."""

    def __init__(
        self,
        url: str,
        *,
        rps: float | None = DEFAULT_RPS,
        method_rps: float | None = DEFAULT_METHOD_RPS,
        concurrency: int = DEFAULT_CONCURRENCY,
        commitment: str = "finalized",
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = 10.0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        batch_size: int = 10,
        progress: Callable[[RpcStats], None] | None = None,
        seed: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if commitment not in ("processed", "confirmed", "finalized"):
            raise ValueError(f"commitment {commitment!r} is not processed/confirmed/finalized")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"RPC URL {redact_url(url)!r} is not an http(s):// URL")
        self.url = url
        self.url_redacted = redact_url(url)
        self.commitment = commitment
        self.concurrency = concurrency
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.batch_size = max(1, batch_size)
        self.batching = True  # turned off when the server rejects batches
        self.progress = progress
        self._sleep = sleep  # between retries (tests pass a recorder)
        self.stats = RpcStats()
        self._secrets = _secrets_of(url)
        _SCRUB.add(self._secrets)
        self._limits = _limits_for(url, rps, method_rps, concurrency)
        self._ids = itertools.count(1)
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._closed = False

    # -- lifecycle --

    def close(self) -> None:
        self._closed = True
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
        with self._sessions_lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()

    def __enter__(self) -> "RpcClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RpcClient({self.url_redacted!r}, concurrency={self.concurrency}, commitment={self.commitment!r})"

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=self.concurrency, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            # requests asks for gzip/deflate and decodes it; say so explicitly for proxies.
            s.headers.update({"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate",
                              "User-Agent": "iq-etl"})
            self._local.session = s
            with self._sessions_lock:
                self._sessions.append(s)
        return s

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._closed:
                raise SourceError(f"{self!r} is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="iq-rpc")
            return self._pool

    # -- public calls --

    def call(self, method: str, params: Sequence[Any] | None = None) -> Any:
        """One call; returns its result, or a `SkippedSlot`; raises `RpcError` when it fails for good."""
        return self._run([Call(method, list(params or []))])[0]

    def call_many(self, method: str, params_list: Iterable[Sequence[Any]], *, batch_size: int | None = None) -> list[Any]:
        """Many calls of one method, in parallel within the limits; results in the order given."""
        return list(self.imap(method, params_list, batch_size=batch_size))

    def imap(self, method: str, params_iter: Iterable[Sequence[Any]], *, batch_size: int | None = None,
             window: int | None = None) -> Iterator[Any]:
        """Results of `method(params)` for each params, in order, computed ahead by the worker pool.

        At most `window` batches (default 2 × concurrency) are in flight or waiting to be consumed,
        so memory stays bounded however long `params_iter` is. The first permanent failure raises
        `RpcError` when its result is reached."""
        size = batch_size or self.batch_size
        window = window or 2 * self.concurrency
        pool = self._executor()
        params_it = iter(params_iter)
        pending: deque[Future] = deque()

        def next_batch() -> list[Call] | None:
            batch = [Call(method, list(p)) for p in itertools.islice(params_it, size)]
            return batch or None

        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < window:
                    batch = next_batch()
                    if batch is None:
                        exhausted = True
                        break
                    pending.append(pool.submit(self._run, batch))
                if not pending:
                    return
                yield from pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()

    # -- machinery --

    def _run(self, calls: list[Call]) -> list[Any]:
        """Send `calls` (one POST, or several when batching is off); retry what is retryable."""
        if len(calls) > 1 and not self.batching:
            return [r for c in calls for r in self._run([c])]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        attempt = 0
        last_problem = ""
        server_wait: float | None = None
        limited = 0
        while todo:
            if attempt:
                if attempt > self.max_retries:
                    first = calls[todo[0]]
                    raise RpcError(first.method, first.params,
                                   f"gave up after {attempt} attempts; last problem: {last_problem}",
                                   url=self.url_redacted)
                self.stats.add(retries=len(todo))
                delay = self._backoff(attempt, server_wait)
                log.debug("retrying %d %s call(s) at %s in %.2fs: %s", len(todo), calls[todo[0]].method,
                          self.url_redacted, delay, last_problem)
                self._sleep(delay)
            server_wait = None
            batch = [calls[i] for i in todo]
            try:
                replies = self._post(batch)
            except _Transient as t:
                last_problem, server_wait = t.reason, t.retry_after
                attempt += 1
                limited += t.rate_limited
                if limited >= 2 and len(todo) > 1:
                    # A server that counts batch items may never let this many through at once:
                    # send the rest one by one (each with its own retries) instead of starving.
                    self._sleep(self._backoff(attempt, server_wait))
                    for i in todo:
                        results[i] = self._run([calls[i]])[0]
                    return results
                continue
            except _BatchRejected:
                log.info("%s rejects JSON-RPC batches; sending calls one by one", self.url_redacted)
                self.batching = False
                for i in todo:
                    results[i] = self._run([calls[i]])[0]
                return results
            again: list[int] = []
            for i, reply in zip(todo, replies):
                call = calls[i]
                error = reply.get("error")
                if error is None:
                    if "result" not in reply:
                        raise RpcError(call.method, call.params, "reply has neither result nor error",
                                       url=self.url_redacted)
                    results[i] = reply["result"]
                    continue
                code, message = _error_fields(error)
                if code in SKIPPED_SLOT_CODES:
                    slot = call.params[0] if call.params and isinstance(call.params[0], int) else None
                    results[i] = SkippedSlot(slot, code, message)
                    self.stats.add(skipped_slots=1)
                elif code in RATE_LIMITED_CODES:
                    self.stats.add(http_429=1)
                    last_problem = f"rate limited (RPC error {code}: {message})"
                    again.append(i)
                elif code in RETRYABLE_CODES:
                    self.stats.add(retryable_rpc_errors=1)
                    last_problem = f"RPC error {code}: {message}"
                    again.append(i)
                else:
                    raise RpcError(call.method, call.params, message, code=code, url=self.url_redacted)
            todo = again
            if todo:
                attempt += 1
        return results

    def _backoff(self, attempt: int, server_wait: float | None) -> float:
        if server_wait is not None:
            return min(max(server_wait, 0.0), self.max_retry_after)
        cap = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
        with self._rng_lock:
            return cap / 2 + self._rng.uniform(0, cap / 2)  # "equal jitter": spread, never zero

    def _post(self, calls: list[Call]) -> list[dict]:
        """One HTTP exchange. Returns one reply object per call (matched by id), or raises."""
        try:
            return self._exchange(calls)
        finally:
            self._report()

    def _exchange(self, calls: list[Call]) -> list[dict]:
        ids = [next(self._ids) for _ in calls]
        objs = [{"jsonrpc": "2.0", "id": i, "method": c.method, "params": c.params} for i, c in zip(ids, calls)]
        body = json.dumps(objs[0] if len(objs) == 1 else objs, separators=(",", ":"))
        with self._limits.in_flight:
            self.stats.add(waited_rate_limit_s=self._limits.wait_for_budget([c.method for c in calls]))
            self.stats.add(http_posts=1)
            try:
                resp = self._session().post(self.url, data=body, timeout=(self.connect_timeout, self.timeout))
                content = resp.content  # read fully inside the try: a drop mid-body is a dropped connection
            except requests.Timeout:
                self.stats.add(timeouts=1)
                raise _Transient(f"timed out after {self.timeout:g}s") from None
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.ContentDecodingError) as exc:
                self.stats.add(dropped=1)
                raise _Transient(f"connection dropped ({type(exc).__name__}: {self._scrub(str(exc))[:200]})") from None
        self.stats.add(bytes_received=len(content))
        status = resp.status_code
        if status == 429:
            self.stats.add(http_429=1)
            wait = _retry_after(resp.headers.get("Retry-After"))
            if wait is not None:
                self._limits.pause_all(min(wait, self.max_retry_after))
            raise _Transient("HTTP 429 Too Many Requests", wait, rate_limited=True)
        if status >= 500:
            self.stats.add(http_5xx=1)
            raise _Transient(f"HTTP {status}: {self._scrub(content[:200].decode('utf-8', 'replace'))}")
        if status != 200:
            if len(calls) > 1 and status in (400, 403, 413):
                raise _BatchRejected()
            first = calls[0]
            raise RpcError(first.method, first.params,
                           f"HTTP {status}: {self._scrub(content[:300].decode('utf-8', 'replace'))}",
                           http_status=status, url=self.url_redacted)
        try:
            data = json.loads(content)
        except ValueError:
            self.stats.add(dropped=1)
            raise _Transient(f"unparseable response body ({len(content)} bytes)") from None
        if len(calls) > 1 and isinstance(data, dict):
            # A single error object answering a batch: the server does not do batches.
            raise _BatchRejected()
        replies = [data] if isinstance(data, dict) else data
        if not isinstance(replies, list):
            raise _Transient(f"response is JSON {type(data).__name__}, not an object or array")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        if len(calls) == 1 and len(replies) == 1 and isinstance(replies[0], dict) and replies[0].get("id") is None:
            by_id[ids[0]] = replies[0]  # an error about the request itself comes back with id null
        out = []
        for i, c in zip(ids, calls):
            reply = by_id.get(i)
            if reply is None:
                raise _Transient(f"no reply for {c.method} (id {i}) in the response")
            out.append(reply)
        self.stats.add(requests=len(calls))
        return out

    def _report(self) -> None:
        if self.progress is not None:
            try:
                self.progress(self.stats)
            except Exception:  # noqa: BLE001 - a broken progress display must not stop ingestion
                log.exception("progress callback failed")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _error_fields(error: Any) -> tuple[int | None, str]:
    if isinstance(error, dict):
        code = error.get("code")
        message = str(error.get("message", ""))
        if error.get("data") is not None:
            message += f" (data: {_short(error['data'])})"
        return (code if isinstance(code, int) else None), message
    return None, str(error)


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds (fractions accepted) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def history_commitment(client: RpcClient) -> str:
    # getBlock / getTransaction / getSignaturesForAddress refuse "processed".
    return "confirmed" if client.commitment == "processed" else client.commitment
