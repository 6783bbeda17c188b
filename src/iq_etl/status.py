"""What the warehouse knows, for people: uploads by status and generation, their verification
(verified / mismatch / unverifiable, docs/protocol.md "Verification"; a mismatch is listed and
never exported), the incomplete uploads with their missing chunk ranges, and the holes in scan
coverage.

`status_report(client)` reads the dbt marts (iq.session_completeness, iq.scan_coverage) and the
raw ledgers, and returns a plain dict (JSON-ready). `status_markdown(report)` renders it as
markdown (Prefect flows publish it as an artifact); `print_status(report)` prints terminal tables.
Before the first `iq-etl transform` the marts do not exist: the report says so instead of failing.
"""
from __future__ import annotations

import datetime as _dt
from typing import Any, Iterable, Sequence

from clickhouse_connect.driver import Client

from iq_etl.settings import DEFAULT_PROGRAM_IDS
from iq_etl.warehouse.catalog import columns as table_columns
from iq_etl.warehouse.catalog import raw_counts, rows_as_dicts, table_exists
from iq_etl.warehouse.marts import STATUSES, VERIFICATIONS, uploads_by_status_generation, worst_incomplete
from iq_etl.warehouse.runs import latest_lag
from iq_etl.warehouse.scan_ledger import coverage, newest_by_source

DEFAULT_INCOMPLETE_LIMIT = 20
DEFAULT_MISMATCH_LIMIT = 50
DEFAULT_GAP_LIMIT = 20


def _has_column(client: Client, table: str, column: str) -> bool:
    return column in table_columns(client, table)


def _verification(client: Client, mismatch_limit: int) -> dict[str, Any]:
    """Uploads by verification and generation, and the mismatches (uploads whose rebuilt bytes are
    not what the chain commits to: never exported), each with its reason."""
    if not _has_column(client, "session_completeness", "verification"):
        return {"available": False, "totals": {}, "by_generation": [], "mismatches": [], "mismatches_total": 0}
    rows = rows_as_dicts(client, """
        SELECT verification, toString(generation) AS generation, count() AS uploads,
               countIf(status = 'complete') AS complete, any(verification_reason) AS example_reason
        FROM iq.session_completeness
        GROUP BY verification, generation
        ORDER BY verification, generation""")
    totals = {v: 0 for v in VERIFICATIONS}
    for row in rows:
        row["uploads"], row["complete"] = int(row["uploads"]), int(row["complete"])
        totals[row["verification"]] = totals.get(row["verification"], 0) + row["uploads"]
    mismatches = [
        {**r, "first_slot": int(r["first_slot"]), "last_slot": int(r["last_slot"])}
        for r in rows_as_dicts(client, """
            SELECT upload_key, toString(generation) AS generation, status, verification_reason,
                   first_slot, last_slot
            FROM iq.session_completeness
            WHERE verification = 'mismatch'
            ORDER BY last_slot DESC, upload_key
            LIMIT {limit:UInt32}""", {"limit": mismatch_limit})]
    return {"available": True, "totals": totals, "by_generation": rows, "mismatches": mismatches,
            "mismatches_total": totals.get("mismatch", 0)}


def status_report(client: Client, *, warehouse: str | None = None, program_ids: Iterable[str] = DEFAULT_PROGRAM_IDS,
                  incomplete_limit: int = DEFAULT_INCOMPLETE_LIMIT, gap_limit: int = DEFAULT_GAP_LIMIT,
                  mismatch_limit: int = DEFAULT_MISMATCH_LIMIT) -> dict[str, Any]:
    """A snapshot of upload completeness and scan coverage (plain JSON-ready values).

    `warehouse`: its name as shown to the operator (Settings.warehouse_name); `program_ids`: the
    program set coverage is computed for (slots count as scanned only where a scan of a superset of
    them, over every account, finished; see scan_ledger.coverage). Counts are deduplicated (FINAL)."""
    report: dict[str, Any] = {
        "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "warehouse": warehouse or "(not named)",
        "models_built": table_exists(client, "session_completeness"),
        **raw_counts(client),
    }
    report["scan"] = _scan(client, program_ids, gap_limit)
    report["lag"] = latest_lag(client)
    if not report["models_built"]:
        report.update(totals={}, by_status_generation=[], incomplete=[], ready_to_export=0,
                      verification={"available": False, "totals": {}, "by_generation": [],
                                    "mismatches": [], "mismatches_total": 0})
        return report

    by_group = uploads_by_status_generation(client)
    totals = {status: 0 for status in STATUSES}
    for row in by_group:
        totals[row["status"]] = totals.get(row["status"], 0) + row["uploads"]
    totals["uploads"] = sum(r["uploads"] for r in by_group)
    report["totals"] = totals
    report["by_status_generation"] = by_group
    report["incomplete"] = worst_incomplete(client, incomplete_limit)

    report["verification"] = _verification(client, mismatch_limit)

    report["delivery"] = _deliveries(client)
    # Complete, never delivered anywhere, and exportable: a verification mismatch never will be.
    exportable = "verification != 'mismatch'" if report["verification"]["available"] else "1"
    report["ready_to_export"] = int(client.query(
        f"SELECT count() FROM iq.session_completeness WHERE status = 'complete' AND {exportable}").result_rows[0][0]) \
        if not table_exists(client, "sessions_ready_to_export") else int(client.query(
            "SELECT countIf(empty(delivered_targets) AND "
            + ("verification != 'mismatch'" if _has_column(client, "sessions_ready_to_export", "verification") else "1")
            + ") FROM iq.sessions_ready_to_export").result_rows[0][0])
    return report


