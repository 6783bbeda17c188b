"""Export through the real pipeline: development chain → CAR ingest → dbt build (the real
iq.sessions_ready_to_export view) → loopback reader backend and a file:// folder."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from iq_etl.devchain.servers.reader_backend import Faults, serve_reader_backend
from iq_etl.export import export_ready
from iq_etl.export.file_target import METADATA_NAME, session_dirname
from tests.support.export_rows import FAST, reader_settings


@pytest.fixture
def devchain_warehouse(settings, warehouse, tmp_path):
    from iq_etl.devchain.build import build_chain
    from iq_etl.devchain.chain import car_template
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.transform.runner import run_dbt

    manifest = build_chain(tmp_path / "chain", seed=11, sessions=39, noise_tx_per_slot=0)
    run_ingest(settings, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}", source="car",
               car_url=car_template(tmp_path / "chain"), extra_program_ids=tuple(manifest.extra_program_ids)))
    run_dbt(settings, quiet=True)
    return manifest, warehouse


def test_complete_devchain_uploads_reach_the_backend_once_and_the_folder_intact(settings, devchain_warehouse, tmp_path):
    manifest, client = devchain_warehouse
    complete = {u.upload_key: u for u in manifest.uploads if u.expected_status == "complete"}
    assert complete
    server = serve_reader_backend(faults=Faults(fail_times=1))
    try:
        s = reader_settings(settings, server)
        summary = export_ready(s, client, options=FAST)
        assert (summary.delivered, summary.failed, summary.refused) == (len(complete), 0, 0)
        by_key = {b["upload_key"]: b for b in server.received}
        assert set(by_key) == set(complete)
        for key, upload in complete.items():
            body = by_key[key]
            joined = base64.b64decode(body["payload_base64"])
            assert hashlib.sha256(joined).hexdigest() == body["sha256"] == upload.joined_sha256, key
            assert body["file_sha256"] == upload.file_sha256
            assert body["generation"] == upload.generation and body["program_id"] == upload.program_id
            assert body["session_pubkey"] == (upload.session_account or None)
            assert body["session_id"] == (upload.session_id or None)
            assert body["total_chunks"] == upload.expected_total
            assert body["finalize_slot"] is not None
        # The real view's delivered_targets now lists the backend: a second run sends nothing.
        delivered_targets = client.query(
            "SELECT count() FROM iq.sessions_ready_to_export WHERE has(delivered_targets, {t:String})",
            parameters={"t": server.url}).result_rows[0][0]
        assert delivered_targets == len(complete)
        again = export_ready(s, client, options=FAST)
        assert (again.selected, again.attempts) == (0, 0)
        assert len(server.received) == len(complete)
    finally:
        server.shutdown()

    out = tmp_path / "exports"
    files = export_ready(settings, client, target=f"file://{out}", options=FAST)
    assert files.delivered == len(complete)
    for key, upload in complete.items():
        folder = out / session_dirname(key)
        data = [p for p in folder.iterdir() if p.name != METADATA_NAME]
        assert len(data) == 1, key
        # The gateway rule's bytes: the original file, except where the rule itself keeps the text
        # (the catalogue's short base64 upload), so compare with file_sha256.
        assert hashlib.sha256(data[0].read_bytes()).hexdigest() == upload.file_sha256, key
    for path in out.rglob("*"):
        assert Path(path).resolve().is_relative_to(out.resolve())
