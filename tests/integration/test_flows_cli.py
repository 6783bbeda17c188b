"""`iq-etl run|reconcile|serve|demo`: bad arguments are one clear line and exit 1, before any flow starts."""
from __future__ import annotations

import pytest

from iq_etl.cli.main import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch, settings_env):
    monkeypatch.chdir(tmp_path)
    for key, value in settings_env.items():     # IQ_CLICKHOUSE_DSN and IQ_ETL_HOME from the factory
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("argv, message", [
    (["run", "--threads", "0"], "--threads must be at least 1"),
    (["run", "--slot-padding", "-1"], "--slot-padding must be at least 0"),
    (["run", "not-a-slot-spec"], "not-a-slot-spec"),
    (["reconcile", "--growth", "1"], "--growth must be at least 2"),
    (["reconcile", "--initial-padding", "10", "--max-padding", "5"], "--max-padding must be at least --initial-padding"),
    (["serve", "--limit", "0"], "--limit must be at least 1"),
    (["serve", "--pipeline-params", "[1]"], "--pipeline-params: expected a JSON object"),
    (["serve", "--pipeline-params", "{oops"], "--pipeline-params: not JSON"),
    (["serve", "--reconcile-cron", "every hour"], "not a valid cron expression"),
    (["serve", "--server-port", "70000"], "is not a TCP port"),
    (["demo", "--sessions", "0"], "--sessions must be at least 1"),
])
def test_bad_arguments_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"iq-etl {argv[0]}: error:") and message in err[0], err


def test_serve_rejects_unknown_flow_parameters(capsys):
    assert main(["serve", "--pipeline-params", '{"slot_specs": "1:2"}']) == 1
    err = capsys.readouterr().err
    assert "unknown parameter(s) slot_specs of pipeline_flow" in err
