"""Progress of an ingest run: a bar on a terminal; elsewhere (a pipe, a log file, a Prefect worker) an
INFO heartbeat line at most every `heartbeat_s` seconds (slots/s, tx/s, rows, ETA; with HTTP CAR reads in
this process, their MB/s since the last line and the mean number of connections in use), and a callback
the Prefect flow turns into a progress artifact. Long runs are never silent.

The HTTP figures come from this process's transfer counters (byte_range.STATS): worker processes of
`--threads` and Dask workers keep their own, so there the line shows none (their bytes are in no
counter here)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from iq_etl.warehouse.scan_ledger import RangeStats

log = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 30.0


@dataclass(frozen=True)
class ProgressReport:
    slots_done: int
    slots_total: int
    transactions: int
    matches: int
    rows: int
    elapsed_s: float
    http_mb_s: float | None = None      # HTTP CAR bytes fetched by this process since the last report, MB/s
    connections: float | None = None    # HTTP connections of this process in use since then, on average

    @property
    def fraction(self) -> float:
        return self.slots_done / self.slots_total if self.slots_total else 1.0

    @property
    def eta_s(self) -> float | None:
        if not self.slots_done or self.slots_done >= self.slots_total:
            return None
        return self.elapsed_s * (self.slots_total - self.slots_done) / self.slots_done

    def line(self) -> str:
        elapsed = max(self.elapsed_s, 1e-6)
        eta = "" if self.eta_s is None else f", ETA {_duration(self.eta_s)}"
        return (f"ingest: {self.slots_done:,}/{self.slots_total:,} slots ({self.fraction:.0%}), "
                f"{self.slots_done / elapsed:,.0f} slots/s, {self.transactions / elapsed:,.0f} tx/s, "
                f"{self.matches:,} IQ matches, {self.rows:,} rows{self.http_text()}{eta}")

    def http_text(self) -> str:
        if self.http_mb_s is None:
            return ""
        return f", HTTP {self.http_mb_s:,.1f} MB/s over {self.connections or 0:.1f} connection(s)"


def _car_transfers() -> dict[str, Any]:
    """This process's HTTP CAR transfer counters, with its connections' seconds in use (`lane_seconds`)."""
    from iq_etl.ingest.sources.car.byte_range import STATS
    from iq_etl.ingest.sources.car.parallel import lane_seconds

    return {**STATS.snapshot(), "lane_seconds": lane_seconds()}


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class IngestProgress:
    """Running totals over the sub-ranges of a run; shown as a bar (`bar=True`) or heartbeats."""

    def __init__(self, bar: bool, total_slots: int, *, heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                 on_progress: Callable[[ProgressReport], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 transfers: Callable[[], dict[str, Any]] | None = None):
        self.bar = bar
        self.total = total_slots
        self.heartbeat_s = heartbeat_s
        self.on_progress = on_progress
        self.clock = clock
        self.started = clock()
        self.last_beat = self.started
        self.slots = self.txs = self.matches = self.rows = 0
        self._range: tuple[int, int] | None = None
        self._base = (0, 0, 0)
        self._finished = False
        self.transfers = transfers or _car_transfers
        first = self.transfers()
        self._fetched_start = first["fetched"]
        self._fetched_seen = first["fetched"]   # at the last report
        self._seen_at = self.started
        self._lane_s_seen = first.get("lane_seconds", 0.0)
        self._http: tuple[float, float] | None = None

    def _http_figures(self, now: float) -> tuple[float, float] | None:
        """(MB/s since the last report, mean connections in use since then), or None before any HTTP byte
        of this run. Between two reports less than a second apart the previous figures stand (a rate over
        a few milliseconds says nothing)."""
        snap = self.transfers()
        if snap["fetched"] <= self._fetched_start:
            self._seen_at = now   # the first rate counts from the last report without HTTP bytes
            self._lane_s_seen = snap.get("lane_seconds", 0.0)
            return None
        if now - self._seen_at >= 1.0 or self._http is None:
            span = max(now - self._seen_at, 1e-6)
            fetched = snap["fetched"] - self._fetched_seen
            lane_s = snap.get("lane_seconds", 0.0) - self._lane_s_seen
            # a sequential read (one connection, no lanes) is one connection while it fetches
            connections = lane_s / span if lane_s > 0 else (1.0 if fetched > 0 else 0.0)
            self._http = (fetched / 1e6 / span, connections)
            self._fetched_seen, self._seen_at = snap["fetched"], now
            self._lane_s_seen = snap.get("lane_seconds", 0.0)
        return self._http

    def __enter__(self) -> "IngestProgress":
        if self.bar:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(TextColumn("[bold]ingest"), BarColumn(),
                               TextColumn("{task.completed:,.0f}/{task.total:,.0f} slots"),
                               TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False)
            self._p.__enter__()
            self._task = self._p.add_task("ingest", total=self.total, rate="")
        return self

    def report(self) -> ProgressReport:
        now = self.clock()
        http = self._http_figures(now)
        return ProgressReport(self.slots, self.total, self.txs, self.matches, self.rows, now - self.started,
                              http_mb_s=None if http is None else round(http[0], 1),
                              connections=None if http is None else round(http[1], 1))

    def advance(self, slots: int, stats: RangeStats) -> None:
        """Move by `slots`; `stats` is the running total of the current sub-range."""
        key = (stats.first_slot, stats.last_slot)
        if key != self._range:  # a new sub-range: fold the previous one in
            self._range, self._base = key, (self.txs, self.matches, self.rows)
        self.txs = self._base[0] + stats.transactions_seen
        self.matches = self._base[1] + stats.iq_matches
        self.rows = self._base[2] + stats.rows + stats.undecoded
        self.slots += max(slots, 0)
        now = self.clock()
        if self.bar:
            elapsed = max(now - self.started, 1e-6)
            http = self._http_figures(now)
            net = "" if http is None else f"  {http[0]:,.0f} MB/s over {http[1]:.1f} connections"
            self._p.update(self._task, advance=max(slots, 0),
                           rate=f"{self.slots / elapsed:,.0f} slots/s  {self.txs / elapsed:,.0f} tx/s  "
                                f"{self.matches:,} IQ matches{net}")
        finished = self.slots >= self.total and not self._finished
        if now - self.last_beat >= self.heartbeat_s or finished:
            self.last_beat = now
            self._finished = self._finished or finished
            report = self.report()
            if not self.bar:
                log.info("%s", report.line())
            if self.on_progress is not None:
                try:
                    self.on_progress(report)
                except Exception:  # noqa: BLE001 - a broken progress display must not stop ingestion
                    log.exception("progress callback failed")

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self._p.__exit__(*exc)
