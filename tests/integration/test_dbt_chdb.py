"""The dbt-clickhouse ↔ chDB seam (src/iq_etl/transform/chdb_seam.py): dbt's HTTP client gets a
handle on the process's shared chDB engine, closing it leaves the shared client working, and
everything dbt opened is closed when the block ends (so the folder can be released)."""
from __future__ import annotations

import pytest
from dbt.adapters.clickhouse.credentials import ClickHouseCredentials
from dbt.adapters.clickhouse.dbclient import ChRetryableException
from dbt.adapters.clickhouse.httpclient import ChHttpClient

from iq_etl.settings import load_settings
from iq_etl.transform.chdb_seam import EMBEDDED_HOST, embedded_engine
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.schema import migrate


def credentials(host: str, port: int = 8123) -> ClickHouseCredentials:
    return ClickHouseCredentials(host=host, port=port, schema="iq", database="", driver="http", retries=0,
                                 connect_timeout=2, use_lw_deletes=True)


def test_embedded_host_gets_a_handle_on_the_shared_engine(warehouse, settings):
    original = ChHttpClient._create_client
    with embedded_engine(settings) as opened:
        assert ChHttpClient._create_client is not original
        dbt_client = ChHttpClient(credentials(EMBEDDED_HOST))      # what dbt-clickhouse builds per connection
        assert len(opened) == 1 and opened[0].path == warehouse.path
        # dbt's session state (its USE iq, its settings) lives on its own handle
        assert dbt_client.database == "iq" and dbt_client.command("SELECT currentDatabase()") == "iq"
        dbt_client.command("CREATE TABLE iq.seam_probe (x UInt8) ENGINE = MergeTree ORDER BY x")
        dbt_client.command("INSERT INTO iq.seam_probe VALUES (7)")
        assert warehouse.query("SELECT x FROM iq.seam_probe").result_rows == [(7,)]  # same engine, same data
        dbt_client.close()                                          # dbt closing its connection...
        assert warehouse.query("SELECT count() FROM iq.seam_probe").result_rows == [(1,)]  # ...spares ours
        ChHttpClient(credentials(EMBEDDED_HOST))                    # a second connection, left open
    assert ChHttpClient._create_client is original
    assert wh.get_client(settings) is warehouse and warehouse.command("SELECT 1") == 1
    with pytest.raises(Exception):  # noqa: B017 - any error: the driver's type for a closed client varies
        opened[1].command("SELECT 1")                               # closed when the block ended


def test_other_hosts_still_go_over_http(warehouse, settings):
    with embedded_engine(settings) as opened:
        with pytest.raises(ChRetryableException):
            ChHttpClient(credentials("127.0.0.1", port=1))           # nothing listens: a real HTTP attempt
        assert opened == []


def test_one_block_at_a_time(warehouse, settings):
    with embedded_engine(settings):
        with pytest.raises(RuntimeError, match="already active"):
            with embedded_engine(settings):
                pass


def test_folder_is_free_after_a_dbt_run(tmp_path, settings):
    """After run_dbt and close_client nothing of dbt's holds the engine: another folder opens."""
    from iq_etl.transform.runner import run_dbt

    wh.close_client()
    client = wh.get_client(settings)
    migrate(client)
    result = run_dbt(settings, command="run", select="stg_instructions", quiet=True)
    assert [n.name for n in result.nodes] == ["stg_instructions"] and result.success
    wh.close_client()
    other = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'other'}"}, dotenv=tmp_path / "no.env")
    try:
        assert wh.get_client(other).command("SELECT 1") == 1
    finally:
        wh.close_client()
