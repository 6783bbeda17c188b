"""Reconciliation planning: where to look again for the missing chunks of incomplete uploads.

Plain Python (no Prefect), so the rules are testable on their own; `iq_etl.orchestration.flows.reconcile_flow`
runs the plan. For each upload that `iq.session_completeness` does not call complete:

- **rpc**: when an RPC endpoint is configured and the upload has a session account (G2 and G3
  sessions), the signatures touching that account are discovered again (getSignaturesForAddress) and
  those transactions ingested: exact, wherever the chunks are.
- **window** otherwise (and for linked lists, which have no session account): the slot window where
  the mart says the missing chunks most likely sit, widened by `padding` slots on each side, is
  re-ingested from the CAR archives (or rpc-blocks). The padding starts at `initial_padding` and grows
  ×`growth` on every run that still finds the upload incomplete, up to `max_padding`; it is stored per
  upload in `iq.reconcile_state`. Slots already scanned (`iq.scan_ranges`, status done) are not
  scanned again: if a window holds nothing new, the padding keeps growing within the same run until
  it does or reaches the cap. An upload at the cap whose window is fully scanned is reported as
  exhausted (its chunks are not in the scanned history).

A run scans at most `max_scan_slots` slots; uploads beyond the budget wait for the next run
(narrowest windows first). Uploads whose chunks disagree (`conflicting_chunks`) are not searched:
more history cannot settle a conflict.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

log = logging.getLogger(__name__)

COMPLETE = "complete"
SLOTS_PER_EPOCH = 432_000
SEARCHED_STATUSES = ("missing_chunks", "awaiting_finalize", "total_mismatch")
STATE_COLUMNS = ["upload_key", "attempts", "method", "padding", "window_first", "window_last", "status_before",
                 "run_id"]


@dataclass(frozen=True)
class Policy:
    initial_padding: int = 2_000
    growth: int = 4
    max_padding: int = 432_000          # one epoch on each side
    max_scan_slots: int = 2_000_000     # slots re-scanned per run at most
    max_uploads: int = 1_000            # uploads planned per run at most

    def __post_init__(self) -> None:
        if self.initial_padding < 0 or self.max_padding < self.initial_padding:
            raise ValueError("reconcile padding: need 0 <= initial_padding <= max_padding")
        if self.growth < 2:
            raise ValueError("reconcile growth must be at least 2")
        if self.max_scan_slots < 1 or self.max_uploads < 1:
            raise ValueError("reconcile budgets must be at least 1")


@dataclass(frozen=True)
class IncompleteUpload:
    upload_key: str
    status: str
    generation: str
    session_account: str    # '' for linked lists
    window_first: int       # the slot window where the missing chunks most likely sit
    window_last: int


@dataclass(frozen=True)
class UploadState:
    upload_key: str
    attempts: int
    method: str
    padding: int
    window_first: int
    window_last: int


@dataclass
class UploadPlan:
    upload_key: str
    status: str
    method: str                 # window | rpc
    attempt: int                # 1 for the first reconcile of this upload
    padding: int
    window_first: int
    window_last: int
    session_account: str = ""   # the account whose signatures an rpc search discovers
    new_ranges: list[tuple[int, int]] = field(default_factory=list)   # unscanned parts of the window
    exhausted: bool = False     # at max_padding and nothing left to scan

    @property
    def new_slots(self) -> int:
        return sum(b - a + 1 for a, b in self.new_ranges)


@dataclass
class ReconcilePlan:
    uploads: list[UploadPlan] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)     # over this run's budget
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (upload_key, reason)

    @property
    def scan_ranges(self) -> list[tuple[int, int]]:
        return merge([r for u in self.uploads if u.method == "window" for r in u.new_ranges])

    @property
    def session_pdas(self) -> list[str]:
        return list(dict.fromkeys(u.session_account for u in self.uploads if u.method == "rpc"))

    def to_json(self) -> dict[str, Any]:
        return {"uploads": [asdict(u) | {"new_slots": u.new_slots} for u in self.uploads],
                "scan_ranges": self.scan_ranges, "deferred": self.deferred, "skipped": self.skipped}


# --- interval arithmetic ----------------------------------------------------------------------

def merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, non-overlapping, non-adjacent inclusive ranges."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def subtract(wanted: Iterable[tuple[int, int]], covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `wanted` not inside any `covered` range (all inclusive)."""
    cov = merge(covered)
    out: list[tuple[int, int]] = []
    for a, b in merge(wanted):
        start = a
        for c, d in cov:
            if d < start:
                continue
            if c > b:
                break
            if c > start:
                out.append((start, c - 1))
            start = max(start, d + 1)
            if start > b:
                break
        if start <= b:
            out.append((start, b))
    return out


