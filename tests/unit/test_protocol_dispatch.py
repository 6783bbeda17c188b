"""Dispatch by program id and reader mode, the session account rules, and the malformed-input cases
every decoder must refuse with a reason instead of guessing (docs/protocol.md, introduction):
overlong lengths, non-UTF-8 strings, truncated options, a 0x04-tagged instruction of an unrelated
program. Plus the records encode() must refuse."""
from __future__ import annotations

import hashlib
import struct

import pytest

from iq_etl.protocol import IQRecord, NotDecodable, decode, encode, session_account_position

G1 = "FG5nDUjz4S1FBs2rZrXsKsa7J34e21WF17F8nFL9uwWi"
G2 = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"
G3 = "9KLLchQVJpGkw4jPuUmnvqESdR7mtNCYr3qS4iQLabs"
PRE_G3 = "7dL1jKd4CaFHQRV2SU23XJtSCrPXaLpEbq9FteRXup8v"
TOKEN = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA"
UNKNOWN = "Unknown111111111111111111111111111111111111"
KEYS = [f"Key{i:02d}" + "1" * 39 for i in range(11)]
SID = b"\x11" * 16


def tag(name: str) -> bytes:
    return hashlib.sha256(b"global:" + name.encode()).digest()[:8]


def s(raw: bytes) -> bytes:
    return struct.pack("<I", len(raw)) + raw


PIN_CHUNK = b"\x04" + SID + struct.pack("<IB", 0, 1) + b"payload bytes"
POST_CHUNK = tag("post_chunk") + struct.pack("<I", 0) + s(b"abc") + b"\x00\x00"


def not_decodable(result, *words) -> str:
    assert isinstance(result, NotDecodable), result
    for word in words:
        assert word in result.reason, result.reason
    return result.reason


# --- malformed inputs that must be refused -------------------------------------------------------

def test_overlong_string_length():
    data = tag("post_chunk") + struct.pack("<I", 0) + struct.pack("<I", 0xFFFFFFFF) + b"abc\x00\x00"
    not_decodable(decode(G3, KEYS, data), "post_chunk chunk", "4294967295", "offset 12")


def test_overlong_bytes_and_vec_lengths():
    data = tag("db_code_in") + struct.pack("<I", 1000) + b"short"
    not_decodable(decode(G3, KEYS, data), "db_root_id", "1000")
    data = (tag("user_inventory_code_in_for_free") + s(b"") + s(b"{}") + b"\x00"
            + struct.pack("<I", 0x10000000) + b"\x00" * 32)
    not_decodable(decode(G3, KEYS, data), "proof", "268435456 items")


def test_overlong_legacy_chunk_length():
    data = tag("post_hybrid_chunk") + SID + struct.pack("<I", 0) + struct.pack("<I", 500) + b"x" * 10
    not_decodable(decode(G2, KEYS, data, mode="legacy"), "post_hybrid_chunk chunk", "500")


def test_non_utf8_string_in_g3_and_g1_is_not_decodable_with_offset():
    data = tag("post_chunk") + struct.pack("<I", 0) + s(b"ok\xff\xfe") + b"\x00\x00"
    not_decodable(decode(G3, KEYS, data), "invalid UTF-8", "offset 18")
    data = tag("db_code_in") + s(b"\xc3") + s(b"t") + s(b"ty") + s(b"o")
    not_decodable(decode(G1, KEYS, data), "handle", "invalid UTF-8", "offset 12")
    data = tag("user_inventory_code_in") + s(b"") + s(b'{"a": "\xe9"}') + b"\x00"
    not_decodable(decode(G3, KEYS, data), "metadata", "invalid UTF-8")


def test_non_utf8_in_g2_chunks_is_kept_losslessly():
    # G2 chunk text is bytes to the seed: no UTF-8 check, the payload keeps the bytes as they are.
    data = tag("post_hybrid_chunk") + SID + struct.pack("<I", 0) + s(b"\xff\xfe bytes") + b"\x00"
    rec = decode(G2, KEYS, data, mode="legacy")
    assert rec.payload == b"\xff\xfe bytes" and encode(rec) == data
    data = b"\x04" + SID + struct.pack("<IB", 0, 0) + b"\xff\xfe"
    assert decode(G2, KEYS, data).payload == b"\xff\xfe"


