"""The one seam between dbt-clickhouse and embedded chDB.

dbt-clickhouse 1.10 speaks HTTP or native only. Its HTTP client (`ChHttpClient`) builds its
clickhouse-connect client in a single method, `_create_client(credentials)`. While
`embedded_engine(settings)` is active, a profile whose host is `EMBEDDED_HOST` gets a
clickhouse-connect `ChdbClient` instead of an HTTP one:

- the engine is the process's shared chDB engine: `iq_etl.warehouse.client.get_client(settings)` opens it
  (folder lock, `WarehouseBusy` and all) and dbt's client is a second *handle* on that same engine
  (chDB allows any number of handles on the one open path). A separate handle keeps dbt's session
  state (`USE iq`, `SET allow_nondeterministic_mutations`, mutations_sync...) off the client that
  ingest and export use, and lets dbt close "its connection" without closing the shared client;
- every handle opened here is closed when the context exits, so after `close_client()` the folder is
  really released (an open handle keeps the engine, and its folder lock, alive).

Remote DSNs never come here: dbt connects to them over HTTP by itself. Delete this module when
dbt-clickhouse ships a chDB driver (its PR #693).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from iq_etl.settings import Settings

EMBEDDED_HOST = "chdb-embedded.invalid"  # the profiles.yml `embedded` target names this host

_lock = threading.Lock()


@contextlib.contextmanager
def embedded_engine(settings: Settings) -> Iterator[list[Any]]:
    """Route dbt-clickhouse's HTTP client to the shared chDB engine for the duration of the block.

    Yields the list of dbt handles opened so far (for tests). Not re-entrant: one dbt invocation
    per process at a time, which dbtRunner requires anyway."""
    import clickhouse_connect
    from dbt.adapters.clickhouse.httpclient import ChHttpClient

    from iq_etl.warehouse import client as warehouse
    shared = warehouse.get_client(settings)  # opens the engine (or raises WarehouseBusy)
    engine_path = shared.path
    opened: list[Any] = []
    original = ChHttpClient._create_client

    def create_client(self, credentials):  # replaces ChHttpClient._create_client
        if credentials.host != EMBEDDED_HOST:
            return original(self, credentials)
        client = clickhouse_connect.get_client(dsn=f"chdb://{engine_path}", settings=dict(self._conn_settings))
        opened.append(client)
        return client

    if not _lock.acquire(blocking=False):
        raise RuntimeError("embedded_engine is already active in this process (one dbt run at a time)")
    ChHttpClient._create_client = create_client
    try:
        yield opened
    finally:
        ChHttpClient._create_client = original
        _lock.release()
        for client in opened:
            with contextlib.suppress(Exception):
                client.close()  # only dbt's handle; the shared client stays open
