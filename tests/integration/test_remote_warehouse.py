"""The remote warehouse path (IQ_CLICKHOUSE_DSN=http://...) against the development ClickHouse HTTP
server (`iq-etl devchain serve-clickhouse`, a real chDB engine behind ClickHouse's HTTP interface, in
its own process on loopback): the protocol as clickhouse-connect and plain HTTP clients use it, then
iq-etl's own commands on a fresh server. dbt (`transform`) over HTTP is in tests/e2e/test_remote_warehouse_e2e.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template, load_manifest
from tests.support.clickhouse_server import start_clickhouse_server

PASSWORD = "p@ss:w/rd"  # percent-encoded in the DSN
KEY_COLUMNS = ("slot, signature, tx_index, ix_index, inner_index, program_id, generation, kind, session_account, "
               "session_id, chunk_index, total_chunks, hex(payload), hex(data), tx_status")


@pytest.fixture
def server(tmp_path):
    srv = start_clickhouse_server(tmp_path / "ch", password=PASSWORD)
    yield srv
    srv.stop()


def cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


def remote_env(server, tmp_path, **extra) -> dict[str, str]:
    return {"IQ_CLICKHOUSE_DSN": server.dsn("iq"), "IQ_ETL_HOME": str(tmp_path / "home-remote"), **extra}


def post(server, query: str, body: bytes | str = b"", **params) -> requests.Response:
    return requests.post(f"{server.url}/", params={"query": query, **params} if query else params, data=body,
                         headers={"X-ClickHouse-User": server.user, "X-ClickHouse-Key": server.password}, timeout=30)


# --- the server, as clients see it -----------------------------------------------------------------

def test_the_server_says_it_is_a_test_tool():
    out = subprocess.run([sys.executable, "-m", "iq_etl.cli.main", "devchain", "serve-clickhouse", "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "TEST TOOL" in out and "never the product's warehouse" in out


def test_clickhouse_connect_round_trip_with_lz4_native_inserts_sessions_and_settings(server):
    import clickhouse_connect

    client = clickhouse_connect.get_client(host="127.0.0.1", port=int(server.url.rsplit(":", 1)[1]),
                                           username=server.user, password=PASSWORD)
    try:
        assert client.server_version and client.write_compression == "lz4"  # what it sends inserts as by default
        client.command("CREATE DATABASE IF NOT EXISTS t")
        client.command("CREATE TABLE t.x (a UInt32, s String, b Nullable(Float64)) ENGINE = MergeTree ORDER BY a")
        summary = client.insert("t.x", [[i, f"s{i}", None if i % 3 else i / 2] for i in range(5000)],
                                column_names=["a", "s", "b"])
        assert summary.written_rows == 5000
        assert client.query("SELECT count(), sum(a), countIf(b IS NULL) FROM t.x").result_rows == [(5000, 12497500, 3333)]
        assert client.query("SELECT s FROM t.x WHERE a = {n:UInt32}", parameters={"n": 7}).result_rows == [("s7",)]
        assert client.query("SELECT * FROM t.x LIMIT 0").column_names == ("a", "s", "b")
        # a real server's defaults, not chDB's compiled-in ones; a setting sent with one query stays with it
        assert client.query("SELECT getSetting('async_insert'), getSetting('mutations_sync')").result_rows == [(False, 0)]
        assert client.command("SELECT getSetting('mutations_sync')", settings={"mutations_sync": 2}) == 2
        assert client.command("SELECT getSetting('mutations_sync')") == 0
        # the session keeps SET and temporary tables
        client.command("SET max_threads = 1")
        client.command("CREATE TEMPORARY TABLE tmp (a UInt8)")
        client.command("INSERT INTO tmp VALUES (1), (2)")
        assert client.command("SELECT count() FROM tmp") == 2
        assert client.command("SELECT getSetting('max_threads')") == 1
    finally:
        client.close()


def test_errors_auth_and_read_only_get_answer_like_clickhouse(server):
    r = post(server, "SELECT * FROM nowhere.nothing")
    assert r.status_code == 404 and r.headers["X-ClickHouse-Exception-Code"] == "81"
    assert r.text.startswith("Code: 81. DB::Exception: ") and "(UNKNOWN_DATABASE)" in r.text
    r = post(server, "SELEC 1")
    assert r.status_code == 400 and r.headers["X-ClickHouse-Exception-Code"] == "62"
    # every way of authenticating; a wrong password is 516 with HTTP 403
    base = f"{server.url}/"
    assert requests.get(base, params={"query": "SELECT 1", "user": "u", "password": PASSWORD}, timeout=10).text == "1\n"
    assert requests.post(base, data="SELECT 2", auth=("u", PASSWORD), timeout=10).text == "2\n"
    bad = requests.post(base, data="SELECT 3", auth=("u", "wrong"), timeout=10)
    assert bad.status_code == 403 and bad.headers["X-ClickHouse-Exception-Code"] == "516"
    assert "AUTHENTICATION_FAILED" in bad.text and "wrong" not in bad.text
    assert requests.post(base, data="SELECT 4", timeout=10).headers["X-ClickHouse-Exception-Code"] == "516"
    # GET is read-only; the answer carries the headers clients read
    ro = requests.get(base, params={"query": "CREATE DATABASE nope", "user": "u", "password": PASSWORD}, timeout=10)
    assert ro.status_code == 500 and ro.headers["X-ClickHouse-Exception-Code"] == "164"
    ok = post(server, "SELECT number FROM system.numbers LIMIT 3 FORMAT JSONEachRow")
    assert ok.headers["X-ClickHouse-Format"] == "JSONEachRow" and ok.headers["X-ClickHouse-Query-Id"]
    assert ok.headers["X-ClickHouse-Timezone"] and ok.headers["X-ClickHouse-Server-Display-Name"]
    assert json.loads(ok.headers["X-ClickHouse-Summary"])["read_rows"] == "3"
    assert [json.loads(line)["number"] for line in ok.text.splitlines()] == ["0", "1", "2"] or \
        [json.loads(line)["number"] for line in ok.text.splitlines()] == [0, 1, 2]
    # an INSERT with its data in the body (the statement in the URL), gzip-compressed
    import gzip

    post(server, "CREATE TABLE default.g (a UInt8, s String) ENGINE = Memory")
    r = requests.post(f"{server.url}/", params={"query": "INSERT INTO default.g FORMAT TSV"}, data=gzip.compress(b"1\tx\n2\ty\n"),
                      headers={"Content-Encoding": "gzip"}, auth=("u", PASSWORD), timeout=10)
    assert r.status_code == 200, r.text
    assert post(server, "SELECT count() FROM default.g").text == "2\n"
    # a session used twice at once is refused; unknown sessions with session_check too
    assert post(server, "SELECT 1", session_id="nope", session_check="1").headers["X-ClickHouse-Exception-Code"] == "372"


# --- iq-etl on a fresh server ---------------------------------------------------------------------

def test_migrate_creates_the_database_the_dsn_names(server, tmp_path):
    for database in ("iq", "warehouse_db"):
        env = {"IQ_CLICKHOUSE_DSN": server.dsn(database), "IQ_ETL_HOME": str(tmp_path / "home")}
        done = cli("migrate", env=env)
        assert done.returncode == 0, done.stderr
        again = cli("migrate", env=env)
        assert again.returncode == 0, again.stderr
    listed = cli("sql", "SELECT name FROM system.databases WHERE name IN ('iq', 'warehouse_db') ORDER BY name",
                 "--format", "csv", env={"IQ_CLICKHOUSE_DSN": server.dsn("iq"), "IQ_ETL_HOME": str(tmp_path / "home")})
    assert listed.returncode == 0, listed.stderr
    assert "iq" in listed.stdout and "warehouse_db" in listed.stdout


def test_a_wrong_password_is_one_line_naming_516_without_the_password(server, tmp_path):
    env = {"IQ_CLICKHOUSE_DSN": server.dsn("iq", password="Sekrit@99"), "IQ_ETL_HOME": str(tmp_path / "home")}
    for args in (["status"], ["migrate"]):
        done = cli(*args, env=env)
        err = done.stderr.strip()
        assert done.returncode != 0 and len(err.splitlines()) == 1, err
        assert "516" in err and "authentication" in err.lower(), err
        assert "Sekrit" not in err and "Traceback" not in err, err


def test_sql_and_status_work_while_another_process_holds_a_connection(server, tmp_path):
    env = remote_env(server, tmp_path)
    assert cli("migrate", env=env).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from iq_etl.settings import load_settings\n"
        "from iq_etl.warehouse.client import get_client\n"
        "client = get_client(load_settings())\n"
        "client.query('SELECT count() FROM iq.raw_instructions')\n"
        "print('holding', flush=True)\n"
        "time.sleep(120)\n")], env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        started = time.monotonic()
        sql = cli("sql", "SELECT count() FROM iq.raw_instructions FINAL", "--format", "csv", env=env)
        assert sql.returncode == 0, sql.stderr
        assert sql.stdout.strip().splitlines()[-1] == "0"
        status = cli("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["raw_instructions"] is not None
        assert time.monotonic() - started < 60  # nobody waited for a lock
    finally:
        holder.kill()
        holder.wait(timeout=10)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    build_chain(out, seed=7, sessions=40, noise_tx_per_slot=1, slots=1600)
    return out


def test_ingest_stores_the_same_rows_as_the_embedded_warehouse(server, tmp_path, chain):
    manifest = load_manifest(chain)
    spec = f"{manifest.first_slot}:{manifest.last_slot}"
    common = {"IQ_PROGRAM_ID": ",".join(manifest.all_program_ids())}
    embedded = {**common, "IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'embedded'}", "IQ_ETL_HOME": str(tmp_path / "home-e")}
    remote = {**common, **remote_env(server, tmp_path)}
    rows = {}
    for name, env in (("embedded", embedded), ("remote", remote)):
        done = cli("ingest", spec, "--car-url", car_template(chain), env=env)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        out = cli("sql", f"SELECT {KEY_COLUMNS} FROM iq.raw_instructions FINAL ORDER BY slot, signature, ix_index, "
                  "inner_index", "--format", "tsv", env=env)
        assert out.returncode == 0, out.stderr
        undecoded = cli("sql", "SELECT signature, reason FROM iq.undecoded_instructions FINAL ORDER BY signature",
                        "--format", "tsv", env=env)
        rows[name] = (out.stdout, undecoded.stdout)
    assert rows["remote"] == rows["embedded"]
    assert len(rows["remote"][0].splitlines()) > 100
