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
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support.net import free_port
from tests.support.prefect import (  # noqa: F401 - prefect_server: a fixture
    BIN,
    build_devchain,
    deploy_all,
    deployment,
    prefect_server,
    run_artifacts,
    start_worker,
    stop_process,
    subprocess_env,
    trigger_and_wait,
    wait_for,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


def _pipeline_params(chain, exports: Path) -> dict:
    from iq_etl.devchain.chain import car_template

    chain_dir, manifest = chain
    return {"slot_spec": f"{manifest.first_slot}:{manifest.last_slot}",
            "ingest": {"source": "car", "car_url": car_template(chain_dir),
                       "extra_program_ids": list(manifest.extra_program_ids)},
            "export": {"targets": [exports.as_uri()]}}


def _artifact_keys(api: str, run_id: str) -> list[tuple[str, str]]:
    return [(a["key"], a["type"]) for a in run_artifacts(api, run_id)]


def _check_exports(chain, exports: Path) -> None:
    from iq_etl.export.file_target import METADATA_NAME, session_dirname

    _, manifest = chain
    complete = [u for u in manifest.uploads if u.expected_status == "complete"]
    assert complete
    for upload in complete:
        files = [p for p in (exports / session_dirname(upload.upload_key)).iterdir() if p.name != METADATA_NAME]
        assert len(files) == 1, upload.upload_key
        assert hashlib.sha256(files[0].read_bytes()).hexdigest() == upload.file_sha256


def test_prefect_yaml_deployments_run_on_a_process_worker(prefect_server, chain, tmp_path):  # noqa: F811
    api = prefect_server
    env = subprocess_env(tmp_path, PREFECT_API_URL=api)
    deploy_all(api, env)

    pipeline = deployment(api, "pipeline_flow/iq-etl-pipeline")
    reconcile = deployment(api, "reconcile_flow/iq-etl-reconcile")
    assert pipeline and reconcile
    assert pipeline["work_pool_name"] == reconcile["work_pool_name"] == "iq-etl"
    assert [s["schedule"].get("interval") for s in pipeline["schedules"]] == [3600.0]
    assert [s["schedule"].get("cron") for s in reconcile["schedules"]] == ["15 * * * *"]
    assert pipeline["parameters"]["ingest"]["source"] == "follow" and reconcile["parameters"]["growth"] == 4
    from iq_etl.orchestration.params import PARAMS_VERSION

    assert pipeline["parameters"]["params_version"] == reconcile["parameters"]["params_version"] == PARAMS_VERSION
    # the typed parameters are a form in the UI: the stored schema has the models
    assert set(pipeline["parameter_openapi_schema"]["definitions"]) >= {"IngestParams", "ExportParams"}

    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        exports = tmp_path / "exports"
        run_id = trigger_and_wait(api, pipeline["id"], _pipeline_params(chain, exports),
                                  "the pipeline_flow run on the worker", worker, log)
        # a deployment of another parameter version is refused, saying what to do
        old = trigger_and_wait(api, pipeline["id"], {"params_version": PARAMS_VERSION - 1, "slot_spec": 923},
                               "a pipeline_flow run with old parameters", worker, log, expect="FAILED")
        message = requests.get(f"{api}/flow_runs/{old}", timeout=10).json()["state"]["message"]
        assert "register the deployment again" in message, message
    finally:
        stop_process(worker)
    _check_exports(chain, exports)
    assert ("iq-etl-status", "markdown") in _artifact_keys(api, run_id)


def test_iq_etl_serve_starts_a_server_registers_both_flows_and_runs_a_triggered_pipeline(chain, tmp_path):
    """Without PREFECT_API_URL, `iq-etl serve` starts its own Prefect server on loopback (schedules
    need its scheduler) and stops it on exit."""
    port = free_port()
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
                p = deployment(api, "pipeline_flow/iq-etl-pipeline-served")
                r = deployment(api, "reconcile_flow/iq-etl-reconcile-served")
            except requests.RequestException:
                return None
            if not (p and r):
                return None
            intervals = [s["schedule"].get("interval") for s in p["schedules"]]
            crons = [s["schedule"].get("cron") for s in r["schedules"]]
            return (p, r) if intervals == [7200.0] and crons == ["30 * * * *"] else None

        pipeline, _ = wait_for(served, "iq-etl serve to start a server and register both deployments", 240, serve, log)
        assert (tmp_path / "home" / "prefect" / "server.log").is_file()
        assert pipeline["parameters"]["export"]["targets"] == [exports.as_uri()]
        run_id = trigger_and_wait(api, pipeline["id"], {},
                                   "the pipeline_flow run served by iq-etl serve", serve, log)
        _check_exports(chain, exports)
        assert ("iq-etl-status", "markdown") in _artifact_keys(api, run_id)
    finally:
        stop_process(serve)

    def down():
        try:
            requests.get(f"{api}/health", timeout=2)
        except requests.RequestException:
            return True
        return False

    wait_for(down, "the Prefect server started by iq-etl serve to stop with it", 60)
