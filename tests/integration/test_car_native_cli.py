"""`iq-etl car scan` says which section walker ran (IQ_SCANNER) and how the lookup-table cache did;
both walkers report the same counts; a bad IQ_SCANNER is one clear line."""
from __future__ import annotations

import json

import pytest
from solders.pubkey import Pubkey

from iq_etl.cli.main import main
from iq_etl.ingest.sources.car import scanner
from tests.support.synthetic_car import PROGRAM_KEY, build_synthetic_car

EPOCH = 8
KEY = str(Pubkey.from_bytes(PROGRAM_KEY))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan-cli")
    return root, build_synthetic_car(root, 1200, epoch=EPOCH, tx_per_slot=40, wanted_every=15, v0_share=0.4)


def _scan(capsys, monkeypatch, chain, which: str, *extra: str):
    root, info = chain
    monkeypatch.setenv("IQ_SCANNER", which)
    code = main(["car", "scan", str(root / "{epoch}" / "epoch-{epoch}.car"), "--slots",
                 f"{info.first_slot}:{info.last_slot}", "--key", KEY, *extra])
    return code, capsys.readouterr()


@pytest.mark.parametrize("which", ["python", pytest.param("native", marks=pytest.mark.skipif(
    not scanner.native_available(), reason="compiled walker not built"))])
def test_scan_names_the_walker_and_the_cache(capsys, monkeypatch, chain, which):
    code, out = _scan(capsys, monkeypatch, chain, which)
    assert code == 0
    assert f"scanner {which})" in out.out
    assert "lookup-table cache:" in out.out and "v0 transactions" in out.out
    code, out = _scan(capsys, monkeypatch, chain, which, "--json")
    result = json.loads(out.out)
    assert result["scanner"] == which
    assert result["transactions_seen"] == chain[1].transactions
    assert result["transactions_matched"] == len(chain[1].wanted_signatures)
    assert result["lookup_tables"]["v0_checked"] > 0


def test_auto_picks_native_when_built(capsys, monkeypatch, chain):
    _, out = _scan(capsys, monkeypatch, chain, "auto", "--json")
    assert json.loads(out.out)["scanner"] == ("native" if scanner.native_available() else "python")


def test_bad_scanner_value_is_one_line(capsys, monkeypatch, chain):
    code, out = _scan(capsys, monkeypatch, chain, "turbo")
    assert code != 0
    assert "IQ_SCANNER='turbo': expected one of auto, python, native" in out.err
    assert "Traceback" not in out.err
