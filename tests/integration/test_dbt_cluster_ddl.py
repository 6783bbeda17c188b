"""Cluster-ready dbt models, checked by rendering their DDL (no ClickHouse cluster runs here).

dbt-clickhouse is given a cluster through the profile's `cluster` setting (what `iq-etl transform` does
with IQ_CLICKHOUSE_CLUSTER on the remote target); `dbt run-operation iq_cluster_ddl_preview` renders the
head of each table / incremental model's `create table` with dbt-clickhouse's own `on_cluster_clause`
and the project's `engine_clause`, executing nothing. The real dbt runs in-process against the embedded
chDB (only to have a connection); the profile is a copy of the project's with the cluster added.
With a remote server, tests/integration/test_warehouse.py's remote test runs the same models for real
(IQ_TEST_CLICKHOUSE_DSN)."""
from __future__ import annotations

import re
import shutil

import pytest
import yaml

CLUSTER = "iq_test_cluster"


def _preview(tmp_path, cluster: str | None, operation: str = "iq_cluster_ddl_preview", tag: str = "IQ-DDL") -> dict[str, str]:
    from dbt.cli.main import dbtRunner

    from iq_etl.settings import load_settings
    from iq_etl.transform.chdb_seam import embedded_engine
    from iq_etl.transform.runner import DBT_PROJECT_DIR, _environment
    from iq_etl.warehouse import client as wh
    from iq_etl.warehouse.schema import migrate

    profiles = tmp_path / "profiles"
    profiles.mkdir()
    profile = yaml.safe_load((DBT_PROJECT_DIR / "profiles.yml").read_text())
    if cluster:
        profile["iq_etl"]["outputs"]["embedded"]["cluster"] = cluster
    (profiles / "profiles.yml").write_text(yaml.safe_dump(profile))
    settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'warehouse'}", "IQ_ETL_HOME": str(tmp_path)},
                             dotenv=tmp_path / "no.env")
    with wh.Warehouse(settings) as client:
        migrate(client)   # the database exists: dbt-clickhouse does not try to create it ON CLUSTER
        with _environment({"IQ_DBT_TARGET": "embedded", "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}), \
                embedded_engine(settings):
            outcome = dbtRunner().invoke([
                "run-operation", operation, "--project-dir", str(DBT_PROJECT_DIR),
                "--profiles-dir", str(profiles), "--target-path", str(tmp_path / "target"),
                "--log-path", str(tmp_path / "logs"), "--target", "embedded"])
    assert outcome.success, outcome.exception
    shutil.rmtree(tmp_path / "target", ignore_errors=True)
    lines = re.findall(tag + r" (.*)", (tmp_path / "logs" / "dbt.log").read_text())
    assert lines, "the preview logged nothing"
    if tag != "IQ-DDL":
        return {str(i): line for i, line in enumerate(lines)}
    return dict(line.split(": ", 1) for line in lines)


@pytest.fixture(scope="module")
def previews(tmp_path_factory):
    return {"cluster": _preview(tmp_path_factory.mktemp("cluster"), CLUSTER),
            "plain": _preview(tmp_path_factory.mktemp("plain"), None)}


def test_with_a_cluster_every_model_table_is_created_on_cluster_with_a_replicated_engine(previews):
    ddl = previews["cluster"]
    models = {name: text for name, text in ddl.items() if name != "default"}
    assert {"int_uploads", "session_completeness", "upload_payloads", "int_session_chunks"} <= set(models)
    for name, text in models.items():
        assert f'ON CLUSTER "{CLUSTER}"' in text, (name, text)
        engine = text.split(" engine = ", 1)[1]
        if "MergeTree" in engine:
            assert engine.startswith("Replicated") and "ReplicatedReplicated" not in engine, (name, engine)
        else:
            assert engine.startswith("Join("), (name, engine)   # Join tables serve the build on its replica
    assert models["int_uploads"].endswith("engine = ReplicatedMergeTree()")
    # A model without its own engine gets dbt-clickhouse's default, replicated.
    assert ddl["default"] == "engine = ReplicatedMergeTree()"


def test_without_a_cluster_the_ddl_is_unchanged(previews):
    ddl = previews["plain"]
    for name, text in ddl.items():
        assert "ON CLUSTER" not in text and "Replicated" not in text, (name, text)
    assert ddl["int_uploads"].endswith("engine = MergeTree()")
    assert ddl["default"] == "engine = MergeTree()"


def test_delete_insert_on_a_cluster_syncs_the_staging_table_and_never_deduplicates_the_reinsert(tmp_path):
    """dbt-clickhouse #740 (a replica deletes with an empty local staging table) and #213 (replicated
    insert deduplication drops a re-inserted identical block): each incremental delete+insert model's
    statements on a cluster, in order."""
    steps = list(_preview(tmp_path, CLUSTER, "iq_cluster_delete_insert_preview", "IQ-DI").values())
    by_model: dict[str, list[str]] = {}
    for line in steps:
        model, sql = line.split(": ", 1)
        by_model.setdefault(model, []).append(sql)
    assert {"int_uploads", "session_completeness", "upload_payloads"} <= set(by_model)
    for model, sqls in by_model.items():
        sync, delete, insert = sqls
        assert sync.startswith("system sync replica ") and "__dbt_new_data_" in sync and \
            sync.endswith(f'on cluster "{CLUSTER}"'), (model, sync)
        assert delete.startswith("delete from ") and f'on cluster "{CLUSTER}"' in delete and \
            "in (select " in delete and "lightweight_deletes_sync = 2" in delete, (model, delete)
        assert insert.startswith("insert into ") and insert.endswith("settings insert_deduplicate = 0"), (model, insert)


def test_every_dbt_query_runs_without_insert_deduplication():
    profile = yaml.safe_load((__import__("iq_etl.transform.runner", fromlist=["DBT_PROJECT_DIR"]).DBT_PROJECT_DIR
                              / "profiles.yml").read_text())
    for name, output in profile["iq_etl"]["outputs"].items():
        assert output["custom_settings"]["insert_deduplicate"] == 0, name