def available_parts(ranges: Iterable[tuple[int, int]], epoch_available: Callable[[int], bool]) -> list[tuple[int, int]]:
    """The parts of `ranges` in epochs whose archive exists (the current epoch's CAR file, or epochs
    before a development chain's first, do not)."""
    out: list[tuple[int, int]] = []
    for a, b in merge(ranges):
        start = a
        while start <= b:
            epoch = start // SLOTS_PER_EPOCH
            end = min(b, (epoch + 1) * SLOTS_PER_EPOCH - 1)
            if epoch_available(epoch):
                out.append((start, end))
            start = end + 1
    return merge(out)


# --- planning ---------------------------------------------------------------------------------

def widen(first: int, last: int, padding: int) -> tuple[int, int]:
    return max(0, first - padding), last + padding


def plan_reconcile(incomplete: Sequence[IncompleteUpload], states: dict[str, UploadState],
                   covered: Sequence[tuple[int, int]], policy: Policy = Policy(), use_rpc: bool = False,
                   epoch_available: Callable[[int], bool] | None = None) -> ReconcilePlan:
    """Decide, for each incomplete upload, how to search for its chunks in this run.

    `covered` are the slot ranges the window source already scanned; slots in epochs for which
    `epoch_available` says no archive exists are treated like them (nothing to read there, yet). An
    rpc search is repeated on every run (new signatures of the session account may have landed)."""
    plan = ReconcilePlan()
    candidates: list[UploadPlan] = []
    for upload in incomplete:
        if upload.status == COMPLETE:
            continue
        if upload.status not in SEARCHED_STATUSES:
            plan.skipped.append((upload.upload_key, f"status {upload.status}: more history cannot fix it"))
            continue
        prev = states.get(upload.upload_key)
        attempt = (prev.attempts if prev else 0) + 1
        if use_rpc and upload.session_account:
            candidates.append(UploadPlan(upload.upload_key, upload.status, "rpc", attempt, 0, upload.window_first,
                                         upload.window_last, session_account=upload.session_account))
            continue
        padding = policy.initial_padding if prev is None or prev.method != "window" else \
            min(policy.max_padding, max(prev.padding * policy.growth, policy.initial_padding))
        while True:
            first, last = widen(upload.window_first, upload.window_last, padding)
            new = subtract([(first, last)], covered)
            if epoch_available is not None:
                new = available_parts(new, epoch_available)
            if new or padding >= policy.max_padding:
                break
            # Nothing unscanned in this window: widen now rather than spend a run on it.
            padding = min(policy.max_padding, max(padding * policy.growth, 1))
        candidates.append(UploadPlan(upload.upload_key, upload.status, "window", attempt, padding, first, last,
                                     new_ranges=new, exhausted=not new))
    # Narrowest first within the budget: a few quick finds beat one epoch-wide scan.
    candidates.sort(key=lambda u: (u.method != "rpc", u.new_slots, u.upload_key))
    budget = policy.max_scan_slots
    planned_ranges: list[tuple[int, int]] = []
    for item in candidates:
        if len(plan.uploads) >= policy.max_uploads:
            plan.deferred.append(item.upload_key)
            continue
        if item.method == "window" and item.new_ranges:
            extra = subtract(item.new_ranges, planned_ranges)   # shared slots count once
            cost = sum(b - a + 1 for a, b in extra)
            if cost > budget and plan.uploads:
                plan.deferred.append(item.upload_key)
                continue
            budget -= cost
            planned_ranges = merge([*planned_ranges, *extra])
        plan.uploads.append(item)
    return plan


# --- warehouse reads and writes ---------------------------------------------------------------

def read_states(client: Any) -> dict[str, UploadState]:
    rows = client.query(
        "SELECT upload_key, attempts, method, padding, window_first, window_last FROM iq.reconcile_state FINAL"
    ).result_rows
    return {r[0]: UploadState(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows}


def write_states(client: Any, plan: ReconcilePlan, run_id: str) -> None:
    rows = [[u.upload_key, u.attempt, u.method, u.padding, u.window_first, u.window_last, u.status, run_id]
            for u in plan.uploads]
    if rows:
        client.insert("iq.reconcile_state", rows, column_names=STATE_COLUMNS)


def covered_ranges(client: Any, source: str) -> list[tuple[int, int]]:
    rows = client.query(
        "SELECT first_slot, last_slot FROM iq.scan_ranges FINAL WHERE source = {source:String} AND status = 'done'",
        parameters={"source": source}).result_rows
    return merge((int(a), int(b)) for a, b in rows)


# The mart's column names, in one place (dbt_project/models/marts/session_completeness.sql).
COMPLETENESS = "iq.session_completeness"


def table_exists(client: Any, name: str) -> bool:
    db, table = name.split(".", 1)
    return bool(client.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                             parameters={"db": db, "t": table}).result_rows[0][0])


def read_statuses(client: Any) -> dict[str, str]:
    """upload_key → completeness status, for every upload the models know."""
    rows = client.query(f"SELECT upload_key, status FROM {COMPLETENESS}").result_rows
    return {str(k): str(s) for k, s in rows}


