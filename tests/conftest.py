"""Shared fixtures. Real parts only: a chDB database on disk in a temporary folder (or, with
IQ_TEST_WAREHOUSE=remote, a ClickHouse server over HTTP: tests/support/warehouse.py), real servers on
loopback. chDB allows one open folder per process, so the `warehouse` fixture closes the shared
client after each test.

Markers given here: `slow` (the e2e folder), `warehouse` (tests that use a warehouse fixture or are
listed in REMOTE_SELECTION: `make test-remote` runs them against a remote server), and in remote mode
`embedded_only` tests are skipped with their reason."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import warehouse as test_warehouse

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old-faithful"  # vendored real Old Faithful samples


E2E = Path(__file__).resolve().parent / "e2e"


# Warehouse fixtures: a test asking for one of these touches the warehouse the factory gives.
WAREHOUSE_FIXTURES = {"warehouses", "settings_env", "settings", "warehouse", "mart"}

# Tests that touch the warehouse without those fixtures (their own factory use, IQ_TEST_CLICKHOUSE_DSN,
# or a file owned elsewhere): node-id prefixes, marked `warehouse` too.
REMOTE_SELECTION = (
    "tests/integration/test_dask_fanout.py::test_remote_warehouse_tasks_insert_their_own_rows",
    "tests/integration/test_warehouse.py::test_remote_server_migrate_and_query",
)


def pytest_collection_modifyitems(config, items):
    remote = test_warehouse.remote_mode()
    for item in items:
        # `make test` (-m "not slow") keeps its meaning without per-file markers: the folder says it.
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.slow)
        if WAREHOUSE_FIXTURES & set(getattr(item, "fixturenames", ())) or item.nodeid.startswith(REMOTE_SELECTION):
            item.add_marker(pytest.mark.warehouse)
        mark = item.get_closest_marker("embedded_only")
        if remote and mark is not None:
            item.add_marker(pytest.mark.skip(reason=f"embedded only: {mark.args[0] if mark.args else 'chDB'}"))


def pytest_configure(config):
    # Keep Prefect and dbt state out of the user's home and the repo.
    os.environ.setdefault("PREFECT_HOME", str(REPO / ".iq-etl" / "test-prefect-home"))
    # A test that does not name its own home never touches the user's ~/.iq-etl (the default home).
    os.environ.setdefault("IQ_ETL_HOME", str(REPO / ".iq-etl" / "test-home"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # Remote mode: one development ClickHouse server for the session, unless IQ_TEST_CLICKHOUSE_DSN
    # names a real one; started before collection so skip conditions reading that variable see it.
    if test_warehouse.remote_mode() and not hasattr(config, "workerinput"):
        config._iq_clickhouse_folder = Path(tempfile.mkdtemp(prefix="iq-test-clickhouse-"))
        test_warehouse.start_session_server(config._iq_clickhouse_folder)


def pytest_unconfigure(config):
    test_warehouse.stop_session_server()
    folder = getattr(config, "_iq_clickhouse_folder", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def pytest_report_header(config):
    if test_warehouse.remote_mode():
        from iq_etl.settings import redact_dsn

        return f"warehouse: remote, {redact_dsn(test_warehouse.shared_dsn())}"
    return "warehouse: embedded chDB (IQ_TEST_WAREHOUSE=remote for a ClickHouse server)"


@pytest.fixture
def warehouses(tmp_path):
    """The warehouse factory (tests/support/warehouse.py) for this test: `warehouses.env(name)`,
    `.settings(name)`, `.migrated(name)`; any server of its own stopped after the test."""
    factory = test_warehouse.Warehouses(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def settings_env(warehouses):
    """Environment for a fresh warehouse (embedded in tmp_path, or a fresh remote server) and a home
    in tmp_path (no .env from the working dir)."""
    return warehouses.env()


@pytest.fixture
def settings(settings_env, tmp_path):
    from iq_etl.settings import load_settings

    return load_settings(settings_env, dotenv=tmp_path / "no.env")


@pytest.fixture
def warehouse(warehouses, settings):
    """A migrated shared client on that warehouse; closed (chDB folder released) after the test."""
    from iq_etl.warehouse import client as wh
    from iq_etl.warehouse.schema import migrate

    wh.close_client()
    client = wh.get_client(settings)
    migrate(client)
    try:
        yield client
    finally:
        wh.close_client()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"vendored fixtures missing at {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def bench_env(tmp_path_factory):
    """Environment for `--quick` benchmark runs: their chain cache in a temporary folder."""
    return {**os.environ, "IQ_BENCH_CACHE": str(tmp_path_factory.mktemp("bench-cache"))}
