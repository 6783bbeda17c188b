"""The questions `status` and the coverage report both ask of the upload marts, asked once here so the
two can never disagree: uploads by status and generation, and the incomplete uploads worst first.
(The marts are built by transform; this module only reads them.)"""
from __future__ import annotations

from typing import Any

from clickhouse_connect.driver import Client

from iq_etl.warehouse.catalog import rows_as_dicts

# The values of session_completeness.status and .verification (dbt_project's accepted_values tests).
STATUSES = ("complete", "missing_chunks", "awaiting_finalize", "conflicting_chunks", "total_mismatch")
VERIFICATIONS = ("verified", "mismatch", "unverifiable")

# Worst first: finished uploads with a problem before in-flight ones, then the most missing or
# conflicting chunks, then the newest.
WORST_FIRST = """ORDER BY status = 'awaiting_finalize', chunks_missing + length(conflicting_indexes) DESC,
                 last_slot DESC, upload_key"""


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def uploads_by_status_generation(client: Client) -> list[dict[str, Any]]:
    """Uploads, chunks present and missing per (status, generation) of iq.session_completeness."""
    return [{"status": str(r["status"]), "generation": str(r["generation"]), "uploads": int(r["uploads"]),
             "chunks_present": int(r["chunks_present"]), "chunks_missing": int(r["chunks_missing"])}
            for r in rows_as_dicts(client, """
                SELECT status, toString(generation) AS generation, count() AS uploads,
                       sum(chunks_present) AS chunks_present, sum(chunks_missing) AS chunks_missing
                FROM iq.session_completeness GROUP BY status, generation ORDER BY status, generation""")]


def incomplete_total(client: Client) -> int:
    return int(client.query(
        "SELECT count() FROM iq.session_completeness WHERE status != 'complete'").result_rows[0][0])


def worst_incomplete(client: Client, limit: int) -> list[dict[str, Any]]:
    """The `limit` worst incomplete uploads (WORST_FIRST), counts as ints, slots as ints or None."""
    rows = rows_as_dicts(client, f"""
        SELECT upload_key, toString(generation) AS generation, status, status_reason, chunks_present,
               chunks_expected, chunks_missing, missing_ranges_text, missing_window_first_slot,
               missing_window_last_slot, first_slot, last_slot
        FROM iq.session_completeness WHERE status != 'complete'
        {WORST_FIRST} LIMIT {{n:UInt32}}""", {"n": limit})
    return [{**r, "upload_key": str(r["upload_key"]), "generation": str(r["generation"]), "status": str(r["status"]),
             "status_reason": str(r["status_reason"]), "missing_ranges_text": str(r["missing_ranges_text"]),
             "chunks_present": int(r["chunks_present"]), "chunks_expected": _int_or_none(r["chunks_expected"]),
             "chunks_missing": int(r["chunks_missing"]),
             "missing_window_first_slot": _int_or_none(r["missing_window_first_slot"]),
             "missing_window_last_slot": _int_or_none(r["missing_window_last_slot"]),
             "first_slot": int(r["first_slot"]), "last_slot": int(r["last_slot"])} for r in rows]
