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
from typing import Any, Callable, Sequence

from iq_etl.solana.slots import available_parts, merge_ranges, subtract

log = logging.getLogger(__name__)

COMPLETE = "complete"
SEARCHED_STATUSES = ("missing_chunks", "awaiting_finalize", "total_mismatch")


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
        return merge_ranges([r for u in self.uploads if u.method == "window" for r in u.new_ranges])

    @property
    def session_pdas(self) -> list[str]:
        return list(dict.fromkeys(u.session_account for u in self.uploads if u.method == "rpc"))

    def to_json(self) -> dict[str, Any]:
        return {"uploads": [asdict(u) | {"new_slots": u.new_slots} for u in self.uploads],
                "scan_ranges": self.scan_ranges, "deferred": self.deferred, "skipped": self.skipped}


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
            planned_ranges = merge_ranges([*planned_ranges, *extra])
        plan.uploads.append(item)
    return plan


# --- warehouse reads and writes ---------------------------------------------------------------


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
                 f"- slot ranges re-scanned: {', '.join(f'{a}:{b}' for a, b in self.scanned_ranges) or 'none'}; "
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
