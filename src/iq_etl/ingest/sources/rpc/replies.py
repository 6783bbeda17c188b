"""What one JSON-RPC reply may cost: bytes per method, memory once parsed, and a process-wide budget.

A byte cap alone does not bound memory: `json.loads` of a reply made of small values costs far more
than its size (a 250 MB `{"result":[[],[],...]}` took 6.4 GB, about 26 bytes per byte; at 4
requests in flight one hostile endpoint could demand ~27 GB). Three bounds, all in the client:

- per-method byte caps (`reply_cap`): most answers are small (getSignaturesForAddress: at most 1000
  entries; getSignatureStatuses: 256; getTransaction: one transaction, whose logs the runtime cuts at
  10 kB and whose inner instructions are at most 64 of 10 kB), so their replies get a few MB; only a
  full getBlock may use the client's `max_reply_bytes`. A batch may take the sum of its calls' caps.
- a structural estimate before parsing (`parse_cost`): the decoded text plus a price per array,
  object, string, value and key, counted with C-speed `bytes.count` over the body. Calibrated
  against `tracemalloc` peaks of `json.loads` on CPython 3.11 (64-bit): it is at or above the real
  peak for every pathological shape measured ([] {} {"":0} numbers strings, one huge object) and
  about 2x the peak on mainnet-like getBlock replies (real cost ~3.7x their size, estimate ~7.5x).
  A reply whose estimate exceeds its memory limit (`max_reply_memory`, at most 16x its byte cap) is
  refused unparsed, for good.
- a process-wide in-flight budget (`MemoryBudget`): body bytes are reserved as they arrive and the
  parse estimate before `json.loads`; everything is given back when the parse is over. An exchange
  waits while the budget is spent, except the oldest holder, which never waits: so there is no
  deadlock, and the total stays under the budget plus one reply.
"""
from __future__ import annotations

import itertools
import threading
from typing import Any, Callable, Mapping, Sequence

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

DEFAULT_MAX_REPLY_MEMORY = 1 * GIB   # estimated memory of one parsed reply; mainnet-like blocks ~7.5x their size
DEFAULT_MEMORY_BUDGET = 1 * GIB      # every reply of the process being read or parsed, together
MEMORY_PER_CAP = 16                  # a reply's memory limit is at most this many times its byte cap
CHECK_ABOVE = 64 * KIB               # smaller replies are parsed without counting (their cost is trivial)

# Per-call byte caps of the methods the sources use. A method not named here gets max_reply_bytes.
SMALL = 1 * MIB
METHOD_REPLY_CAPS: dict[str, int] = {
    "getHealth": SMALL,
    "getVersion": SMALL,
    "getSlot": SMALL,
    "getBlockHeight": SMALL,
    "getBlockTime": SMALL,
    "getEpochInfo": SMALL,
    "getFirstAvailableBlock": SMALL,
    "minimumLedgerSlot": SMALL,
    "getGenesisHash": SMALL,
    "getLatestBlockhash": SMALL,
    "getSignaturesForAddress": 8 * MIB,   # <= 1000 entries of < 2 kB (memo included)
    "getSignatureStatuses": 4 * MIB,      # <= 256 statuses of a few hundred bytes
    "getTransaction": 8 * MIB,            # one transaction: < 1.5 MB with full logs and inner instructions
    "getBlocks": 16 * MIB,                # <= 500,000 slot numbers
    "getBlocksWithLimit": 16 * MIB,
}
# getBlock by transactionDetails ("full", the default, and "accounts": the client's max_reply_bytes)
GET_BLOCK_CAPS: dict[str, int] = {"none": SMALL, "signatures": 32 * MIB}  # ~360,000 signatures


def call_cap(method: str, params: Sequence[Any], max_reply_bytes: int,
             overrides: Mapping[str, int] | None = None) -> tuple[int, str]:
    """(byte cap, what it is called) for one call's reply."""
    if overrides and method in overrides:
        return min(overrides[method], max_reply_bytes), f"the {method} reply cap"
    if method == "getBlock":
        config = params[1] if len(params) > 1 and isinstance(params[1], dict) else {}
        details = config.get("transactionDetails", "full")
        cap = GET_BLOCK_CAPS.get(details) if isinstance(details, str) else None
        if cap is not None and cap < max_reply_bytes:
            return cap, f"the getBlock reply cap for transactionDetails {details}"
        return max_reply_bytes, "max_reply_bytes"
    cap = METHOD_REPLY_CAPS.get(method)
    if cap is not None and cap < max_reply_bytes:
        return cap, f"the {method} reply cap"
    return max_reply_bytes, "max_reply_bytes"


