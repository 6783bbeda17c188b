"""What an operator sees on the command line (operations issue, items 9, 12, 13): one clear line for a
mistake, hints where the next step is known, log lines for people or for log shippers, tables that
never cut upload keys when piped. Real `iq-etl` processes on a real chDB folder."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.net import free_port
from tests.support.warehouse import folder_dsn


def iq(args, tmp_path, **env):
    full = {"IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path), "IQ_ETL_HOME": str(tmp_path / "home"),
            "PATH": "/usr/bin:/bin", **env}
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=tmp_path, capture_output=True,
                          text=True, env=full, timeout=300)


def test_sql_on_a_fresh_warehouse_hints_migrate_and_transform(tmp_path):
    out = iq(["sql", "SELECT count() FROM iq.session_completeness"], tmp_path)
    assert out.returncode == 1
    line = out.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "UNKNOWN_DATABASE" in line and "run `iq-etl migrate`" in line and "`iq-etl transform`" in line


@pytest.mark.parametrize("clause, expect", [
    ("FORMAT Vertical", "Row 1:"),
    ("FORMAT TSVWithNames", "a\tb\n1\thi\n"),
    ("format JSONEachRow;", '{"a":1,"b":"hi"}'),
    ("FORMAT CSVWithNames", "a,b\n1,hi\n"),
])
def test_sql_accepts_a_format_clause(tmp_path, clause, expect):
    out = iq(["sql", f"SELECT 1 AS a, 'hi' AS b {clause}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert expect in out.stdout
    assert "Native" not in out.stdout + out.stderr


def test_sql_format_clause_and_flag_must_agree_and_unknown_formats_say_what_works(tmp_path):
    both = iq(["sql", "SELECT 1 FORMAT Vertical", "--format", "csv"], tmp_path)
    assert both.returncode == 1 and "keep one" in both.stderr
    odd = iq(["sql", "SELECT 1 FORMAT XML"], tmp_path)
    assert odd.returncode == 1 and "FORMAT XML is not supported here" in odd.stderr and "vertical" in odd.stderr


def test_sql_new_formats(tmp_path):
    tsv = iq(["sql", "SELECT 1 AS a", "--format", "tsv"], tmp_path)
    assert tsv.stdout == "a\n1\n"
    full = {"IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path), "IQ_ETL_HOME": str(tmp_path / "home")}
    parquet = subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "sql", "SELECT 1 AS a", "--format", "parquet"],
                             cwd=tmp_path, capture_output=True, env=full, timeout=300)
    assert parquet.returncode == 0, parquet.stderr
    assert parquet.stdout.startswith(b"PAR1") and parquet.stdout.endswith(b"PAR1")


def test_piped_tables_are_not_cut_to_80_columns(tmp_path):
    key = "7Jh5q3i7m1gYvZ4bNfW2X9yT8kLpR6sD3aQ1cE5uVxBn:" + "ab" * 16  # an upload key: never cut
    out = iq(["sql", "SELECT {k:String} AS upload_key, repeat('x', 100) AS other", "--param", f"k={key}"],
             tmp_path)
    assert out.returncode == 0, out.stderr
    assert key in out.stdout and "x" * 100 in out.stdout and "…" not in out.stdout


def test_log_format_json_writes_one_object_per_line(tmp_path):
    out = iq(["--log-level", "debug", "--log-format", "json", "migrate"], tmp_path)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    env_json = iq(["--log-level", "debug", "migrate"], tmp_path, IQ_LOG_FORMAT="json")
    assert all(json.loads(line) for line in env_json.stderr.splitlines() if line.strip())
    bad = iq(["migrate"], tmp_path, IQ_LOG_FORMAT="xml")
    assert bad.returncode == 1 and "IQ_LOG_FORMAT" in bad.stderr


def test_rpc_rps_zero_means_unlimited(tmp_path):
    # refused before (documented as unlimited); now accepted: the run gets as far as the (absent) RPC node
    out = iq(["ingest", "--source", "rpc-blocks", "--rpc-url", "http://127.0.0.1:9", "--rpc-rps", "0",
              "--rpc-method-rps", "0", "398736000:398736001"], tmp_path)
    assert "--rpc-rps" not in out.stderr and "--rpc-method-rps" not in out.stderr
    negative = iq(["ingest", "--rpc-rps", "-1", "398736000:398736001"], tmp_path)
    assert negative.returncode == 1 and "--rpc-rps must be 0 (unlimited) or more" in negative.stderr


def test_a_slot_range_typed_as_epochs_stops_before_planning(tmp_path):
    out = iq(["ingest", "398736000-398736100"], tmp_path)
    assert out.returncode == 1
    assert "did you mean the slot range 398736000:398736100?" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


@pytest.mark.embedded_only("a chdb:// DSN typo")
def test_dsn_typo_is_one_line(tmp_path):
    out = iq(["sql", "SELECT 1"], tmp_path, IQ_CLICKHOUSE_DSN="chdb:/x")
    assert out.returncode == 1 and "write chdb://PATH (two slashes)" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1



@pytest.mark.parametrize("source_args", [
    ["--source", "rpc-blocks", "--rpc-url", "http://127.0.0.1:{port}"],
    ["--source", "car", "--car-url", "http://127.0.0.1:{port}/{{epoch}}/epoch-{{epoch}}.car"],
])
def test_an_unreachable_peer_is_named_in_seconds(tmp_path, source_args):
    # Seconds, not minutes (it was 33-145 s), because a refused peer is asked once and never retried:
    # asserted on what the run logs (no retry line at DEBUG), not on the clock.
    port = free_port()
    args = [a.format(port=port) for a in source_args]
    out = iq(["ingest", "398736000:398736010", *args], tmp_path, IQ_LOG_LEVEL="DEBUG")
    assert out.returncode == 1
    assert "connection refused" in out.stderr and "connection dropped" not in out.stderr
    retries = [line for line in out.stderr.splitlines() if "retry" in line.lower()]
    assert retries == [], retries
