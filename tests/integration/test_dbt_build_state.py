"""A plain `transform` trusts the model tables incrementally only when a finished build left them
(transform/build_state.py, iq.dbt_builds); otherwise it rebuilds every model and says why.

The case behind it: dbt-clickhouse creates a new incremental table empty, then fills it, so a first
build killed half way left an int_uploads that existed but held part of the warehouse; the rerun
took it as complete and recomputed nothing (session_completeness came out empty). Here the same
states are made by hand on a real chDB warehouse (a half-filled table, a missing one, a table swapped
by a full refresh that stopped before the next swap) and each rerun must equal a clean build."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from iq_etl.settings import load_settings
from iq_etl.transform import build_state
from iq_etl.transform.runner import NodeResult, TransformError, run_dbt
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.schema import migrate
from tests.support.raw_rows import build_scenarios, insert_rows

pytestmark = pytest.mark.embedded_only("builds its chDB warehouse by hand to break its tables")

MARTS = {
    "session_completeness": "SELECT * EXCEPT (source_ingested_at, build_id) FROM iq.session_completeness ORDER BY upload_key",
    "int_uploads": "SELECT * EXCEPT (source_ingested_at, build_id) FROM iq.int_uploads ORDER BY upload_key",
    "session_payloads": "SELECT upload_key, sha256 FROM iq.session_payloads ORDER BY upload_key",
}


def snapshot(client) -> dict[str, list[tuple]]:
    return {name: [tuple(r) for r in client.query(sql).result_rows] for name, sql in MARTS.items()}


def builds(client) -> int:
    return int(client.query("SELECT count() FROM iq.dbt_builds WHERE state = 'finished'").result_rows[0][0])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dbt_build_state")
    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp / 'warehouse'}", "IQ_ETL_HOME": str(tmp / "home")},
                             dotenv=tmp / "no.env")
    wh.close_client()
    client = wh.get_client(settings)
    migrate(client)
    insert_rows(client, [row for upload in build_scenarios().uploads.values() for row in upload.rows])
    first = run_dbt(settings, command="run", quiet=True)
    reference = snapshot(client)
    try:
        yield {"settings": settings, "client": client, "first": first, "reference": reference}
    finally:
        wh.close_client()


def test_the_first_build_is_a_full_refresh_and_is_recorded(built):
    client, first = built["client"], built["first"]
    assert first.full_refresh_reason and first.full_refresh_reason.startswith("first build")
    assert builds(client) >= 1
    assert len(built["reference"]["session_completeness"]) > 10


def test_after_a_finished_build_the_next_one_is_incremental(built):
    client = built["client"]
    before = builds(client)
    run = run_dbt(built["settings"], command="run", quiet=True)
    assert run.full_refresh_reason is None
    assert builds(client) == before + 1
    assert snapshot(client) == built["reference"]


def test_a_killed_first_build_is_rebuilt_whole(built):
    """Tables exist, int_uploads half filled, no finished build recorded: what a SIGKILL during the
    first build's INSERT into int_uploads leaves."""
    client = built["client"]
    client.command("TRUNCATE TABLE iq.dbt_builds")
    client.command("DELETE FROM iq.int_uploads WHERE cityHash64(upload_key) % 2 = 0")
    client.command("TRUNCATE TABLE iq.session_completeness")
    run = run_dbt(built["settings"], command="run", quiet=True)
    assert run.full_refresh_reason and "no finished build" in run.full_refresh_reason
    assert snapshot(client) == built["reference"]
    assert builds(client) == 1


def test_a_missing_model_table_rebuilds_every_model(built):
    client = built["client"]
    client.command("DROP TABLE iq.session_completeness")
    client.command("DELETE FROM iq.int_uploads WHERE cityHash64(upload_key) % 3 = 0")
    run = run_dbt(built["settings"], command="run", quiet=True)
    assert run.full_refresh_reason == "model table(s) missing: session_completeness"
    assert snapshot(client) == built["reference"]


