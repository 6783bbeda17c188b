"""Reconcile's warehouse reads and writes: the incomplete uploads of the completeness mart, what earlier
reconcile runs tried (`iq.reconcile_state`), and what was delivered in given export runs."""
from __future__ import annotations

from typing import Sequence

from clickhouse_connect.driver import Client

from iq_etl.reconcile.plan import COMPLETE, IncompleteUpload, ReconcilePlan, UploadState

STATE_COLUMNS = ["upload_key", "attempts", "method", "padding", "window_first", "window_last", "status_before",
                 "run_id"]


def read_states(client: Client) -> dict[str, UploadState]:
    rows = client.query(
        "SELECT upload_key, attempts, method, padding, window_first, window_last FROM iq.reconcile_state FINAL"
    ).result_rows
    return {r[0]: UploadState(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows}


def write_states(client: Client, plan: ReconcilePlan, run_id: str) -> None:
    rows = [[u.upload_key, u.attempt, u.method, u.padding, u.window_first, u.window_last, u.status, run_id]
            for u in plan.uploads]
    if rows:
        client.insert("iq.reconcile_state", rows, column_names=STATE_COLUMNS)


# The mart's column names, in one place (dbt_project/models/marts/session_completeness.sql).
COMPLETENESS = "iq.session_completeness"


def read_statuses(client: Client) -> dict[str, str]:
    """upload_key → completeness status, for every upload the models know."""
    rows = client.query(f"SELECT upload_key, status FROM {COMPLETENESS}").result_rows
    return {str(k): str(s) for k, s in rows}


def read_incomplete(client: Client) -> list[IncompleteUpload]:
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


def delivered_in_runs(client: Client, run_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(upload_key, target) delivered by the given export runs."""
    if not run_ids:
        return []
    rows = client.query(
        "SELECT DISTINCT session_key, target FROM iq.exports WHERE run_id IN {runs:Array(String)} "
        "AND status = 'delivered' ORDER BY session_key, target", parameters={"runs": list(run_ids)}).result_rows
    return [(str(k), str(t)) for k, t in rows]
