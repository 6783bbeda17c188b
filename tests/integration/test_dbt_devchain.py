"""The models on the development chain, end to end through the real ingest: build a chain (every
generation and hard case, ground truth in its manifest), ingest its CAR files, `dbt build`, and
check each manifest upload's status and, for complete ones, the reconstructed bytes' sha256 and
the file sha256 against what the generator sent."""
from __future__ import annotations

import pytest

from iq_etl.settings import load_settings
from iq_etl.warehouse import client as wh


@pytest.fixture(scope="module")
def devchain_marts(tmp_path_factory):
    from iq_etl.devchain.build import CATALOGUE_UPLOADS, build_chain
    from iq_etl.devchain.chain import car_template
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.transform.runner import run_dbt

    tmp = tmp_path_factory.mktemp("dbt_devchain")
    manifest = build_chain(tmp / "chain", seed=21, sessions=CATALOGUE_UPLOADS + 6, noise_tx_per_slot=1)
    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp / 'warehouse'}", "IQ_ETL_HOME": str(tmp / "home")},
                             dotenv=tmp / "no.env")
    wh.close_client()
    client = wh.get_client(settings)
    try:
        run_ingest(settings, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}", source="car",
                   car_url=car_template(tmp / "chain"), extra_program_ids=tuple(manifest.extra_program_ids)))
        result = run_dbt(settings, quiet=True)
        yield manifest, client, result
    finally:
        wh.close_client()


def rows_by_key(client, sql: str, **formats) -> dict[str, dict]:
    result = client.query(sql, column_formats=formats or None)
    return {row[0]: dict(zip(result.column_names, row)) for row in result.result_rows}


def test_dbt_tests_pass_on_the_chain(devchain_marts):
    _, _, result = devchain_marts
    assert result.success and not result.problems()
    assert {n.name for n in result.warnings()} <= {"uploads_awaiting_finalize"}


def test_every_manifest_upload_gets_its_status(devchain_marts):
    manifest, client, _ = devchain_marts
    got = rows_by_key(client, "SELECT upload_key, status, upload_shape FROM iq.session_completeness")
    mismatched = {u.upload_key: (u.scenario, u.expected_status, got.get(u.upload_key, {}).get("status"))
                  for u in manifest.uploads if got.get(u.upload_key, {}).get("status") != u.expected_status}
    assert mismatched == {}
    # Anything else is a linked-list piece nobody names (the first piece of a broken list): no index
    # claims it, so it waits for one.
    extra = {k: v for k, v in got.items() if k not in {u.upload_key for u in manifest.uploads}}
    assert all(v["upload_shape"] == "linked_list" and v["status"] == "awaiting_finalize" for v in extra.values())
    broken = [u for u in manifest.uploads if "linked_list_broken" in u.hard_cases]
    assert len(extra) == len(broken)


def test_complete_uploads_match_the_generators_bytes(devchain_marts):
    manifest, client, _ = devchain_marts
    payloads = rows_by_key(client, "SELECT upload_key, sha256, file_sha256, decode_rule, payload_length "
                                   "FROM iq.session_payloads")
    ready = rows_by_key(client, "SELECT * FROM iq.sessions_ready_to_export")
    complete = [u for u in manifest.uploads if u.expected_status == "complete"]
    assert complete and set(payloads) == set(ready) == {u.upload_key for u in complete}
    for u in complete:
        p, r = payloads[u.upload_key], ready[u.upload_key]
        assert (p["sha256"], p["file_sha256"], p["decode_rule"], p["payload_length"]) == \
            (u.joined_sha256, u.file_sha256, u.decode_rule, u.joined_length), u.scenario
        assert (r["generation"], r["program_id"], r["session_account"], r["session_id"]) == \
            (u.generation, u.program_id, u.session_account, u.session_id), u.scenario
        assert (r["total_chunks"], r["chunk_count"], r["merkle_root"]) == \
            (u.expected_total, u.chunk_count, u.merkle_root), u.scenario
        assert (r["first_slot"], r["last_slot"], r["finalize_slot"], r["finalize_signature"]) == \
            (u.first_slot, u.last_slot, u.finalize_slot, u.finalize_signature), u.scenario
        assert (r["filename"], r["filetype"] if u.generation == "g3" else "", r["metadata"]) == \
            (u.filename, u.filetype if u.generation == "g3" else "", u.metadata or r["metadata"]), u.scenario


def test_missing_indexes_and_failed_copies_match_the_manifest(devchain_marts):
    manifest, client, _ = devchain_marts
    got = rows_by_key(client, "SELECT upload_key, missing_indexes, missing_piece_signature, failed_only_indexes, "
                              "missing_window_first_slot, missing_window_last_slot FROM iq.session_completeness")
    for u in manifest.uploads:
        if u.expected_status != "missing_chunks":
            continue
        row = got[u.upload_key]
        if u.shape == "linked_list":
            assert row["missing_piece_signature"] != "", u.scenario
        else:
            assert row["missing_indexes"] == u.missing_indexes, u.scenario
            assert row["missing_window_first_slot"] <= row["missing_window_last_slot"], u.scenario
        if "failed_chunk_never_resent" in u.hard_cases:
            assert row["failed_only_indexes"] == u.missing_indexes, u.scenario
