"""Issue 21 item 6: public-RPC rate limits only for public hosts; the limits in force are said at
start; a slow sub-range still reports progress."""
from __future__ import annotations

import logging

import pytest

from iq_etl.ingest.sources.rpc import client as rpc


@pytest.mark.parametrize("url,private", [
    ("http://127.0.0.1:8899", True), ("http://localhost:8899", True), ("http://[::1]:8899", True),
    ("http://10.1.2.3:8899", True), ("http://192.168.0.7", True), ("http://172.20.0.1", True),
    ("https://api.mainnet-beta.solana.com", False), ("https://rpc.example.com/?api-key=x", False),
    ("http://8.8.8.8", False),
])
def test_private_hosts_are_recognised(url, private):
    assert rpc.is_private_host(url) is private


def test_limits_by_host_kind_and_said_once(caplog):
    rpc._ANNOUNCED.clear()
    with caplog.at_level(logging.INFO, logger=rpc.__name__):
        assert rpc.limits_in_force("http://127.0.0.1:1", rpc.AUTO, rpc.AUTO, rpc.AUTO) == (None, None, 16)
        assert rpc.limits_in_force("http://127.0.0.1:1", rpc.AUTO, rpc.AUTO, rpc.AUTO) == (None, None, 16)
        assert rpc.limits_in_force("https://u:pw@rpc.example.com/?api-key=s3cret", rpc.AUTO, rpc.AUTO, rpc.AUTO) \
            == (rpc.DEFAULT_RPS, rpc.DEFAULT_METHOD_RPS, rpc.DEFAULT_CONCURRENCY)
        assert rpc.limits_in_force("http://127.0.0.1:1", 5.0, rpc.AUTO, 2) == (5.0, None, 2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == ("RPC http://127.0.0.1:1: no rate limit overall, no limit per method, 16 request(s) in "
                        "flight (defaults for a loopback/private host)")
    assert "9 req/s overall, 3.5 req/s per method, 4 request(s) in flight (defaults for a public host; --rpc-rps" \
        in lines[1] and "s3cret" not in lines[1] and "pw" not in lines[1].replace("req/s", "")
    assert lines[2].endswith("(as set)") and len(lines) == 3


def test_a_slow_subrange_hands_progress_on_inside_it(monkeypatch):
    """scan_range calls its sink at least every PROGRESS_INTERVAL_S, not only per batch and at the end."""
    from iq_etl.ingest import fanout
    from iq_etl.ingest.decode import InstructionFilter
    from iq_etl.solana.slots import SlotRange

    class Block:
        skipped, transactions_seen, transactions = False, 0, ()

        def __init__(self, slot):
            self.slot = slot

    class Slow:
        def iter_blocks(self, first, last):
            for slot in range(first, last + 1):
                yield Block(slot)

    clock = iter(range(0, 10_000))
    monkeypatch.setattr(fanout.time, "perf_counter", lambda: float(next(clock)))   # one "second" per call
    monkeypatch.setattr(fanout, "PROGRESS_INTERVAL_S", 5.0)
    seen = []
    fanout.scan_range(Slow(), SlotRange(1, 20), InstructionFilter(frozenset()), "rpc-blocks", "r",
                      lambda out, stats: seen.append(stats.slots_done), 10_000)
    assert len(seen) > 3 and seen[-1] == 20 and seen == sorted(seen)