def reply_cap(calls: Sequence[tuple[str, Sequence[Any]]], max_reply_bytes: int,
              overrides: Mapping[str, int] | None = None) -> tuple[int, str]:
    """(byte cap, its name) for the reply to one POST of `calls` (method, params): the sum of the
    calls' caps (plus 1 kB each for the JSON-RPC envelope), never above max_reply_bytes."""
    caps = [call_cap(m, p, max_reply_bytes, overrides) for m, p in calls]
    if len(caps) == 1:
        return caps[0]
    total = sum(c for c, _ in caps) + KIB * len(caps)
    if total >= max_reply_bytes:
        return max_reply_bytes, "max_reply_bytes"
    methods = sorted({m for m, _ in calls})
    return total, f"the reply cap of a batch of {len(calls)} {'/'.join(methods)} calls"


def memory_limit(cap: int, max_reply_memory: int) -> int:
    """The estimated memory a reply with byte cap `cap` may take once parsed."""
    return min(max_reply_memory, MEMORY_PER_CAP * cap)


# Prices in bytes, CPython 3.11 64-bit (sys.getsizeof and tracemalloc): an array 56 + its growth,
# an object 64 empty / 184 small (per key more as it grows), a string 49 + its text (counted in the
# decoded copy), a number 24-32 plus the pointer that holds it.
_PRICES = ((b"[", 64), (b"{", 240), (b'"', 28), (b",", 40), (b":", 56))


def parse_cost(body: bytes | bytearray) -> tuple[int, int, int]:
    """(estimated peak bytes `json.loads(body)` allocates, arrays + objects, commas).
    The text counts twice (the decoded copy json.loads makes, then the strings parsed out of it), four
    times as wide when the body holds a 4-byte UTF-8 sequence (the str is UCS-4 then), twice as wide
    for other non-ASCII text."""
    width = 1
    if not body.isascii():
        width = 4 if any(body.find(bytes([lead])) >= 0 for lead in range(0xF0, 0xF5)) else 2
    counts = {ch: body.count(ch) for ch, _ in _PRICES}
    cost = 4 * KIB + 2 * len(body) * width + sum(price * counts[ch] for ch, price in _PRICES)
    return cost, counts[b"["] + counts[b"{"], counts[b","]


def shown_size(n: float) -> str:
    for unit, size in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:.0f} {unit}"
    return f"{int(n)} bytes"


class MemoryBudget:
    """Bytes of replies being read or parsed, shared by every RpcClient of the process (with the same
    budget). `ticket()` opens the account of one exchange; `take(ticket, n, stop)` adds n bytes to it,
    waiting while the budget is spent unless the ticket is the oldest holder (the first to have taken
    some, of those holding any) or nobody holds any; `give_back(ticket)` ends it. So the total stays
    under the capacity plus what the oldest holder took. `stop()` is polled while waiting: when it returns
    True the wait ends and take returns False (nothing taken)."""

    POLL = 0.05

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("memory budget must be positive")
        self.capacity = capacity
        self.used = 0
        self.peak = 0          # highest `used` seen (tests and figures)
        self.waits = 0         # takes that had to wait
        self._held: dict[int, int] = {}
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def ticket(self) -> int:
        return next(self._seq)

    def _may(self, ticket: int, n: int) -> bool:
        # `_held` keeps the order of first takes: its first key is the oldest holder. So everything
        # but the oldest holder's share always fits the capacity (a newcomer takes only what fits).
        return self.used + n <= self.capacity or not self._held or next(iter(self._held)) == ticket

    def take(self, ticket: int, n: int, stop: Callable[[], bool] | None = None) -> bool:
        if n <= 0:
            return True
        with self._cond:
            if not self._may(ticket, n):
                self.waits += 1
                while not self._may(ticket, n):
                    if stop is not None and stop():
                        return False
                    self._cond.wait(self.POLL)
            self._held[ticket] = self._held.get(ticket, 0) + n
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def held(self, ticket: int) -> int:
        with self._cond:
            return self._held.get(ticket, 0)

    def give_back(self, ticket: int) -> None:
        with self._cond:
            n = self._held.pop(ticket, 0)
            if n:
                self.used -= n
                self._cond.notify_all()


_BUDGETS: dict[int, MemoryBudget] = {}
_BUDGETS_LOCK = threading.Lock()


def budget_for(capacity: int) -> MemoryBudget:
    """The process's budget of that capacity (every client with the default shares one)."""
    with _BUDGETS_LOCK:
        budget = _BUDGETS.get(capacity)
        if budget is None:
            budget = _BUDGETS[capacity] = MemoryBudget(capacity)
        return budget

