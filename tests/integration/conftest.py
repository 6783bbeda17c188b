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


# A development chain's manifest and JSON-RPC server, for the module's own `chain` fixture (its folder).
@pytest.fixture(scope="module")
def manifest(chain):
    from iq_etl.devchain.chain import load_manifest

    return load_manifest(chain)


@pytest.fixture(scope="module")
def rpc_url(chain):
    from iq_etl.devchain.servers.rpc import serve_rpc

    server = serve_rpc(chain)
    yield server.url
    server.shutdown()