def _scan(client: Client, program_ids: Iterable[str], gap_limit: int) -> dict[str, Any]:
    """Scan coverage for `program_ids` over every account (iq.scan_ranges, FINAL): merged runs, the
    gaps between them (the first `gap_limit`), and every scope in the ledger (narrowed or unknown scans
    are listed there, never counted as coverage)."""
    cov = coverage(client, program_ids)
    return {"program_ids": list(cov.program_ids), "scanned": cov.scanned, "gaps": cov.gaps[:gap_limit],
            "gaps_total": len(cov.gaps), "scanned_slots": cov.scanned_slots, "scopes": cov.scopes,
            "stale": cov.stale[:gap_limit], "stale_total": len(cov.stale),
            "newest_by_source": newest_by_source(client, program_ids)}


def _deliveries(client: Client) -> list[dict[str, Any]]:
    """Per export target: uploads delivered, attempts that failed or were refused, and complete uploads
    never delivered there ("complete and never delivered" is per target: a second backend may lag)."""
    if not table_exists(client, "exports"):
        return []
    rows = rows_as_dicts(client, """
        SELECT target, uniqExactIf(session_key, status = 'delivered') AS delivered,
               countIf(status = 'failed') AS failed_attempts, countIf(status = 'refused') AS refused_attempts,
               countIf(status = 'retrying') AS retried_attempts
        FROM iq.exports WHERE status != 'dry_run' GROUP BY target ORDER BY target""")
    ready = table_exists(client, "sessions_ready_to_export")
    for row in rows:
        row["never_delivered"] = int(client.query(
            "SELECT countIf(NOT has(delivered_targets, {t:String})) FROM iq.sessions_ready_to_export",
            parameters={"t": row["target"]}).result_rows[0][0]) if ready else None
        for key in ("delivered", "failed_attempts", "refused_attempts", "retried_attempts"):
            row[key] = int(row[key])
    return rows


def _window(row: dict[str, Any]) -> str:
    first, last = row.get("missing_window_first_slot"), row.get("missing_window_last_slot")
    if first is None and last is None:
        return ""
    if first is None:
        return f"before {last}"
    return f"{first}:{last}"  # the slot-spec syntax: paste it into `iq-etl ingest`


def _short(key: str, width: int = 48) -> str:
    """Control characters escaped, cut after `width` with `…(N chars)` (iq_etl.output.visible)."""
    from iq_etl.output import visible

    return visible(key, width)


def _tables(report: dict[str, Any], terminal: bool = False) -> list[tuple[str, list[str], list[list[Any]]]]:
    """(title, columns, rows) for each section; shared by the markdown and terminal renderers.
    The terminal version shortens keys and leaves out the reason column (the JSON has it all)."""
    if not report.get("models_built"):
        return []
    ranges_width = 32 if terminal else 400
    incomplete_columns = ["upload", "generation", "status", "present/expected", "missing indexes", "rescan slots"]
    if not terminal:
        incomplete_columns.append("why")
    incomplete_rows = []
    for r in report["incomplete"]:
        row = [r["upload_key"], r["generation"], r["status"],  # upload keys are never cut: people paste them
               f"{r['chunks_present']}/{'?' if r['chunks_expected'] is None else r['chunks_expected']}",
               _short(r["missing_ranges_text"], ranges_width), _window(r)]
        if not terminal:
            row.append(r["status_reason"])
        incomplete_rows.append(row)
    scan = report.get("scan") or {}
    verification = report.get("verification") or {}
    return [(
        "Uploads by status and generation",
        ["status", "generation", "uploads", "chunks present", "chunks missing"],
        [[r["status"], r["generation"], r["uploads"], r["chunks_present"], r["chunks_missing"]]
         for r in report["by_status_generation"]],
    ), (
        "Verification by generation",
        ["verification", "generation", "uploads", "complete"] + ([] if terminal else ["why (one example)"]),
        [[r["verification"], r["generation"], r["uploads"], r["complete"]] + ([] if terminal else [r["example_reason"]])
         for r in verification.get("by_generation", [])],
    ), (
        "Verification mismatches (never exported)",
        ["upload", "generation", "status", "slots", "why"],
        [[m["upload_key"], m["generation"], m["status"], f"{m['first_slot']}:{m['last_slot']}", m["verification_reason"]]
         for m in verification.get("mismatches", [])],
    ), (
        "Incomplete uploads (top)", incomplete_columns, incomplete_rows,
    ), (
        "Deliveries by target",
        ["target", "delivered", "complete, never delivered here", "failed attempts", "refused attempts"],
        [[d["target"], d["delivered"], "" if d["never_delivered"] is None else d["never_delivered"],
          d["failed_attempts"], d["refused_attempts"]] for d in report.get("delivery", [])],
    ), (
        "Scan coverage gaps",
        ["first slot", "last slot", "slots"],
        [[g["first_slot"], g["last_slot"], g["slots"]] for g in scan.get("gaps", [])],
    )]


