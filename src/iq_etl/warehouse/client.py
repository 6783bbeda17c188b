"""The warehouse: one clickhouse-connect client per process for a `chdb://` or `http(s)://` DSN.

Embedded mode is chDB in-process (a real ClickHouse engine on a folder). chDB locks its folder, so
only one process may hold it: a second one gets `WarehouseBusy`, optionally after waiting
`IQ_WAREHOUSE_LOCK_WAIT` seconds. `close_client()` releases the folder. Nothing else in the code
branches on embedded vs remote.
"""
from __future__ import annotations

import hashlib
import re
import logging
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence
from urllib.parse import parse_qsl, urlsplit

from iq_etl.errors import WarehouseBusy, WarehouseError
from iq_etl.settings import Settings, redact_dsn

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"  # package data

_lock = threading.RLock()
_client: Any = None
_client_dsn: str | None = None


def chdb_path(dsn: str) -> Path:
    """The absolute folder of a `chdb://` DSN (`chdb://./rel`, `chdb:///abs`, `chdb://rel`)."""
    rest = dsn[len("chdb://"):]
    rest = rest.split("?", 1)[0]
    return Path(rest).expanduser().resolve()


def _open(dsn: str, lock_wait_s: float, connect_timeout: float) -> Any:
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    if dsn.startswith("chdb://"):
        path = chdb_path(dsn)
        path.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                return clickhouse_connect.get_client(dsn=f"chdb://{path}")
            except ClickHouseError as exc:
                text = str(exc)
                # chDB reports a folder held by another process either way; nothing broader, so
                # other open errors keep their own message.
                locked = "Cannot lock file" in text or "Error initializing EmbeddedServer" in text
                if not locked:
                    raise WarehouseError(f"cannot open the embedded warehouse at {path}: {text.splitlines()[0]}") from None
                if time.monotonic() >= deadline:
                    raise WarehouseBusy(
                        f"the embedded warehouse at {path} is in use by another process; "
                        "wait for it or use a remote DSN (IQ_CLICKHOUSE_DSN=http://...)"
                    ) from None
                time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
    parts = urlsplit(dsn)
    scheme = parts.scheme
    secure = scheme in ("https", "clickhouses")
    kwargs: dict[str, Any] = {
        "host": parts.hostname,
        "port": parts.port or (8443 if secure else 8123),
        "username": parts.username or "default",
        "password": parts.password or "",
        "secure": secure,
        "connect_timeout": connect_timeout,
        "send_receive_timeout": 300,
    }
    db = parts.path.strip("/")
    if db:
        kwargs["database"] = db
    for key, value in parse_qsl(parts.query):
        kwargs.setdefault(key, value)
    try:
        return clickhouse_connect.get_client(**kwargs)
    except Exception as exc:  # noqa: BLE001 - any driver/network error becomes one clear line
        reason = type(exc).__name__
        text = str(exc)
        if parts.password:
            text = text.replace(parts.password, "***")
        raise WarehouseError(f"cannot reach the warehouse at {redact_dsn(dsn)}: {reason}: {text.splitlines()[0][:200] if text else ''}") from None


def get_client(settings: Settings, connect_timeout: float = 5.0) -> Any:
    """The process's shared client for `settings.clickhouse_dsn` (opened on first use)."""
    global _client, _client_dsn
    with _lock:
        if _client is not None:
            if _client_dsn != settings.clickhouse_dsn:
                raise WarehouseError(
                    f"this process already holds {redact_dsn(_client_dsn or '')}; close it before opening {settings.dsn_redacted}"
                )
            return _client
        _client = _open(settings.clickhouse_dsn, settings.warehouse_lock_wait_s, connect_timeout)
        _client_dsn = settings.clickhouse_dsn
        log.debug("opened warehouse %s", settings.dsn_redacted)
        return _client


def close_client() -> None:
    """Close the shared client; for chDB this releases the folder lock for other processes."""
    global _client, _client_dsn
    with _lock:
        if _client is not None:
            try:
                _client.close()
            finally:
                _client = None
                _client_dsn = None


class Warehouse:
    """Context manager: `with Warehouse(settings) as client:` opens the shared client and closes it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._owned = False

    def __enter__(self) -> Any:
        self._owned = _client is None
        return get_client(self.settings)

    def __exit__(self, *exc: object) -> None:
        if self._owned:
            close_client()


# --- migrations -------------------------------------------------------------------------------

def _render(sql: str, cluster: str | None) -> str:
    # Only identifiers validated by settings (cluster name) are substituted here; never user data.
    return (
        sql.replace("{on_cluster}", f"ON CLUSTER {cluster}" if cluster else "")
        .replace("{replacing}", "ReplicatedReplacingMergeTree" if cluster else "ReplacingMergeTree")
        .replace("{merge_tree}", "ReplicatedMergeTree" if cluster else "MergeTree")
    )


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.sql"))


def migrate(client: Any, cluster: str | None = None) -> list[str]:
    """Apply numbered SQL files in order, once each; return the names applied by this call."""
    on_cluster = f"ON CLUSTER {cluster}" if cluster else ""
    client.command(f"CREATE DATABASE IF NOT EXISTS iq {on_cluster}")
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


def content_token(parts: Sequence[bytes | str]) -> str:
    """A deterministic insert_deduplication_token for a batch: sha256 over its rows' keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\x1f")
    return h.hexdigest()
