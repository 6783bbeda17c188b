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
exchanges over their `deadline`, refused / unresolvable / dropped connections (each named so in
the messages), unparseable bodies and the RPC codes -32004 (block not available), -32014 (block
status not yet available) and -32005 (node behind) are retried with exponential backoff and
jitter, up to `max_retries` times. -32007 / -32009 (slot skipped, or missing) become a `SkippedSlot`
result at once, never retried (the dense source double-checks them with getBlocks). A server that
refuses batches gets single calls from then on. A reply decoding to more than its method's byte cap
(a few MB for the small answers, `max_reply_bytes` for a full getBlock), or whose parse would take
more memory than `max_reply_memory` (estimated before parsing), fails for good; the replies being
read or parsed share one process-wide `memory_budget` (see replies.py). Any other error raises
`RpcError` naming the method, the params and the server's message. When one fails for good inside
`imap`, every worker of the client stops at once (no retrying on in the background; `close()` does
the same). `preflight()` checks an endpoint once, quickly and without retries, before a run. The
URL's credentials (userinfo, query values, token-like path segments) never appear in messages or
logs, the HTTP library's included.
"""
from __future__ import annotations

import http.client
import itertools
import json
import logging
import random
import threading
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Mapping, Sequence
from urllib.parse import urlsplit

import requests
import urllib3

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.convert import shown
from iq_etl.ingest.sources.rpc.limits import Cancelled, RpcStats, _limits_for
from iq_etl.ingest.sources.rpc.replies import (
    CHECK_ABOVE,
    DEFAULT_MAX_REPLY_MEMORY,
    DEFAULT_MEMORY_BUDGET,
    MEMORY_PER_CAP,
    MemoryBudget,
    budget_for,
    memory_limit,
    parse_cost,
    reply_cap,
    shown_size,
)
from iq_etl.net.deadline import Exchange, Watchdog, set_current
from iq_etl.net.errors import classify
from iq_etl.net.hooks import HookedAdapter
from iq_etl.net.redact import SCRUB, redact_url, scrub, secrets_of
from iq_etl.net.retry import EQUAL_JITTER, Backoff, Retries, parse_retry_after
from iq_etl.settings import DEFAULT_RPC_URL, Settings

log = logging.getLogger(__name__)

DEFAULT_RPS = 9.0
DEFAULT_METHOD_RPS = 3.5
DEFAULT_CONCURRENCY = 4
# The default of rps / method_rps / concurrency: the public endpoint's limits above for a public host;
# none (and PRIVATE_CONCURRENCY in flight) for a loopback or private-network endpoint, which is the
# operator's own node: throttling it to 4 slots/s made a loopback rpc-blocks run crawl in silence.
AUTO = "auto"
PRIVATE_CONCURRENCY = 16
DEFAULT_TIMEOUT = 60.0          # a full mainnet getBlock can take tens of seconds to produce
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_DEADLINE = 120.0        # wall clock for one HTTP exchange: connect, headers and the whole body
DEFAULT_MAX_REPLY_BYTES = 256 * 1024 * 1024  # decoded; a full mainnet getBlock (base64) is tens of MB
# The RPC client's retry policy (constructor arguments override each value): 8 retries (9 attempts),
# 0.5 s apart and doubling up to 30 s with "equal jitter" (half of each delay at random: spread out,
# never near zero); a Retry-After honoured up to 120 s.
RPC_RETRIES = Retries(retries=8, backoff=Backoff(0.5, 30.0, EQUAL_JITTER), retry_after_cap=120.0)
DEFAULT_MAX_RETRIES = RPC_RETRIES.retries
DEFAULT_BACKOFF_BASE = RPC_RETRIES.backoff.first
DEFAULT_BACKOFF_MAX = RPC_RETRIES.backoff.cap
DEFAULT_MAX_RETRY_AFTER = RPC_RETRIES.retry_after_cap

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


def resolve_rpc_url(flag: str | None, settings: Settings | None = None) -> str:
    """`--rpc-url` flag, else IQ_RPC_URL, else SOLANA_RPC_URL (both via settings), else mainnet."""
    if flag:
        return flag
    if settings is not None and settings.rpc_url:
        return settings.rpc_url
    return DEFAULT_RPC_URL


# --- one HTTP exchange: deadline (net.deadline), size cap, cancellation ----------------------------

_WATCHDOG = Watchdog("iq-rpc-deadlines")  # one thread for the process: stops exchanges past their deadline


class _TooLarge(Exception):
    pass


class _BadEncoding(Exception):
    """A Content-Encoding the client did not ask for."""


class _Decoder:
    """Content-Encoding gzip / deflate / identity, decoded in steps that never produce more than the
    cap allows (a small gzip body can expand a thousandfold)."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj(zlib.MAX_WBITS)
        else:
            raise _BadEncoding(encoding)
        self._started = False

    def feed(self, data: bytes, out: bytearray, cap: int) -> None:
        if self._z is None:
            out += data
        else:
            if not self._started and self.encoding == "deflate":
                self._started = True
                try:
                    self._z.copy().decompress(data[:64], 1)
                except zlib.error:  # some servers send raw deflate without the zlib header
                    self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            while data:
                out += self._z.decompress(data, cap + 1 - len(out))  # max_length >= 1: never unlimited
                if len(out) > cap:
                    raise _TooLarge()
                data = self._z.unconsumed_tail
                if self._z.eof:
                    data = self._z.unused_data
                    if self.encoding == "deflate" or not data.startswith(b"\x1f\x8b"):
                        break  # what follows the (last) member is ignored, as urllib3 does
                    self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)  # a further gzip member
        if len(out) > cap:
            raise _TooLarge()

    def finish(self, out: bytearray, cap: int) -> None:
        if self._z is not None:
            out += self._z.flush()
        if len(out) > cap:
            raise _TooLarge()


