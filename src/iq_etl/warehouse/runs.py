"""The run history `iq.runs` (migration 009): one row per pipeline / follow / ingest / export run,
with the chain tip and covered frontier for runs that followed the chain. `latest_lag` is what
`status`, the report and the status artifact show as the warehouse's lag."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from clickhouse_connect.driver import Client

from iq_etl.warehouse.catalog import rows_as_dicts, table_exists

RUN_COLUMNS = ["run_id", "flow_run_id", "command", "started_at", "status", "slots_covered", "rows_written",
               "uploads_complete", "uploads_delivered", "errors", "message", "tip_slot", "tip_time",
               "frontier_slot", "frontier_time", "warehouse"]


@dataclass
class RunRecord:
    run_id: str
    command: str
    started_at: dt.datetime
    status: str = "ok"
    flow_run_id: str = ""
    slots_covered: int = 0
    rows_written: int = 0
    uploads_complete: int = 0
    uploads_delivered: int = 0
    errors: int = 0
    message: str = ""
    tip_slot: int | None = None
    tip_time: dt.datetime | None = None
    frontier_slot: int | None = None
    frontier_time: dt.datetime | None = None
    warehouse: str = ""


def record_run(client: Client, run: RunRecord) -> None:
    values = asdict(run)
    values["message"] = values["message"][:2000]
    client.insert("iq.runs", [[values[c] for c in RUN_COLUMNS]], column_names=RUN_COLUMNS)


def complete_uploads(client: Client) -> int:
    """Complete uploads in the marts (0 before the first transform)."""
    if not table_exists(client, "session_completeness"):
        return 0
    return int(client.query("SELECT countIf(status = 'complete') FROM iq.session_completeness").result_rows[0][0])


def latest_lag(client: Client) -> dict[str, Any] | None:
    """The lag as the newest run that looked at the chain tip saw it: tip, frontier, lag in slots and
    seconds (by block times, when both were known), and when that was."""
    if not table_exists(client, "runs"):
        return None
    rows = rows_as_dicts(client, """
        SELECT run_id, command, finished_at, tip_slot, tip_time, frontier_slot, frontier_time
        FROM iq.runs WHERE tip_slot IS NOT NULL ORDER BY finished_at DESC LIMIT 1""")
    if not rows:
        return None
    r = rows[0]
    tip, frontier = int(r["tip_slot"]), r["frontier_slot"]
    lag_slots = tip - int(frontier) if frontier is not None else None
    lag_s = None
    if r["tip_time"] is not None and r["frontier_time"] is not None:
        lag_s = max(0, int((r["tip_time"] - r["frontier_time"]).total_seconds()))
    return {"run_id": str(r["run_id"]), "command": str(r["command"]), "seen_at": r["finished_at"].isoformat(),
            "tip_slot": tip, "frontier_slot": None if frontier is None else int(frontier),
            "lag_slots": lag_slots, "lag_seconds": lag_s}


def history(client: Client, limit: int = 500) -> list[dict[str, Any]]:
    """The newest `limit` runs, oldest first (the report's time axis)."""
    if not table_exists(client, "runs"):
        return []
    rows = rows_as_dicts(client, """
        SELECT * FROM (SELECT run_id, command, started_at, finished_at, status, slots_covered, rows_written,
                              uploads_complete, uploads_delivered, errors, tip_slot, frontier_slot
                       FROM iq.runs ORDER BY finished_at DESC LIMIT {n:UInt32})
        ORDER BY finished_at""", {"n": limit})
    for r in rows:
        for key in ("started_at", "finished_at"):
            r[key] = r[key].isoformat()
    return rows
