"""pipeline_flow on the development chain, through a real (ephemeral) Prefect API: ingest from CAR →
dbt build → export to a file:// folder and a loopback reader backend; the files match the manifest,
the status artifact is published, and a second run delivers nothing again."""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.support.prefect import (
    artifacts_of,
    build_devchain,
    delivered_rows,
    flow_env,
    prefect_api,  # noqa: F401 - fixture
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


@pytest.mark.slow  # end to end (a flow over a whole dev chain): CI runs it with the slow suite
def test_pipeline_exports_every_complete_upload_once(chain, tmp_path, monkeypatch, prefect_api):  # noqa: F811
    from iq_etl.devchain.chain import car_template
    from iq_etl.devchain.servers.reader_backend import serve_reader_backend
    from iq_etl.export.file_target import METADATA_NAME, session_dirname
    from iq_etl.orchestration.flows import STATUS_ARTIFACT_KEY, pipeline_flow
    from iq_etl.orchestration.params import ExportParams, IngestParams

    chain_dir, manifest = chain
    flow_env(monkeypatch, tmp_path)
    backend = serve_reader_backend()
    try:
        exports = tmp_path / "exports"
        targets = [exports.as_uri(), backend.url]
        params = dict(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                      ingest=IngestParams(source="car", car_url=car_template(chain_dir),
                                          extra_program_ids=list(manifest.extra_program_ids)),
                      export=ExportParams(targets=targets))
        state = pipeline_flow(**params, return_state=True)
        assert state.is_completed(), state
        result = state.result()
        complete = [u for u in manifest.uploads if u.expected_status == "complete"]
        assert result.ingest.rows_written > 0 and result.follow is None
        by_target = {e.target: e for e in result.export}
        assert {e.delivered for e in by_target.values()} == {len(complete)}
        assert all(e.failed == 0 and e.refused == 0 for e in by_target.values())

        # The file:// copies are the files the gateway would serve for the chain's uploads: the
        # uploaders' original files, except where the gateway's rule keeps the text (short base64).
        assert sum(u.file_sha256 == u.original_sha256 for u in complete) >= len(complete) - 1
        for upload in complete:
            folder = exports / session_dirname(upload.upload_key)
            (data_file,) = [p for p in folder.iterdir() if p.name != METADATA_NAME]
            assert hashlib.sha256(data_file.read_bytes()).hexdigest() == upload.file_sha256, upload.upload_key
        # The reader backend got each upload once, with the joined bytes' sha256.
        received = {b["upload_key"]: b for b in backend.received}
        assert len(backend.received) == len(complete)
        for upload in complete:
            assert received[upload.upload_key]["sha256"] == upload.joined_sha256, upload.upload_key

        # The run published the status table as a markdown artifact.
        arts = artifacts_of(state.state_details.flow_run_id)
        from iq_etl.orchestration.artifacts import (
            COVERAGE_ARTIFACT_KEY,
            DELIVERIES_ARTIFACT_KEY,
            INCOMPLETE_ARTIFACT_KEY,
            REPORT_ARTIFACT_KEY,
        )
        from iq_etl.orchestration.flows import PROGRESS_ARTIFACT_KEY

        assert sorted(a.key for a in arts) == sorted([STATUS_ARTIFACT_KEY, PROGRESS_ARTIFACT_KEY, INCOMPLETE_ARTIFACT_KEY,
                                                      REPORT_ARTIFACT_KEY, COVERAGE_ARTIFACT_KEY,
                                                      DELIVERIES_ARTIFACT_KEY])
        # ... and the coverage report's key tables, readable in the UI (the page itself beside the warehouse)
        report = next(a for a in arts if a.key == REPORT_ARTIFACT_KEY).data
        assert str(tmp_path / "report" / "index.html") in report and "](file://" not in report   # no dead link
        assert (tmp_path / "report" / "index.html").is_file()
        assert f"deliveries: {2 * len(complete)} delivered, 0 failed, 0 refused" in report
        deliveries = {row["target"]: row for row in json.loads(next(a for a in arts
                                                                    if a.key == DELIVERIES_ARTIFACT_KEY).data)}
        assert {row["delivered"] for row in deliveries.values()} == {len(complete)} and len(deliveries) == 2
        coverage = json.loads(next(a for a in arts if a.key == COVERAGE_ARTIFACT_KEY).data)
        assert [(row["source"], row["slots"]) for row in coverage] == [
            ("car", manifest.last_slot - manifest.first_slot + 1)]
        table = next(a for a in arts if a.key == INCOMPLETE_ARTIFACT_KEY)
        incomplete = {u.upload_key for u in manifest.uploads if u.expected_status != "complete"}
        assert table.type == "table" and incomplete <= {row["upload_key"] for row in json.loads(table.data)}
        status_art = next(a for a in arts if a.key == STATUS_ARTIFACT_KEY)
        assert "complete" in status_art.data
        progress_art = next(a for a in arts if a.key == PROGRESS_ARTIFACT_KEY)
        assert progress_art.data == 100.0 and "slots/s" in progress_art.description

        # Second run: nothing new ingested, nothing delivered again.
        again = pipeline_flow(**params, return_state=True)
        assert again.is_completed(), again
        second = again.result()
        assert second.ingest.rows_written == 0
        assert [e.delivered for e in second.export] == [0, 0]
        assert len(backend.received) == len(complete)
        assert delivered_rows(tmp_path) == 2 * len(complete)
    finally:
        backend.shutdown()
