"""`iq-etl export` in-process, and the retry policy's arithmetic."""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from iq_etl.cli.main import main
from iq_etl.devchain.servers.reader_backend import Faults, serve_reader_backend
from iq_etl.errors import SettingsError
from iq_etl.export import RetryPolicy, redact_target
from iq_etl.export.runner import ExportOptions
from tests.support.export_rows import create_standin_mart, insert_rows, many_uploads


@pytest.fixture
def cli_env(settings_env, warehouse, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key, value in settings_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IQ_EXPORT_BACKOFF", "0.01")
    monkeypatch.setenv("IQ_EXPORT_RETRY_AFTER_CAP", "0.05")
    create_standin_mart(warehouse)
    insert_rows(warehouse, many_uploads(3))
    return warehouse


def test_cli_export_json_then_nothing_left(cli_env, monkeypatch, capsys):
    server = serve_reader_backend(faults=Faults(fail_times=1))
    try:
        monkeypatch.setenv("IQ_READER_BASE_URL", server.base_url)
        monkeypatch.setenv("IQ_READER_ENDPOINT_PATH", server.path)
        monkeypatch.setenv("IQ_READER_TOKEN", "cli-secret-token")
        assert main(["export", "--json", "--concurrency", "2"]) == 0
        first = json.loads(capsys.readouterr().out)
        assert (first["delivered"], first["retries"], first["ok"]) == (3, 3, True)
        assert first["target"] == server.url
        assert main(["export", "--json"]) == 0
        second = json.loads(capsys.readouterr().out)
        assert (second["selected"], second["delivered"]) == (0, 0)
        assert len(server.received) == 3
    finally:
        server.shutdown()
    assert "cli-secret-token" not in capsys.readouterr().err


def test_cli_dry_run_table_and_file_target(cli_env, capsys, tmp_path):
    assert main(["export", "--dry-run", "--target", "file://./out"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "would send" in out
    assert not (tmp_path / "out").exists()
    assert main(["export", "--target", "file://./out", "--limit", "1"]) == 0
    assert "delivered" in capsys.readouterr().out
    assert len(list((tmp_path / "out").iterdir())) == 1


def test_cli_failures_give_exit_code_1_and_a_table(cli_env, monkeypatch, capsys):
    monkeypatch.setenv("IQ_EXPORT_MAX_BYTES", "10")
    assert main(["export", "--target", "file://./out"]) == 1
    out = capsys.readouterr().out
    assert "not delivered (3)" in out and "refused" in out


def test_cli_bad_target_is_one_line_error(cli_env, capsys):
    assert main(["export", "--target", "ftp://x/y"]) == 1
    err = capsys.readouterr().err
    assert "unsupported scheme 'ftp'" in err and "Traceback" not in err


def test_options_from_env_validate_names():
    opts = ExportOptions.from_env({"IQ_EXPORT_MAX_BYTES": "1024", "IQ_EXPORT_MAX_ATTEMPTS": "2",
                                   "IQ_EXPORT_TIMEOUT": "1.5"}, dotenv=None)
    assert (opts.max_bytes, opts.retry.max_attempts, opts.retry.timeout_s) == (1024, 2, 1.5)
    with pytest.raises(SettingsError, match="IQ_EXPORT_MAX_BYTES"):
        ExportOptions.from_env({"IQ_EXPORT_MAX_BYTES": "lots"}, dotenv=None)
    with pytest.raises(SettingsError, match="IQ_EXPORT_MAX_ATTEMPTS"):
        ExportOptions.from_env({"IQ_EXPORT_MAX_ATTEMPTS": "0"}, dotenv=None)


def test_backoff_grows_is_capped_and_jittered_within_bounds():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=4.0, jitter=0.25)
    rng = random.Random(7)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        for _ in range(20):
            assert base <= policy.backoff(attempt, rng) <= base * 1.25


def test_retry_after_seconds_and_dates_are_capped():
    policy = RetryPolicy(retry_after_cap_s=60)
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert policy.retry_after("5", now) == 5
    assert policy.retry_after("3600", now) == 60
    assert policy.retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30
    assert policy.retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0
    assert policy.retry_after("soon", now) is None and policy.retry_after(None, now) is None


def test_redact_target_drops_credentials():
    assert redact_target("https://u:p@api.example:8443/ingest?token=abc&x=1") == "https://api.example:8443/ingest?token=***&x=1"
    assert redact_target("http://api.example/ingest") == "http://api.example/ingest"
