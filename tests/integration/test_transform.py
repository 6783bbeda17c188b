"""iq_etl.transform.runner.run_dbt and `iq-etl transform`: arguments, where dbt writes, failures with dbt's
message, the remote target's variables (the password never shows)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from iq_etl.cli import main as cli
from iq_etl.settings import load_settings
from iq_etl.transform.runner import DBT_PROJECT_DIR, TransformError, dbt_args, dbt_home, remote_target_env, run_dbt
from iq_etl.warehouse import client as wh


def test_remote_target_env_splits_the_dsn():
    env = remote_target_env("https://etl:s3cret@ch.example.org:9443/iq", cluster="prod")
    assert env == {"IQ_DBT_TARGET": "remote", "IQ_DBT_HOST": "ch.example.org", "IQ_DBT_PORT": "9443",
                   "IQ_DBT_USER": "etl", "IQ_DBT_PASSWORD": "s3cret", "IQ_DBT_SECURE": "true", "IQ_DBT_CLUSTER": "prod"}
    plain = remote_target_env("http://ch.local")
    assert (plain["IQ_DBT_PORT"], plain["IQ_DBT_USER"], plain["IQ_DBT_PASSWORD"], plain["IQ_DBT_SECURE"]) == \
        ("8123", "default", "", "false")


def test_dbt_writes_under_the_iq_etl_home_not_the_repo(settings, tmp_path):
    args = dbt_args(settings, "build", ["a+ b", "c"], True, {"iq_lookback_seconds": 0}, None)
    home = dbt_home(settings)
    assert home == (tmp_path / "home" / "dbt").resolve()
    assert args[args.index("--target-path") + 1] == str(home / "target")
    assert args[args.index("--log-path") + 1] == str(home / "logs")
    assert args[args.index("--project-dir") + 1] == str(DBT_PROJECT_DIR)
    assert args[args.index("--target") + 1] == "embedded"
    assert args[args.index("--select") + 1:args.index("--select") + 4] == ["a+", "b", "c"]
    assert "--full-refresh" in args and json.loads(args[args.index("--vars") + 1]) == {"iq_lookback_seconds": 0}
    with pytest.raises(TransformError, match="full-refresh"):
        dbt_args(settings, "test", None, True, None, None)


def test_a_failing_model_raises_with_dbts_message(warehouse, settings):
    # session_completeness alone, before its parents exist: the database error comes back as ours
    with pytest.raises(TransformError) as info:
        run_dbt(settings, command="run", select="session_completeness", quiet=True)
    text = str(info.value)
    assert "session_completeness" in text and "error" in text
    assert not (DBT_PROJECT_DIR / "target").exists() and not (DBT_PROJECT_DIR / "logs").exists()
    assert (dbt_home(settings) / "logs" / "dbt.log").is_file()


def test_an_unreachable_remote_fails_without_showing_the_password(tmp_path):
    settings = load_settings({"IQ_CLICKHOUSE_DSN": "http://etl:hunter2-secret@127.0.0.1:1",
                              "IQ_ETL_HOME": str(tmp_path / "home")}, dotenv=tmp_path / "no.env")
    before = {k: v for k, v in os.environ.items() if k.startswith("IQ_DBT_")}
    with pytest.raises(TransformError) as info:
        run_dbt(settings, command="run", select="stg_instructions", quiet=True)
    assert "hunter2-secret" not in str(info.value)
    log = (dbt_home(settings) / "logs" / "dbt.log").read_text(encoding="utf-8", errors="replace")
    assert "hunter2-secret" not in log
    assert {k: v for k, v in os.environ.items() if k.startswith("IQ_DBT_")} == before  # restored


def test_cli_transform_and_its_errors(settings_env, tmp_path, monkeypatch, capsys):
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    wh.close_client()
    code = cli.main(["transform", "--dbt-command", "run", "--select", "stg_instructions", "stg_chunks", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["success"] and sorted(n["name"] for n in out["nodes"]) == ["stg_chunks", "stg_instructions"]
    code = cli.main(["transform", "--dbt-command", "run", "--select", "session_completeness", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("iq-etl transform: error: model session_completeness")
    assert Path(settings_env["IQ_ETL_HOME"], "dbt", "target").is_dir()
