"""Traps on the command line (issue 21, item 8), each as its reporter hit it: `.env` ignored by git,
`sql --file` typos and `--file -`, a busy port, `car index <URL>`, slot ranges and DSNs printed in the
forms the tool accepts, the reader backend as `devchain serve-reader`, a description on every command,
ClickHouse's CSV/TSV without a header row, several statements in one `sql`, and `--param_NAME=VALUE`.
Real `iq-etl` processes on a real chDB folder, servers on loopback."""
from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from iq_etl.cli.main import build_parser, main
from iq_etl.devchain.build import CATALOGUE_UPLOADS
from iq_etl.devchain.servers.reader_backend import SEED_FIELDS
from tests.support.net import busy_port
from tests.support.warehouse import folder_dsn

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "old-faithful"


def iq(args, tmp_path, stdin=None, **env):
    full = {**os.environ, "IQ_CLICKHOUSE_DSN": folder_dsn(tmp_path),
            "IQ_ETL_HOME": str(tmp_path / "home"), **env}
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=tmp_path, capture_output=True,
                          text=True, env=full, timeout=300, input=stdin)


def one_line_error(out) -> str:
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


# --- .env ------------------------------------------------------------------------------------------

def test_dotenv_is_ignored_by_git():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for name in (".env", ".env.local"):
        assert subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO).returncode == 0, name
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO).returncode == 1


# --- sql: --file, statements, formats, parameters --------------------------------------------------

def test_sql_file_typo_is_one_line_and_dash_reads_stdin(tmp_path):
    line = one_line_error(iq(["sql", "--file", "sql/queries/coverage_sumary.sql"], tmp_path))
    assert "--file sql/queries/coverage_sumary.sql: no such file" in line
    folder = one_line_error(iq(["sql", "--file", str(tmp_path)], tmp_path))
    assert "a folder, not a file" in folder
    out = iq(["sql", "--file", "-", "--format", "csv"], tmp_path, stdin="SELECT 41 + 1 AS x;\n")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "x\n42\n"
    both = one_line_error(iq(["sql", "SELECT 1", "--file", "-"], tmp_path, stdin="SELECT 2"))
    assert "either a query or --file" in both


