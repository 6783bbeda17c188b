"""Issue 22: secrets never leak through the "warehouse in use" message; malformed input is one line."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

SECRET = "rpcs3cret-DO-NOT-LEAK"
API_KEY = "apikey-DO-NOT-LEAK"


def _cli(tmp_path, *args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("IQ_", "JETSTREAMER_"))}
    full.update({"IQ_ETL_HOME": str(tmp_path / "home"), **env})
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=tmp_path, env=full,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.embedded_only("the chDB folder lock")
def test_the_busy_message_redacts_the_holders_command_line(tmp_path, warehouses):
    dsn = warehouses.dsn()
    script = tmp_path / "h.py"
    script.write_text("import sys, time\nfrom iq_etl.settings import load_settings\n"
                      "from iq_etl.warehouse.client import get_client\n"
                      "get_client(load_settings({'IQ_CLICKHOUSE_DSN': sys.argv[1]}, dotenv=None))\n"
                      "print('ready', flush=True)\ntime.sleep(60)\n")
    holder = subprocess.Popen(
        [sys.executable, str(script), dsn,
         "--rpc-url", f"http://u:{SECRET}@127.0.0.1:9/?api-key={API_KEY}", "--password", SECRET,
         f"IQ_READER_TOKEN={SECRET}"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        out = _cli(tmp_path, "sql", "SELECT 1", IQ_CLICKHOUSE_DSN=dsn)
    finally:
        holder.kill()
        holder.wait()
    assert out.returncode == 1 and f"is in use by process {holder.pid}" in out.stderr
    assert SECRET not in out.stderr and API_KEY not in out.stderr
    assert "http://u:***@127.0.0.1:9/?api-key=***" in out.stderr and "--password ***" in out.stderr


@pytest.mark.embedded_only("chDB folder errors")
@pytest.mark.parametrize("env,needle", [
    ({"IQ_RPC_URL": "http://[::1/"}, "IQ_RPC_URL"),
    ({"IQ_CLICKHOUSE_DSN": "chdb://./afile"}, "cannot open the embedded warehouse"),
    ({"IQ_CLICKHOUSE_DSN": "chdb://./afile/under"}, "cannot open the embedded warehouse"),
])
def test_malformed_input_is_one_line(tmp_path, env, needle):
    (tmp_path / "afile").write_text("not a folder")
    out = _cli(tmp_path, "status", **env)
    assert out.returncode == 1 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_a_dotenv_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / ".env").write_bytes(b"IQ_LOG_LEVEL=info\nIQ_READER_TOKEN=\xff\xfe\n")
    out = _cli(tmp_path, "status")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert ".env:2: not UTF-8 text" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_an_rpc_url_flag_that_is_not_a_url_is_one_line(tmp_path):
    started = time.monotonic()
    out = _cli(tmp_path, "ingest", "--source", "rpc-blocks", "398736000:398736001", "--rpc-url", "http://[::1/")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "not a valid URL" in out.stderr, out.stderr
    assert time.monotonic() - started < 120
