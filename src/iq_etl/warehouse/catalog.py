"""Small SQL helpers every stage shares, in one place: does a table exist, rows as dicts, rows per kind."""
from __future__ import annotations

from typing import Any

from clickhouse_connect.driver import Client

DATABASE = "iq"


def table_exists(client: Client, name: str) -> bool:
    """`name` is `db.table`, or a bare table name in the `iq` database."""
    db, table = name.split(".", 1) if "." in name else (DATABASE, name)
    return bool(client.query("SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
                             parameters={"db": db, "t": table}).result_rows[0][0])


def rows_as_dicts(client: Client, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def count_by_kind(client: Client, run_id: str) -> dict[str, int]:
    """`generation/kind` → rows of `iq.raw_instructions` written by one ingest run."""
    rows = client.query(
        "SELECT concat(generation, '/', kind) AS k, count() FROM iq.raw_instructions WHERE run_id = {run:String} "
        "GROUP BY k ORDER BY k", parameters={"run": run_id}).result_rows
    return {k: int(n) for k, n in rows}


def raw_counts(client: Client) -> dict[str, int]:
    """Rows of the raw tables as an operator must see them: deduplicated (FINAL). The tables are
    ReplacingMergeTree: a rescanned range stores its rows again until ClickHouse merges them, so a
    plain count() can show twice the true number."""
    return {
        "raw_instructions": int(client.query("SELECT count() FROM iq.raw_instructions FINAL").result_rows[0][0]),
        "undecoded_instructions": int(client.query(
            "SELECT count() FROM iq.undecoded_instructions FINAL").result_rows[0][0]),
    }


def columns(client: Client, table: str) -> set[str]:
    """Column names of `table` in the `iq` database (empty when it does not exist). A mart built before
    an upgrade may lack a newer column until `transform --full-refresh`: readers probe before asking."""
    rows = client.query("SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
                        parameters={"db": DATABASE, "t": table}).result_rows
    return {str(r[0]) for r in rows}
