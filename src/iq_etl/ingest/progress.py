"""Progress of an ingest run on a terminal (a bar when stderr is a TTY, nothing otherwise)."""
from __future__ import annotations

import time

from iq_etl.warehouse.scan_ledger import RangeStats


class _Progress:
    """A rich progress bar (slots/s, tx/s, IQ matches, ETA) when enabled; a no-op otherwise."""

    def __init__(self, enabled: bool, total_slots: int):
        self.enabled = enabled
        self.total = total_slots
        self.txs = 0
        self.matches = 0
        self.started = time.monotonic()

    def __enter__(self) -> "_Progress":
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._p = Progress(TextColumn("[bold]ingest"), BarColumn(), TextColumn("{task.completed:,.0f}/{task.total:,.0f} slots"),
                               TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), transient=False)
            self._p.__enter__()
            self._task = self._p.add_task("ingest", total=self.total, rate="")
        return self

    def advance(self, slots: int, stats: RangeStats) -> None:
        """Move by `slots`; `stats` is the running total of the current sub-range."""
        if not self.enabled:
            return
        key = (stats.first_slot, stats.last_slot)
        if key != getattr(self, "_range", None):  # a new sub-range: fold the previous one in
            self._range, self._base_txs, self._base_matches = key, self.txs, self.matches
        self.txs = self._base_txs + stats.transactions_seen
        self.matches = self._base_matches + stats.iq_matches
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.slots = getattr(self, "slots", 0) + max(slots, 0)
        self._p.update(self._task, advance=max(slots, 0),
                       rate=f"{self.slots / elapsed:,.0f} slots/s  {self.txs / elapsed:,.0f} tx/s  "
                            f"{self.matches:,} IQ matches")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.__exit__(*exc)
