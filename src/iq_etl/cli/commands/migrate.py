"""`iq-etl migrate`: create or update the warehouse schema (idempotent)."""
from __future__ import annotations

from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse
from iq_etl.warehouse.schema import migrate


def register(sub) -> None:
    p = sub.add_parser("migrate", help="apply the numbered SQL migrations in iq_etl/warehouse/migrations (idempotent)",
                       description="Create or upgrade the warehouse schema: apply the numbered SQL migrations in "
                                   "iq_etl/warehouse/migrations that the warehouse has not seen (idempotent; every "
                                   "command does this when needed). Prints the warehouse DSN, password redacted.")
    p.set_defaults(handler=run)


def run(args) -> int:
    settings = load_settings()
    with Warehouse(settings) as client:
        applied = migrate(client, settings.clickhouse_cluster)
    if applied:
        print(f"applied {len(applied)} migration(s) to {settings.dsn_redacted}: {', '.join(applied)}")
    else:
        print(f"schema of {settings.dsn_redacted} is up to date")
    return 0
