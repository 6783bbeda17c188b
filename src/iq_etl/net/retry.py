"""Retry timing shared by the HTTP clients: exponential backoff with jitter, and the server's
Retry-After. How many retries, from what first delay and up to what cap is each client's own
policy (a `Retries` constant beside its code: RPC, CAR, export); the arithmetic is here once."""
from __future__ import annotations

import datetime as _dt
import email.utils
import math
import random
from dataclasses import dataclass

NO_JITTER = (1.0, 1.0)
EQUAL_JITTER = (0.5, 1.0)   # half the delay fixed, half at random: spread out, never near zero
STRETCH_JITTER = (1.0, 1.25)  # the delay, stretched by up to a quarter at random


@dataclass(frozen=True)
class Backoff:
    """The delay before retry number `n` (1-based): `first` doubled per retry, at most `cap`, then
    scaled by a random factor between `spread[0]` and `spread[1]` (so that clients that failed
    together do not all come back at once)."""

    first: float
    cap: float = math.inf
    spread: tuple[float, float] = NO_JITTER

    def delay(self, n: int, rng: random.Random | None = None) -> float:
        base = min(self.cap, self.first * (2 ** (n - 1)))
        low, high = self.spread
        if low == high:
            return base * low
        # uniform(a, b) is a + (b - a) * random(): the same draws as the clients made before
        return base * low + (rng or random).uniform(0.0, base * (high - low))


@dataclass(frozen=True)
class Retries:
    """One client's retry policy: `retries` after the first attempt (so retries + 1 attempts),
    spaced by `backoff`, and a server's Retry-After honoured up to `retry_after_cap` seconds."""

    retries: int
    backoff: Backoff
    retry_after_cap: float

    @property
    def attempts(self) -> int:
        return self.retries + 1


def parse_retry_after(value: str | None, *, cap: float = math.inf,
                      now: _dt.datetime | None = None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds (fractions accepted) or an HTTP date, never
    below 0 nor above `cap`. None when absent or unreadable (the caller's backoff decides then)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)  # "-0000": UTC, said without a zone
        seconds = (when - (now or _dt.datetime.now(_dt.timezone.utc))).total_seconds()
    if math.isnan(seconds):
        return None
    return max(0.0, min(cap, seconds))
