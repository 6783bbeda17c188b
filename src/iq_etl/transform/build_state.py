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
        "SELECT tables FROM iq.dbt_builds ORDER BY finished_at DESC, invocation_id DESC LIMIT 1").result_rows
    return BuildState(tables=tables, recorded=str(last[0][0]) if last else None)


def record_finished(client: Any, invocation_id: str, full_refresh: bool) -> None:
    """Record the incremental tables a whole, successful build left."""
    client.insert("iq.dbt_builds", [[invocation_id, int(full_refresh), fingerprint(_tables(client))]],
                  column_names=["invocation_id", "full_refresh", "tables"])


def whole_build_succeeded(nodes: Iterable[Any]) -> bool:
    """Every model of the run succeeded and the incremental ones were all among them."""
    models = {node.name: node.status for node in nodes if node.resource_type == "model"}
    return all(name in models for name in INCREMENTAL_MODELS) and all(
        status == "success" for status in models.values())
