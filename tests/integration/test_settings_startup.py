"""Issue 21/22: settings are checked at start-up for every command, before any work; NaN and inf
are refused wherever a number is read; unknown names are warned about."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from iq_etl.errors import SettingsError
from iq_etl.export.runner import ExportOptions


@pytest.mark.parametrize("name", ["IQ_EXPORT_TIMEOUT", "IQ_EXPORT_BACKOFF", "IQ_EXPORT_RETRY_AFTER_CAP",
                                  "IQ_EXPORT_MAX_ATTEMPTS"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_export_numbers_must_be_finite(tmp_path, name, value):
    with pytest.raises(SettingsError, match=name):
        ExportOptions.from_env({name: value}, dotenv=tmp_path / "none")


def _cli(tmp_path, *args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("IQ_", "JETSTREAMER_"))}
    full.update({"IQ_ETL_HOME": str(tmp_path / "home"), **env})
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("env,needle", [({"IQ_EXPORT_TIMEOUT": "abc"}, "IQ_EXPORT_TIMEOUT"),
                                        ({"IQ_SCANNER": "fast"}, "IQ_SCANNER"),
                                        ({"IQ_EXPORT_TIMEOUT": "nan"}, "IQ_EXPORT_TIMEOUT"),
                                        ({"IQ_EXPORT_CONCURRENCY": "lots"}, "IQ_EXPORT_CONCURRENCY")])
def test_a_bad_setting_stops_every_command_before_any_work(tmp_path, env, needle):
    out = _cli(tmp_path, "ingest", "1:2", "--car-url", str(tmp_path / "{epoch}.car"), **env)
    assert out.returncode == 1 and needle in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "home" / "warehouse").exists(), "work started before the settings were checked"


def test_a_misspelt_name_is_warned_with_the_nearest(tmp_path):
    out = _cli(tmp_path, "status", "--json", IQ_CLICKHOUSE_DNS="chdb:///elsewhere")
    assert out.returncode == 0, out.stderr
    assert "unknown setting IQ_CLICKHOUSE_DNS in the environment is ignored; did you mean IQ_CLICKHOUSE_DSN?" \
        in out.stderr
    import json

    report = json.loads(out.stdout)
    assert report["warehouse"] == f"embedded chDB at {(tmp_path / 'home' / 'warehouse').resolve()}"
