"""The dbt models on hand-built raw rows: every status and hard case, run in-process on real chDB.

One module-scoped warehouse: the rows go in once, `dbt build` runs once (models, data tests, unit
tests), and the assertions share it. Expected values come from the bytes put in (hashlib), not
from the models. A second ingest then checks that the incremental build gives exactly what a
full rebuild gives.
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

import pytest

from iq_etl.settings import load_settings
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.scan_ledger import SCAN_COLUMNS
from iq_etl.warehouse.schema import migrate
from tests.support.raw_rows import Chain, account, build_scenarios, insert_rows, query_dicts, scan_range_rows, sig


@dataclass
class Built:
    settings: Any
    client: Any
    chain: Chain
    result: Any


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    """One warehouse with every scenario, transformed once with the unit tests included."""
    from iq_etl.transform.runner import run_dbt

    tmp = tmp_path_factory.mktemp("dbt_models")
    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp / 'warehouse'}", "IQ_ETL_HOME": str(tmp / "home")},
                             dotenv=tmp / "no.env")
    wh.close_client()
    client = wh.get_client(settings)
    migrate(client)
    chain = build_scenarios()
    insert_rows(client, [row for upload in chain.uploads.values() for row in upload.rows])
    client.insert("iq.scan_ranges", scan_range_rows(), column_names=SCAN_COLUMNS)
    result = run_dbt(settings, unit_tests=True, quiet=True)
    try:
        yield Built(settings, client, chain, result)
    finally:
        wh.close_client()


def test_build_runs_models_data_tests_and_unit_tests(built):
    result = built.result
    assert result.success and not result.problems()
    kinds = {n.resource_type for n in result.nodes}
    assert {"model", "test", "unit_test"} <= kinds
    unit = {n.name: n.status for n in result.nodes if n.resource_type == "unit_test"}
    assert unit == {name: "pass" for name in (
        "chunk_choice_dedup_conflict_and_failed_copies", "linked_list_chunks_are_indexed_from_genesis",
        "finalize_bundle_attaches_to_the_latest_preceding_session", "linked_walk_follows_before_tx_and_stops_at_a_gap",
        "status_rules", "payloads_join_in_index_order_and_follow_the_gateway_rule",
        "scanned_ranges_merge_and_gaps_show")}
    # awaiting_finalize is a normal state in flight: a warning, not a failure
    warned = {n.name for n in result.warnings()}
    assert warned == {"uploads_awaiting_finalize"}


def test_every_upload_gets_its_status(built):
    got = {r["upload_key"]: r["status"] for r in query_dicts(built.client, "SELECT upload_key, status FROM iq.session_completeness")}
    expected = {key: upload.status for key, upload in built.chain.uploads.items()}
    assert {k: got.get(k) for k in expected} == expected
    # The only extra upload: the broken list's first piece, which no index and no other piece names.
    extra = set(got) - set(expected)
    assert extra == {sig("g3broken0")} and got[sig("g3broken0")] == "awaiting_finalize"


def test_complete_uploads_rebuild_the_bytes_put_in(built):
    rows = {r["upload_key"]: r for r in query_dicts(
        built.client, "SELECT upload_key, payload, sha256, file_bytes, file_sha256, decode_rule, payload_length "
                      "FROM iq.session_payloads", payload="bytes", file_bytes="bytes")}
    complete = {k: u for k, u in built.chain.uploads.items() if u.status == "complete"}
    assert set(rows) == set(complete)
    for key, upload in complete.items():
        row = rows[key]
        assert row["payload"] == upload.joined, key
        assert row["sha256"] == hashlib.sha256(upload.joined).hexdigest()
        assert row["payload_length"] == len(upload.joined)
        expected_file = upload.file_bytes if upload.file_bytes is not None else upload.joined
        assert row["file_sha256"] == hashlib.sha256(expected_file).hexdigest(), key
        assert row["decode_rule"] == (upload.decode_rule or "text"), key


def test_export_view_has_the_contract_columns_and_reads_deliveries_at_query_time(built):
    client = built.client
    result = client.query("SELECT * FROM iq.sessions_ready_to_export LIMIT 0")
    types = dict(zip(result.column_names, (t.name for t in result.column_types)))
    assert list(types) == [
        "upload_key", "generation", "program_id", "session_account", "session_id", "total_chunks", "chunk_count",
        "merkle_root", "method", "first_slot", "last_slot", "finalize_slot", "finalize_signature", "payload_base64",
        "sha256", "payload_length", "file_base64", "file_sha256", "decode_rule", "filename", "filetype", "metadata",
        "verification", "verification_reason", "delivered_targets"]
    assert types["total_chunks"] == types["chunk_count"] == "UInt32"
    assert types["method"] == "Nullable(UInt8)" and types["finalize_slot"] == "Nullable(UInt64)"
    assert types["first_slot"] == types["last_slot"] == types["payload_length"] == "UInt64"
    assert types["delivered_targets"] == "Array(String)"
    assert all(types[c] == "String" for c in ("upload_key", "session_id", "merkle_root", "payload_base64", "sha256",
                                              "file_base64", "file_sha256", "decode_rule", "filename", "metadata",
                                              "verification", "verification_reason"))

    g3_key = account("g3session")
    row = query_dicts(client, "SELECT * FROM iq.sessions_ready_to_export WHERE upload_key = {k:String}", {"k": g3_key})[0]
    upload = built.chain.uploads[g3_key]
    assert base64.b64decode(row["payload_base64"]) == upload.joined
    assert base64.b64decode(row["file_base64"]) == upload.file_bytes
    assert (row["total_chunks"], row["chunk_count"], row["session_account"], row["session_id"]) == (3, 3, g3_key, "")
    assert row["filename"] == "photo.png" and row["filetype"] == "image/png" and row["delivered_targets"] == []
    g2_key = f"{account('g2dup')}:{'aa' * 16}"
    g2 = query_dicts(client, "SELECT * FROM iq.sessions_ready_to_export WHERE upload_key = {k:String}", {"k": g2_key})[0]
    assert (g2["session_id"], g2["merkle_root"], g2["method"]) == ("aa" * 16, "ab" * 32, 0)
    keys = {r["upload_key"] for r in query_dicts(client, "SELECT upload_key FROM iq.sessions_ready_to_export")}
    assert keys == {k for k, u in built.chain.uploads.items() if u.status == "complete"}

    # A delivered row for (key, sha256, target) shows at once; a failed attempt or another sha256 does not.
    client.insert("iq.exports", [
        [g3_key, row["sha256"], "https://reader.example/ingest", 1, "delivered", 200, "", "", 10, "r1"],
        [g3_key, row["sha256"], "file:///exports", 1, "failed", None, "", "disk full", 10, "r1"],
        [g3_key, "0" * 64, "file:///old", 1, "delivered", None, "", "", 10, "r0"],
    ], column_names=["session_key", "sha256", "target", "attempt", "status", "http_status", "response_excerpt",
                     "error", "payload_bytes", "run_id"])
    after = query_dicts(client, "SELECT delivered_targets FROM iq.sessions_ready_to_export WHERE upload_key = {k:String}",
                        {"k": g3_key})[0]
    assert after["delivered_targets"] == ["https://reader.example/ingest"]


def test_missing_chunks_are_named_with_ranges_and_slot_windows(built):
    rows = {r["upload_key"]: r for r in query_dicts(built.client, "SELECT * FROM iq.session_completeness")}
    missing = rows[f"{account('g2missing')}:{'ee' * 16}"]
    chunk_slots = [r[0] for r in built.chain.uploads[missing["upload_key"]].rows]
    assert (missing["missing_ranges_text"], missing["missing_indexes"], missing["chunks_missing"]) == ("2", [2], 1)
    assert (missing["missing_window_first_slot"], missing["missing_window_last_slot"]) == (chunk_slots[1], chunk_slots[2])
    assert missing["coverage_ratio"] == pytest.approx(0.8)

    failed_only = rows[f"{account('g2failonly')}:{'ef' * 16}"]
    assert failed_only["failed_only_indexes"] == [1] and failed_only["missing_ranges_text"] == "1"

    huge = rows[f"{account('g2huge')}:{'04' * 16}"]
    assert huge["missing_ranges_text"] == "2-3999999999" and huge["chunks_missing"] == 3_999_999_998
    assert huge["missing_indexes_truncated"] and len(huge["missing_indexes"]) == 10_000
    assert huge["missing_indexes"][:3] == [2, 3, 4]

    broken = rows[sig("g3broken2")]
    assert broken["missing_piece_signature"] == sig("g3broken1") and broken["missing_window_first_slot"] is None
    assert broken["missing_window_last_slot"] == built.chain.uploads[sig("g3broken2")].rows[1][0]
    assert broken["chunks_expected"] == 3 and broken["chunks_missing"] == 2

    conflict = rows[f"{account('g2conflict')}:{'bb' * 16}"]
    assert conflict["conflicting_indexes"] == [2] and "2" in conflict["status_reason"]
    mismatch = rows[account("g3mismatch")]
    assert (mismatch["declared_total"], mismatch["metadata_total"], mismatch["total_disagreement"]) == (2, 9, True)


def test_chunk_copies_duplicates_and_failures_are_counted(built):
    dup_key = f"{account('g2dup')}:{'aa' * 16}"
    chunks = {r["chunk_index"]: r for r in query_dicts(
        built.client, "SELECT * FROM iq.int_session_chunks WHERE upload_key = {k:String}", {"k": dup_key})}
    assert chunks[1]["copies_seen"] == 2 and chunks[1]["distinct_payloads"] == 1
    failed_key = f"{account('g2failed')}:{'cc' * 16}"
    resent = query_dicts(built.client, "SELECT * FROM iq.int_session_chunks WHERE upload_key = {k:String} "
                                       "AND chunk_index = 1", {"k": failed_key}, payload="bytes")[0]
    assert (resent["copies_seen"], resent["failed_copies"]) == (1, 1)
    assert resent["payload"] != b"garbage from a failed tx"
    coverage = {r["upload_key"]: r for r in query_dicts(built.client, "SELECT * FROM iq.chunk_coverage")}
    assert (coverage[dup_key]["present_ranges"], coverage[dup_key]["duplicated_indexes"]) == ("0-2", "1")
    missing_key = f"{account('g2missing')}:{'ee' * 16}"
    assert (coverage[missing_key]["present_ranges"], coverage[missing_key]["missing_ranges"]) == ("0-1,3-4", "2")


def test_bundle_and_reused_account_keys(built):
    uploads = {r["upload_key"]: r for r in query_dicts(built.client, "SELECT * FROM iq.int_uploads")}
    bundle = uploads[f"{account('legacybundle')}:{'03' * 16}"]
    assert (bundle["bundle_count"], bundle["expected_total"], bundle["generation"]) == (1, 2, "g2_legacy")
    reused = [k for k in uploads if k.startswith(account("g2reused") + ":")]
    assert sorted(reused) == [f"{account('g2reused')}:{'01' * 16}", f"{account('g2reused')}:{'02' * 16}"]


def test_scan_coverage_merges_done_ranges_and_shows_gaps(built):
    rows = query_dicts(built.client, "SELECT kind, first_slot, last_slot, slots FROM iq.scan_coverage ORDER BY first_slot")
    assert [(r["kind"], r["first_slot"], r["last_slot"]) for r in rows] == [
        ("scanned", 400_000_000, 400_000_080), ("gap", 400_000_081, 400_000_099), ("scanned", 400_000_100, 400_000_150)]


def test_saved_queries_run(built):
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "sql" / "queries"
    names = sorted(p.name for p in folder.glob("*.sql"))
    assert names == ["coverage_summary.sql", "missing_chunk_ranges.sql", "slot_windows_to_rescan.sql",
                     "undecoded_by_reason.sql"]
    results = {name: built.client.query((folder / name).read_text()) for name in names}
    summary = {(r[0], r[1]): r[2] for r in results["coverage_summary.sql"].result_rows}
    assert summary[("g2_pinocchio", "complete")] == 5 and summary[("g1", "complete")] == 1
    missing = {r[0] for r in results["missing_chunk_ranges.sql"].result_rows}
    assert missing == {k for k, u in built.chain.uploads.items() if u.status != "complete"} | {sig("g3broken0")}
    windows = [dict(zip(results["slot_windows_to_rescan.sql"].column_names, r))
               for r in results["slot_windows_to_rescan.sql"].result_rows]
    assert windows and all(w["first_slot"] <= w["last_slot"] for w in windows)
    assert sum(w["uploads"] for w in windows) == sum(
        1 for k, u in built.chain.uploads.items() if u.status in ("missing_chunks", "awaiting_finalize")) + 1


def test_status_report_on_the_built_marts(built):
    from iq_etl.status import render_status, status_markdown, status_report

    report = status_report(built.client, incomplete_limit=5, program_ids=["P1", "P2"])  # scan_range_rows' scope
    assert report["models_built"] and report["totals"]["uploads"] == len(built.chain.uploads) + 1
    assert report["totals"]["complete"] == sum(1 for u in built.chain.uploads.values() if u.status == "complete")
    assert len(report["incomplete"]) == 5 and report["incomplete"][0]["status"] != "awaiting_finalize"
    assert report["scan"]["gaps"] == [{"first_slot": 400_000_081, "last_slot": 400_000_099, "slots": 19}]
    markdown = status_markdown(report)
    assert "### Incomplete uploads (top)" in markdown and "| 400000081 | 400000099 | 19 |" in markdown
    import json

    assert json.loads(render_status(report, "json"))["totals"] == report["totals"]
