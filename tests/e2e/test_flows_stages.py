"""The stage flows on their own, as separate deployments or workers would run them: ingest_flow in two
slot ranges, transform_flow, export_flow (a dry run first, then for real). Each run publishes the
status artifact, and the warehouse is free (closed) after every run."""
from __future__ import annotations

from iq_etl.orchestration.params import ExportParams, IngestParams
from tests.support.prefect import artifacts_of, build_devchain, delivered_rows, flow_env, prefect_api  # noqa: F401


def test_stage_flows_one_by_one(tmp_path, monkeypatch, prefect_api):  # noqa: F811
    from iq_etl.devchain.chain import car_template
    from iq_etl.orchestration.flows import STATUS_ARTIFACT_KEY, export_flow, ingest_flow, pipeline_flow, transform_flow
    from iq_etl.warehouse import client as wh

    chain_dir, manifest = build_devchain(tmp_path)
    flow_env(monkeypatch, tmp_path)
    complete = [u for u in manifest.uploads if u.expected_status == "complete"]
    middle = (manifest.first_slot + manifest.last_slot) // 2
    ingest = IngestParams(car_url=car_template(chain_dir), extra_program_ids=list(manifest.extra_program_ids))

    states = [ingest_flow(slot_spec=f"{manifest.first_slot}:{middle}", ingest=ingest, return_state=True),
              ingest_flow(slot_spec=f"{middle + 1}:{manifest.last_slot}", ingest=ingest, return_state=True)]
    assert all(s.is_completed() for s in states)
    assert sum(s.result().rows_written for s in states) > 0
    assert wh._client is None   # each run closed the warehouse client: the chDB folder is free

    transformed = transform_flow(return_state=True)
    assert transformed.is_completed() and transformed.result().success

    target = (tmp_path / "exports").as_uri()
    (dry,) = export_flow(export=ExportParams(targets=[target], dry_run=True))
    assert dry.would_send == len(complete) and dry.delivered == 0
    assert not (tmp_path / "exports").exists()
    real = export_flow(export=ExportParams(targets=[target]), return_state=True)
    (summary,) = real.result()
    assert summary.delivered == len(complete)
    assert delivered_rows(tmp_path) == len(complete)
    assert wh._client is None

    from iq_etl.orchestration.flows import PROGRESS_ARTIFACT_KEY

    for state in states:  # ingest runs also keep a progress artifact (at 100% when done)
        arts = artifacts_of(state.state_details.flow_run_id)
        assert sorted(a.key for a in arts) == sorted([STATUS_ARTIFACT_KEY, PROGRESS_ARTIFACT_KEY])
        assert next(a for a in arts if a.key == PROGRESS_ARTIFACT_KEY).data == 100.0
    for state in [transformed, real]:
        assert [a.key for a in artifacts_of(state.state_details.flow_run_id)] == [STATUS_ARTIFACT_KEY]

    # A scheduled pipeline without slot spec or session PDAs only transforms and exports.
    scheduled = pipeline_flow(ingest=IngestParams(source="car"), export=ExportParams(targets=[target]))
    assert scheduled.ingest is None and scheduled.follow is None
    assert [e.delivered for e in scheduled.export] == [0]
