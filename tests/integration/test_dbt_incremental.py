"""Incremental builds: after a second ingest, `iq-etl transform` (incremental models recompute only
the upload groups with new rows) must give exactly what a full rebuild gives, including uploads
whose status changes, a finalize_bundle that moves to another session, and a linked list whose
missing piece arrives (its stray first piece stops being an upload)."""
from __future__ import annotations

import base64
import hashlib
import time

import pytest

from iq_etl.settings import load_settings
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.schema import migrate
from tests.support.raw_rows import Chain, account, build_scenarios, insert_rows, metadata, sig, split

# Columns compared between the incremental and the full build (everything but timestamps).
SNAPSHOTS = {
    "session_completeness": "SELECT * EXCEPT (source_ingested_at, build_id) FROM iq.session_completeness ORDER BY upload_key",
    "session_payloads": "SELECT upload_key, sha256, file_sha256, decode_rule, payload_length, chunk_count "
                        "FROM iq.session_payloads ORDER BY upload_key",
    "sessions_ready_to_export": "SELECT * FROM iq.sessions_ready_to_export ORDER BY upload_key",
    "chunk_coverage": "SELECT * FROM iq.chunk_coverage ORDER BY upload_key",
    "scan_coverage": "SELECT * FROM iq.scan_coverage ORDER BY kind, first_slot",
    "current_chunks": "SELECT * EXCEPT (source_ingested_at, build_id) FROM iq.int_session_chunks "
                      "WHERE upload_key IN (SELECT upload_key FROM iq.int_uploads) ORDER BY upload_key, chunk_index",
    "int_uploads": "SELECT * EXCEPT (source_ingested_at, build_id) FROM iq.int_uploads ORDER BY upload_key",
    # every row (a group built twice, or left with its old rows, shows as a duplicate)
    "upload_payloads": "SELECT * EXCEPT (source_ingested_at, built_at, build_id) FROM iq.upload_payloads "
                       "WHERE upload_key IN (SELECT upload_key FROM iq.session_completeness) ORDER BY upload_key",
}


INCREMENTAL_MODELS = ("int_session_chunks", "int_uploads", "session_completeness", "upload_payloads")
UNTOUCHED = account("g3session")   # no row of the second ingest belongs to this upload's group
TOUCHED = f"{account('g2missing')}:{'ee' * 16}"


def marks(client) -> dict[str, bool]:
    """Whether the day-old mark is on each table's rows for UNTOUCHED, and on none of TOUCHED's."""
    out = {}
    for table in INCREMENTAL_MODELS:
        rows = client.query(
            f"SELECT upload_key, max(source_ingested_at) < (SELECT max(ingested_at) FROM iq.raw_instructions) - INTERVAL 1 HOUR "
            f"FROM iq.{table} WHERE upload_key IN ({{a:String}}, {{b:String}}) GROUP BY upload_key",
            parameters={"a": UNTOUCHED, "b": TOUCHED}).result_rows
        marked = {k: bool(v) for k, v in rows}
        out[table] = marked[UNTOUCHED] and not marked[TOUCHED]
    return out


def snapshot(client) -> dict[str, list[tuple]]:
    return {name: [tuple(r) for r in client.query(sql).result_rows] for name, sql in SNAPSHOTS.items()}


def unindexed_list(chain: Chain) -> list[list]:
    """A G1 list whose first two pieces landed but neither its third piece nor its index yet: its
    tail (piece 1) is an upload of its own, awaiting its index, until the second ingest extends it."""
    c = Chain(start_slot=chain.slot + 10)
    return [c.linked_piece("g1", sig("grow0"), "Genesis", b"grow-0 "), c.linked_piece("g1", sig("grow1"), sig("grow0"), b"grow-1 ")]