_CHUNK = 64 * 1024
_ERROR_BODY_BYTES = 64 * 1024  # what is read of a non-200 answer (only its start is shown)


def _read_body(resp: requests.Response, exchange: Exchange, cap: int, *, truncate: bool = False,
               budget: MemoryBudget | None = None, ticket: int = 0) -> tuple[bytearray, bool]:
    """(decoded body, read to its end). At most `cap` bytes: more raises _TooLarge, or is cut off
    when `truncate`. Encoded bytes count too: a reply is never read further than `cap`. The decoded
    bytes are taken from `budget` as they arrive (waiting, up to the deadline, while it is spent)."""
    encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
    decoder = _Decoder(encoding)
    length = resp.headers.get("Content-Length", "").strip()
    if length.isdigit() and int(length) > cap:
        if not truncate:
            raise _TooLarge()
    out = bytearray()
    received = 0
    taken = 0

    try:
        for chunk in resp.raw.stream(_CHUNK, decode_content=False):
            received += len(chunk)
            if received > cap:
                raise _TooLarge()
            decoder.feed(chunk, out, cap)
            if budget is not None and len(out) > taken:
                if not budget.take(ticket, len(out) - taken, exchange.over):
                    exchange.stop("expired")
                    return out, False
                taken = len(out)
            if exchange.over():
                exchange.stop("expired")
                return out, False
        decoder.finish(out, cap)
    except _TooLarge:
        if not truncate:
            raise
        return out[:cap], False
    return out, True  # no copy: json.loads reads a bytearray as it is


# --- the client ---------------------------------------------------------------------------------

class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's wish in seconds, if it said one.
    `kind`: refused, dns, timeout, deadline, dropped, tls, http, rate_limited or reply."""

    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False,
                 kind: str = "reply"):
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.rate_limited = rate_limited
        self.kind = "rate_limited" if rate_limited else kind


class _BatchRejected(Exception):
    """The server refused a JSON-RPC batch as such (some providers forbid batches)."""


class RpcCancelled(RpcError):
    """The call was given up unfinished: the client was closed, or another call of the same client
    failed for good (`imap` then stops every worker at once instead of letting them retry on)."""


class _Cancel(threading.Event):
    """Cancel token of one `call` / `imap`: set with the reason when its work is to stop."""

    reason = ""

    def trip(self, reason: str) -> None:
        if not self.is_set():
            self.reason = reason
            self.set()


@dataclass(frozen=True)
class Preflight:
    """What `RpcClient.preflight()` found: the endpoint answered `method` with `result` in `seconds`.
    `note` says why getHealth was not a plain "ok" (unsupported, the node says it is behind, rate
    limited), else None."""
    method: str
    result: Any
    seconds: float
    note: str | None = None


@dataclass(slots=True)
class Call:
    method: str
    params: list


def is_private_host(url: str) -> bool:
    """Loopback, private-network, link-local addresses and `localhost`: the operator's own endpoint."""
    import ipaddress

    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local