def test_truncated_options():
    head = tag("user_inventory_code_in") + s(b"S" * 44) + s(b"{}")
    not_decodable(decode(G3, KEYS, head), "session option tag", "needs 1 bytes")
    not_decodable(decode(G3, KEYS, head + b"\x01" + b"\x00" * 5), "session.seq")
    not_decodable(decode(G3, KEYS, head + b"\x01" + b"\x00" * 10), "session.total_chunks")
    not_decodable(decode(G3, KEYS, head + b"\x02"), "neither 0 nor 1")
    free = tag("user_inventory_code_in_for_free") + s(b"") + s(b"{}") + b"\x00"
    not_decodable(decode(G3, KEYS, free), "proof count")
    not_decodable(decode(G3, KEYS, free + struct.pack("<I", 2) + b"\x00" * 40), "proof")


def test_truncated_g2_finalize_and_fixed_fields():
    not_decodable(decode(G2, KEYS, b"\x05" + SID[:10]), "session_id")
    not_decodable(decode(G2, KEYS, b"\x05" + SID + b"\x01\x00"), "total_chunks")
    not_decodable(decode(G2, KEYS, tag("finalize_bundle") + b"\x01", mode="legacy"), "total_chunks")


def test_0x04_tagged_instruction_of_unrelated_programs():
    # SPL Token Approve is tag 4 too: a well-known non-IQ program is refused in auto mode...
    not_decodable(decode(TOKEN, KEYS, PIN_CHUNK), "not an IQ program")
    not_decodable(decode(TOKEN, KEYS, b"\x04" + struct.pack("<Q", 1000)), "not an IQ program")
    # ...and the G1/G3 ids decide their own layout, so a Pinocchio-shaped chunk is not one there.
    not_decodable(decode(G3, KEYS, PIN_CHUNK), "g3: tag")
    not_decodable(decode(G1, KEYS, PIN_CHUNK), "g1: unknown tag")
    # An explicit mode is the operator's choice and applies the G2 layouts to any program.
    assert decode(TOKEN, KEYS, PIN_CHUNK, mode="pinocchio").kind == "chunk"


# --- program id and mode -------------------------------------------------------------------------

def test_unknown_program_in_auto_tries_every_g2_layout():
    assert decode(UNKNOWN, KEYS, PIN_CHUNK).generation == "g2_pinocchio"
    legacy = tag("finalize_bundle") + struct.pack("<I", 2)
    assert decode(UNKNOWN, KEYS, legacy).generation == "g2_legacy"
    reason = not_decodable(decode(UNKNOWN, KEYS, POST_CHUNK))
    assert "pinocchio" in reason and "legacy" in reason  # both attempts are reported


def test_g1_and_g3_ids_ignore_the_g2_mode():
    for mode in ("pinocchio", "legacy", "passthrough", "auto"):
        assert decode(G3, KEYS, POST_CHUNK, mode=mode).generation == "g3"
        assert decode(G1, KEYS, tag("send_code") + s(b"p") + s(b"Genesis") + b"\0\0", mode=mode).generation == "g1"


def test_prerelease_id_tries_g3_then_g2():
    assert decode(PRE_G3, KEYS, POST_CHUNK).generation == "g3"
    assert decode(PRE_G3, KEYS, PIN_CHUNK).generation == "g2_pinocchio"


def test_unknown_mode_and_empty_data():
    not_decodable(decode(G2, KEYS, PIN_CHUNK, mode="fast"), "unknown reader mode")
    not_decodable(decode(G2, KEYS, b""), "empty")
    not_decodable(decode(G3, KEYS, b""), "(empty)")


def test_data_may_be_any_bytes_like():
    assert decode(G2, KEYS, bytearray(PIN_CHUNK)) == decode(G2, KEYS, memoryview(PIN_CHUNK))


# --- session accounts ----------------------------------------------------------------------------

def test_session_position_rules():
    assert decode(G2, KEYS, PIN_CHUNK).session_account == KEYS[1]
    assert decode(G3, KEYS, POST_CHUNK).session_account == KEYS[1]
    assert decode(G3, KEYS, tag("create_session") + bytes(8)).session_account == KEYS[2]
    fin = tag("user_inventory_code_in") + s(b"S" * 44) + s(b"{}") + b"\x00"
    assert decode(G3, KEYS, fin).session_account == KEYS[4]


