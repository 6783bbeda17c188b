"""Helpers shared by the flow tests: the two real Prefect servers (`prefect_api`: an ephemeral API in this
process, prefect_test_harness, for flows called as functions; `prefect_server`: a `prefect server start`
on loopback for deployments, workers and the REST API) and their helpers (deploy, worker, trigger and
wait, artifacts, logs), a development chain, an environment pointing the flows at a temporary embedded
warehouse, and readers for the export ledger."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from iq_etl.settings import G1_PROGRAM_ID, G2_PROGRAM_ID, G3_PROGRAM_ID
from tests.support.net import free_port
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


# --- a real `prefect server start` for the deployment tests ------------------------------------------

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def wait_for(predicate, what: str, limit_s: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `predicate` until it returns something true (returned); fail naming `what` (with the tail of
    `log`) when `proc` exits first or after `limit_s` (a bound on a hang, never a speed assertion)."""
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{log.read_text()[-4000:] if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(0.5)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# `prefect work-pool create` (deploy_all) asks the server for the collection registry's worker types,
# and the server fetches them from raw.githubusercontent.com before falling back to the copy Prefect
# ships (prefect/server/api/collections.py; no setting turns the fetch off): a DNS query to the
# machine's nameserver, seen with `strace -f -e trace=connect,sendto`. The server's outgoing HTTP
# (httpx, which honours the proxy variables) goes to a loopback port nobody serves instead, so it
# falls back at once; its own loopback traffic bypasses that proxy.
SERVER_STAYS_ON_LOOPBACK = {name: "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")} | {
    "NO_PROXY": "127.0.0.1,localhost,::1"}


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port with its own home and SQLite database; its
    scheduler is off, so that only the runs a test triggers execute. Yields the API URL."""
    import requests

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = subprocess_env(home, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                         PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
                         **SERVER_STAYS_ON_LOOPBACK)
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def healthy():
            try:
                return requests.get(f"{api}/health", timeout=2).ok
            except requests.RequestException:
                return False

        wait_for(healthy, "the Prefect server to answer /api/health", 180, proc, log)
        yield api
    finally:
        stop_process(proc)


def deploy_all(api: str, env: dict[str, str]) -> None:
    """The README's set-up against `api`: the process work pool, then `prefect deploy --all` of prefect.yaml."""
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "iq-etl", "--type", "process"], env=env,
                   capture_output=True, timeout=120)   # already there on a second call: fine
    deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "iq-etl"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def deployment(api: str, name: str) -> dict | None:
    import requests

    r = requests.get(f"{api}/deployments/name/{name}", timeout=10)
    return r.json() if r.ok else None


def trigger_and_wait(api: str, deployment_id: str, params: dict, what: str, proc, log,
                     expect: str = "COMPLETED") -> str:
    """Create a run of the deployment through the REST API, wait until it ends in state `expect`;
    its id."""
    import requests

    r = requests.post(f"{api}/deployments/{deployment_id}/create_flow_run", json={"parameters": params}, timeout=10)
    r.raise_for_status()
    run_id = r.json()["id"]

    def finished():
        state = requests.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
        return state if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    state = wait_for(finished, what, 600, proc, log)
    assert state["type"] == expect, f"{what}: {state}\n{log.read_text()[-6000:]}"
    return run_id


def run_artifacts(api: str, run_id: str) -> list[dict]:
    import requests

    r = requests.post(f"{api}/artifacts/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}, timeout=10)
    r.raise_for_status()
    return r.json()
