"""The `backfill_flow/iq-etl-backfill` deployment of prefect.yaml, end to end with real parts on loopback: a
`prefect server start`, `prefect deploy --all`, a `prefect worker` on the process pool, and a Dask cluster
of a `dask scheduler` and two `dask worker`s (distributed's CLI). A run triggered through the REST API
ingests the development chain with its sub-ranges as tasks on the Dask workers, completes, publishes the
per-epoch artifact, and leaves exactly the rows of a single-process ingest."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.dask_cluster import free_port, start_cluster
from tests.support.prefect import build_devchain, subprocess_env

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _wait(predicate, what: str, limit_s: float, proc: subprocess.Popen, log: Path):
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log.read_text()[-4000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port, own home and SQLite database, scheduler off."""
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = subprocess_env(home, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                         PREFECT_UI_ENABLED="false", PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false")
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

        _wait(healthy, "the Prefect server to answer /api/health", 180, proc, log)
        yield api
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


def _deployment(api: str, name: str) -> dict | None:
    r = requests.get(f"{api}/deployments/name/{name}", timeout=10)
    return r.json() if r.ok else None


def _trigger_and_wait(api: str, deployment_id: str, params: dict, what: str, proc, log) -> str:
    r = requests.post(f"{api}/deployments/{deployment_id}/create_flow_run", json={"parameters": params}, timeout=10)
    r.raise_for_status()
    run_id = r.json()["id"]

    def finished():
        state = requests.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
        return state if state and state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    state = _wait(finished, what, 600, proc, log)
    assert state["type"] == "COMPLETED", f"{what}: {state}\n{log.read_text()[-6000:]}"
    return run_id


def _rows(folder) -> list[tuple]:
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{folder / 'warehouse'}", "IQ_ETL_HOME": str(folder)},
                             dotenv=folder / "no.env")
    with wh.Warehouse(settings) as client:
        return client.query("SELECT slot, signature, ix_index, inner_index, kind, session_account, payload "
                            "FROM iq.raw_instructions FINAL ORDER BY ALL").result_rows


def test_backfill_deployment_runs_its_subranges_on_dask_workers(prefect_server, chain, tmp_path,
                                                                tmp_path_factory):
    from iq_etl.devchain.chain import car_template
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    chain_dir, manifest = chain
    spec = f"{manifest.first_slot}:{manifest.last_slot}"
    reference = tmp_path_factory.mktemp("reference")
    ref_settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{reference / 'warehouse'}",
                                  "IQ_ETL_HOME": str(reference)}, dotenv=reference / "no.env")
    with wh.Warehouse(ref_settings) as client:
        run_ingest(ref_settings, IngestRequest(slot_spec=spec, car_url=car_template(chain_dir),
                                               extra_program_ids=tuple(manifest.extra_program_ids)), client=client)

    api = prefect_server
    env = subprocess_env(tmp_path, PREFECT_API_URL=api)
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "iq-etl", "--type", "process"], env=env,
                   check=True, capture_output=True, timeout=120)
    deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
    backfill = _deployment(api, "backfill_flow/iq-etl-backfill")
    assert backfill and backfill["work_pool_name"] == "iq-etl" and not backfill["schedules"]

    cluster = start_cluster(tmp_path / "dask", workers=2)
    log = tmp_path / "worker.log"
    try:
        with open(log, "wb") as out:
            worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "iq-etl"], env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
        try:
            params = {"slot_spec": spec, "car_url": car_template(chain_dir), "subrange_slots": 400,
                      "extra_program_ids": list(manifest.extra_program_ids), "dask_address": cluster.address}
            run_id = _trigger_and_wait(api, backfill["id"], params, "the backfill_flow run on the worker", worker, log)
        finally:
            _stop(worker)
    finally:
        cluster.stop()

    r = requests.post(f"{api}/artifacts/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}, timeout=10)
    r.raise_for_status()
    backfill_artifacts = [a for a in r.json() if a["key"] == "iq-etl-backfill"]
    assert backfill_artifacts and any("| 923 |" in a["data"] and "done" in a["data"] for a in backfill_artifacts)
    # The sub-ranges ran as task runs of the flow run (on the Dask workers).
    r = requests.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}, timeout=10)
    r.raise_for_status()
    scans = [t for t in r.json() if t["name"].startswith("scan-")]
    assert len(scans) == 6 and all(t["state"]["type"] == "COMPLETED" for t in scans), [t["name"] for t in scans]
    assert _rows(tmp_path) == _rows(reference)
