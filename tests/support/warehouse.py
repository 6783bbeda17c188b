"""One place where the tests get a warehouse: an embedded chDB folder by default, or a remote ClickHouse
over HTTP with `IQ_TEST_WAREHOUSE=remote` (`make test-remote`).

Remote mode uses the server `IQ_TEST_CLICKHOUSE_DSN` names (a real, disposable ClickHouse: the tests
drop and recreate its databases), or else one development ClickHouse server
(`iq-etl devchain serve-clickhouse`, tests/support/clickhouse_server.py) started once per session
by tests/conftest.py, which then sets `IQ_TEST_CLICKHOUSE_DSN` to it so the tests that read that
variable themselves run against it too.

Test independence on one server: every table of iq-etl (and of its dbt project) is `iq.`-qualified,
so a test cannot be given a database of its own; instead a test's first warehouse on the shared server
starts from an empty server (every user database dropped). Tests run one at a time (no xdist). A test
(or a module-scoped fixture) that needs more than one warehouse at once gets a development server of
its own for each further one (under a second: it is a process over a chDB folder).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

MODE_VARIABLE = "IQ_TEST_WAREHOUSE"        # embedded (default) | remote
DSN_VARIABLE = "IQ_TEST_CLICKHOUSE_DSN"   # a real server for remote mode (else the development server)
SYSTEM_DATABASES = ("system", "default", "INFORMATION_SCHEMA", "information_schema")
DEV_PASSWORD = "p@ss:w/rd"  # percent-encoded in the DSN: every client must decode it


def remote_mode() -> bool:
    mode = os.environ.get(MODE_VARIABLE, "embedded").strip().lower() or "embedded"
    if mode not in ("embedded", "remote"):
        raise RuntimeError(f"{MODE_VARIABLE}={mode!r}: use embedded or remote")
    return mode == "remote"


# --- the session's shared server (remote mode) --------------------------------------------------

_session_server: Any = None     # a ClickHouseServer when this session started the development server


def start_session_server(folder: Path) -> None:
    """Remote mode without a real server: start the development server and point
    IQ_TEST_CLICKHOUSE_DSN at it (before collection, so skip conditions that read it see it)."""
    global _session_server
    if not remote_mode() or os.environ.get(DSN_VARIABLE):
        return
    from tests.support.clickhouse_server import start_clickhouse_server

    folder.mkdir(parents=True, exist_ok=True)
    _session_server = start_clickhouse_server(folder / "clickhouse", password=DEV_PASSWORD)
    os.environ[DSN_VARIABLE] = _session_server.dsn("iq")


_unshared: list["Warehouses"] = []   # module-scoped factories: their servers stop at the session's end at the latest


def stop_session_server() -> None:
    global _session_server
    for factory in _unshared:
        factory.close()
    _unshared.clear()
    if _session_server is not None:
        _session_server.stop()
        os.environ.pop(DSN_VARIABLE, None)
        _session_server = None


def shared_dsn() -> str:
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        raise RuntimeError(f"remote mode: {DSN_VARIABLE} is not set and no development server was started")
    return dsn


def empty_server(dsn: str) -> None:
    """Drop every user database on the server `dsn` names (a test starts from a fresh server)."""
    import clickhouse_connect

    parts = urlsplit(dsn)
    secure = parts.scheme == "https"
    client = clickhouse_connect.get_client(
        host=parts.hostname, port=parts.port or (8443 if secure else 8123), secure=secure,
        username=unquote(parts.username or "default"), password=unquote(parts.password or ""))
    try:
        names = [row[0] for row in client.query("SELECT name FROM system.databases").result_rows]
        for name in names:
            if name not in SYSTEM_DATABASES:
                client.command(f"DROP DATABASE IF EXISTS `{name}` SYNC")
    finally:
        client.close()


_folder_dsns: dict[str, str] = {}   # folder -> DSN given by folder_dsn (remote: the one holding the shared server)


def folder_dsn(folder: Path, name: str = "warehouse") -> str:
    """The warehouse DSN of a test's folder, for helpers that are handed only the folder (the flow
    helpers in tests/support/prefect.py): `chdb://FOLDER/NAME`, or in remote mode the shared server,
    emptied when a folder not seen before asks for it. Same folder, same DSN."""
    if not remote_mode():
        return f"chdb://{folder / name}"
    key = str(Path(folder) / name)
    if key not in _folder_dsns:
        empty_server(shared_dsn())
        _folder_dsns.clear()
        _folder_dsns[key] = shared_dsn()
    return _folder_dsns[key]


# --- the factory ------------------------------------------------------------------------------

@dataclass
class Warehouses:
    """Fresh warehouses for one test (or one module): `env(name)` is the environment of warehouse
    `name` (IQ_CLICKHOUSE_DSN and an IQ_ETL_HOME of its own), `settings(name)` its Settings,
    `migrated(name)` a migrated shared client on it (closed on exit). In remote mode a name uses
    the session's shared server (`shared=True`, the function-scoped fixtures) when no other name of
    this factory holds it; every other name gets its own development server, stopped by `release(name)`
    or `close()`."""

    folder: Path
    shared: bool = True
    _dsns: dict[str, str] = field(default_factory=dict)
    _servers: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.shared:
            _unshared.append(self)

    def dsn(self, name: str = "warehouse", remote: bool = False) -> str:
        """Warehouse `name`'s DSN; `remote=True` for a test that is remote by nature: a server even in
        embedded mode (a development server of its own)."""
        if name in self._dsns:
            return self._dsns[name]
        if not remote_mode() and not remote:
            dsn = f"chdb://{self.folder / name}"
        elif remote_mode() and self.shared and shared_dsn() not in self._dsns.values():
            dsn = shared_dsn()
            empty_server(dsn)   # whatever an earlier test (or warehouse) left there is gone
            _folder_dsns.clear()
        else:
            from tests.support.clickhouse_server import start_clickhouse_server

            server = start_clickhouse_server(self.folder / f"{name}-clickhouse", password=DEV_PASSWORD)
            self._servers[name] = server
            dsn = server.dsn("iq")
        self._dsns[name] = dsn
        return dsn

    def env(self, name: str = "warehouse", remote: bool = False, **extra: str) -> dict[str, str]:
        home = "home" if name == "warehouse" else f"{name}-home"
        return {"IQ_CLICKHOUSE_DSN": self.dsn(name, remote), "IQ_ETL_HOME": str(self.folder / home), **extra}

    def settings(self, name: str = "warehouse", remote: bool = False, **extra: str) -> Any:
        from iq_etl.settings import load_settings

        return load_settings(self.env(name, remote, **extra), dotenv=self.folder / "no.env")

    @contextlib.contextmanager
    def migrated(self, name: str = "warehouse", remote: bool = False, **extra: str) -> Iterator[Any]:
        """The process's shared client on warehouse `name`, migrated; closed afterwards (for chDB that
        releases the folder: one open folder per process)."""
        from iq_etl.warehouse import client as wh
        from iq_etl.warehouse.schema import migrate

        wh.close_client()
        client = wh.get_client(self.settings(name, remote, **extra))
        migrate(client)
        try:
            yield client
        finally:
            wh.close_client()

    def release(self, name: str) -> None:
        """Done with warehouse `name` (its client closed): its own server stops, and the shared one is
        free for the next name (emptied then). For tests that use many warehouses one after another."""
        self._dsns.pop(name, None)
        server = self._servers.pop(name, None)
        if server is not None:
            server.stop()

    def close(self) -> None:
        for name in list(self._servers):
            self.release(name)
        self._dsns.clear()
