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
from iq_etl.transform.runner import NodeResult, run_dbt
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
    return int(client.query("SELECT count() FROM iq.dbt_builds").result_rows[0][0])


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
    assert build_state.whole_build_succeeded(ok)
    assert not build_state.whole_build_succeeded(ok[:-1])
    assert not build_state.whole_build_succeeded([*ok[:-1], NodeResult(ok[-1].name, "model", "skipped", "", 0.0)])
    assert not build_state.whole_build_succeeded([*ok, NodeResult("scan_coverage", "model", "error", "", 0.0)])


def test_the_runner_and_dbt_name_the_same_incremental_models():
    macro = (Path(build_state.__file__).resolve().parents[3] / "dbt_project/macros/incremental.sql").read_text()
    listed = re.search(r"macro incremental_models\(\).*?return\(\[(.*?)\]\)", macro, re.S)
    assert listed is not None
    assert tuple(sorted(re.findall(r"'(\w+)'", listed.group(1)))) == tuple(sorted(build_state.INCREMENTAL_MODELS))
    models = Path(build_state.__file__).resolve().parents[3] / "dbt_project/models"
    incremental = sorted(p.stem for p in models.rglob("*.sql") if "materialized='incremental'" in p.read_text())
    assert incremental == sorted(build_state.INCREMENTAL_MODELS)
