"""Long ingest runs are never silent outside a terminal (operations issue, item 11): an INFO heartbeat
with slots/s, tx/s, rows and ETA at most every heartbeat_s seconds, and the same report for a
Prefect progress artifact. A fake clock, nothing else faked."""
from __future__ import annotations

import logging

from iq_etl.ingest.progress import IngestProgress, ProgressReport
from iq_etl.warehouse.scan_ledger import RangeStats


def _stats(first, last, txs, matches, rows):
    s = RangeStats(first, last)
    s.transactions_seen, s.iq_matches, s.rows = txs, matches, rows
    return s


def test_heartbeats_are_logged_at_most_every_interval_and_at_the_end(caplog):
    now = [0.0]
    reports: list[ProgressReport] = []
    with caplog.at_level(logging.INFO, logger="iq_etl.ingest.progress"):
        with IngestProgress(False, 3000, heartbeat_s=30, on_progress=reports.append, clock=lambda: now[0]) as p:
            now[0] = 10
            p.advance(500, _stats(0, 999, 100, 1, 1))       # too soon: nothing
            now[0] = 40
            p.advance(500, _stats(0, 999, 200, 2, 2))       # 30 s passed: a heartbeat
            now[0] = 45
            p.advance(1000, _stats(1000, 1999, 50, 1, 1))   # too soon again
            now[0] = 50
            p.advance(1000, _stats(2000, 2999, 50, 1, 1))   # the end: a last heartbeat
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 == len(reports)
    assert lines[0].startswith("ingest: 1,000/3,000 slots (33%), 25 slots/s, 5 tx/s, 2 IQ matches, 2 rows, ETA 80s")
    assert reports[-1].fraction == 1.0 and reports[-1].rows == 4 and reports[-1].eta_s is None
    assert "3,000/3,000 slots (100%)" in lines[-1]


def test_a_broken_callback_does_not_stop_ingest(caplog):
    def broken(_report):
        raise RuntimeError("artifact API down")

    with IngestProgress(False, 10, heartbeat_s=0, on_progress=broken) as p:
        p.advance(10, _stats(0, 9, 1, 0, 0))
    assert any("progress callback failed" in r.getMessage() for r in caplog.records)


def test_the_last_heartbeat_is_said_once(caplog):
    now = [0.0]
    with caplog.at_level(logging.INFO, logger="iq_etl.ingest.progress"):
        with IngestProgress(False, 10, heartbeat_s=30, clock=lambda: now[0]) as p:
            now[0] = 1
            p.advance(10, _stats(0, 9, 5, 1, 1))
            now[0] = 2
            p.advance(0, _stats(0, 9, 5, 1, 1))  # the run's closing advance of a finished sub-range
    assert len(caplog.records) == 1


def test_heartbeat_says_the_http_rate_and_connections_in_use(caplog):
    """Issue 24: with HTTP CAR reads in this process, every heartbeat says their MB/s since the previous
    line and the mean number of connections in use since then (their seconds of requests over the
    interval). Real transfer counters, a fake clock."""
    from iq_etl.ingest.sources.car.byte_range import STATS

    counters = type(STATS)()            # this process's kind of counters, a fresh set
    counters.add("fetched", 7_000_000)  # bytes of an earlier run: not this run's
    lane_s = [3.0]
    now = [0.0]

    def transfers():
        return {**counters.snapshot(), "lane_seconds": lane_s[0]}

    with caplog.at_level(logging.INFO, logger="iq_etl.ingest.progress"):
        with IngestProgress(False, 3000, heartbeat_s=10, clock=lambda: now[0], transfers=transfers) as p:
            now[0] = 10
            p.advance(1000, _stats(0, 2999, 10, 0, 0))      # no HTTP byte yet: no HTTP figures
            counters.add("fetched", 50_000_000)
            lane_s[0] += 16 * 10
            now[0] = 20
            p.advance(1000, _stats(0, 2999, 20, 0, 0))      # 50 MB in 10 s over 16 connections
            counters.add("fetched", 20_000_000)
            lane_s[0] += 4 * 10
            now[0] = 30
            p.advance(1000, _stats(0, 2999, 30, 0, 0))      # 20 MB in the last 10 s over 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "HTTP" not in lines[0]
    assert ", HTTP 5.0 MB/s over 16.0 connection(s)" in lines[1]
    assert ", HTTP 2.0 MB/s over 4.0 connection(s)" in lines[2]
