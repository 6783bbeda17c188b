"""Deployments against a REAL Prefect server on loopback (`prefect server start`, own PREFECT_HOME and
SQLite database in tmp):

1. prefect.yaml: `prefect deploy --all` registers both deployments with their schedules on the
   process work pool; a `prefect worker` executes one pipeline_flow run triggered through the REST
   API; the run completes, its exports match the development chain, and its status artifact exists.
2. `iq-etl serve` without PREFECT_API_URL: starts its own Prefect server on loopback, registers the
   two flows with their schedules from one process; one pipeline_flow run triggered through the REST
   API is executed by the serving process, completes, and publishes its artifact; the server stops
   with the command.

The fixture server's scheduler service is off so that only the runs the test triggers execute."""
from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.support.prefect import build_devchain, subprocess_env

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, what: str, limit_s: float, proc: subprocess.Popen | None = None, log: Path | None = None):
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
    home = tmp_path_factory.mktemp("prefect-server")
    port = _free_port()
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


def _pipeline_params(chain, exports: Path) -> dict:
    from iq_etl.devchain.chain import car_template

    chain_dir, manifest = chain
    return {"slot_spec": f"{manifest.first_slot}:{manifest.last_slot}", "car_url": car_template(chain_dir),
            "extra_program_ids": list(manifest.extra_program_ids), "targets": [exports.as_uri()]}


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


def _artifact_keys(api: str, run_id: str) -> list[tuple[str, str]]:
    r = requests.post(f"{api}/artifacts/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}, timeout=10)
    r.raise_for_status()
    return [(a["key"], a["type"]) for a in r.json()]


def _check_exports(chain, exports: Path) -> None:
    from iq_etl.export.file_target import METADATA_NAME, session_dirname

    _, manifest = chain
    complete = [u for u in manifest.uploads if u.expected_status == "complete"]
    assert complete
    for upload in complete:
        files = [p for p in (exports / session_dirname(upload.upload_key)).iterdir() if p.name != METADATA_NAME]
        assert len(files) == 1, upload.upload_key
        assert hashlib.sha256(files[0].read_bytes()).hexdigest() == upload.file_sha256


def test_prefect_yaml_deployments_run_on_a_process_worker(prefect_server, chain, tmp_path):
    api = prefect_server
    env = subprocess_env(tmp_path, PREFECT_API_URL=api)
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "iq-etl", "--type", "process"], env=env,
                   check=True, capture_output=True, timeout=120)
    deploy = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]

    pipeline = _deployment(api, "pipeline_flow/iq-etl-pipeline")
    reconcile = _deployment(api, "reconcile_flow/iq-etl-reconcile")
    assert pipeline and reconcile
    assert pipeline["work_pool_name"] == reconcile["work_pool_name"] == "iq-etl"
    assert [s["schedule"].get("interval") for s in pipeline["schedules"]] == [3600.0]
    assert [s["schedule"].get("cron") for s in reconcile["schedules"]] == ["15 * * * *"]
    assert pipeline["parameters"]["source"] == "follow" and reconcile["parameters"]["growth"] == 4

    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "iq-etl"], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        exports = tmp_path / "exports"
        run_id = _trigger_and_wait(api, pipeline["id"], _pipeline_params(chain, exports),
                                   "the pipeline_flow run on the worker", worker, log)
    finally:
        _stop(worker)
    _check_exports(chain, exports)
    assert ("iq-etl-status", "markdown") in _artifact_keys(api, run_id)


def test_iq_etl_serve_starts_a_server_registers_both_flows_and_runs_a_triggered_pipeline(chain, tmp_path):
    """Without PREFECT_API_URL, `iq-etl serve` starts its own Prefect server on loopback (schedules
    need its scheduler) and stops it on exit."""
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = subprocess_env(tmp_path, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    env.pop("PREFECT_HOME")   # the default: under IQ_ETL_HOME
    exports = tmp_path / "exports"
    params = _pipeline_params(chain, exports)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        # This server's scheduler is on: a scheduled pipeline run (same parameters) may run too.
        serve = subprocess.Popen([str(BIN / "iq-etl"), "serve", "--server-port", str(port),
                                  "--pipeline-interval", "7200", "--reconcile-cron", "30 * * * *",
                                  "--pipeline-params", json.dumps(params)],
                                 cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        def served():
            try:
                p = _deployment(api, "pipeline_flow/iq-etl-pipeline-served")
                r = _deployment(api, "reconcile_flow/iq-etl-reconcile-served")
            except requests.RequestException:
                return None
            if not (p and r):
                return None
            intervals = [s["schedule"].get("interval") for s in p["schedules"]]
            crons = [s["schedule"].get("cron") for s in r["schedules"]]
            return (p, r) if intervals == [7200.0] and crons == ["30 * * * *"] else None

        pipeline, _ = _wait(served, "iq-etl serve to start a server and register both deployments", 240, serve, log)
        assert (tmp_path / "home" / "prefect" / "server.log").is_file()
        assert pipeline["parameters"]["targets"] == [exports.as_uri()]
        run_id = _trigger_and_wait(api, pipeline["id"], {},
                                   "the pipeline_flow run served by iq-etl serve", serve, log)
        _check_exports(chain, exports)
        assert ("iq-etl-status", "markdown") in _artifact_keys(api, run_id)
    finally:
        _stop(serve)

    def down():
        try:
            requests.get(f"{api}/health", timeout=2)
        except requests.RequestException:
            return True
        return False

    _wait(down, "the Prefect server started by iq-etl serve to stop with it", 60)
