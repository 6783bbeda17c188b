"""Fixtures of the export tests: loopback reader backends stopped after the test, and a warehouse
holding the stand-in export mart."""
from __future__ import annotations

import pytest

from tests.support.export_rows import create_standin_mart


@pytest.fixture
def backend():
    """`backend(**kwargs)` starts a real reader backend on loopback; all are shut down afterwards."""
    from iq_etl.devchain.servers.reader_backend import serve_reader_backend

    servers = []

    def start(**kwargs):
        server = serve_reader_backend(**kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()


@pytest.fixture
def mart(warehouse):
    create_standin_mart(warehouse)
    return warehouse
