"""Shared fixtures. Real parts only: a chDB database on disk in a temporary folder, real servers
on loopback. chDB allows one open folder per process, so the `warehouse` fixture closes the shared
client after each test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from iq_etl.settings import load_settings
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.schema import migrate

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "old-faithful"  # vendored real Old Faithful samples


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items):
    # `make test` (-m "not slow") keeps its meaning without per-file markers: the folder says it.
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.slow)


def pytest_configure(config):
    # Keep Prefect and dbt state out of the user's home and the repo.
    os.environ.setdefault("PREFECT_HOME", str(REPO / ".iq-etl" / "test-prefect-home"))
    # A test that does not name its own home never touches the user's ~/.iq-etl (the default home).
    os.environ.setdefault("IQ_ETL_HOME", str(REPO / ".iq-etl" / "test-home"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


@pytest.fixture
def settings_env(tmp_path):
    """Environment for a fresh embedded warehouse in tmp_path (no .env from the working dir)."""
    return {"IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'warehouse'}", "IQ_ETL_HOME": str(tmp_path / "home")}


@pytest.fixture
def settings(settings_env, tmp_path):
    return load_settings(settings_env, dotenv=tmp_path / "no.env")


@pytest.fixture
def warehouse(settings):
    """A migrated client on a real chDB folder; closed (folder released) after the test."""
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
