"""Fault injection for the JSON-RPC server (what to break) and its request counters."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class Faults:
    """What to break. Probabilities use a seeded RNG (the order of concurrent requests still varies)."""
    rate_limit: int | None = None       # JSON-RPC calls allowed per `rate_window` (batch items count one each)
    rate_window: float = 1.0            # seconds
    retry_after: float | None = None    # Retry-After value; default: the rest of the window, rounded up
    error_rate: float = 0.0             # probability of an HTTP 5xx answer
    error_status: int = 503
    delay: float = 0.0                  # seconds to wait before answering ...
    delay_rate: float = 1.0             # ... with this probability
    drop_rate: float = 0.0              # probability of closing the connection without an answer
    seed: int = 0
    burst: tuple[int, int] | None = None  # scripted 429s: (answered, refused) HTTP requests, repeating
    reject_batches: bool = False        # answer JSON-RPC batches with HTTP 403, as some paid-tier gates do
    hide_blocks: frozenset[int] = frozenset()  # slots whose getBlock says -32009 though getBlocks lists them
    # A malformed peer (tests): (method, params, result) -> the result to send instead. Runs on every
    # successful call; return the result unchanged for calls to leave alone.
    tamper: Callable[[str, list, Any], Any] | None = None


@dataclass
class ServerCounters:
    http_requests: int = 0
    rpc_calls: int = 0
    by_method: Counter = field(default_factory=Counter)
    http_429: int = 0
    http_5xx: int = 0
    dropped: int = 0
    delayed: int = 0
