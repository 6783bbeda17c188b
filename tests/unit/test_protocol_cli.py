"""`iq-etl decode`: JSON and readable output, hex/base58 input rules, and one-line argument errors."""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from iq_etl.cli.commands.decode import b58decode, parse_data
from iq_etl.cli.main import main
from iq_etl.errors import IQEtlError

G2 = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"
G3 = "9KLLchQVJpGkw4jPuUmnvqESdR7mtNCYr3qS4iQLabs"
K0, K1 = "11111111111111111111111111111111", "SysvarRent111111111111111111111111111111111"
SID = bytes(range(16))
PIN_CHUNK = b"\x04" + SID + struct.pack("<IB", 7, 0) + b"aGVsbG8="
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58encode(raw: bytes) -> str:  # written here, independently of the command's decoder
    n = int.from_bytes(raw, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = B58[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def run(capsys, *argv):
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_output_of_a_pinocchio_chunk(capsys):
    code, out, err = run(capsys, "--program", G2, "--data", PIN_CHUNK.hex(), "--accounts", f"{K0},{K1}", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["decodable"] is True and doc["generation"] == "g2_pinocchio" and doc["kind"] == "chunk"
    assert doc["session_account"] == K1 and doc["session_id"] == SID.hex() and doc["chunk_index"] == 7
    assert doc["payload_base64"] == "aGVsbG8=" and doc["merkle_root"] is None


def test_readable_output_of_a_g3_finaliser(capsys):
    tag = hashlib.sha256(b"global:user_inventory_code_in").digest()[:8]
    meta = b'{"filename": "a.txt", "total_chunks": 3}'
    data = tag + struct.pack("<I", 0) + struct.pack("<I", len(meta)) + meta + b"\x01" + struct.pack("<QI", 4, 3)
    code, out, _ = run(capsys, "--program", G3, "--data", "hex:" + data.hex())
    assert code == 0
    assert "generation: g3" in out and "instruction: user_inventory_code_in" in out
    assert "total_chunks: 3" in out and "seq: 4" in out and '"filename": "a.txt"' in out


@pytest.mark.parametrize("spelling", ["hex", "0x", "hex:", "b58", "b58:"])
def test_data_spellings_decode_to_the_same_record(capsys, spelling):
    text = {"hex": PIN_CHUNK.hex(), "0x": "0x" + PIN_CHUNK.hex(), "hex:": "hex:" + PIN_CHUNK.hex().upper(),
            "b58": b58encode(PIN_CHUNK), "b58:": "b58:" + b58encode(PIN_CHUNK)}[spelling]
    code, out, _ = run(capsys, "--program", G2, "--data", text, "--json")
    assert code == 0 and json.loads(out)["payload_base64"] == "aGVsbG8="


def test_ambiguous_data_rule():
    # Even-length hex digits are hex unless forced: "abcd" is 2 bytes as hex, 3 bytes as base58.
    assert parse_data("abcd") == b"\xab\xcd"
    assert parse_data("b58:abcd") == b58decode("abcd") != b"\xab\xcd"
    assert parse_data("abc") == b58decode("abc")  # odd length: base58
    assert b58decode("1112") == b"\0\0\0\x01"
    with pytest.raises(IQEtlError, match="not hex or base58"):
        parse_data("0OIl")  # not hex, and 0 O I l are not base58
    with pytest.raises(IQEtlError, match="odd number of hex digits"):
        parse_data("hex:abc")


def test_not_decodable_prints_reason_and_exits_zero(capsys):
    code, out, _ = run(capsys, "--program", G3, "--data", "04")
    assert code == 0
    doc = json.loads(out)
    assert doc["decodable"] is False and "g3" in doc["reason"]


@pytest.mark.parametrize("argv, words", [
    (["--program", "not-a-key", "--data", "04"], "--program"),
    (["--program", G2, "--data", "0xqq"], "--data"),
    (["--program", G2, "--data", "04", "--accounts", f"{K0},bad!"], "--accounts: entry 1"),
    (["--program", G2, "--data", "04", "--session-pdas", "zz0"], "--session-pdas: entry 0"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, words):
    code, out, err = run(capsys, *argv)
    assert code != 0 and out == ""
    assert words in err and len(err.strip().splitlines()) == 1


def test_session_pdas_option(capsys):
    code, out, _ = run(capsys, "--program", G2, "--data", PIN_CHUNK.hex(), "--accounts", f"{K0},{K1}",
                       "--session-pdas", K0, "--json")
    assert code == 0 and json.loads(out)["session_account"] == K0


def test_installed_command_exit_codes():
    exe = Path(sys.executable).with_name("iq-etl")
    ok = subprocess.run([str(exe), "decode", "--program", G2, "--data", PIN_CHUNK.hex(), "--json"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["chunk_index"] == 7
    bad = subprocess.run([str(exe), "decode", "--program", "xyz", "--data", "04"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stderr.startswith("iq-etl decode: error: --program")
