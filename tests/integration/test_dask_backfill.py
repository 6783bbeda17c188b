"""backfill_flow on a real loopback Dask cluster (`dask scheduler` + two `dask worker`s, distributed's CLI) and a
real Prefect API, over a development chain that straddles two epochs (923 and 924):

- an epoch whose CAR archive is missing fails the run with a message naming it, the other epoch is done,
  and the per-epoch artifact says so;
- rerun once the archive is there: the done epoch's sub-ranges are skipped (resume), the other is
  ingested, and the warehouse holds exactly the rows of a single-process ingest."""
from __future__ import annotations

import pytest

from iq_etl.ingest.request import IngestParams
from iq_etl.solana.slots import SLOTS_PER_EPOCH
from tests.support.dask_cluster import start_cluster
from tests.support.prefect import artifacts_of, build_devchain, flow_env, logs_of, prefect_api  # noqa: F401 - fixtures

FIRST_SLOT = 924 * SLOTS_PER_EPOCH - 1200


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"), first_slot=FIRST_SLOT)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("dask"), workers=2)
    yield c
    c.stop()


def _rows(folder) -> list[tuple]:
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{folder / 'warehouse'}", "IQ_ETL_HOME": str(folder)},
                             dotenv=folder / "no.env")
    with wh.Warehouse(settings) as client:
        return client.query("SELECT slot, signature, ix_index, inner_index, kind, session_account, payload "
                            "FROM iq.raw_instructions FINAL ORDER BY ALL").result_rows


def _latest_backfill_markdown(flow_run_id) -> str:
    from iq_etl.orchestration.backfill import BACKFILL_ARTIFACT_KEY

    arts = [a for a in artifacts_of(flow_run_id) if a.key == BACKFILL_ARTIFACT_KEY]
    assert arts, "no backfill artifact"
    return str(max(arts, key=lambda a: a.created).data)


@pytest.mark.slow  # end to end (a flow over a whole dev chain): CI runs it with the slow suite
def test_backfill_reports_a_missing_epoch_then_resumes_to_the_single_process_rows(
        chain, cluster, tmp_path, tmp_path_factory, monkeypatch, prefect_api):  # noqa: F811
    from iq_etl.devchain.chain import car_template
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.orchestration.backfill import BackfillIncomplete, backfill_flow
    from iq_etl.settings import load_settings
    from iq_etl.warehouse import client as wh

    chain_dir, manifest = chain
    spec = f"{manifest.first_slot}:{manifest.last_slot}"
    assert manifest.first_slot // SLOTS_PER_EPOCH == 923 and manifest.last_slot // SLOTS_PER_EPOCH == 924

    reference = tmp_path_factory.mktemp("reference")
    ref_settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{reference / 'warehouse'}",
                                  "IQ_ETL_HOME": str(reference)}, dotenv=reference / "no.env")
    with wh.Warehouse(ref_settings) as client:
        run_ingest(ref_settings, IngestRequest(slot_spec=spec, car_url=car_template(chain_dir),
                                               extra_program_ids=tuple(manifest.extra_program_ids)), client=client)
    expected = _rows(reference)
    assert expected

    flow_env(monkeypatch, tmp_path)
    car_924 = chain_dir / "924" / "epoch-924.car"
    hidden = car_924.with_name("hidden.car")
    car_924.rename(hidden)
    params = dict(slot_spec=spec, ingest=IngestParams(car_url=car_template(chain_dir), dask_address=cluster.address,
                                                      extra_program_ids=list(manifest.extra_program_ids),
                                                      subrange_slots=400))
    try:
        state = backfill_flow(**params, return_state=True)
    finally:
        hidden.rename(car_924)
    assert state.is_failed(), state
    assert "epoch 924 failed" in state.message and "epoch 923" not in state.message, state.message
    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, BackfillIncomplete)
    assert [(e.epoch, e.status) for e in failure.report.epochs] == [(923, "done"), (924, "failed")]
    markdown = _latest_backfill_markdown(state.state_details.flow_run_id)
    assert "| 923 |" in markdown and "| 924 |" in markdown and "failed" in markdown

    state = backfill_flow(**params, return_state=True)
    assert state.is_completed(), state
    report = state.result()
    by_epoch = {e.epoch: e for e in report.epochs}
    assert by_epoch[923].status == by_epoch[924].status == "done"
    assert by_epoch[923].skipped == 3 and by_epoch[923].subranges == 0   # resumed: nothing redone
    assert by_epoch[924].subranges == 3
    assert "1 of 2" not in _latest_backfill_markdown(state.state_details.flow_run_id)
    # The log: no line per sub-range task, a throttled progress line from the flow instead (the last one
    # when all are done). Logs reach the API in batches: wait for the flow's last line.
    import time

    def lines():
        return [entry.message for entry in logs_of(state.state_details.flow_run_id)]

    deadline = time.monotonic() + 60
    while not any("3 of 3 sub-range(s) done" in m for m in lines()) and time.monotonic() < deadline:
        time.sleep(1)
    assert any("scan: 3 of 3 sub-range(s) done (" in m and "0 failed" in m for m in lines()), lines()
    assert not [m for m in lines() if "Finished in state Completed()" in m and "scan-" in m]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:   # the sub-range tasks did run (as task runs of the flow run)
        scans = [t for t in client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))) if t.name.startswith("scan-")]
        quiet = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
            any_=[state.state_details.flow_run_id])))
    assert len(scans) == 3 and not [e for e in quiet if e.task_run_id in {t.id for t in scans} and e.level < 30]
    assert _rows(tmp_path) == expected
