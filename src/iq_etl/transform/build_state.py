"""Can this build be incremental? The part of the rule dbt cannot see (issue 27).

dbt_project/macros/incremental.sql, `incremental_build()`, is the rule every model follows: not a
--full-refresh, and every incremental model's table exists. What it cannot tell is whether those tables
are whole: dbt-clickhouse creates a *new* incremental table empty and then fills it with an INSERT, so a
first build killed half way leaves tables that exist and hold part of the warehouse; the next
incremental build would recompute only the groups changed since then, and keep the hole for good
(a killed transform rerun once left session_completeness empty this way). A full refresh builds each
table aside and swaps it in, so it never leaves a half-filled table, but a full refresh killed
between two swaps leaves a mix of new and old tables.

So a whole build whose models all succeeded records the tables it left (`iq.dbt_builds`: name and
table UUID; a recreated or swapped-in table has a new UUID). A plain build is incremental only when
the incremental tables now are exactly the ones a finished build recorded; otherwise it runs as a
full refresh (every model rebuilt aside and swapped in) and says why.

Models built in passes (int_uploads, session_completeness, upload_payloads) add one more state: an
incremental build stopped between two passes keeps the same tables, but the groups of the passes it
did not reach are stale while the model's watermark already moved past their rows, so the rerun
would not recompute them. A whole build therefore records `started` before dbt runs; a build after a
`started` row that no `finished` row followed (killed, or a model failed) is a full refresh too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

# Must equal the dbt macro incremental_models() (dbt_project/macros/incremental.sql); a test checks.
INCREMENTAL_MODELS = ("int_linked_walks", "int_session_chunks", "int_uploads", "session_completeness",
                      "upload_payloads")
MODEL_DATABASE = "iq"  # profiles.yml: schema iq, every model


@dataclass(frozen=True)
class BuildState:
    tables: dict[str, str]          # incremental model table -> its UUID, for those that exist
    recorded: str | None            # the tables the last finished build left (`name=uuid;...`), if any
    interrupted: bool = False       # the last whole build started and never finished

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.tables)

    def full_refresh_reason(self) -> str | None:
        """None when an incremental build can trust the tables; else why every model is rebuilt."""
        if not self.tables:
            return "first build (no model table yet)"
        missing = [name for name in INCREMENTAL_MODELS if name not in self.tables]
        if missing:
            return f"model table(s) missing: {', '.join(missing)}"
        if self.interrupted:
            return ("the last build stopped before its end (killed, or a model failed): groups of a model "
                    "built in passes may be half rebuilt")
        if self.recorded is None:
            return ("no finished build recorded for the model tables (a build stopped before its end, "
                    "or they were built before iq.dbt_builds existed)")
        if self.recorded != self.fingerprint:
            changed = sorted(set(_pairs(self.fingerprint)) ^ set(_pairs(self.recorded)))
            names = sorted({pair.split("=", 1)[0] for pair in changed})
            return (f"model table(s) {', '.join(names)} are not the ones the last finished build left "
                    "(a build or full refresh stopped half way, or a table was recreated)")
        return None


def fingerprint(tables: dict[str, str]) -> str:
    return ";".join(f"{name}={tables[name]}" for name in sorted(tables))


def _pairs(text: str) -> Iterable[str]:
    return [part for part in text.split(";") if part]


def _tables(client: Any) -> dict[str, str]:
    rows = client.query(
        "SELECT name, toString(uuid) FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
        parameters={"db": MODEL_DATABASE, "names": list(INCREMENTAL_MODELS)}).result_rows
    return {str(name): str(uuid) for name, uuid in rows}


def read_state(client: Any) -> BuildState:
    tables = _tables(client)
    last = client.query(
        "SELECT state FROM iq.dbt_builds ORDER BY finished_at DESC, state = 'finished' DESC LIMIT 1").result_rows
    finished = client.query(
        "SELECT tables FROM iq.dbt_builds WHERE state = 'finished' "
        "ORDER BY finished_at DESC, invocation_id DESC LIMIT 1").result_rows
    return BuildState(tables=tables, recorded=str(finished[0][0]) if finished else None,
                      interrupted=bool(last) and str(last[0][0]) == "started")


def record_started(client: Any, full_refresh: bool) -> None:
    """Mark a whole build as under way (its dbt invocation id is not known yet; only `finished` rows'
    tables are ever read, so none are listed here)."""
    client.insert("iq.dbt_builds", [["", int(full_refresh), "", "started"]],
                  column_names=["invocation_id", "full_refresh", "tables", "state"])


def record_finished(client: Any, invocation_id: str, full_refresh: bool) -> None:
    """Record the incremental tables a whole build left, all of them whole."""
    client.insert("iq.dbt_builds", [[invocation_id, int(full_refresh), fingerprint(_tables(client)), "finished"]],
                  column_names=["invocation_id", "full_refresh", "tables", "state"])


def build_left_tables_whole(nodes: Iterable[Any], full_refresh: bool) -> bool:
    """Did this whole build leave every incremental table whole?

    A full refresh: only when every model succeeded (a skipped model keeps its old table beside the
    swapped-in new ones). An incremental build: when no model failed; a model skipped after a failed
    data test did not run at all, and the next build recomputes what changed since its watermark."""
    models = {node.name: node.status for node in nodes if node.resource_type == "model"}
    if not all(name in models for name in INCREMENTAL_MODELS):
        return False
    if full_refresh:
        return all(status == "success" for status in models.values())
    return all(status in ("success", "skipped") for status in models.values())