def read_incomplete(client: Any) -> list[IncompleteUpload]:
    """Uploads that are not complete, with the slot window where their missing chunks most likely sit."""
    rows = client.query(
        f"SELECT upload_key, status, generation, session_account, "
        f"       missing_window_first_slot, missing_window_last_slot, first_slot, last_slot "
        f"FROM {COMPLETENESS} WHERE status != {{complete:String}} ORDER BY upload_key",
        parameters={"complete": COMPLETE}).result_rows
    out = []
    for key, status, generation, account, wf, wl, first, last in rows:
        # The mart's window where it has one (gaps between present chunks; for a broken linked list
        # only its upper end, the lowest piece found); otherwise the upload's own slot span (an
        # upload awaiting its finalize: the finalize comes after its last chunk).
        ends = [int(v) for v in (wf, wl, first, last) if v is not None]
        if not ends:
            continue  # the models know no slot of it at all: nothing to search around
        hi = int(wl) if wl is not None else (int(last) if last is not None else max(ends))
        lo = int(wf) if wf is not None else min(int(first) if first is not None else hi, hi)
        out.append(IncompleteUpload(str(key), str(status), str(generation), str(account or ""), lo, max(lo, hi)))
    return out


def delivered_in_runs(client: Any, run_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(upload_key, target) delivered by the given export runs."""
    if not run_ids:
        return []
    rows = client.query(
        "SELECT DISTINCT session_key, target FROM iq.exports WHERE run_id IN {runs:Array(String)} "
        "AND status = 'delivered' ORDER BY session_key, target", parameters={"runs": list(run_ids)}).result_rows
    return [(str(k), str(t)) for k, t in rows]


@dataclass
class ReconcileSummary:
    searched: int = 0                   # uploads a search was planned for
    deferred: int = 0                   # over this run's budget: next run
    skipped: int = 0                    # not searchable (conflicting chunks)
    scanned_ranges: list[tuple[int, int]] = field(default_factory=list)
    rpc_sessions: int = 0
    rows_written: int = 0
    newly_complete: list[str] = field(default_factory=list)
    exported: list[tuple[str, str]] = field(default_factory=list)     # (upload_key, target)
    export_failures: int = 0
    still_missing: list[dict[str, Any]] = field(default_factory=list)  # upload_key, status, padding, exhausted
    unreadable: list[dict[str, str]] = field(default_factory=list)     # searches that failed part-way

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        lines = ["## Reconcile", "",
                 f"- uploads searched: {self.searched} (deferred to the next run: {self.deferred}, "
                 f"not searchable: {self.skipped})",
                 f"- slot ranges re-scanned: {', '.join(f'{a}-{b}' for a, b in self.scanned_ranges) or 'none'}; "
                 f"sessions re-discovered over RPC: {self.rpc_sessions}; rows written: {self.rows_written}",
                 f"- newly complete: {len(self.newly_complete)}",
                 f"- exported in this run: {len(self.exported)} (failed: {self.export_failures})",
                 f"- still incomplete: {len(self.still_missing)}", ""]
        if self.unreadable:
            lines += ["| search not read completely | error |", "|---|---|"]
            lines += [f"| {u['search']} | {u['error'][:200].replace('|', '/')} |" for u in self.unreadable] + [""]
        if self.newly_complete:
            lines += ["| newly complete |", "|---|", *[f"| `{k}` |" for k in self.newly_complete], ""]
        if self.still_missing:
            lines += ["| still incomplete | status | padding | exhausted |", "|---|---|---|---|"]
            lines += [f"| `{m['upload_key']}` | {m['status']} | {m.get('padding', '')} | "
                      f"{'yes' if m.get('exhausted') else ''} |" for m in self.still_missing[:50]]
            if len(self.still_missing) > 50:
                lines.append(f"| … {len(self.still_missing) - 50} more | | | |")
        return "\n".join(lines)


def summarise(before: dict[str, str], after: dict[str, str], plan: ReconcilePlan, rows_written: int,
              exported: list[tuple[str, str]], export_failures: int,
              unreadable: Sequence[dict[str, str]] = ()) -> ReconcileSummary:
    planned = {u.upload_key: u for u in plan.uploads}
    still = []
    for key, status in sorted(after.items()):
        if status == COMPLETE:
            continue
        item = planned.get(key)
        still.append({"upload_key": key, "status": status, "method": item.method if item else "",
                      "padding": item.padding if item else None, "exhausted": bool(item and item.exhausted)})
    return ReconcileSummary(
        searched=len(plan.uploads), deferred=len(plan.deferred), skipped=len(plan.skipped),
        scanned_ranges=plan.scan_ranges, rpc_sessions=len(plan.session_pdas), rows_written=rows_written,
        newly_complete=sorted(k for k, s in after.items() if s == COMPLETE and before.get(k) != COMPLETE),
        exported=exported, export_failures=export_failures, still_missing=still, unreadable=list(unreadable),
    )
