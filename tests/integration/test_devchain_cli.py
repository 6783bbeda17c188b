"""`iq-etl devchain build|serve|serve-car` as a user runs them: the build summary, clear errors, and
both servers started as real processes on loopback, queried, then stopped with Ctrl-C (SIGINT)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from iq_etl.cli.main import main
from iq_etl.devchain.build import CATALOGUE_UPLOADS
from iq_etl.devchain.chain import iter_chain, load_manifest

REPO = Path(__file__).resolve().parents[2]
SMALL_ARGS = ["--sessions", str(CATALOGUE_UPLOADS), "--noise-tx-per-slot", "1", "--slots", "300"]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "chain"
    assert main(["devchain", "build", "--out", str(out), "--seed", "5", *SMALL_ARGS]) == 0
    return out


def test_build_prints_a_summary_and_writes_the_chain(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["devchain", "build", "--out", str(out), "--seed", "4", *SMALL_ARGS]) == 0
    text = capsys.readouterr().out
    manifest = load_manifest(out)
    assert f"{manifest.first_slot}:{manifest.last_slot}" in text
    assert f"{manifest.tx_counts['transactions']} total" in text
    assert "IQ_PROGRAM_ID=" + ",".join(manifest.all_program_ids()) in text
    assert (out / "923" / "epoch-923.car").is_file() and (out / "923" / "epoch-923-slot-ranges.raw").is_file()
    assert len(list((out / "files").iterdir())) == len(manifest.uploads)


@pytest.mark.parametrize("args, message", [
    (["--first-slot", "1000"], "--first-slot 1000: must be above"),
    (["--sessions", "2"], "--sessions 2"),
])
def test_build_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["devchain", "build", "--out", str(tmp_path / "c"), *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_serve_without_a_chain_is_an_error(tmp_path, capsys):
    assert main(["devchain", "serve", str(tmp_path)]) == 1
    assert "no development chain" in capsys.readouterr().err


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r" on (http://127\.0\.0\.1:\d+)/", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError(f"server did not start: {''.join(lines)} {proc.stderr.read()}")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_answers_json_rpc_with_the_chain(built):
    manifest = load_manifest(built)
    proc, url = _start(["devchain", "serve", str(built), "--port", "0"])
    try:
        slot = requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "getSlot"}, timeout=10).json()
        assert slot["result"] == manifest.last_slot
        block = next(b for b in iter_chain(built) if not b.skipped and len(b.transactions) > 1)
        answer = requests.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "getBlock", "params": [
            block.slot, {"encoding": "base64", "maxSupportedTransactionVersion": 0,
                         "transactionDetails": "signatures", "rewards": False}]}, timeout=10).json()
        assert answer["result"]["signatures"] == [t.signature for t in block.transactions]
        skipped = manifest.skipped_slots[0]
        missing = requests.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "getBlock", "params": [
            skipped, {"maxSupportedTransactionVersion": 0}]}, timeout=10).json()
        assert missing["error"]["code"] == -32009
    finally:
        _stop(proc)


def test_serve_car_serves_ranges_of_the_car_files(built):
    car = built / "923" / "epoch-923.car"
    proc, url = _start(["devchain", "serve-car", str(built), "--port", "0"])
    try:
        r = requests.get(f"{url}/923/epoch-923.car", headers={"Range": "bytes=10-99"}, timeout=10)
        assert r.status_code == 206
        assert r.content == car.read_bytes()[10:100]
        index = requests.get(f"{url}/923/epoch-923-slot-ranges.raw", headers={"Range": "bytes=0-11"}, timeout=10)
        assert index.status_code == 206 and len(index.content) == 12
    finally:
        _stop(proc)
