"""Shared fixtures. Real parts only: a chDB database on disk in a temporary folder (or, with
IQ_TEST_WAREHOUSE=remote, a ClickHouse server over HTTP: tests/support/warehouse.py), real servers on
loopback. chDB allows one open folder per process, so the `warehouse` fixture closes the shared
client after each test.

Markers given here: `slow` (the e2e folder), `warehouse` (REMOTE_SELECTION: `make test-remote` runs
them against a remote server), and in remote mode `embedded_only` tests (and EMBEDDED_ONLY) are
skipped with their reason."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support import loopback_guard
from tests.support import warehouse as test_warehouse

# Before any test runs: no name lookup or TCP connection of this process leaves loopback.
loopback_guard.install()

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old-faithful"  # vendored real Old Faithful samples


E2E = Path(__file__).resolve().parent / "e2e"


# `make test-remote` (CI's remote step, ~15 minutes at most) runs these again against a ClickHouse server
# over HTTP: one test per distinct warehouse path, not every test that opens a warehouse. Node-id
# prefixes; marked `warehouse` here (a test may also carry the marker itself).
REMOTE_SELECTION = (
    # ingest: CAR, rpc-blocks and rpc-signatures; threads 1 and 2; a SIGKILLed run resumed
    "tests/integration/test_ingest_pipeline.py::test_three_sources_give_identical_rows",
    "tests/integration/test_ingest_pipeline.py::test_threads_give_the_same_rows",
    "tests/integration/test_ingest_pipeline.py::test_killed_run_resumes_to_the_same_rows",
    # migrations, status, report and docs (dbt docs generate over HTTP)
    "tests/integration/test_warehouse.py::test_migrations_are_idempotent",
    "tests/integration/test_warehouse.py::test_remote_server_migrate_and_query",
    "tests/integration/test_status.py",
    "tests/integration/test_report.py",
    "tests/integration/test_docs.py",
    # dbt build through dbt-clickhouse's own HTTP driver
    "tests/integration/test_transform.py::test_a_failing_model_raises_with_dbts_message",
    "tests/integration/test_transform.py::test_cli_transform_and_its_errors",
    # export exactly once: retries, the next run, the whole development chain to the backend once
    "tests/integration/test_export_runner.py::test_500s_timeouts_and_429_then_success_deliver_once",
    "tests/integration/test_export_runner.py::test_transient_failures_give_up_after_max_attempts_and_the_next_run",
    "tests/integration/test_export_devchain.py",
    # the Dask fan-out with task-side inserts; reconcile; SIGKILL trials
    "tests/integration/test_dask_fanout.py::test_remote_warehouse_tasks_insert_their_own_rows",
    "tests/e2e/test_reconcile_flow.py::test_reconcile_widens_the_window_until_the_far_chunks_are_found",
    "tests/e2e/test_sigkill_trials.py",
)

# Embedded-only by nature, in files that do not mark themselves `embedded_only`: skipped in remote mode.
EMBEDDED_ONLY = {
    "tests/integration/test_dbt_chdb.py": "the chDB seam routes dbt to the in-process engine",
    "tests/integration/test_transform.py::test_dbt_writes_under_the_iq_etl_home_not_the_repo":
        "asserts the embedded dbt target",
    "tests/integration/test_flows_locking.py": "the run lock file of an embedded warehouse folder",
    "tests/e2e/test_flows_overlap.py": "the run lock file of an embedded warehouse folder",
    "tests/integration/test_hostile_round2.py": "chDB folder errors",
    "tests/integration/test_report.py::test_flow_publishes_the": "the page is written beside the warehouse folder",
    "tests/integration/test_report.py::test_cli_report_writes_the_page": "the page is written beside the warehouse folder",
}


def pytest_collection_modifyitems(config, items):
    remote = test_warehouse.remote_mode()
    for item in items:
        # `make test` (-m "not slow") keeps its meaning without per-file markers: the folder says it.
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.slow)
        if item.nodeid.startswith(REMOTE_SELECTION):
            item.add_marker(pytest.mark.warehouse)
        if not remote:
            continue
        mark = item.get_closest_marker("embedded_only")
        reason = (mark.args[0] if mark.args else "chDB") if mark is not None else \
            next((why for prefix, why in EMBEDDED_ONLY.items() if item.nodeid.startswith(prefix)), None)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=f"embedded only: {reason}"))


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
