"""The `backfill_flow/iq-etl-backfill` deployment of prefect.yaml, end to end with real parts on loopback: a
`prefect server start`, `prefect deploy --all`, a `prefect worker` on the process pool, and a Dask cluster
of a `dask scheduler` and two `dask worker`s (distributed's CLI). A run triggered through the REST API
ingests the development chain with its sub-ranges as tasks on the Dask workers, completes, publishes the
per-epoch artifact, and leaves exactly the rows of a single-process ingest."""
from __future__ import annotations

import pytest
import requests

from tests.support.dask_cluster import start_cluster
from tests.support.prefect import (  # noqa: F401 - prefect_server: a fixture
    build_devchain,
    deploy_all,
    deployment,
    prefect_server,
    start_worker,
    stop_process,
    subprocess_env,
    trigger_and_wait,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


def _rows(folder) -> list[tuple]:
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{folder / 'warehouse'}", "IQ_ETL_HOME": str(folder)},
                             dotenv=folder / "no.env")
    with wh.Warehouse(settings) as client:
        return client.query("SELECT slot, signature, ix_index, inner_index, kind, session_account, payload "
                            "FROM iq.raw_instructions FINAL ORDER BY ALL").result_rows


def test_backfill_deployment_runs_its_subranges_on_dask_workers(prefect_server, chain, tmp_path,  # noqa: F811
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
    deploy_all(api, env)
    backfill = deployment(api, "backfill_flow/iq-etl-backfill")
    assert backfill and backfill["work_pool_name"] == "iq-etl" and not backfill["schedules"]

    cluster = start_cluster(tmp_path / "dask", workers=2)
    log = tmp_path / "worker.log"
    try:
        worker = start_worker(env, log)
        try:
            params = {"slot_spec": spec, "ingest": {"source": "car", "car_url": car_template(chain_dir),
                                                    "subrange_slots": 400, "dask_address": cluster.address,
                                                    "extra_program_ids": list(manifest.extra_program_ids)}}
            run_id = trigger_and_wait(api, backfill["id"], params, "the backfill_flow run on the worker", worker, log)
        finally:
            stop_process(worker)
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
