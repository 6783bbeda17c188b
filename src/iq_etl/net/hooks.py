"""A requests adapter whose urllib3 connections report to the `Exchange` running on their thread
(net/deadline.py), so that the watchdog or the owner can shut the exchange's socket down.

Through a SOCKS proxy the plain connections are used: only the per-operation timeouts apply there
(and the caller's checks between body chunks)."""
from __future__ import annotations

from typing import Any

import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from iq_etl.net.deadline import current


def _attach(conn: Any, phase: str) -> None:
    exchange = current()
    if exchange is not None and not exchange.attach(conn, phase):
        raise urllib3.exceptions.ProtocolError(f"request stopped while {phase}")


class _ReportingConnection:
    """Mixed into urllib3's connection classes: tells the running exchange which connection (socket)
    to shut down when it is stopped, and what it is doing. A reused keep-alive connection is not
    connected again: `send` reports it."""

    def connect(self) -> None:
        _attach(self, "connecting")
        super().connect()  # type: ignore[misc]
        _attach(self, "sending the request")

    def send(self, data: Any) -> None:
        _attach(self, "sending the request")
        super().send(data)  # type: ignore[misc]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        _attach(self, "waiting for the response headers")
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_ReportingConnection, HTTPConnection):
    pass


class _HTTPSConnection(_ReportingConnection, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class HookedAdapter(HTTPAdapter):
    """A requests adapter whose connections report to the exchange of their thread."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # a SOCKS manager keeps its own connection classes
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager
