"""Tail cursors in iq.cursors: for each live tail (e.g. `rpc-signatures:<program id>`), the newest
signature already discovered, so the next scheduled run asks getSignaturesForAddress only for what
is newer (`until`). The table is a ReplacingMergeTree on `name` versioned by `updated_at`; reads use
FINAL, writes are plain inserts (parameters via the client, never pasted into SQL)."""
from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from clickhouse_connect.driver import Client


@dataclass(frozen=True)
class Cursor:
    signature: str
    slot: int


class CursorStore:
    """Tail cursors in iq.cursors (ReplacingMergeTree on name, latest updated_at wins)."""

    def __init__(self, client: Client):
        self.client = client
        self._last_stamp: dt.datetime | None = None
        self._lock = threading.Lock()

    def get(self, name: str) -> Cursor | None:
        rows = self.client.query(
            "SELECT last_signature, last_slot FROM iq.cursors FINAL WHERE name = {name:String} "
            "ORDER BY updated_at DESC LIMIT 1",
            parameters={"name": name},
        ).result_rows
        if not rows:
            return None
        sig, slot = rows[0]
        return Cursor(sig.decode() if isinstance(sig, bytes) else str(sig), int(slot))

    def set(self, name: str, signature: str, slot: int) -> None:
        with self._lock:
            # Strictly increasing versions, so two commits within one millisecond still order.
            stamp = dt.datetime.now(dt.timezone.utc)
            stamp = stamp.replace(microsecond=stamp.microsecond // 1000 * 1000)
            if self._last_stamp is not None and stamp <= self._last_stamp:
                stamp = self._last_stamp + dt.timedelta(milliseconds=1)
            self._last_stamp = stamp
        self.client.insert("iq.cursors", [[name, signature, int(slot), stamp]],
                           column_names=["name", "last_signature", "last_slot", "updated_at"])