def test_configured_session_pdas_win_first_listed_account():
    pdas = {KEYS[3], KEYS[6]}
    assert decode(G2, KEYS, PIN_CHUNK, session_pdas=pdas).session_account == KEYS[3]
    fin = tag("user_inventory_code_in") + s(b"S" * 44) + s(b"{}") + b"\x00"
    assert decode(G3, KEYS, fin, session_pdas=pdas).session_account == KEYS[3]
    # None of the instruction's accounts listed: the positional rule applies (seed behaviour).
    assert decode(G2, KEYS, PIN_CHUNK, session_pdas={"Other1111111111111111111111111111111111111"}).session_account == KEYS[1]


def test_too_few_accounts_leaves_session_unknown():
    assert decode(G2, KEYS[:1], PIN_CHUNK).session_account is None
    assert decode(G3, [], tag("create_session") + bytes(8)).session_account is None


@pytest.mark.parametrize("data, program, mode, position", [
    (PIN_CHUNK, G2, "auto", 1),
    (b"\x05" + SID + bytes(4), G2, "auto", 1),
    (tag("finalize_bundle") + bytes(4), G2, "legacy", 1),
    (tag("create_session") + bytes(8), G3, "auto", 2),
    (POST_CHUNK, G3, "auto", 1),
    (tag("wallet_connection_code_in") + s(b"") + s(b"") + s(b"") + s(b"{}") + b"\x00", G3, "auto", 4),
    (tag("send_code") + s(b"p") + s(b"Genesis") + b"\0\0", G3, "auto", None),
    (tag("db_code_in") + s(b"h") + s(b"t") + s(b"ty") + s(b"o"), G1, "auto", None),
])
def test_session_account_position(data, program, mode, position):
    assert session_account_position(decode(program, KEYS, data, mode=mode)) == position


# --- encode() refuses what no bytes can represent ------------------------------------------------

@pytest.mark.parametrize("record, words", [
    (IQRecord("g9", "chunk", "chunk"), "unknown generation"),
    (IQRecord("g2_pinocchio", "chunk", "chunk", session_id=SID, chunk_index=2**32, method=1, payload=b"x"), "chunk_index"),
    (IQRecord("g2_pinocchio", "chunk", "chunk", session_id=SID[:3], chunk_index=0, method=1, payload=b"x"), "session_id"),
    # raw variant whose bytes are valid base64 would decode to something else
    (IQRecord("g2_pinocchio", "chunk", "chunk", session_id=SID, chunk_index=0, method=0, payload=b"aGk=", variant="raw"), "raw"),
    # seed-form bytes that spell the String form: method 4, payload 00 00 00 + 5 bytes
    (IQRecord("g2_pinocchio", "chunk", "chunk", session_id=SID, chunk_index=0, method=4, payload=b"\0\0\0abcde"), "not representable"),
    (IQRecord("g2_pinocchio", "chunk", "chunk", session_id=SID, chunk_index=0, method=1, payload=b""), "do not decode"),
    (IQRecord("g2_legacy", "finalize", "finalize_bundle", session_id=SID, total_chunks=1), "no session_id"),
    (IQRecord("g3", "chunk", "post_chunk", chunk_index=0, payload=b"\xff", method=0, decode_break=0), "UTF-8"),
    (IQRecord("g3", "finalize", "user_inventory_code_in", on_chain_path="", metadata_raw='{"data": "x"}',
              payload=b"something else"), "payload"),
    (IQRecord("g3", "finalize", "user_inventory_code_in", on_chain_path="5" * 88, metadata_raw="{}"), "tail_tx"),
])
def test_encode_refuses_unrepresentable_records(record, words):
    with pytest.raises(ValueError, match=words):
        encode(record)


def test_encode_derives_metadata_raw_and_empty_proof():
    rec = IQRecord("g3", "finalize", "user_inventory_code_in_for_free", on_chain_path="",
                   metadata={"data": "hi", "total_chunks": 1}, payload=b"hi", total_chunks=1)
    out = decode(G3, KEYS, encode(rec))
    assert out.metadata == rec.metadata and out.metadata_raw == '{"data":"hi","total_chunks":1}' and out.proof == ()