def second_ingest(chain: Chain) -> tuple[list[list], dict[str, str]]:
    """Rows of a later ingest and the statuses they lead to."""
    c = Chain(start_slot=chain.slot + 100)
    rows, expect = [], {}
    # the missing chunk of g2missing lands
    acct, sid = account("g2missing"), "ee" * 16
    original = chain.uploads[f"{acct}:{sid}"]
    parts = {r[13]: r[19] for r in original.rows if r[9] == "chunk"}
    rows.append(c.g2_chunk(acct, sid, 2, b"late chunk"))
    joined = parts[0] + parts[1] + b"late chunk" + parts[3] + parts[4]
    expect[f"{acct}:{sid}"] = "complete"
    # a conflicting copy turns a complete upload into conflicting_chunks
    acct, sid = account("g2reused"), "01" * 16
    rows.append(c.g2_chunk(acct, sid, 0, b"different bytes"))
    expect[f"{acct}:{sid}"] = "conflicting_chunks"
    # the awaited finalize arrives
    acct, sid = account("g2awaiting"), "0f" * 16
    rows.append(c.g2_finalize(acct, sid, 3))
    expect[f"{acct}:{sid}"] = "complete"
    # an older session on the legacy account, just before its bundle, is found: the bundle moves to it
    acct = account("legacybundle")
    bundle_slot = next(r[0] for r in chain.uploads[f"{acct}:{'03' * 16}"].rows if r[10] == "finalize_bundle")
    rows += [c.g2_chunk(acct, "05" * 16, i, b"older %d" % i, generation="g2_legacy", slot=bundle_slot - 1 + 0)
             for i in (0,)]
    rows.append(c.g2_chunk(acct, "05" * 16, 1, b"older 1", generation="g2_legacy", slot=bundle_slot, ix_index=1))
    expect[f"{acct}:{'05' * 16}"] = "complete"
    expect[f"{acct}:{'03' * 16}"] = "awaiting_finalize"
    # the broken linked list's missing piece lands: complete, and its first piece is no upload of its own
    rows.append(c.linked_piece("g3", sig("g3broken1"), sig("g3broken0"), b"A" * 30))
    expect[sig("g3broken2")] = "complete"
    expect[sig("g3broken0")] = None
    # the unindexed list grows a third piece and gets its index: the old tail is no upload any more
    rows += [c.linked_piece("g1", sig("grow2"), sig("grow1"), b"grow-2"), c.g1_index(sig("grow2"))]
    expect[sig("grow1")] = None
    expect[sig("grow2")] = "complete"
    # a brand-new G3 session
    pda = account("g3new")
    text = base64.b64encode(b"new file " * 30)
    pieces = split(text, 100)
    rows += [c.g3_create(pda), *[c.g3_chunk(pda, i, p) for i, p in enumerate(pieces)],
             c.g3_code_in(on_chain_path=pda, session=pda, total=len(pieces), metadata=metadata("new.bin", len(pieces)))]
    expect[pda] = "complete"
    # and some of the first ingest's rows again (a re-ingested range): nothing may change because of
    # them (their newer ingested_at makes their groups recompute, to the same result)
    rows += [r for key, u in chain.uploads.items() if key != UNTOUCHED for r in u.rows[:1]]
    return rows, {**expect, "__joined_g2missing": hashlib.sha256(joined).hexdigest()}


@pytest.fixture(scope="module")
def incremental(tmp_path_factory):
    from iq_etl.transform.runner import run_dbt

    tmp = tmp_path_factory.mktemp("dbt_incremental")
    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp / 'warehouse'}", "IQ_ETL_HOME": str(tmp / "home")},
                             dotenv=tmp / "no.env")
    wh.close_client()
    client = wh.get_client(settings)
    migrate(client)
    chain = build_scenarios()
    insert_rows(client, [row for upload in chain.uploads.values() for row in upload.rows] + unindexed_list(chain))
    no_lookback = {"iq_lookback_seconds": 0}  # only rows newer than the previous build: the real increment
    # `dbt run` (models only): the data tests run in test_dbt_models.py and on the development chain
    first = run_dbt(settings, command="run", vars=no_lookback, quiet=True)
    before = dict(client.query("SELECT upload_key, status FROM iq.session_completeness").result_rows)
    # Mark one upload the second ingest does not touch: an incremental build must leave its rows
    # alone (the mark survives), a full rebuild recomputes them (the mark goes).
    for table in INCREMENTAL_MODELS:
        client.command(f"ALTER TABLE iq.{table} UPDATE source_ingested_at = source_ingested_at - INTERVAL 1 DAY "
                       f"WHERE upload_key = {{k:String}} SETTINGS mutations_sync = 2",
                       parameters={"k": UNTOUCHED})
    time.sleep(0.01)  # the second batch's ingested_at must be later than the first's (millisecond clock)
    rows, expect = second_ingest(chain)
    insert_rows(client, rows)
    # int_uploads and session_completeness build their groups in passes of ~iq_rows_per_pass raw
    # rows, upload_payloads in passes of ~iq_payload_bytes_per_pass chunk bytes: a handful per pass
    # makes this incremental build (and the last full refresh) several INSERTs of each
    second = run_dbt(settings, command="run", vars={**no_lookback, "iq_rows_per_pass": 5,
                                                    "iq_payload_bytes_per_pass": 200}, quiet=True)
    passes_incremental = passes(client)
    after_incremental = snapshot(client)
    marks_after_incremental = marks(client)
    full = run_dbt(settings, command="run", vars=no_lookback, full_refresh=True, quiet=True)
    after_full = snapshot(client)
    marks_after_full = marks(client)
    in_passes = run_dbt(settings, command="run", vars={**no_lookback, "iq_rows_per_pass": 10,
                                                       "iq_payload_bytes_per_pass": 200}, full_refresh=True, quiet=True)
    passes_full = passes(client)
    after_full_in_passes = snapshot(client)
    try:
        yield {"client": client, "expect": expect, "incremental": after_incremental, "full": after_full,
               "runs": (first, second, full), "marks": (marks_after_incremental, marks_after_full),
               "before": before, "in_passes": after_full_in_passes,
               "passes": (passes_incremental, passes_full), "full_in_passes_run": in_passes}
    finally:
        wh.close_client()


