"""What the coverage report shows, read from the warehouse as plain rows (JSON-ready dicts).

`report_data(client, limits)` returns four views and says what it left out:

- `scan`: per epoch, the scanned slot runs and the gaps between them (iq.scan_coverage), each run
  clipped to the epoch it falls in;
- `by_status_generation`: uploads by status x generation (iq.session_completeness), and by
  verification x generation when an upload mart carries a `verification` column;
- `chunk_maps`: for the worst incomplete uploads, one cell per chunk index (iq.int_session_chunks):
  present, missing (seen only in failed transactions, or not at all), conflicting (successful
  copies with different bytes) or beyond the declared total;
- `deliveries`: per export target, uploads delivered / last attempt failed / refused, and complete
  uploads never tried there (iq.exports, iq.sessions_ready_to_export).

Every query takes parameters; nothing read from the chain is pasted into SQL. Everything is
bounded by `Limits`; each view records what was cut so the page can say so. Before the first
`iq-etl transform` the marts do not exist: `models_built` is False and the views are empty.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from clickhouse_connect.driver import Client

from iq_etl.settings import DEFAULT_PROGRAM_IDS
from iq_etl.solana.slots import SLOTS_PER_EPOCH, epoch_bounds
from iq_etl.warehouse.catalog import DATABASE, columns, raw_counts, rows_as_dicts, table_exists
from iq_etl.warehouse.marts import (
    WORST_FIRST,
    incomplete_total,
    uploads_by_status_generation,
    worst_incomplete,
)
from iq_etl.warehouse.runs import history, latest_lag
from iq_etl.warehouse.scan_ledger import coverage

# Marts that may carry `verification` / `verification_reason`, in the order they are looked at.
VERIFICATION_MARTS = ("session_completeness", "session_payloads", "sessions_ready_to_export", "upload_payloads")

RUN_ROWS = 200        # runs drawn on the report's time axis (the newest)
MISMATCH_ROWS = 100   # verification-refused uploads named in the report (the rest are counted)

# Cell states of a chunk map.
PRESENT, MISSING, FAILED_ONLY, CONFLICTING, BEYOND = "present", "missing", "failed_only", "conflicting", "beyond_total"
CELL_STATES = (PRESENT, MISSING, FAILED_ONLY, CONFLICTING, BEYOND)


@dataclass(frozen=True)
class Limits:
    """Bounds of the page: a warehouse with millions of uploads still renders a page of a few MB."""

    scan_runs: int = 5_000          # scan_coverage rows read (runs and gaps)
    epochs: int = 60                # epoch rows drawn
    chunk_maps: int = 12            # incomplete uploads given a chunk map (the worst first)
    cells: int = 1_024              # cells per chunk map (indexes 0..cells-1)
    incomplete_rows: int = 200      # rows of the incomplete uploads table
    targets: int = 50               # export targets

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise ValueError(f"report limit {name} must be at least 1, got {value}")


def _count(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> int:
    return int(client.query(sql, parameters=parameters).result_rows[0][0])


def report_data(client: Client, limits: Limits | None = None, *, warehouse: str | None = None,
                program_ids: Iterable[str] = DEFAULT_PROGRAM_IDS) -> dict[str, Any]:
    """The report's data: plain values only (ints, strings, lists, dicts). `warehouse` names where the
    figures come from (Settings.warehouse_name); coverage is that of `program_ids` over every account."""
    limits = limits or Limits()
    data: dict[str, Any] = {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "warehouse": warehouse or "(not named)",
        "limits": asdict(limits),
        "models_built": table_exists(client, "session_completeness"),
        **raw_counts(client),
    }
    data["scan"] = scan_view(client, limits, program_ids)
    if data["models_built"]:
        data["by_status_generation"] = status_generation_view(client)
        data["incomplete"] = incomplete_view(client, limits)
        data["chunk_maps"] = chunk_map_view(client, limits)
    else:
        data["by_status_generation"] = {"rows": [], "generations": [], "verification": None}
        data["incomplete"] = {"rows": [], "total": 0, "shown": 0}
        data["chunk_maps"] = {"maps": [], "incomplete_total": 0, "cut_uploads": 0}
    data["deliveries"] = delivery_view(client, limits)
    data["history"] = {"runs": history(client, RUN_ROWS), "lag": latest_lag(client)}
    return data


# --- scan coverage timeline -------------------------------------------------------------------

def scan_view(client: Client, limits: Limits, program_ids: Iterable[str] = DEFAULT_PROGRAM_IDS) -> dict[str, Any]:
    """Per epoch: the runs ('scanned' / 'gap') inside it, clipped to the epoch's slots: the coverage of
    `program_ids` over every account (scan_ledger.coverage, the same figures as `iq-etl status`)."""
    cov = coverage(client, program_ids)
    every = sorted([("scanned", r["first_slot"], r["last_slot"]) for r in cov.scanned]
                   + [("gap", g["first_slot"], g["last_slot"]) for g in cov.gaps], key=lambda r: (r[1], r[0]))
    runs_total = len(every)
    rows = every[:limits.scan_runs]
    epochs: dict[int, dict[str, Any]] = {}
    cut_from: int | None = None   # the first slot not drawn (epoch or run cap), None when all is drawn
    for kind, first, last in rows:
        first, last = int(first), int(last)
        for epoch in range(first // SLOTS_PER_EPOCH, last // SLOTS_PER_EPOCH + 1):
            bounds = epoch_bounds(epoch)
            a, b = max(first, bounds.first_slot), min(last, bounds.last_slot)
            if epoch not in epochs and len(epochs) >= limits.epochs:
                cut_from = a
                break
            entry = epochs.setdefault(epoch, {"epoch": epoch, "first_slot": bounds.first_slot, "last_slot": bounds.last_slot,
                                              "runs": [], "scanned_slots": 0, "gap_slots": 0, "gaps": 0})
            entry["runs"].append({"kind": str(kind), "first_slot": a, "last_slot": b})
            if kind == "scanned":
                entry["scanned_slots"] += b - a + 1
            else:
                entry["gap_slots"] += b - a + 1
                entry["gaps"] += 1
        if cut_from is not None:
            break
    if cut_from is None and len(rows) < runs_total:
        cut_from = int(rows[-1][2]) + 1
    ordered = [epochs[e] for e in sorted(epochs)]
    for entry in ordered:
        entry["extent_first"] = min(r["first_slot"] for r in entry["runs"])
        entry["extent_last"] = max(r["last_slot"] for r in entry["runs"])
    return {"built": True, "epochs": ordered, "runs_total": runs_total, "runs_read": len(rows), "cut_from": cut_from,
            "program_ids": list(cov.program_ids), "scopes": cov.scopes}


# --- uploads by status x generation -------------------------------------------------------------

def verification_source(client: Client) -> str | None:
    """The first upload mart carrying `verification` (another change adds it; the report does not need it)."""
    for table in VERIFICATION_MARTS:
        if table_exists(client, table) and {"verification", "upload_key"} <= columns(client, table):
            return table
    return None


def status_generation_view(client: Client) -> dict[str, Any]:
    rows = uploads_by_status_generation(client)
    view: dict[str, Any] = {"rows": rows, "generations": sorted({r["generation"] for r in rows}),
                            "verification": None}
    table = verification_source(client)
    if table is not None:
        # {t:Identifier}: the table name is one of VERIFICATION_MARTS, bound as a parameter all the same
        ver = rows_as_dicts(client, """
            SELECT toString(c.generation) AS generation, toString(v.verification) AS verification, count() AS uploads
            FROM iq.session_completeness AS c
            INNER JOIN (SELECT upload_key, any(verification) AS verification FROM {db:Identifier}.{t:Identifier}
                        GROUP BY upload_key) AS v ON v.upload_key = c.upload_key
            GROUP BY generation, verification ORDER BY generation, verification""",
                            {"db": DATABASE, "t": table})
        view["verification"] = {"source": table, "rows": [
            {"generation": str(r["generation"]), "verification": str(r["verification"]) or "(none)",
             "uploads": int(r["uploads"])} for r in ver]}
        # The uploads refused for a verification mismatch, by name (never exported: an operator looks at each)
        refused = rows_as_dicts(client, """
            SELECT upload_key, any(verification_reason) AS reason FROM {db:Identifier}.{t:Identifier}
            WHERE verification = 'mismatch' GROUP BY upload_key ORDER BY upload_key LIMIT {n:UInt32}""",
                                {"db": DATABASE, "t": table, "n": MISMATCH_ROWS}) \
            if "verification_reason" in columns(client, table) else []
        view["verification"]["mismatches"] = [{"upload_key": str(r["upload_key"]), "reason": str(r["reason"])}
                                              for r in refused]
        view["verification"]["mismatches_total"] = sum(r["uploads"] for r in view["verification"]["rows"]
                                                       if r["verification"] == "mismatch")
    return view


# --- incomplete uploads and their chunk maps ----------------------------------------------------

def incomplete_view(client: Client, limits: Limits) -> dict[str, Any]:
    """The incomplete uploads table (also the Prefect table artifact)."""
    total = incomplete_total(client)
    rows = worst_incomplete(client, limits.incomplete_rows)
    out = []
    for r in rows:
        first, last = r["missing_window_first_slot"], r["missing_window_last_slot"]
        window = "" if first is None and last is None else (f"before {last}" if first is None else f"{first}:{last}")
        out.append({"upload_key": str(r["upload_key"]), "generation": str(r["generation"]), "status": str(r["status"]),
                    "present": int(r["chunks_present"]),
                    "expected": None if r["chunks_expected"] is None else int(r["chunks_expected"]),
                    "missing": int(r["chunks_missing"]), "missing_ranges": str(r["missing_ranges_text"]),
                    "rescan_slots": window, "reason": str(r["status_reason"]),
                    "first_slot": int(r["first_slot"]), "last_slot": int(r["last_slot"])})
    return {"rows": out, "total": total, "shown": len(out)}


def chunk_map_view(client: Client, limits: Limits) -> dict[str, Any]:
    """One map per incomplete upload (the worst `limits.chunk_maps`), `limits.cells` cells each."""
    total = incomplete_total(client)
    uploads = rows_as_dicts(client, f"""
        SELECT upload_key, upload_shape, toString(generation) AS generation, status, status_reason,
               chunks_expected, chunks_present, chunks_missing, chunks_beyond_total, missing_piece_signature
        FROM iq.session_completeness WHERE status != 'complete'
        {WORST_FIRST} LIMIT {{n:UInt32}}""", {"n": limits.chunk_maps})
    keys = [str(u["upload_key"]) for u in uploads]
    chunks: dict[str, dict[int, tuple[int, int, int]]] = {k: {} for k in keys}
    highest: dict[str, int] = {}
    if keys and table_exists(client, "int_session_chunks"):
        for key, index, copies, failed, distinct in client.query("""
                SELECT upload_key, chunk_index, copies_seen, failed_copies, distinct_payloads
                FROM iq.int_session_chunks
                WHERE upload_key IN {keys:Array(String)} AND chunk_index < {cells:UInt32}
                ORDER BY upload_key, chunk_index""", parameters={"keys": keys, "cells": limits.cells}).result_rows:
            chunks[str(key)][int(index)] = (int(copies), int(failed), int(distinct))
        for key, top in client.query("""
                SELECT upload_key, max(chunk_index) FROM iq.int_session_chunks
                WHERE upload_key IN {keys:Array(String)} GROUP BY upload_key""",
                                     parameters={"keys": keys}).result_rows:
            highest[str(key)] = int(top)
    maps = []
    for u in uploads:
        key = str(u["upload_key"])
        expected = None if u["chunks_expected"] is None else int(u["chunks_expected"])
        seen_bound = highest.get(key, -1) + 1
        bound = max(expected if expected is not None else 0, seen_bound)
        drawn = min(bound, limits.cells)
        cells = []
        for i in range(drawn):
            copies, failed, distinct = chunks[key].get(i, (0, 0, 0))
            if expected is not None and i >= expected and (copies or failed):
                cells.append(BEYOND)
            elif distinct > 1:
                cells.append(CONFLICTING)
            elif copies > 0:
                cells.append(PRESENT)
            elif failed > 0:
                cells.append(FAILED_ONLY)
            else:
                cells.append(MISSING)
        counts = {state: cells.count(state) for state in CELL_STATES}
        maps.append({"upload_key": key, "upload_shape": str(u["upload_shape"]), "generation": str(u["generation"]),
                     "status": str(u["status"]), "reason": str(u["status_reason"]), "expected": expected,
                     "present": int(u["chunks_present"]), "missing": int(u["chunks_missing"]),
                     "missing_piece_signature": str(u["missing_piece_signature"] or ""),
                     "indexes": bound, "cells": cells, "cells_cut": bound - drawn, "counts": counts})
    return {"maps": maps, "incomplete_total": total, "cut_uploads": max(0, total - len(maps))}


# --- delivery per target ----------------------------------------------------------------------

def delivery_view(client: Client, limits: Limits) -> dict[str, Any]:
    """Per target (iq.exports, dry runs left out): uploads delivered; not delivered and whose last
    attempt failed or was refused; complete uploads never tried there."""
    if not table_exists(client, "exports"):
        return {"targets": [], "targets_total": 0}
    targets_total = _count(client, "SELECT uniqExact(target) FROM iq.exports WHERE status != 'dry_run'")
    per_target: dict[str, dict[str, Any]] = {}
    for r in rows_as_dicts(client, """
            SELECT target, count() AS uploads_tried, countIf(state = 'delivered') AS delivered,
                   countIf(state IN ('failed', 'retrying')) AS failed, countIf(state = 'refused') AS refused,
                   max(last_at) AS last_attempt_at
            FROM (SELECT target, session_key, max(attempted_at) AS last_at,
                         if(countIf(status = 'delivered') > 0, 'delivered', argMax(status, attempted_at)) AS state
                  FROM iq.exports WHERE status != 'dry_run' GROUP BY target, session_key)
            GROUP BY target ORDER BY target LIMIT {n:UInt32}""", {"n": limits.targets}):
        per_target[str(r["target"])] = {
            "target": str(r["target"]), "delivered": int(r["delivered"]), "failed": int(r["failed"]),
            "refused": int(r["refused"]), "never_tried": None,
            "last_attempt_at": r["last_attempt_at"].isoformat(timespec="seconds")
            if isinstance(r["last_attempt_at"], _dt.datetime) else str(r["last_attempt_at"])}
    if table_exists(client, "sessions_ready_to_export"):
        for target, entry in per_target.items():
            entry["never_tried"] = _count(client, """
                SELECT count() FROM iq.sessions_ready_to_export
                WHERE NOT has(delivered_targets, {t:String})
                  AND upload_key NOT IN (SELECT session_key FROM iq.exports
                                         WHERE target = {t:String} AND status != 'dry_run')""", {"t": target})
    ready = _count(client, "SELECT count() FROM iq.sessions_ready_to_export") \
        if table_exists(client, "sessions_ready_to_export") else None
    return {"targets": list(per_target.values()), "targets_total": targets_total, "ready": ready}
