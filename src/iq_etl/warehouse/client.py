"""The warehouse: one clickhouse-connect client per process for a `chdb://` or `http(s)://` DSN.

Embedded mode is chDB in-process (a real ClickHouse engine on a folder). chDB locks its folder, so
only one process may hold it: a second one gets `WarehouseBusy`, optionally after waiting
`IQ_WAREHOUSE_LOCK_WAIT` seconds. `close_client()` releases the folder. Nothing else in the code
branches on embedded vs remote.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from clickhouse_connect.driver import Client

from iq_etl.errors import WarehouseBusy, WarehouseError
from iq_etl.settings import Settings, redact_dsn

log = logging.getLogger(__name__)


_lock = threading.RLock()
_client: Client | None = None
_client_dsn: str | None = None


def chdb_path(dsn: str) -> Path:
    """The absolute folder of a `chdb://` DSN (`chdb://./rel`, `chdb:///abs`, `chdb://rel`)."""
    rest = dsn[len("chdb://"):]
    rest = rest.split("?", 1)[0]
    return Path(rest).expanduser().resolve()


def _open(dsn: str, lock_wait_s: float, connect_timeout: float) -> Client:
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


def get_client(settings: Settings, connect_timeout: float = 5.0) -> Client:
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


