"""The whole path on a remote warehouse: a development chain ingested, then `iq-etl transform` (dbt
through dbt-clickhouse's own HTTP driver) against the development ClickHouse HTTP server (a real chDB
engine behind ClickHouse's HTTP interface, in its own process) builds the same marts and the same
`status` figures as the embedded warehouse; a second transform (incremental) changes nothing."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template, load_manifest
from tests.support.clickhouse_server import start_clickhouse_server

PASSWORD = "p@ss:w/rd"  # percent-encoded in the DSN: dbt must get it decoded


def cli(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=timeout)


def completeness(env: dict[str, str]) -> list[str]:
    """iq.session_completeness, every column but the timestamps of when rows were ingested or built and
    the build's own id (build_id: a fresh UUID per dbt build, which scopes its data tests)."""
    cols = cli("sql", "SELECT name FROM system.columns WHERE database = 'iq' AND table = 'session_completeness' "
               "AND type NOT LIKE 'DateTime%' AND name != 'build_id' ORDER BY position", "--format", "csv", env=env)
    assert cols.returncode == 0, cols.stderr
    names = [line.strip().strip('"') for line in cols.stdout.splitlines()[1:] if line.strip()]
    assert len(names) > 20, cols.stdout
    out = cli("sql", f"SELECT {', '.join(names)} FROM iq.session_completeness ORDER BY ALL", "--format", "tsv", env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def figures(env: dict[str, str]) -> dict:
    out = cli("status", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("generated_at", "warehouse"):
        data.pop(key, None)
    return data


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    build_chain(out, seed=11, sessions=40, noise_tx_per_slot=1, slots=2400)
    return out


def test_transform_on_a_remote_warehouse_builds_the_same_marts_as_embedded(tmp_path, chain):
    manifest = load_manifest(chain)
    spec = f"{manifest.first_slot}:{manifest.last_slot}"
    server = start_clickhouse_server(tmp_path / "ch", password=PASSWORD)
    try:
        common = {"IQ_PROGRAM_ID": ",".join(manifest.all_program_ids())}
        modes = {
            "embedded": {**common, "IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'embedded'}",
                         "IQ_ETL_HOME": str(tmp_path / "home-e")},
            "remote": {**common, "IQ_CLICKHOUSE_DSN": server.dsn("iq"), "IQ_ETL_HOME": str(tmp_path / "home-r")},
        }
        marts, status = {}, {}
        for name, env in modes.items():
            for args in (["ingest", spec, "--car-url", car_template(chain)], ["transform"]):
                done = cli(*args, env=env)
                assert done.returncode == 0, f"{name} {args[0]}: {done.stderr[-3000:]}"
                assert PASSWORD not in done.stdout + done.stderr
            marts[name] = completeness(env)
            status[name] = figures(env)
        assert len(marts["remote"]) > len(manifest.uploads) // 2
        assert marts["remote"] == marts["embedded"]
        assert status["remote"] == status["embedded"]

        again = cli("transform", env=modes["remote"])  # incremental: nothing new, nothing changes
        assert again.returncode == 0, again.stderr[-3000:]
        assert completeness(modes["remote"]) == marts["embedded"]
        assert figures(modes["remote"]) == status["embedded"]
    finally:
        server.stop()
