"""Issue 26: the pipeline deployment of prefect.yaml with its DEFAULT parameters (ingest.source follow,
no slot spec, the reader backend as export target) does real work on a real Prefect server: against a
development chain whose archive host (HTTP on loopback) serves epoch 923 and whose JSON-RPC server
serves the chain to its tip in epoch 924, one run triggered with no parameters reads 923 from CAR and
the rest over RPC, lands the rows of one full ingest, exports the complete uploads to the reader
backend, records its lag (0 slots: caught up) in iq.runs and shows it in the report artifact."""
from __future__ import annotations

import json
import shutil

import pytest

from iq_etl.solana.slots import epoch_bounds
from tests.support.prefect import (  # noqa: F401 - prefect_server: a fixture
    deploy_all,
    deployment,
    prefect_server,
    query,
    run_artifacts,
    start_worker,
    stop_process,
    subprocess_env,
    trigger_and_wait,
)

EDGE = epoch_bounds(924).first_slot   # the chain starts 1,200 slots before it: the archive serves 923 only
KEY = "slot, signature, ix_index, inner_index, program_id, kind, hex(payload)"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from iq_etl.devchain.build import build_chain

    out = tmp_path_factory.mktemp("follow-chain")
    manifest = build_chain(out, seed=26, sessions=40, noise_tx_per_slot=1, slots=2400, first_slot=EDGE - 1200)
    return out, manifest


def test_the_pipeline_deployment_defaults_follow_the_chain_and_report_the_lag(prefect_server, chain, tmp_path,  # noqa: F811
                                                                               tmp_path_factory):
    from iq_etl.devchain.chain import car_template
    from iq_etl.devchain.servers.files import serve_files
    from iq_etl.devchain.servers.reader_backend import serve_reader_backend
    from iq_etl.devchain.servers.rpc import serve_rpc
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    chain_dir, manifest = chain
    programs = ",".join(manifest.all_program_ids())
    # the rows of one full ingest, to compare with
    reference = tmp_path_factory.mktemp("reference")
    ref = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{reference / 'warehouse'}", "IQ_ETL_HOME": str(reference),
                         "IQ_PROGRAM_ID": programs}, dotenv=reference / "no.env")
    with wh.Warehouse(ref) as client:
        run_ingest(ref, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                                      car_url=car_template(chain_dir)), client=client)
        expected = client.query(f"SELECT {KEY} FROM iq.raw_instructions FINAL ORDER BY ALL").result_rows
    assert expected

    archive = tmp_path / "archive"
    shutil.copytree(chain_dir / "923", archive / "923")          # the archive's edge: epoch 924 not published yet
    files, rpc, backend = serve_files(archive), serve_rpc(chain_dir), serve_reader_backend()
    try:
        api = prefect_server
        env = subprocess_env(tmp_path, PREFECT_API_URL=api, IQ_PROGRAM_ID=programs, IQ_RPC_URL=rpc.url,
                             IQ_CAR_URL=f"{files.url.rstrip('/')}/{{epoch}}/epoch-{{epoch}}.car",
                             IQ_START_SLOT=str(manifest.first_slot),
                             IQ_READER_BASE_URL=f"http://127.0.0.1:{backend.server_address[1]}")
        deploy_all(api, env)
        pipeline = deployment(api, "pipeline_flow/iq-etl-pipeline")
        assert pipeline and pipeline["parameters"]["slot_spec"] is None
        assert pipeline["parameters"]["ingest"]["source"] == "follow"
        assert pipeline["parameters"]["export"]["targets"] is None     # the reader backend

        log = tmp_path / "worker.log"
        worker = start_worker(env, log)
        try:
            run_id = trigger_and_wait(api, pipeline["id"], {}, "the pipeline_flow run with its defaults", worker, log)
        finally:
            stop_process(worker)
    finally:
        files.shutdown()
        rpc.shutdown()
        backend.shutdown()

    # rows landed: exactly those of one full ingest, epoch 923 from the archive host, 924 over RPC
    assert query(tmp_path, f"SELECT {KEY} FROM iq.raw_instructions FINAL ORDER BY ALL") == expected
    sources = dict(query(tmp_path, "SELECT source, sum(last_slot - first_slot + 1) FROM iq.scan_ranges FINAL "
                                   "WHERE status = 'done' GROUP BY source"))
    assert sources == {"car": EDGE - manifest.first_slot, "rpc-blocks": manifest.last_slot - EDGE + 1}, sources
    # the complete uploads reached the reader backend
    complete = sum(u.expected_status == "complete" for u in manifest.uploads)
    assert complete and len({b["upload_key"] for b in backend.received}) == complete
    # the lag: recorded with the run, and shown in the report artifact
    (run,) = query(tmp_path, "SELECT command, status, tip_slot, frontier_slot, rows_written, uploads_delivered "
                             "FROM iq.runs")
    assert run[:4] == ("pipeline_flow", "ok", manifest.last_slot, manifest.last_slot) and run[4] > 0
    assert run[5] == complete
    arts = {a["key"]: a for a in run_artifacts(api, run_id)}
    report = arts["iq-etl-report"]["data"]
    assert f"this run: tip {manifest.last_slot}, covered to {manifest.last_slot}, behind by **0 slots**" in report
    coverage = {row["source"]: row for row in json.loads(arts["iq-etl-coverage"]["data"])}
    assert coverage["car"]["newest slot"] == EDGE - 1 and coverage["rpc-blocks"]["newest slot"] == manifest.last_slot
    assert "iq-etl-status" in arts
