"""Transform at scale (issue 27), on real chDB on disk: an incremental build tests only the groups it
recomputed (a fault planted in an untouched group passes it), `--full-tests` and `--full-refresh`
test everything (the fault fails them); the incremental build's raw reads hold the changed group's
rows only (int_changed_raw); the IQ_TRANSFORM_MAX_MEMORY cap reaches every dbt query and
a build that exceeds it stops with one line, not an OOM kill."""
from __future__ import annotations

import dataclasses
import time

import pytest

from iq_etl.settings import SettingsError, load_settings
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.schema import migrate
from tests.support.raw_rows import Chain, account, build_scenarios, insert_rows

UNTOUCHED = account("g3session")   # no row of the second ingest belongs to this upload's group


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("transform_scale")
    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp / 'warehouse'}", "IQ_ETL_HOME": str(tmp / "home")},
                             dotenv=tmp / "no.env")
    wh.close_client()
    client = wh.get_client(settings)
    migrate(client)
    chain = build_scenarios()
    insert_rows(client, [row for upload in chain.uploads.values() for row in upload.rows])
    try:
        yield settings, client, chain
    finally:
        wh.close_client()


def _test_nodes(result) -> dict[str, str]:
    return {n.name: n.status for n in result.nodes if n.resource_type == "test"}


def test_incremental_tests_cover_the_changed_groups_and_full_tests_everything(warehouse):
    from iq_etl.transform.runner import TransformError, run_dbt

    settings, client, chain = warehouse
    run_dbt(settings, quiet=True)
    # A fault in an upload the next ingest does not touch: its session_completeness row twice.
    client.command("INSERT INTO iq.session_completeness SELECT * FROM iq.session_completeness "
                   "WHERE upload_key = {k:String}", parameters={"k": UNTOUCHED})
    time.sleep(0.01)
    c = Chain(start_slot=chain.slot + 100)
    insert_rows(client, [c.g2_chunk(account("freshsession"), "ab" * 16, 0, b"fresh bytes")])

    scoped = run_dbt(settings, quiet=True)   # incremental: tests the recomputed groups only
    tests = _test_nodes(scoped)
    assert tests and all(status in ("pass", "warn") for status in tests.values()), tests
    assert not any(name.startswith("not_null_stg_") for name in tests)   # staging tests wait for a full run
    # ... and so do the tests of int_finalizes (a view over every raw finalize) and int_linked_pieces
    assert not any("int_finalizes" in name or "int_linked_pieces" in name for name in tests), sorted(tests)
    # The build read the changed group's raw rows only: int_changed_raw (FINAL once per build, what
    # int_uploads reads) holds the new upload's one row, not the warehouse's.
    fresh = account("freshsession")
    assert client.query("SELECT refresh_group FROM iq.int_changed_groups").result_rows == [(fresh,)]
    assert client.query("SELECT session_account, count() FROM iq.int_changed_raw GROUP BY 1").result_rows == [(fresh, 1)]
    assert client.query("SELECT count() FROM iq.int_changed_walks").result_rows == [(0,)]
    rebuilt = {r[0] for r in client.query("SELECT DISTINCT build_id FROM iq.session_completeness "
                                          "WHERE upload_key = {k:String}",
                                          parameters={"k": account("freshsession") + ":" + "ab" * 16}).result_rows}
    assert len(rebuilt) == 1

    with pytest.raises(TransformError) as full:   # --full-tests: every upload, the fault included
        run_dbt(settings, quiet=True, full_tests=True)
    assert "unique_session_completeness_upload_key" in str(full.value)

    client.command("DELETE FROM iq.session_completeness WHERE upload_key = {k:String} SETTINGS mutations_sync = 2",
                   parameters={"k": UNTOUCHED})
    refreshed = run_dbt(settings, quiet=True, full_refresh=True)   # rebuilds and tests everything
    assert any(name.startswith("not_null_stg_") for name in _test_nodes(refreshed))
    assert client.query("SELECT count() FROM iq.session_completeness WHERE upload_key = {k:String}",
                        parameters={"k": UNTOUCHED}).result_rows == [(1,)]


def test_a_build_over_the_memory_cap_stops_with_one_line(warehouse):
    from iq_etl.transform.runner import TransformMemoryError, run_dbt

    settings, _, _ = warehouse
    tiny = dataclasses.replace(settings, transform_max_memory=1 << 20)   # below any real query's needs
    with pytest.raises(TransformMemoryError) as stopped:
        run_dbt(tiny, command="run", full_refresh=True, quiet=True)
    message = str(stopped.value)
    assert "\n" not in message and "IQ_TRANSFORM_MAX_MEMORY=1M" in message and "MEMORY_LIMIT_EXCEEDED" in message


@pytest.mark.parametrize("raw, value", [("4G", 4 << 30), ("2500M", 2500 << 20), ("8gib", 8 << 30),
                                        ("", 4 << 30), ("3000000000", 3_000_000_000)])
def test_max_memory_setting_parses(raw, value):
    assert load_settings({"IQ_TRANSFORM_MAX_MEMORY": raw}).transform_max_memory == value


@pytest.mark.parametrize("raw", ["nan", "inf", "1.5G", "-4G", "４G", "0x10", "10M", "4 gigs"])
def test_max_memory_setting_refuses(raw):
    with pytest.raises(SettingsError, match="IQ_TRANSFORM_MAX_MEMORY"):
        load_settings({"IQ_TRANSFORM_MAX_MEMORY": raw})
