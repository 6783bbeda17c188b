"""The scan ledger `iq.scan_ranges`: which slot sub-ranges each source has finished (a sub-range is
recorded `done` only after its rows are written), so reruns skip them and reconcile knows the gaps."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from clickhouse_connect.driver import Client

from iq_etl.solana.slots import SlotRange, merge_ranges

SCAN_COLUMNS = ["source", "first_slot", "last_slot", "run_id", "status", "transactions_seen", "iq_matches",
                "undecoded", "skipped_slots", "last_slot_seen", "error", "started_at"]


@dataclass
class RangeStats:
    first_slot: int
    last_slot: int
    transactions_seen: int = 0
    iq_matches: int = 0
    rows: int = 0
    undecoded: int = 0
    skipped_slots: list[int] = field(default_factory=list)
    last_slot_seen: int | None = None
    read_s: float = 0.0
    extract_s: float = 0.0
    slots_done: int = 0


def record_range(client: Client, source: str, run_id: str, stats: RangeStats, status: str, started_at: dt.datetime,
                 error: str = "") -> None:
    client.insert("iq.scan_ranges", [[
        source, stats.first_slot, stats.last_slot, run_id, status, stats.transactions_seen, stats.iq_matches,
        stats.undecoded, stats.skipped_slots, stats.last_slot_seen, error[:2000], started_at,
    ]], column_names=SCAN_COLUMNS)


def done_ranges(client: Client, source: str) -> list[tuple[int, int]]:
    rows = client.query(
        "SELECT first_slot, last_slot FROM iq.scan_ranges FINAL WHERE source = {source:String} AND status = 'done' "
        "ORDER BY first_slot", parameters={"source": source}).result_rows
    return [(int(a), int(b)) for a, b in rows]


def covered_ranges(client: Client, source: str) -> list[SlotRange]:
    """The slots `source` has finished, as merged ranges."""
    return merge_ranges(SlotRange(a, b) for a, b in done_ranges(client, source))
