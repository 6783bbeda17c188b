"""Retry timing (iq_etl.net.retry) and the three clients' policies built on it."""
from __future__ import annotations

import datetime as dt
import random

import pytest

from iq_etl.export.http_target import RetryPolicy
from iq_etl.ingest.sources.car.http_stream import CAR_RETRIES
from iq_etl.ingest.sources.rpc.client import RPC_RETRIES
from iq_etl.net.retry import EQUAL_JITTER, NO_JITTER, STRETCH_JITTER, Backoff, parse_retry_after

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_backoff_doubles_up_to_its_cap_without_jitter():
    b = Backoff(0.5, 3.0, NO_JITTER)
    assert [b.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert Backoff(0.5).delay(10) == 0.5 * 2 ** 9  # no cap: the CAR reader's patience bounds it instead


@pytest.mark.parametrize("spread", [EQUAL_JITTER, STRETCH_JITTER])
def test_jitter_stays_within_its_spread(spread):
    b = Backoff(1.0, 8.0, spread)
    rng = random.Random(7)
    for n in range(1, 8):
        base = min(8.0, 2.0 ** (n - 1))
        for _ in range(50):
            assert base * spread[0] <= b.delay(n, rng) <= base * spread[1]


def test_equal_jitter_draws_what_the_rpc_client_drew_before():
    """Same seed, same delays: cap/2 + uniform(0, cap/2), as rpc/client.py computed it by hand."""
    b = RPC_RETRIES.backoff
    ours, theirs = random.Random(3), random.Random(3)
    for n in range(1, 10):
        cap = min(30.0, 0.5 * 2 ** (n - 1))
        assert b.delay(n, ours) == cap / 2 + theirs.uniform(0, cap / 2)


def test_the_three_policies():
    assert (RPC_RETRIES.attempts, RPC_RETRIES.backoff, RPC_RETRIES.retry_after_cap) == \
        (9, Backoff(0.5, 30.0, EQUAL_JITTER), 120.0)
    assert (CAR_RETRIES.attempts, CAR_RETRIES.backoff, CAR_RETRIES.retry_after_cap) == (7, Backoff(0.5), 600.0)
    export = RetryPolicy()
    assert (export.max_attempts, export.backoff_base_s, export.backoff_max_s, export.jitter,
            export.retry_after_cap_s) == (5, 0.5, 30.0, 0.25, 60.0)
    rng = random.Random(1)
    assert all(0.5 * 2 ** (n - 1) <= export.backoff(n, rng) <= 1.25 * 0.5 * 2 ** (n - 1) for n in range(1, 6))


@pytest.mark.parametrize("value,cap,expected", [
    ("5", 60, 5.0),
    (" 7 ", 60, 7.0),
    ("0.25", 60, 0.25),
    ("3600", 60, 60.0),
    ("-4", 60, 0.0),
    ("Thu, 01 Jan 2026 12:00:30 GMT", 60, 30.0),
    ("Thu, 01 Jan 2026 11:00:00 GMT", 60, 0.0),
    ("Thu, 01 Jan 2026 12:10:00 -0000", 120, 120.0),
    ("soon", 60, None),
    ("nan", 60, None),
    ("", 60, None),
    (None, 60, None),
])
def test_retry_after_takes_seconds_or_an_http_date(value, cap, expected):
    assert parse_retry_after(value, cap=cap, now=NOW) == expected


def test_retry_after_without_a_cap_and_without_a_clock():
    assert parse_retry_after("90000") == 90000.0
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 0 < parse_retry_after(future) <= 3600