def test_incremental_build_equals_full_rebuild(incremental):
    for name in SNAPSHOTS:
        assert incremental["incremental"][name] == incremental["full"][name], name


def passes(client) -> tuple[int, int]:
    """(int_changed_groups passes, int_changed_upload_groups passes) of the last build."""
    return (int(client.query("SELECT max(passes) FROM iq.int_changed_groups").result_rows[0][0]),
            int(client.query("SELECT max(passes) FROM iq.int_changed_upload_groups").result_rows[0][0]))


def test_a_build_in_passes_equals_one_pass(incremental):
    """int_uploads, session_completeness and upload_payloads built in several INSERTs (incremental
    above, full refresh here) give the rows of one INSERT: every group is in exactly one pass."""
    passes_incremental, passes_full = incremental["passes"]
    assert min(passes_incremental) > 1 and min(passes_full) > 5, (passes_incremental, passes_full)
    assert incremental["full_in_passes_run"].success
    for name in SNAPSHOTS:
        assert incremental["in_passes"][name] == incremental["full"][name], name


def test_statuses_follow_the_second_ingest(incremental):
    client, expect = incremental["client"], incremental["expect"]
    assert incremental["before"][sig("grow1")] == "awaiting_finalize" and sig("grow2") not in incremental["before"]
    got = dict(client.query("SELECT upload_key, status FROM iq.session_completeness").result_rows)
    for key, status in expect.items():
        if not key.startswith("__"):
            assert got.get(key) == status, key
    grown = client.query("SELECT payload FROM iq.session_payloads WHERE upload_key = {k:String}",
                         parameters={"k": sig("grow2")}, column_formats={"payload": "bytes"}).result_rows
    assert grown == [(b"grow-0 grow-1 grow-2",)]
    sha = client.query("SELECT sha256 FROM iq.session_payloads WHERE upload_key = {k:String}",
                       parameters={"k": f"{account('g2missing')}:{'ee' * 16}"}).result_rows
    assert sha == [(expect["__joined_g2missing"],)]
    exportable = {r[0] for r in client.query("SELECT upload_key FROM iq.sessions_ready_to_export").result_rows}
    assert f"{account('g2reused')}:{'01' * 16}" not in exportable and account("g3new") in exportable


def test_incremental_build_leaves_untouched_groups_alone(incremental):
    after_incremental, after_full = incremental["marks"]
    assert after_incremental == {table: True for table in INCREMENTAL_MODELS}
    assert after_full == {table: False for table in INCREMENTAL_MODELS}


def test_incremental_models_ran_incrementally(incremental):
    first, second, _ = incremental["runs"]
    for run in (first, second):
        assert run.success and not run.problems()
        assert {n.resource_type for n in run.nodes} == {"model"}
    models = {n.name for n in second.nodes if n.resource_type == "model"}
    assert {"int_session_chunks", "upload_payloads", "session_completeness"} <= models