_ANNOUNCED: set[tuple] = set()


def limits_in_force(url: str, rps: float | None | str, method_rps: float | None | str,
                    concurrency: int | str) -> tuple[float | None, float | None, int]:
    """The rate and concurrency limits for `url`: AUTO values resolved by the kind of host, and said
    once per process and endpoint at INFO (which limits, and why)."""
    private = is_private_host(url)
    out_rps = (None if private else DEFAULT_RPS) if rps == AUTO else rps
    out_method = (None if private else DEFAULT_METHOD_RPS) if method_rps == AUTO else method_rps
    out_conc = (PRIVATE_CONCURRENCY if private else DEFAULT_CONCURRENCY) if concurrency == AUTO else concurrency
    assert not isinstance(out_rps, str) and not isinstance(out_method, str) and not isinstance(out_conc, str)
    key = (redact_url(url), out_rps, out_method, out_conc)
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        kind = "a loopback/private host" if private else "a public host"
        auto = (rps, method_rps, concurrency) == (AUTO, AUTO, AUTO)
        why = (f"defaults for {kind}" if auto else "as set") + \
            ("; --rpc-rps / --rpc-method-rps / --rpc-concurrency change them" if auto and not private else "")
        log.info("RPC %s: %s overall, %s per method, %d request(s) in flight (%s)", redact_url(url),
                 f"{out_rps:g} req/s" if out_rps else "no rate limit", f"{out_method:g} req/s" if out_method else "no limit",
                 out_conc, why)
    return out_rps, out_method, int(out_conc)


