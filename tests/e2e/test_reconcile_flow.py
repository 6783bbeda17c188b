"""reconcile_flow on the development chain (real Prefect API, real chDB, CAR files, loopback RPC).

The manifest's `chunk_far_from_siblings` upload has its last chunks and its finalize about far_gap
(2000) slots after the rest. A first, narrow ingest of the upload window leaves it incomplete;
reconcile then finds the rest, by widening its slot window run after run (CAR: 100, 400, 1600, ...
slots) or, with an RPC endpoint, at once by discovering its session account's signatures, and
exports it."""
from __future__ import annotations

import hashlib

import pytest

from iq_etl.orchestration.params import ExportParams, IngestParams
from tests.support.prefect import (  # noqa: F401 - fixtures
    build_devchain,
    flow_env,
    prefect_api,
    query,
    statuses,
)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


def _far_upload(manifest):
    (key,) = manifest.hard_case("chunk_far_from_siblings").upload_keys
    return manifest.upload(key)


def _narrow_pipeline(chain, tmp_path):
    """Ingest only the upload window (not the far chunks), transform, export."""
    from iq_etl.devchain.chain import car_template
    from iq_etl.orchestration.flows import pipeline_flow

    chain_dir, manifest = chain
    first, last = manifest.parameters["upload_window"]
    state = pipeline_flow(slot_spec=f"{first}:{last}",
                          ingest=IngestParams(source="car", car_url=car_template(chain_dir),
                                              extra_program_ids=list(manifest.extra_program_ids)),
                          export=ExportParams(targets=[(tmp_path / "exports").as_uri()]), return_state=True)
    assert state.is_completed(), state
    return state.result()


def _exported_file(tmp_path, upload) -> bytes | None:
    from iq_etl.export.file_target import METADATA_NAME, session_dirname

    folder = tmp_path / "exports" / session_dirname(upload.upload_key)
    files = [p for p in folder.iterdir() if p.name != METADATA_NAME] if folder.is_dir() else []
    return files[0].read_bytes() if len(files) == 1 else None


def test_reconcile_widens_the_window_until_the_far_chunks_are_found(chain, tmp_path, monkeypatch, prefect_api):  # noqa: F811
    from iq_etl.devchain.chain import car_template
    from iq_etl.orchestration.flows import reconcile_flow

    chain_dir, manifest = chain
    far = _far_upload(manifest)
    flow_env(monkeypatch, tmp_path)
    _narrow_pipeline(chain, tmp_path)
    before = statuses(tmp_path)
    assert before[far.upload_key] != "complete"
    assert _exported_file(tmp_path, far) is None

    far_slots = [slot for slot in (far.finalize_slot, far.last_slot) if slot is not None]
    params = dict(ingest=IngestParams(car_url=car_template(chain_dir), extra_program_ids=list(manifest.extra_program_ids)),
                  export=ExportParams(targets=[(tmp_path / "exports").as_uri()]), initial_padding=100, growth=4,
                  max_padding=100_000)
    paddings, runs = [], []
    while statuses(tmp_path)[far.upload_key] != "complete":
        assert len(runs) < 8, f"not found after {len(runs)} reconcile runs: paddings {paddings}"
        result = reconcile_flow(**params).to_json()   # as `iq-etl reconcile --json` prints it
        runs.append(result)
        planned = {u["upload_key"]: u for u in result["plan"]["uploads"]}
        assert planned[far.upload_key]["method"] == "window"
        assert planned[far.upload_key]["attempt"] == len(runs)
        paddings.append(planned[far.upload_key]["padding"])
        # Until a window reaches the far chunks, the upload stays incomplete and is reported so.
        reached = any(a <= slot <= b for a, b in result["summary"]["scanned_ranges"] for slot in far_slots)
        if not reached:
            assert any(m["upload_key"] == far.upload_key for m in result["summary"]["still_missing"])
    # It took several runs, each widening the window at least x4 (more when a window held nothing
    # unscanned), starting from the initial padding.
    assert len(runs) > 1 and paddings[0] == 100
    assert all(b >= 4 * a for a, b in zip(paddings, paddings[1:])), paddings
    last = runs[-1]["summary"]
    assert far.upload_key in last["newly_complete"]
    assert [k for k, _ in last["exported"]].count(far.upload_key) == 1
    assert all(far.upload_key not in r["summary"]["newly_complete"] for r in runs[:-1])
    data = _exported_file(tmp_path, far)
    assert data is not None and hashlib.sha256(data).hexdigest() == far.file_sha256
    # Only unscanned slots were read again: every slot range of the chain is scanned at most once.
    scanned = query(tmp_path, "SELECT first_slot, last_slot FROM iq.scan_ranges FINAL WHERE status = 'done' "
                              "ORDER BY first_slot")
    assert all(b[0] > a[1] for a, b in zip(scanned, scanned[1:]))
    # The state of the search is kept per upload.
    state = query(tmp_path, "SELECT attempts, padding FROM iq.reconcile_state FINAL WHERE upload_key = {k:String}",
                  {"k": far.upload_key})
    assert state == [(len(runs), paddings[-1])]

    # One more run: nothing new to find for the uploads the chain never completes; nothing exported twice.
    third = reconcile_flow(**params).to_json()
    assert third["summary"]["newly_complete"] == [] and third["summary"]["exported"] == []
    # Every upload the chain completes has been found; what is still incomplete is incomplete on chain.
    still = {m["upload_key"] for m in third["summary"]["still_missing"]}
    assert still and not still & {u.upload_key for u in manifest.uploads if u.expected_status == "complete"}


def test_reconcile_with_rpc_discovers_the_session_signatures(chain, tmp_path, monkeypatch, prefect_api):  # noqa: F811
    from iq_etl.devchain.chain import car_template
    from iq_etl.devchain.servers.rpc import serve_rpc
    from iq_etl.orchestration.flows import reconcile_flow

    chain_dir, manifest = chain
    far = _far_upload(manifest)
    rpc = serve_rpc(chain_dir)
    try:
        flow_env(monkeypatch, tmp_path, IQ_RPC_URL=rpc.url)
        _narrow_pipeline(chain, tmp_path)
        assert statuses(tmp_path)[far.upload_key] != "complete"
        result = reconcile_flow(ingest=IngestParams(car_url=car_template(chain_dir),
                                                    extra_program_ids=list(manifest.extra_program_ids)),
                                export=ExportParams(targets=[(tmp_path / "exports").as_uri()])).to_json()
    finally:
        rpc.shutdown()
    summary = result["summary"]
    planned = {u["upload_key"]: u for u in result["plan"]["uploads"]}
    assert planned[far.upload_key]["method"] == "rpc"
    assert summary["rpc_sessions"] >= 1
    assert far.upload_key in summary["newly_complete"]
    assert statuses(tmp_path)[far.upload_key] == "complete"
    data = _exported_file(tmp_path, far)
    assert data is not None and hashlib.sha256(data).hexdigest() == far.file_sha256
