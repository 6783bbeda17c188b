"""Schema migrations: the numbered idempotent SQL files in `migrations/` (package data), rendered for a
cluster (`ON CLUSTER`, replicated engines) when one is configured, applied in order."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

from clickhouse_connect.driver import Client

from iq_etl.errors import WarehouseError
from iq_etl.warehouse.client import log

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"  # package data


def _render(sql: str, cluster: str | None) -> str:
    # Only identifiers validated by settings (cluster name) are substituted here; never user data.
    return (
        sql.replace("{on_cluster}", f"ON CLUSTER {cluster}" if cluster else "")
        .replace("{replacing}", "ReplicatedReplacingMergeTree" if cluster else "ReplacingMergeTree")
        .replace("{merge_tree}", "ReplicatedMergeTree" if cluster else "MergeTree")
    )


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def migrate(client: Client, cluster: str | None = None) -> list[str]:
    """Apply numbered SQL files in order, once each; return the names applied by this call."""
    on_cluster = f"ON CLUSTER {cluster}" if cluster else ""
    # `iq` holds every table; a remote DSN may name another database as the client's default, which the
    # client created on the server it reached: on a cluster it is made on every node here.
    databases = ["iq"]
    named = getattr(client, "database", None)
    if cluster and named and named not in ("iq", "default"):
        databases.append("`" + str(named).replace("\\", "\\\\").replace("`", "\\`") + "`")
    for database in databases:
        try:
            client.command(f"CREATE DATABASE IF NOT EXISTS {database} {on_cluster}")
        except Exception as exc:  # noqa: BLE001 - name the cause: no right to create it, unknown cluster, ...
            raise WarehouseError(f"cannot create the database {database.strip('`')}: "
                                 f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__} "
                                 "(create it beforehand, or grant CREATE DATABASE to the warehouse user)") from None
    client.command(
        f"""CREATE TABLE IF NOT EXISTS iq.schema_migrations {on_cluster} (
            version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = {'ReplicatedReplacingMergeTree' if cluster else 'ReplacingMergeTree'}(applied_at) ORDER BY version"""
    )
    done = {row[0] for row in client.query("SELECT version FROM iq.schema_migrations FINAL").result_rows}
    applied: list[str] = []
    for path in migration_files():
        version = int(path.name[:3])
        if version in done:
            continue
        text = path.read_text(encoding="utf-8")
        for statement in _statements(_render(text, cluster)):
            try:
                client.command(statement)
            except Exception as exc:  # noqa: BLE001 - report which migration failed, in one line
                raise WarehouseError(f"migration {path.name} failed: {str(exc).strip().splitlines()[0][:300]}") from None
        client.insert(
            "iq.schema_migrations",
            [[version, path.name, hashlib.sha256(text.encode()).hexdigest()]],
            column_names=["version", "name", "checksum"],
        )
        applied.append(path.name)
        log.debug("applied migration %s", path.name)
    return applied


def _statements(sql: str) -> Iterable[str]:
    # Comments are dropped first: they may hold ';'. The DDL here has no '--' inside strings.
    lines = [re.sub(r"--.*$", "", line) for line in sql.splitlines()]
    for part in "\n".join(lines).split(";"):
        if part.strip():
            yield part.strip()