def test_several_statements_are_refused_in_one_line(tmp_path):
    line = one_line_error(iq(["sql", "SELECT 1; SELECT 2"], tmp_path))
    assert "2 statements" in line
    # semicolons inside literals, quoted identifiers and comments are not statement ends; a trailing one is fine
    text = "SELECT 'a;b' AS `c;d`, \"e;\" -- f;g\n FROM (SELECT 1 AS `e;`) /* h; */ ;  -- done;\n"
    out = iq(["sql", text, "--format", "csv"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "c;d,e;\na;b,1\n"
    escaped = iq(["sql", "SELECT 'it''s; \\'quoted\\';' AS s", "--format", "csv"], tmp_path)
    assert escaped.returncode == 0, escaped.stderr
    assert escaped.stdout == "s\nit's; 'quoted';\n"
    from_stdin = one_line_error(iq(["sql", "--file", "-"], tmp_path, stdin="SELECT 1;\nSELECT 2;\nSELECT 3;\n"))
    assert "3 statements" in from_stdin


@pytest.mark.parametrize("clause, expect", [
    ("FORMAT CSV", "1,hi\n"),
    ("FORMAT CSVWithNames", "a,b\n1,hi\n"),
    ("FORMAT TSV", "1\thi\n"),
    ("FORMAT TabSeparated", "1\thi\n"),
    ("FORMAT TSVWithNames", "a\tb\n1\thi\n"),
    ("FORMAT TabSeparatedWithNames", "a\tb\n1\thi\n"),
])
def test_format_clauses_have_a_header_row_as_in_clickhouse(tmp_path, clause, expect):
    out = iq(["sql", f"SELECT 1 AS a, 'hi' AS b {clause}"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expect


def test_format_flags_keep_their_header_row(tmp_path):
    assert iq(["sql", "SELECT 1 AS a", "--format", "csv"], tmp_path).stdout == "a\n1\n"
    assert iq(["sql", "SELECT 1 AS a", "--format", "tsv"], tmp_path).stdout == "a\n1\n"


def test_param_as_clickhouse_client_spells_it(tmp_path):
    out = iq(["sql", "SELECT {n:UInt8} + 1 AS x, {s:String} AS s", "--param_n=41", "--param_s", "a b=c",
              "--format", "csv"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "x,s\n42,a b=c\n"
    classic = iq(["sql", "SELECT {n:UInt8} + 1 AS x", "--param", "n=41", "--format", "csv"], tmp_path)
    assert classic.stdout == "x\n42\n"


# --- devchain: busy port, serve-reader ------------------------------------------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("traps") / "chain"
    assert main(["devchain", "build", "--out", str(out), "--sessions", str(CATALOGUE_UPLOADS),
                 "--noise-tx-per-slot", "1", "--slots", "300"]) == 0
    return out


@pytest.mark.parametrize("command", [["serve", "{chain}"], ["serve-car", "{chain}"], ["serve-reader"]])
def test_serving_on_a_busy_port_is_one_line(tmp_path, chain, command):
    with busy_port() as port:
        args = ["devchain", *[a.format(chain=chain) for a in command], "--port", str(port)]
        line = one_line_error(iq(args, tmp_path))
    assert f"127.0.0.1:{port}: port already in use" in line and "--port 0" in line


def _body(payload: bytes) -> dict:
    body: dict = {name: None for name in SEED_FIELDS}
    body.update(session_pubkey="S", total_chunks=1, chunk_count=1,
                payload_base64=base64.b64encode(payload).decode(), sha256=hashlib.sha256(payload).hexdigest())
    return body


def test_serve_reader_stores_bodies_and_stops_on_ctrl_c(tmp_path):
    out_dir = tmp_path / "received"
    env = {k: v for k, v in os.environ.items() if k != "IQ_READER_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "iq_etl.cli.main", "devchain", "serve-reader", "--port", "0",
                             "--out", str(out_dir)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**env, "PYTHONUNBUFFERED": "1"})
    try:
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"export target: (http://127\.0\.0\.1:\d+/api/v2/inscribe/ingest)", line)
            url = m.group(1) if m else None
        assert url, proc.stderr.read() if proc.poll() is not None else "no URL printed"
        r = requests.post(url, json=_body(b"hello"), headers={"Idempotency-Key": "k1"}, timeout=10)
        assert r.status_code == 200, r.text
        stored = list(out_dir.glob("*.json"))
        assert len(stored) == 1 and json.loads(stored[0].read_text())["session_pubkey"] == "S"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


# --- car: index <URL>, inspect prints S:E ---------------------------------------------------------

def test_car_index_reads_a_url_and_keeps_its_slashes(tmp_path):
    from iq_etl.devchain.servers.files import serve_files

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(FIXTURES / "epoch-0-2.car", served / "epoch-0.car")
    local = tmp_path / "local"
    local.mkdir()
    shutil.copy(FIXTURES / "epoch-0-2.car", local / "epoch-0.car")
    assert iq(["car", "index", str(local / "epoch-0.car")], tmp_path).returncode == 0
    server = serve_files(served)
    try:
        url = f"{server.url}/epoch-0.car"
        out = iq(["car", "index", url], tmp_path)
        assert out.returncode == 0, out.stderr
        written = tmp_path / "epoch-0-slot-ranges.raw"   # an http(s) URL: the current folder
        assert written.read_bytes() == (local / "epoch-0-slot-ranges.raw").read_bytes()
        assert f"{server.url}/epoch-0-slot-ranges.raw" in out.stdout
        again = one_line_error(iq(["car", "index", url], tmp_path))
        assert "already exists (use --force" in again
        into = iq(["car", "index", url, "--out", str(served)], tmp_path)
        assert into.returncode == 0, into.stderr
        assert (served / "epoch-0-slot-ranges.raw").is_file()
        missing = one_line_error(iq(["car", "index", f"{server.url}/nope/epoch-0.car"], tmp_path))
        assert f"{server.url}/nope/epoch-0.car" in missing and "http:/1" not in missing
    finally:
        server.shutdown()
    typo = one_line_error(iq(["car", "index", str(tmp_path / "nope.car")], tmp_path))
    assert "nope.car: no such file" in typo


def test_car_inspect_prints_slots_as_s_colon_e(tmp_path):
    out = iq(["car", "inspect", str(FIXTURES / "epoch-0-2.car")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "slots 10:19:" in out.stdout and ".." not in out.stdout
    m = re.search(r"slots (\d+:\d+):", out.stdout)
    assert m
    again = iq(["car", "inspect", str(FIXTURES / "epoch-0-2.car"), "--slots", m.group(1)], tmp_path)
    assert again.returncode == 0 and f"(slots {m.group(1)})" in again.stdout


@pytest.mark.embedded_only("a chdb:// DSN printed as typed")
def test_migrate_prints_the_dsn_as_typed(tmp_path):
    dsn = f"chdb://{tmp_path / 'wh'}"
    out = iq(["migrate"], tmp_path, IQ_CLICKHOUSE_DSN=dsn)
    assert out.returncode == 0, out.stderr
    assert f"to {dsn}:" in out.stdout
    again = iq(["migrate"], tmp_path, IQ_CLICKHOUSE_DSN=dsn)
    assert f"schema of {dsn} is up to date" in again.stdout


# --- --help everywhere ----------------------------------------------------------------------------

def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield path + (name,), helps.get(name), sub
                yield from _commands(sub, path + (name,))


def test_every_command_and_subcommand_describes_itself():
    parser = build_parser()
    commands = list(_commands(parser))
    assert {("devchain", "serve-reader"), ("car", "index"), ("sql",)} <= {c for c, _, _ in commands}
    for path, help_line, sub in commands:
        assert help_line and help_line.strip(), f"iq-etl {' '.join(path)}: no help line in its parent's --help"
        assert sub.description and sub.description.strip(), f"iq-etl {' '.join(path)}: no description"
        parent = parser if len(path) == 1 else dict((c, s) for c, _, s in commands)[path[:-1]]
        listing = parent.format_help()
        assert path[-1] in listing and " ".join(help_line.split()[:3]) in " ".join(listing.split()), path
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), pytest.raises(SystemExit) as exited:
            main([*path, "--help"])
        assert exited.value.code == 0
        first_words = " ".join(sub.description.split()[:4])
        assert first_words in " ".join(buf.getvalue().split()), path