class RpcClient:
    """JSON-RPC over one keep-alive HTTP session per worker thread.

    `call(method, params)` for one request; `call_many` / `imap` for many, run on a pool of
    `concurrency` workers, `batch_size` calls per HTTP POST. `commitment` is what sources add to
    their params. `progress(stats)` is called after every HTTP exchange (from worker threads).

    Each HTTP exchange has `connect_timeout`, a read `timeout` (silence between bytes) and a wall-clock
    `deadline` for all of it (connect, headers and body): a reply still incomplete then is dropped and
    retried (a server trickling bytes never holds a worker longer). Replies are read as a stream and
    may decode to at most their method's cap (`replies.METHOD_REPLY_CAPS`, `reply_caps` overrides; a full
    getBlock and unnamed methods: `max_reply_bytes`), gzip included; a longer one fails for good ("reply
    larger than N bytes"). A reply whose parse is estimated to take more than `max_reply_memory` (or 16x
    its byte cap) fails for good unparsed. Reply bodies being read and parsed take their bytes from the
    process-wide `memory_budget`. `preflight()` checks the endpoint once, quickly, before a long run."""

    def __init__(
        self,
        url: str,
        *,
        rps: float | None | str = AUTO,
        method_rps: float | None | str = AUTO,
        concurrency: int | str = AUTO,
        commitment: str = "finalized",
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_reply_memory: int = DEFAULT_MAX_REPLY_MEMORY,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        reply_caps: Mapping[str, int] | None = None,
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
        if concurrency != AUTO and int(concurrency) < 1:
            raise ValueError("concurrency must be at least 1")
        if not deadline > 0:
            raise ValueError("deadline must be positive")
        if max_reply_bytes < 1:
            raise ValueError("max_reply_bytes must be positive")
        if max_reply_memory < 1:
            raise ValueError("max_reply_memory must be positive")
        if any(cap < 1 for cap in (reply_caps or {}).values()):
            raise ValueError("reply_caps must be positive")
        try:
            parts = urlsplit(url)
            parts.port   # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:   # e.g. http://[::1/ (an unclosed IPv6 address)
            raise SourceError(f"RPC URL {redact_url(url)!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(f"RPC URL {redact_url(url)!r} is not an http(s):// URL")
        rps, method_rps, concurrency = limits_in_force(url, rps, method_rps, concurrency)
        self.url = url
        self.url_redacted = redact_url(url)
        self.commitment = commitment
        self.concurrency = concurrency
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.deadline = deadline
        self.max_reply_bytes = max_reply_bytes
        self.max_reply_memory = max_reply_memory
        self.reply_caps = dict(reply_caps or {})
        self.budget = budget_for(memory_budget)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._backoff_policy = Backoff(backoff_base, backoff_max, RPC_RETRIES.backoff.spread)
        self.max_retry_after = max_retry_after
        self.batch_size = max(1, batch_size)
        self.batching = True  # turned off when the server rejects batches
        self.progress = progress
        self._sleep = sleep  # between retries (tests pass a recorder)
        self.stats = RpcStats()
        self._secrets = secrets_of(url)
        SCRUB.add(self._secrets)
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
        self._work_lock = threading.Lock()
        self._live: set[_Cancel] = set()           # tokens of the calls / imaps under way
        self._in_flight: set[Exchange] = set()    # HTTP exchanges under way

    # -- lifecycle --

    def close(self) -> None:
        """Stop everything under way at once (workers stop retrying, open exchanges are cut) and free
        the workers and connections."""
        self._closed = True
        self._cancel_all("the client was closed")
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
            adapter = HookedAdapter(pool_connections=1, pool_maxsize=self.concurrency, max_retries=0)
            s.mount("http://", adapter)
            s.mount("https://", adapter)
            # Bodies are decoded here (gzip/deflate, with the size cap), so only those are accepted.
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

    # -- cancellation --

    def _token(self) -> _Cancel:
        token = _Cancel()
        with self._work_lock:
            if self._closed:
                raise SourceError(f"{self!r} is closed")
            self._live.add(token)
        return token

    def _release(self, token: _Cancel) -> None:
        with self._work_lock:
            self._live.discard(token)

    def _cancel(self, token: _Cancel, reason: str) -> None:
        """Stop the work of `token`: its workers stop retrying, its exchanges in flight are cut."""
        token.trip(reason)
        with self._work_lock:
            exchanges = [e for e in self._in_flight if e.cancel is token]
        for exchange in exchanges:
            exchange.stop("cancelled")  # its socket is shut now, or as soon as it has one

    def _cancel_all(self, reason: str) -> None:
        with self._work_lock:
            tokens = list(self._live)
        for token in tokens:
            self._cancel(token, reason)

    def _cancelled(self, call: Call, token: _Cancel) -> RpcCancelled:
        return RpcCancelled(call.method, call.params, f"cancelled: {token.reason or 'stopped'}", url=self.url_redacted)

    # -- public calls --

    def preflight(self, *, connect_timeout: float = 3.0, answer_timeout: float = 10.0) -> Preflight:
        """Check once, without retries, that the endpoint answers JSON-RPC: getHealth, or getVersion
        when getHealth is refused or not "ok". Raises RpcError (a SourceError) naming the cause:
        "connection refused", "name not resolved (DNS)", "timed out connecting", "timed out waiting
        for the reply", "HTTP <status>: ...", or the JSON-RPC error of both methods. A 429 counts as
        reachable (the run's own retries wait it out)."""
        started = time.monotonic()
        token = self._token()
        note: str | None = None
        try:
            for method in ("getHealth", "getVersion"):
                call = Call(method, [])
                try:
                    (reply,) = self._post([call], token, connect_timeout=connect_timeout, timeout=answer_timeout,
                                          deadline=connect_timeout + answer_timeout)
                except _Transient as t:
                    if t.rate_limited:
                        return Preflight(method, None, time.monotonic() - started, f"rate limited: {t.reason}")
                    raise RpcError(method, [], f"{t.reason} (preflight: one try, {connect_timeout:g}s to connect, "
                                               f"{answer_timeout:g}s to answer)", url=self.url_redacted) from None
                error = reply.get("error")
                if error is None and "result" in reply:
                    result = reply["result"]
                    if method == "getHealth" and result != "ok":
                        note = f"getHealth answered {shown(result)}"
                        continue
                    return Preflight(method, result, time.monotonic() - started, note)
                code, message = _error_fields(error) if error is not None else (None, "reply has neither result nor error")
                if method == "getVersion":
                    raise RpcError(method, [], message + (f"; and {note}" if note else ""), code=code,
                                   url=self.url_redacted)
                note = f"getHealth failed: {message}" + (f" (code {code})" if code is not None else "")
            raise AssertionError("unreachable")
        finally:
            self._release(token)

    def call(self, method: str, params: Sequence[Any] | None = None) -> Any:
        """One call; returns its result, or a `SkippedSlot`; raises `RpcError` when it fails for good."""
        token = self._token()
        try:
            return self._run([Call(method, list(params or []))], token)[0]
        finally:
            self._release(token)

    def call_many(self, method: str, params_list: Iterable[Sequence[Any]], *, batch_size: int | None = None) -> list[Any]:
        """Many calls of one method, in parallel within the limits; results in the order given."""
        return list(self.imap(method, params_list, batch_size=batch_size))

    def imap(self, method: str, params_iter: Iterable[Sequence[Any]], *, batch_size: int | None = None,
             window: int | None = None) -> Generator[Any, None, None]:
        """Results of `method(params)` for each params, in order, computed ahead by the worker pool.

        At most `window` batches (default 2 × concurrency) are in flight or waiting to be consumed,
        so memory stays bounded however long `params_iter` is. A permanent failure of any batch in
        the window raises `RpcError` at once (not only when its turn comes), and then every piece of
        work of this client still under way stops: no worker retries on. Closing the iterator early
        stops its own workers the same way."""
        size = batch_size or self.batch_size
        window = window or 2 * self.concurrency
        pool = self._executor()
        token = self._token()
        params_it = iter(params_iter)
        pending: deque[Future] = deque()
        settled = threading.Event()

        def next_batch() -> list[Call] | None:
            batch = [Call(method, list(p)) for p in itertools.islice(params_it, size)]
            return batch or None

        failure: BaseException | None = None
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < window:
                    batch = next_batch()
                    if batch is None:
                        exhausted = True
                        break
                    fut = pool.submit(self._run, batch, token)
                    fut.add_done_callback(lambda _f: settled.set())
                    pending.append(fut)
                if not pending:
                    return
                fut = _first_settled(pending, settled)
                try:
                    results = fut.result()
                except BaseException as exc:
                    failure = exc
                    raise
                pending.popleft()
                yield from results
        finally:
            self._cancel(token, "nobody waits for these results any more")
            for fut in pending:
                fut.cancel()
            self._release(token)
            if failure is not None and not isinstance(failure, RpcCancelled):
                self._cancel_all(f"{method} failed for good: {str(failure)[:200]}")

    # -- machinery --

    def _pause(self, seconds: float, token: _Cancel, call: Call) -> None:
        if self._sleep is time.sleep:
            token.wait(seconds)  # wakes as soon as the work is cancelled
        else:
            self._sleep(seconds)
        if token.is_set():
            raise self._cancelled(call, token)

    def _run(self, calls: list[Call], token: _Cancel) -> list[Any]:
        """Send `calls` (one POST, or several when batching is off); retry what is retryable."""
        if len(calls) > 1 and not self.batching:
            return [r for c in calls for r in self._run([c], token)]
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        attempt = 0
        last_problem = ""
        server_wait: float | None = None
        limited = 0
        while todo:
            if token.is_set():
                raise self._cancelled(calls[todo[0]], token)
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
                self._pause(delay, token, calls[todo[0]])
            server_wait = None
            batch = [calls[i] for i in todo]
            try:
                replies = self._post(batch, token)
            except _Transient as t:
                last_problem, server_wait = t.reason, t.retry_after
                attempt += 1
                limited += t.rate_limited
                if limited >= 2 and len(todo) > 1:
                    # A server that counts batch items may never let this many through at once:
                    # send the rest one by one (each with its own retries) instead of starving.
                    self._pause(self._backoff(attempt, server_wait), token, calls[todo[0]])
                    for i in todo:
                        results[i] = self._run([calls[i]], token)[0]
                    return results
                continue
            except _BatchRejected:
                log.info("%s rejects JSON-RPC batches; sending calls one by one", self.url_redacted)
                self.batching = False
                for i in todo:
                    results[i] = self._run([calls[i]], token)[0]
                return results
            again: list[int] = []
            for i, reply in zip(todo, replies):
                call = calls[i]
                error = reply.get("error")  # JSON-RPC 2.0: `result` or `error`; neither is refused below
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
        with self._rng_lock:
            return self._backoff_policy.delay(attempt, self._rng)

    def _post(self, calls: list[Call], token: _Cancel, **limits: float) -> list[dict]:
        """One HTTP exchange. Returns one reply object per call (matched by id), or raises."""
        try:
            return self._exchange(calls, token, **limits)
        finally:
            self._report()

    def _exchange(self, calls: list[Call], token: _Cancel, *, connect_timeout: float | None = None,
                  timeout: float | None = None, deadline: float | None = None) -> list[dict]:
        connect_timeout = self.connect_timeout if connect_timeout is None else connect_timeout
        timeout = self.timeout if timeout is None else timeout
        deadline = self.deadline if deadline is None else deadline
        ids = [next(self._ids) for _ in calls]
        objs = [{"jsonrpc": "2.0", "id": i, "method": c.method, "params": c.params} for i, c in zip(ids, calls)]
        body = json.dumps(objs[0] if len(objs) == 1 else objs, separators=(",", ":"))
        cap = reply_cap([(c.method, c.params) for c in calls], self.max_reply_bytes, self.reply_caps)
        ticket = self.budget.ticket()
        try:
            return self._answer(calls, ids, body, token, connect_timeout, timeout, deadline, cap, ticket)
        finally:
            self.budget.give_back(ticket)  # the body and its parse are over (replies hold the results)

    def _answer(self, calls: list[Call], ids: list[int], body: str, token: _Cancel, connect_timeout: float,
                timeout: float, deadline: float, cap: tuple[int, str], ticket: int) -> list[dict]:
        first = calls[0]
        try:
            with self._limits.slot(token):
                self.stats.add(waited_rate_limit_s=self._limits.wait_for_budget([c.method for c in calls], token))
                self.stats.add(http_posts=1)
                status, headers, content = self._http(body, token, connect_timeout, timeout, deadline, first,
                                                      cap, ticket)
        except Cancelled:
            raise self._cancelled(first, token) from None
        self.stats.add(bytes_received=len(content))
        if status == 429:
            self.stats.add(http_429=1)
            wait = parse_retry_after(headers.get("Retry-After"), cap=self.max_retry_after)
            if wait is not None:
                self._limits.pause_all(wait)
            raise _Transient("HTTP 429 Too Many Requests", wait, rate_limited=True)
        if status >= 500:
            self.stats.add(http_5xx=1)
            raise _Transient(f"HTTP {status}: {self._scrub(content[:200].decode('utf-8', 'replace'))}", kind="http")
        if status != 200:
            if len(calls) > 1 and status in (400, 403, 413):
                raise _BatchRejected()
            raise RpcError(first.method, first.params,
                           f"HTTP {status}: {self._scrub(content[:300].decode('utf-8', 'replace'))}",
                           http_status=status, url=self.url_redacted)
        self._afford(content, cap, ticket, token, first)
        try:
            data = json.loads(content)
        except ValueError:
            self.stats.add(dropped=1)
            raise _Transient(f"unparseable response body ({len(content)} bytes)") from None
        except RecursionError:
            raise RpcError(first.method, first.params, f"reply of {len(content):,} bytes nests arrays or objects "
                           "deeper than the JSON parser allows", url=self.url_redacted) from None
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

    def _afford(self, content: bytearray, cap: tuple[int, str], ticket: int, token: _Cancel, first: Call) -> None:
        """Before json.loads: refuse a reply whose parse would cost more than its memory limit (counted
        over the body, see replies.parse_cost), else take the estimate from the memory budget."""
        if len(content) <= CHECK_ABOVE:
            return
        cost, containers, commas = parse_cost(content)
        limit = memory_limit(cap[0], self.max_reply_memory)
        if cost > limit:
            why = ("max_reply_memory" if limit == self.max_reply_memory
                   else f"{MEMORY_PER_CAP}x {cap[1]} of {shown_size(cap[0])}")
            raise RpcError(first.method, first.params,
                           f"reply of {len(content):,} bytes would take about {shown_size(cost)} of memory once "
                           f"parsed ({containers:,} JSON arrays/objects, {commas:,} commas), more than the "
                           f"{shown_size(limit)} limit ({why}); refused unparsed", url=self.url_redacted)
        if not self.budget.take(ticket, cost, token.is_set):
            raise self._cancelled(first, token)

    def _http(self, body: str, token: _Cancel, connect_timeout: float, timeout: float, deadline: float,
              first: Call, cap: tuple[int, str], ticket: int) -> tuple[int, Any, bytearray]:
        """POST `body`; (status, headers, decoded body). The body is streamed: at most `cap` bytes,
        all of it within `deadline` seconds of the start (the watchdog cuts the socket then), taken
        from the memory budget as it arrives."""
        exchange = Exchange(deadline, token)
        with self._work_lock:
            self._in_flight.add(exchange)
        if token.is_set():
            exchange.stop("cancelled")
        _WATCHDOG.watch(exchange)
        set_current(exchange)
        resp: requests.Response | None = None
        reusable = False
        try:
            try:
                resp = self._session().post(self.url, data=body, timeout=(connect_timeout, timeout), stream=True)
                status = resp.status_code
                if status == 200:
                    content, complete = _read_body(resp, exchange, cap[0], budget=self.budget, ticket=ticket)
                else:  # only the start of an error page is shown
                    content, complete = _read_body(resp, exchange, _ERROR_BODY_BYTES, truncate=True,
                                                   budget=self.budget, ticket=ticket)
                reusable = complete and exchange.fate is None
            except _TooLarge:
                raise RpcError(first.method, first.params, f"reply larger than {cap[0]} bytes "
                               f"({shown_size(cap[0])}, {cap[1]})",
                               http_status=resp.status_code if resp is not None else None,
                               url=self.url_redacted) from None
            except _BadEncoding as exc:
                raise RpcError(first.method, first.params, f"reply in Content-Encoding {str(exc)!r}, which was "
                               "not asked for (gzip, deflate)", url=self.url_redacted) from None
            except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                    OSError, zlib.error) as exc:
                raise self._broken(exc, exchange, connect_timeout, timeout, deadline, first) from None
            if exchange.fate is not None:
                raise self._broken(None, exchange, connect_timeout, timeout, deadline, first)
            return status, resp.headers, content
        finally:
            set_current(None)
            exchange.finish()
            with self._work_lock:
                self._in_flight.discard(exchange)
            if resp is not None:
                if reusable:
                    resp.raw.release_conn()  # read to the end: the connection goes back to the pool
                else:
                    resp.close()

    def _broken(self, exc: BaseException | None, exchange: Exchange, connect_timeout: float, timeout: float,
                deadline: float, first: Call) -> Exception:
        """The exception to raise for an exchange that did not complete."""
        if exchange.fate == "cancelled":
            return self._cancelled(first, exchange.cancel)
        if exchange.fate == "expired":
            self.stats.add(timeouts=1)
            return _Transient(f"no complete reply within {deadline:g}s (request deadline)", kind="deadline")
        assert exc is not None
        if isinstance(exc, zlib.error):
            self.stats.add(dropped=1)
            return _Transient(f"corrupt compressed body ({self._scrub(str(exc))[:100]})", kind="dropped")
        kind, text = classify(exc)
        if kind == "timeout":
            self.stats.add(timeouts=1)
            limit = connect_timeout if text == "timed out connecting" else timeout
            return _Transient(f"{text} after {limit:g}s", kind=kind)
        if kind in ("refused", "dns", "connect"):
            self.stats.add(connect_errors=1)
            host = urlsplit(self.url).hostname or ""
            return _Transient(f"{text}: {host}" if kind == "dns" else text, kind=kind)
        self.stats.add(dropped=1)
        return _Transient(f"{text} ({type(exc).__name__}: {self._scrub(str(exc))[:200]})", kind=kind)

    def _report(self) -> None:
        if self.progress is not None:
            try:
                self.progress(self.stats)
            except Exception:  # noqa: BLE001 - a broken progress display must not stop ingestion
                log.exception("progress callback failed")

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)


def _first_settled(pending: deque[Future], settled: threading.Event) -> Future:
    """The head of `pending` once it is done, or sooner any future of the window that failed."""
    while True:
        settled.clear()
        head = pending[0]
        if head.done():
            return head
        for fut in pending:
            if fut.done() and not fut.cancelled() and fut.exception() is not None:
                return fut
        settled.wait()


def _error_fields(error: Any) -> tuple[int | None, str]:
    """(code, message) of a JSON-RPC error object, for the message only: an error without an integer
    code is never taken for a retryable or skipped-slot one (it fails for good). `data` is optional
    in JSON-RPC 2.0."""
    if isinstance(error, dict):
        code = error.get("code")
        message = str(error.get("message", ""))
        if error.get("data") is not None:
            message += f" (data: {_short(error['data'])})"
        return (code if isinstance(code, int) else None), message
    return None, str(error)


def history_commitment(client: RpcClient) -> str:
    # getBlock / getTransaction / getSignaturesForAddress refuse "processed".
    return "confirmed" if client.commitment == "processed" else client.commitment
