"""Client-side rate limits for a JSON-RPC endpoint: a token bucket per endpoint and per method, a
concurrency cap, shared by every client of the same URL in the process; and the call counters."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence


class TokenBucket:
    """Thread-safe token bucket. Capacity 1 means no bursts: at most 1 + rate·T requests in T seconds.

    A request for n > capacity tokens is let through once the bucket is full and leaves it in debt,
    so a batch of n items still costs n/rate seconds of budget."""

    def __init__(self, rate: float, capacity: float = 1.0, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self, n: float = 1.0, cancel: threading.Event | None = None) -> float:
        """Block until n tokens are taken; return the seconds waited. Raises `Cancelled` when `cancel` is set."""
        waited = 0.0
        need = min(float(n), self.capacity)
        while True:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= need:
                    self._tokens -= n
                    return waited
                delay = (need - self._tokens) / self.rate
            if cancel is not None and self._sleep is time.sleep:
                cancel.wait(delay)
            else:
                self._sleep(delay)
            waited += delay


class _Limits:
    """Budget shared by every RpcClient of the process that talks to the same URL with the same
    settings: the ingest stage opens one client per sub-range (in threads), and together they must
    still stay under the provider's per-IP limits. Holds the overall and per-method token buckets,
    the in-flight semaphore and the pause a 429's Retry-After imposes on everyone."""

    def __init__(self, rps: float | None, method_rps: float | None, concurrency: int):
        self.bucket = TokenBucket(rps) if rps else None
        self.method_rps = method_rps
        self.method_buckets: dict[str, TokenBucket] = {}
        self.in_flight = threading.BoundedSemaphore(concurrency)
        self.pause_until = 0.0
        self.lock = threading.Lock()

    def pause_all(self, seconds: float) -> None:
        with self.lock:
            self.pause_until = max(self.pause_until, time.monotonic() + seconds)

    def wait_for_budget(self, methods: Sequence[str], cancel: threading.Event | None = None) -> float:
        """Sleep out any 429 pause, then take one token per call (its method named) from both buckets;
        seconds waited. Raises `Cancelled` as soon as `cancel` is set."""
        waited = 0.0
        with self.lock:
            pause = self.pause_until - time.monotonic()
        if pause > 0:
            _nap(pause, cancel)
        if self.bucket is not None:
            waited += self.bucket.acquire(len(methods), cancel)
        if self.method_rps:
            by_method: dict[str, int] = {}
            for method in methods:
                by_method[method] = by_method.get(method, 0) + 1
            for method, n in by_method.items():
                with self.lock:
                    bucket = self.method_buckets.get(method)
                    if bucket is None:
                        bucket = self.method_buckets[method] = TokenBucket(self.method_rps)
                waited += bucket.acquire(n, cancel)
        return waited

    @contextmanager
    def slot(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """One of the `concurrency` in-flight places; waiting for it ends with `Cancelled` when `cancel` is set."""
        while not self.in_flight.acquire(timeout=0.1):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
        try:
            yield
        finally:
            self.in_flight.release()


class Cancelled(Exception):
    """A wait for budget or a slot was given up because the work was cancelled."""


def _nap(seconds: float, cancel: threading.Event | None) -> None:
    if cancel is None:
        time.sleep(seconds)
    elif cancel.wait(seconds):
        raise Cancelled()


_LIMITS: dict[tuple, _Limits] = {}
_LIMITS_LOCK = threading.Lock()


def _limits_for(url: str, rps: float | None, method_rps: float | None, concurrency: int) -> _Limits:
    key = (url, rps or None, method_rps or None, concurrency)
    with _LIMITS_LOCK:
        limits = _LIMITS.get(key)
        if limits is None:
            limits = _LIMITS[key] = _Limits(rps, method_rps, concurrency)
        return limits


@dataclass
class RpcStats:
    """Counters for progress reports. Read `snapshot()` for a consistent copy."""
    requests: int = 0              # JSON-RPC calls answered (batch items count one each)
    http_posts: int = 0            # HTTP exchanges attempted
    retries: int = 0               # calls sent again after a retryable failure
    http_429: int = 0
    http_5xx: int = 0
    timeouts: int = 0              # connect/read timeouts and request deadlines
    dropped: int = 0               # connections closed or reset without a complete answer
    connect_errors: int = 0        # connection refused, or the host name did not resolve
    retryable_rpc_errors: int = 0  # -32004 / -32005 / -32014 answers
    skipped_slots: int = 0
    signatures_paged: int = 0      # getSignaturesForAddress entries received (sources add these)
    transactions_fetched: int = 0  # transactions parsed from getTransaction / getBlock (sources add these)
    blocks_fetched: int = 0
    bytes_received: int = 0
    waited_rate_limit_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            out = {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "started"}
            elapsed = max(time.monotonic() - self.started, 1e-9)
        out["elapsed_s"] = elapsed
        out["requests_per_s"] = out["requests"] / elapsed
        return out
