"""The scan ledger `iq.scan_ranges`: which slot sub-ranges each scan has finished (a sub-range is
recorded `done` only after its rows are written), so reruns skip them and reconcile knows the gaps.

Each row also records what the scan looked for (`ScanScope`: source, program set, session-PDA filter).
A narrowed scan (one PDA, fewer programs) must not mark slots done for a wider request: a sub-range
counts as covered for a request only when a `done` scan of the same source whose scope is a superset
covered it (`ScanScope.covers`; the same rule in SQL in `done_ranges`). Rows recorded before scopes
were kept have an empty program set: unknown scope, they cover nothing (rescanned, rows replace
themselves)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Collection, Iterable

from clickhouse_connect.driver import Client

from iq_etl.solana.slots import SlotRange, merge_ranges
from iq_etl.solana.slots import subtract as subtract_ranges

SCAN_COLUMNS = ["source", "first_slot", "last_slot", "run_id", "status", "transactions_seen", "iq_matches",
                "undecoded", "skipped_slots", "last_slot_seen", "error", "started_at", "program_ids", "session_pdas",
                "archive"]


@dataclass(frozen=True)
class ScanScope:
    """What a scan looked for: its source, the program ids it kept, and the session PDAs an
    instruction had to touch (empty: every account). Sorted tuples, so equal scopes compare equal."""

    source: str
    program_ids: tuple[str, ...]
    session_pdas: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "program_ids", tuple(sorted(set(self.program_ids))))
        object.__setattr__(self, "session_pdas", tuple(sorted(set(self.session_pdas))))
        if not self.program_ids:
            raise ValueError("a scan scope needs at least one program id")

    @classmethod
    def of(cls, source: str, program_ids: Collection[str], session_pdas: Collection[str] = ()) -> "ScanScope":
        return cls(source, tuple(program_ids), tuple(session_pdas))

    @property
    def all_accounts(self) -> bool:
        return not self.session_pdas

    def covers(self, wanted: "ScanScope") -> bool:
        """Whether a done scan of this scope holds every row a scan of `wanted` would find: the same
        source, every wanted program, and no account filter or one that includes all wanted PDAs."""
        return (self.source == wanted.source and set(wanted.program_ids) <= set(self.program_ids)
                and (self.all_accounts or (not wanted.all_accounts
                                           and set(wanted.session_pdas) <= set(self.session_pdas))))

    def describe(self) -> str:
        pdas = "every account" if self.all_accounts else f"{len(self.session_pdas)} session PDA(s)"
        return f"{self.source}: {len(self.program_ids)} program(s), {pdas}"


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


def ledger_row(scope: ScanScope, run_id: str, stats: RangeStats, status: str, started_at: dt.datetime,
               error: str = "", archive: str = "") -> list[Any]:
    """One `iq.scan_ranges` row (SCAN_COLUMNS order). `archive`: the identity of the archive(s) read."""
    return [scope.source, stats.first_slot, stats.last_slot, run_id, status, stats.transactions_seen,
            stats.iq_matches, stats.undecoded, stats.skipped_slots, stats.last_slot_seen, error[:2000], started_at,
            list(scope.program_ids), list(scope.session_pdas), archive]


def record_rows(client: Client, rows: list[list[Any]]) -> None:
    """Insert ledger rows built by `ledger_row` (a group of finished sub-ranges in one insert)."""
    if rows:
        client.insert("iq.scan_ranges", rows, column_names=SCAN_COLUMNS)


def record_range(client: Client, scope: ScanScope, run_id: str, stats: RangeStats, status: str,
                 started_at: dt.datetime, error: str = "", archive: str = "") -> None:
    record_rows(client, [ledger_row(scope, run_id, stats, status, started_at, error, archive)])


def done_with_archives(client: Client, scope: ScanScope) -> list[tuple[int, int, str, str]]:
    """(first, last, run_id, archive) of the done sub-ranges whose scan covered `scope`."""
    rows = client.query(
        f"SELECT first_slot, last_slot, run_id, archive FROM iq.scan_ranges FINAL WHERE {_COVERS} ORDER BY first_slot",
        parameters=_scope_params(scope)).result_rows
    return [(int(a), int(b), str(r), str(arc)) for a, b, r, arc in rows]


def mark_stale(client: Client, rows: list[tuple[int, int, str, str]], source: str, why: str) -> None:
    """Record done sub-ranges as `stale` (same key, newer row: FINAL keeps this one), so they no longer
    count as covered and the next ingest rescans them."""
    if not rows:
        return
    client.command(
        "INSERT INTO iq.scan_ranges (source, first_slot, last_slot, run_id, status, transactions_seen, iq_matches, "
        "undecoded, skipped_slots, last_slot_seen, error, started_at, program_ids, session_pdas, archive) "
        "SELECT source, first_slot, last_slot, run_id, 'stale', transactions_seen, iq_matches, undecoded, "
        "skipped_slots, last_slot_seen, {why:String}, started_at, program_ids, session_pdas, archive "
        "FROM iq.scan_ranges FINAL WHERE source = {source:String} AND status = 'done' "
        "AND (first_slot, last_slot, run_id) IN {keys:Array(Tuple(UInt64, UInt64, String))}",
        parameters={"why": why[:2000], "source": source, "keys": [(a, b, r) for a, b, r, _arc in rows]})


# A done row covers the wanted scope: same source, a superset of its programs, and no account filter or
# a filter holding every wanted PDA (an account-filtered request only; ScanScope.covers in SQL).
_COVERS = ("source = {source:String} AND status = 'done' AND hasAll(program_ids, {programs:Array(String)}) "
           "AND (empty(session_pdas) OR (notEmpty({pdas:Array(String)}) AND hasAll(session_pdas, {pdas:Array(String)})))")


def _scope_params(scope: ScanScope) -> dict[str, Any]:
    return {"source": scope.source, "programs": list(scope.program_ids), "pdas": list(scope.session_pdas)}


def done_ranges(client: Client, scope: ScanScope) -> list[tuple[int, int]]:
    """The done sub-ranges whose scan covered `scope` (see `ScanScope.covers`)."""
    rows = client.query(
        f"SELECT first_slot, last_slot FROM iq.scan_ranges FINAL WHERE {_COVERS} ORDER BY first_slot",
        parameters=_scope_params(scope)).result_rows
    return [(int(a), int(b)) for a, b in rows]


def covered_ranges(client: Client, scope: ScanScope) -> list[SlotRange]:
    """The slots covered for `scope`, as merged ranges."""
    return merge_ranges(SlotRange(a, b) for a, b in done_ranges(client, scope))


@dataclass
class Coverage:
    """What was scanned for a program set over every account, any source: merged runs and the gaps
    between them (what `status` and the report show). `scopes`: every scope in the ledger with its
    done slots (deduplicated per scope), so a narrowed or legacy scan is visible, not counted."""

    program_ids: tuple[str, ...]
    scanned: list[dict[str, Any]]
    gaps: list[dict[str, Any]]
    scopes: list[dict[str, Any]]
    stale: list[dict[str, Any]] = field(default_factory=list)   # read from an archive rebuilt since, not rescanned yet

    @property
    def scanned_slots(self) -> int:
        return sum(r["slots"] for r in self.scanned)


def coverage(client: Client, program_ids: Iterable[str]) -> Coverage:
    """Slots scanned (status done, FINAL) by any source whose scan kept every program of
    `program_ids` over every account, merged into runs, with the gaps between consecutive runs."""
    programs = sorted(set(program_ids))
    rows = client.query(
        "SELECT first_slot, last_slot, source FROM iq.scan_ranges FINAL "
        "WHERE status = 'done' AND hasAll(program_ids, {programs:Array(String)}) AND empty(session_pdas) "
        "ORDER BY first_slot, last_slot", parameters={"programs": programs}).result_rows
    scanned: list[dict[str, Any]] = []
    for first, last, source in rows:
        first, last = int(first), int(last)
        if scanned and first <= scanned[-1]["last_slot"] + 1:
            run = scanned[-1]
            run["last_slot"] = max(run["last_slot"], last)
            if source not in run["sources"]:
                run["sources"].append(str(source))
        else:
            scanned.append({"first_slot": first, "last_slot": last, "sources": [str(source)]})
    gaps = []
    for before, after in zip(scanned, scanned[1:]):
        gaps.append({"first_slot": before["last_slot"] + 1, "last_slot": after["first_slot"] - 1,
                     "slots": after["first_slot"] - before["last_slot"] - 1})
    for run in scanned:
        run["slots"] = run["last_slot"] - run["first_slot"] + 1
        run["sources"].sort()
    covered = [SlotRange(r["first_slot"], r["last_slot"]) for r in scanned]
    stale = []
    for first, last, why in client.query(
            "SELECT first_slot, last_slot, any(error) FROM iq.scan_ranges FINAL WHERE status = 'stale' "
            "AND hasAll(program_ids, {programs:Array(String)}) AND empty(session_pdas) "
            "GROUP BY first_slot, last_slot ORDER BY first_slot", parameters={"programs": programs}).result_rows:
        for part in subtract(SlotRange(int(first), int(last)), covered):
            stale.append({"first_slot": part.first_slot, "last_slot": part.last_slot, "slots": part.slot_count,
                          "why": str(why)})
    return Coverage(tuple(programs), scanned, gaps, scopes(client), stale)


def scopes(client: Client) -> list[dict[str, Any]]:
    """Every (source, program set, PDA filter) in the ledger with its distinct slots done (overlapping
    sub-ranges of several runs merged, never summed) and its done sub-ranges. An unknown scope (`known`
    false): rows recorded before scopes were kept, program set empty."""
    out = []
    for source, programs, pdas, ranges in client.query(
            "SELECT source, program_ids, session_pdas, groupArray((first_slot, last_slot)) "
            "FROM iq.scan_ranges FINAL WHERE status = 'done' "
            "GROUP BY source, program_ids, session_pdas ORDER BY source, program_ids, session_pdas").result_rows:
        merged = merge_ranges(SlotRange(int(a), int(b)) for a, b in ranges)
        out.append({"source": str(source), "program_ids": list(programs), "session_pdas": list(pdas),
                    "known": bool(programs), "subranges": len(ranges),
                    "slots": sum(r.slot_count for r in merged)})
    return out


def covered_by_any_source(client: Client, program_ids: Iterable[str], session_pdas: Iterable[str] = ()) -> list[SlotRange]:
    """Slots covered for this program set and account filter by a done scan of any source (CAR, RPC
    blocks, ...), merged: what following the chain must not read again, whichever source read it."""
    rows = client.query(
        "SELECT first_slot, last_slot FROM iq.scan_ranges FINAL WHERE status = 'done' "
        "AND hasAll(program_ids, {programs:Array(String)}) "
        "AND (empty(session_pdas) OR (notEmpty({pdas:Array(String)}) AND hasAll(session_pdas, {pdas:Array(String)})))",
        parameters={"programs": sorted(set(program_ids)), "pdas": sorted(set(session_pdas))}).result_rows
    return merge_ranges(SlotRange(int(a), int(b)) for a, b in rows)


def newest_by_source(client: Client, program_ids: Iterable[str]) -> dict[str, int]:
    """Per source: the highest slot a done scan of this program set (every account) reached."""
    rows = client.query(
        "SELECT source, max(last_slot) FROM iq.scan_ranges FINAL WHERE status = 'done' "
        "AND hasAll(program_ids, {programs:Array(String)}) AND empty(session_pdas) GROUP BY source ORDER BY source",
        parameters={"programs": sorted(set(program_ids))}).result_rows
    return {str(s): int(m) for s, m in rows}


def subtract(wanted: SlotRange, covered: list[SlotRange]) -> list[SlotRange]:
    """The parts of `wanted` outside the `covered` ranges, as SlotRanges."""
    return [SlotRange(a, b) for a, b in subtract_ranges([wanted], covered)]
