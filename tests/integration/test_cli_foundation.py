"""The CLI as a user runs it: a real process, real chDB folder."""
from __future__ import annotations

import os
import subprocess
import sys


def iq(args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_help_lists_commands(tmp_path):
    out = iq(["--help"], tmp_path)
    assert out.returncode == 0
    for command in ("migrate", "sql"):
        assert command in out.stdout


def test_migrate_twice_then_list_tables(tmp_path):
    env = {"PYTHONPATH": os.getcwd(), "IQ_ETL_HOME": str(tmp_path / "home")}
    first = iq(["migrate"], tmp_path, env)
    assert first.returncode == 0, first.stderr
    assert "applied" in first.stdout
    second = iq(["migrate"], tmp_path, env)
    assert second.returncode == 0 and "up to date" in second.stdout
    listed = iq(["sql", "SELECT name FROM system.tables WHERE database='iq' ORDER BY name", "--format", "csv"],
                tmp_path, env)
    names = listed.stdout.splitlines()
    assert names[0] == "name" and names[1:] == sorted(names[1:])
    assert {"cursors", "exports", "raw_instructions", "scan_ranges", "schema_migrations",
            "undecoded_instructions"} <= set(names[1:])
    assert (tmp_path / "home" / "warehouse").is_dir() and not (tmp_path / ".iq-etl").exists()


def test_sql_json_and_parameters(tmp_path):
    env = {"PYTHONPATH": os.getcwd()}
    out = iq(["sql", "SELECT {n:UInt8} + 1 AS x", "--param", "n=41", "--format", "json"], tmp_path, env)
    assert out.returncode == 0, out.stderr
    assert '"x": 42' in out.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    env = {"PYTHONPATH": os.getcwd()}
    bad_sql = iq(["sql", "SELEC nonsense"], tmp_path, env)
    assert bad_sql.returncode != 0 and "Traceback" not in bad_sql.stderr
    bad_env = iq(["sql", "SELECT 1"], tmp_path, {**env, "IQ_READER_MODE": "nope"})
    assert bad_env.returncode != 0 and "IQ_READER_MODE" in bad_env.stderr and "Traceback" not in bad_env.stderr
    secret = iq(["sql", "SELECT 1"], tmp_path, {**env, "IQ_CLICKHOUSE_DSN": "http://u:hunter2@127.0.0.1:9"})
    assert secret.returncode != 0 and "hunter2" not in secret.stderr + secret.stdout