def _summary_line(report: dict[str, Any]) -> str:
    """One paragraph: which warehouse, then the deduplicated figures and the coverage of the configured
    program set (a scan narrowed to some PDAs or fewer programs is named, never counted)."""
    where = f"Warehouse: {report.get('warehouse', '(not named)')}."
    scan = report.get("scan") or {}
    programs = len(scan.get("program_ids") or [])
    narrowed = [s for s in scan.get("scopes", []) if not s.get("known") or s.get("session_pdas")
                or not set(scan.get("program_ids") or []) <= set(s.get("program_ids") or [])]
    coverage = (f"{scan.get('scanned_slots', sum(r['slots'] for r in scan.get('scanned', [])))} slots scanned for "
                f"{programs} program(s) over every account, {scan.get('gaps_total', 0)} gap(s)")
    if narrowed:
        coverage += (f" ({len(narrowed)} narrower or unknown scan scope(s) not counted: "
                     f"{sum(s['slots'] for s in narrowed)} slots; `status --json` lists them)")
    if scan.get("stale_total"):
        coverage += (f"; {scan['stale_total']} range(s) STALE (read from an archive rebuilt since: the next ingest "
                     f"rescans them, e.g. {scan['stale'][0]['first_slot']}:{scan['stale'][0]['last_slot']})")
    lag = report.get("lag")
    if lag:
        seconds = lag.get("lag_seconds")
        coverage += (f"; lag {lag['lag_slots']:,} slots" + (f" (~{seconds / 3600:.1f} h)" if seconds is not None else "")
                     + f" behind tip {lag['tip_slot']} as seen by {lag['command']} at {lag['seen_at']}"
                     if lag.get("lag_slots") is not None else f"; tip {lag['tip_slot']}, start slot not covered yet")
    if not report.get("models_built"):
        return (f"{where} {report['raw_instructions']} raw instructions, {report['undecoded_instructions']} "
                f"undecoded; {coverage}; the models are not built yet: run `iq-etl transform`")
    t = report["totals"]
    v = (report.get("verification") or {}).get("totals") or {}
    return (f"{where} {t.get('uploads', 0)} uploads: {t.get('complete', 0)} complete, {t.get('missing_chunks', 0)} "
            f"missing chunks, {t.get('awaiting_finalize', 0)} awaiting finalize, {t.get('conflicting_chunks', 0)} "
            f"conflicting, {t.get('total_mismatch', 0)} total mismatch; {v.get('verified', 0)} verified, "
            f"{v.get('mismatch', 0)} verification mismatch (never exported); {report.get('ready_to_export', 0)} complete "
            f"and never delivered; {coverage}; {report['raw_instructions']} raw instructions, "
            f"{report['undecoded_instructions']} undecoded instructions")


def _md_cell(value: Any, limit: int = 400) -> str:
    """A markdown table cell: line breaks as spaces, other control characters escaped, values longer
    than `limit` cut (`…(N chars)`), `|` escaped. Clean text, e.g. an upload key, is unchanged."""
    from iq_etl.output import visible

    text = "" if value is None else str(value)
    return visible(text.replace("\r\n", " ").replace("\n", " "), limit).replace("|", "\\|")


def status_markdown(report: dict[str, Any]) -> str:
    """The report as markdown: a summary line and one table per section."""
    lines = ["## Upload status", "", _summary_line(report), ""]
    for title, columns, rows in _tables(report):
        lines += [f"### {title}", ""]
        if not rows:
            lines += ["(none)", ""]
            continue
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "---|" * len(columns))
        lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def print_status(report: dict[str, Any], file=None) -> None:
    """Terminal tables (rich)."""
    import sys

    from iq_etl.output import print_rows

    out = file or sys.stdout
    print(_summary_line(report), file=out)
    for title, columns, rows in _tables(report, terminal=True):
        if rows:
            print_rows(columns, rows, "table", title=title, file=out)
        else:
            print(f"{title}: none", file=out)


def render_status(report: dict[str, Any], fmt: str = "markdown") -> str:
    """The report as 'markdown' or 'json' text."""
    if fmt == "json":
        import json

        from iq_etl.output import jsonable

        return json.dumps(jsonable(report), indent=2)
    return status_markdown(report)


__all__: Sequence[str] = ("status_report", "status_markdown", "print_status", "render_status")
