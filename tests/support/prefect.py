"""Helpers shared by the flow tests: a real ephemeral Prefect API (prefect_test_harness), a
development chain, an environment pointing the flows at a temporary embedded warehouse, and readers
for artifacts and the export ledger. Imported by tests/test_flows_*.py and tests/test_reconcile*.py."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from iq_etl.settings import G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID
from tests.support.warehouse import folder_dsn  # embedded in tmp_path, or IQ_TEST_WAREHOUSE=remote's server

SEED = 7

# Prefect's home for tests (tests/conftest.py points PREFECT_HOME into .iq-etl/) must exist, and the
# servers the tests start must not try to send telemetry (offline: a DNS error in every log).
if os.environ.get("PREFECT_HOME"):
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


_harness: list[Any] = []


def _shared_harness() -> None:
    """Start prefect_test_harness once per test process (a few seconds each time) and stop it at exit."""
    if _harness:
        return
    import atexit

    from prefect.testing.utilities import prefect_test_harness

    harness = prefect_test_harness(server_startup_timeout=120)
    harness.__enter__()
    _harness.append(harness)

    def stop() -> None:
        # At exit pytest has closed the streams Prefect's console handler writes to.
        import logging

        logging.getLogger("prefect").setLevel(logging.ERROR)
        harness.__exit__(None, None, None)

    atexit.register(stop)


@pytest.fixture
def prefect_api():
    """A real Prefect API server (SQLite in a temporary folder), shared by the tests of this process."""
    _shared_harness()
    yield


def build_devchain(out_dir: Path, seed: int = SEED, **kwargs: Any):
    """(chain folder, manifest) of a freshly built development chain."""
    from iq_etl.devchain.build import build_chain

    chain_dir = Path(out_dir) / "devchain"
    manifest = build_chain(chain_dir, seed=seed, **kwargs)
    return chain_dir, manifest


def flow_env(monkeypatch, tmp_path: Path, **extra: str) -> dict[str, str]:
    """Point flows (which read settings from the environment) at a warehouse in tmp_path; no .env."""
    values = {
        "IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path),
        "IQ_ETL_HOME": str(tmp_path / "home"),
        "IQ_READER_BASE_URL": "http://127.0.0.1:9",   # never the real backend; tests pass explicit targets
        "IQ_PROGRAM_ID": ",".join((G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID)),
        **extra,
    }
    for key in ("IQ_RPC_URL", "SOLANA_RPC_URL", "IQ_SESSION_PDA_LIST", "IQ_CAR_URL", "IQ_READER_TOKEN",
                "JETSTREAMER_CLICKHOUSE_DSN", "JETSTREAMER_CLICKHOUSE_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)   # load_settings reads ./.env: there is none here
    return values


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The same settings for a child process (iq-etl commands, served flow runs)."""
    env = dict(os.environ)
    for key in ("IQ_RPC_URL", "SOLANA_RPC_URL", "IQ_SESSION_PDA_LIST", "IQ_CAR_URL", "IQ_READER_TOKEN",
                "JETSTREAMER_CLICKHOUSE_DSN", "JETSTREAMER_CLICKHOUSE_MODE", "PREFECT_API_URL"):
        env.pop(key, None)
    env.update({
        "IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path),
        "IQ_ETL_HOME": str(tmp_path / "home"),
        "IQ_READER_BASE_URL": "http://127.0.0.1:9",
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        **extra,
    })
    return env


def artifacts_of(flow_run_id: Any) -> list[Any]:
    """The artifacts a flow run published (read back through the Prefect API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def query(tmp_path: Path, sql: str, parameters: dict | None = None) -> list[tuple]:
    """Run one query on the test warehouse (opened and closed around it)."""
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    settings = load_settings({"IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path),
                              "IQ_ETL_HOME": str(tmp_path / "home")}, dotenv=tmp_path / "no.env")
    with wh.Warehouse(settings) as client:
        return client.query(sql, parameters=parameters).result_rows


def delivered_rows(tmp_path: Path) -> int:
    return int(query(tmp_path, "SELECT count() FROM iq.exports WHERE status = 'delivered'")[0][0])


def statuses(tmp_path: Path) -> dict[str, str]:
    return {k: s for k, s in query(tmp_path, "SELECT upload_key, status FROM iq.session_completeness")}


def logs_of(flow_run_id: Any) -> list[Any]:
    """The log lines of a flow run and its task runs (read back through the Prefect API), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