def test_a_table_swapped_by_a_stopped_full_refresh_is_not_trusted(built):
    """A full refresh swaps each table in as it goes; stopped after int_uploads' swap, the tables no
    longer match what the last finished build recorded (int_uploads' UUID changed)."""
    client = built["client"]
    client.command("CREATE TABLE iq.int_uploads_swapped AS iq.int_uploads")
    client.command("INSERT INTO iq.int_uploads_swapped SELECT * FROM iq.int_uploads WHERE cityHash64(upload_key) % 2 = 1")
    client.command("EXCHANGE TABLES iq.int_uploads AND iq.int_uploads_swapped")
    client.command("DROP TABLE iq.int_uploads_swapped")
    client.command("TRUNCATE TABLE iq.session_completeness")
    run = run_dbt(built["settings"], command="run", quiet=True)
    assert run.full_refresh_reason and "int_uploads" in run.full_refresh_reason
    assert "not the ones the last finished build left" in run.full_refresh_reason
    assert snapshot(client) == built["reference"]


def test_a_build_with_a_failed_or_skipped_model_is_not_recorded():
    ok = [NodeResult(name, "model", "success", "", 0.0) for name in build_state.INCREMENTAL_MODELS]
    skipped = [*ok[:-1], NodeResult(ok[-1].name, "model", "skipped", "", 0.0)]
    failed = [*ok, NodeResult("scan_coverage", "model", "error", "", 0.0)]
    for full_refresh in (True, False):
        assert build_state.build_left_tables_whole(ok, full_refresh)
        assert not build_state.build_left_tables_whole(ok[:-1], full_refresh)
        assert not build_state.build_left_tables_whole(failed, full_refresh)
    # a skipped model kept its old table beside swapped-in new ones (full refresh); incremental, it
    # did not run at all and its watermark still covers what changed
    assert not build_state.build_left_tables_whole(skipped, True)
    assert build_state.build_left_tables_whole(skipped, False)


def test_a_build_that_failed_part_way_is_followed_by_a_full_refresh(built):
    """The real path: a whole build records `started`, a model fails (a look-back that is not a
    number: every incremental model's SQL breaks), no `finished` row follows; the next build is a
    full refresh and equals a clean build, and the one after it is incremental again."""
    client, settings = built["client"], built["settings"]
    run_dbt(settings, command="run", quiet=True)   # a finished build to start from
    with pytest.raises(TransformError):
        run_dbt(settings, command="run", quiet=True, vars={"iq_lookback_seconds": "'not a number'"})
    assert build_state.read_state(client).interrupted
    rerun = run_dbt(settings, command="run", quiet=True)
    assert rerun.full_refresh_reason and rerun.full_refresh_reason.startswith("the last build stopped before its end")
    assert snapshot(client) == built["reference"]
    assert not build_state.read_state(client).interrupted
    assert run_dbt(settings, command="run", quiet=True).full_refresh_reason is None


def test_an_incremental_build_stopped_between_passes_is_rebuilt_whole(built):
    """What a build stopped between two passes of session_completeness leaves: the same tables, some
    groups still holding their old rows while the model's watermark has moved past the rows that
    changed them (made here by rewriting a third of the rows and a `started` row with no end). The
    rerun must not trust the watermark."""
    client, settings = built["client"], built["settings"]
    run_dbt(settings, command="run", quiet=True)

    def leave_stale_groups():
        client.command("ALTER TABLE iq.session_completeness UPDATE status = 'awaiting_finalize' "
                       "WHERE cityHash64(refresh_group) % 3 = 0 SETTINGS mutations_sync = 2")
        assert snapshot(client) != built["reference"]

    # why the `started` row is needed: without it the rerun is incremental and keeps the stale rows
    leave_stale_groups()
    assert run_dbt(settings, command="run", quiet=True).full_refresh_reason is None
    assert snapshot(client) != built["reference"]

    leave_stale_groups()
    build_state.record_started(client, full_refresh=False)
    rerun = run_dbt(settings, command="run", quiet=True)
    assert rerun.full_refresh_reason and rerun.full_refresh_reason.startswith("the last build stopped before its end")
    assert snapshot(client) == built["reference"]


def test_the_runner_and_dbt_name_the_same_incremental_models():
    macro = (Path(build_state.__file__).resolve().parents[3] / "dbt_project/macros/incremental.sql").read_text()
    listed = re.search(r"macro incremental_models\(\).*?return\(\[(.*?)\]\)", macro, re.S)
    assert listed is not None
    assert tuple(sorted(re.findall(r"'(\w+)'", listed.group(1)))) == tuple(sorted(build_state.INCREMENTAL_MODELS))
    models = Path(build_state.__file__).resolve().parents[3] / "dbt_project/models"
    incremental = sorted(p.stem for p in models.rglob("*.sql") if "materialized='incremental'" in p.read_text())
    assert incremental == sorted(build_state.INCREMENTAL_MODELS)
