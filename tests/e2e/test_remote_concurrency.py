"""A remote warehouse has no single-process limit: while one `iq-etl` process is in the middle of its
run (its warehouse client open, the database migrated, its CAR reads held at a gate this test opens
when it chooses), a second `iq-etl ingest` of a disjoint slot range runs to the end, and `iq-etl sql`
and `iq-etl status` answer, all with IQ_WAREHOUSE_LOCK_WAIT=0 (a lock anywhere would fail them at
once). Then the first process finishes; the warehouse holds the rows of one ingest of the whole range.

Remote by nature: against the session's server in remote mode, else a development ClickHouse server
of the test's own. The held process is found blocked by the gate, never by timing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template, load_manifest
from iq_etl.devchain.servers.files import serve_files
from tests.support.net import wait_until
from tests.support.prefect import prefect_api  # noqa: F401 - fixture

KEY_COLUMNS = ("slot, signature, tx_index, ix_index, inner_index, program_id, generation, kind, session_account, "
               "session_id, chunk_index, total_chunks, hex(payload), hex(data), tx_status")
GATE_LIMIT_S = 600   # a held request gives up after this (a failing test must not hang the suite)


class Gate:
    """A loopback HTTP server in front of the chain's file server that holds every request until
    `open()`; `arrived` is set when the first one comes in."""

    def __init__(self, upstream: str):
        self.opened = threading.Event()
        self.arrived = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # quiet
                pass

            def _relay(self, method: str) -> None:
                gate.arrived.set()
                gate.opened.wait(GATE_LIMIT_S)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("range", "if-range")}
                with requests.request(method, upstream + self.path, headers=headers, stream=True, timeout=60) as r:
                    self.send_response(r.status_code)
                    for name in ("Content-Length", "Content-Range", "Accept-Ranges", "Content-Type", "ETag",
                                 "Last-Modified"):
                        if name in r.headers:
                            self.send_header(name, r.headers[name])
                    self.end_headers()
                    if method == "GET":
                        for piece in r.iter_content(1 << 16):
                            self.wfile.write(piece)

            def do_GET(self):
                self._relay("GET")

            def do_HEAD(self):
                self._relay("HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def open(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    build_chain(out, seed=13, sessions=40, noise_tx_per_slot=1, slots=2400)
    return out


@pytest.fixture
def gate(chain):
    files = serve_files(chain)
    g = Gate(files.url.rstrip("/"))
    yield g
    g.close()
    files.shutdown()


def cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


def start(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "iq_etl.cli.main", *args], stdout=out,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, **env})


def rows(env: dict[str, str]) -> str:
    out = cli("sql", f"SELECT {KEY_COLUMNS} FROM iq.raw_instructions FINAL ORDER BY slot, signature, ix_index, "
              "inner_index", "--format", "tsv", env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def answers_while_held(env: dict[str, str], held: subprocess.Popen, log: Path) -> None:
    """`sql` and `status` answer while `held` is alive in the middle of its run."""
    sql = cli("sql", "SELECT count() FROM iq.raw_instructions", "--format", "csv", env=env)
    assert sql.returncode == 0, sql.stderr
    status = cli("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["raw_instructions"] is not None
    assert held.poll() is None, log.read_text()[-3000:]   # still held at the gate: they ran beside it


def test_two_ingests_of_disjoint_ranges_and_sql_status_at_once(warehouses, chain, gate, tmp_path):
    manifest = load_manifest(chain)
    middle = (manifest.first_slot + manifest.last_slot) // 2
    env = warehouses.env(remote=True, IQ_PROGRAM_ID=",".join(manifest.all_program_ids()),
                         IQ_WAREHOUSE_LOCK_WAIT="0")
    held_log = tmp_path / "held.log"
    held = start("ingest", f"{manifest.first_slot}:{middle}", "--threads", "2",
                 "--car-url", gate.url + "/{epoch}/epoch-{epoch}.car", env=env, log=held_log)
    try:
        wait_until(lambda: gate.arrived.is_set() or held.poll() is not None, "the first ingest's CAR reads", 300)
        assert held.poll() is None, held_log.read_text()[-3000:]
        other = cli("ingest", f"{middle + 1}:{manifest.last_slot}", "--threads", "1", "--car-url", car_template(chain),
                    env=env)
        assert other.returncode == 0, other.stderr[-3000:]
        answers_while_held(env, held, held_log)
        gate.open()
        assert held.wait(timeout=600) == 0, held_log.read_text()[-3000:]
    finally:
        if held.poll() is None:
            held.kill()
            held.wait(timeout=30)
    embedded = {"IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'reference'}", "IQ_ETL_HOME": str(tmp_path / "home-ref"),
                "IQ_PROGRAM_ID": env["IQ_PROGRAM_ID"]}
    whole = cli("ingest", f"{manifest.first_slot}:{manifest.last_slot}", "--car-url", car_template(chain), env=embedded)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = rows(embedded)
    assert len(expected.splitlines()) > 100
    assert rows(env) == expected


def test_sql_and_status_while_a_pipeline_runs(warehouses, chain, gate, tmp_path, prefect_api):  # noqa: F811
    from prefect.settings import PREFECT_API_URL

    manifest = load_manifest(chain)
    env = warehouses.env(remote=True, IQ_PROGRAM_ID=",".join(manifest.all_program_ids()), IQ_WAREHOUSE_LOCK_WAIT="0",
                         PREFECT_API_URL=PREFECT_API_URL.value(), IQ_READER_BASE_URL="http://127.0.0.1:9")
    exports = tmp_path / "exports"
    log = tmp_path / "pipeline.log"
    pipeline = start("run", f"{manifest.first_slot}:{manifest.last_slot}", "--target", exports.as_uri(),
                     "--car-url", gate.url + "/{epoch}/epoch-{epoch}.car", env=env, log=log)
    try:
        wait_until(lambda: gate.arrived.is_set() or pipeline.poll() is not None, "the pipeline's CAR reads", 300)
        assert pipeline.poll() is None, log.read_text()[-3000:]
        answers_while_held(env, pipeline, log)
        gate.open()
        assert pipeline.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait(timeout=30)
    delivered = cli("sql", "SELECT count() FROM iq.exports WHERE status = 'delivered'", "--format", "csv", env=env)
    assert delivered.returncode == 0, delivered.stderr
    assert int(delivered.stdout.strip().splitlines()[-1]) == len(list(exports.rglob("upload.json"))) > 0
