"""Hand-checked byte vectors for every instruction in docs/protocol.md §3-§6, written from the spec.

Anchor tags are computed here with hashlib (and compared with the tags printed in docs/protocol.md),
never taken from the decoder. Every vector also checks that encode() gives back the same bytes.
"""
from __future__ import annotations

import base64
import hashlib
import json
import struct

import pytest

from iq_etl.protocol import IQRecord, NotDecodable, decode, encode, session_account_position

G1 = "FG5nDUjz4S1FBs2rZrXsKsa7J34e21WF17F8nFL9uwWi"
G2 = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"
G3 = "9KLLchQVJpGkw4jPuUmnvqESdR7mtNCYr3qS4iQLabs"
KEYS = [f"Key{i}1111111111111111111111111111111111111"[:44] for i in range(12)]
SID = bytes(range(16))  # 000102...0f
ROOT = bytes([0xAB]) * 32
TAIL = "5" * 88  # a linked-list tail signature (88 base58 characters)
SESSION_PDA = "Sess1on111111111111111111111111111111111111"


def tag(name: str) -> bytes:
    return hashlib.sha256(b"global:" + name.encode()).digest()[:8]


def s(text: str) -> bytes:  # Borsh String
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw


def roundtrip(program_id, data, accounts=KEYS, **kw):
    rec = decode(program_id, accounts, data, **kw)
    assert isinstance(rec, IQRecord), rec
    assert encode(rec) == data
    return rec


@pytest.mark.parametrize("name, printed", [
    ("post_hybrid_chunk", "acc62c43cdf6460c"), ("finalize_hybrid_session", "18dabeb1e4537e7b"),
    ("finalize_bundle", "23a3d3b13f5ddb8a"), ("create_session", "f2c18fb396197ae3"),
    ("post_chunk", "d108657ba5cd6c36"), ("send_code", "ef8123d03ea86ec9"),
    ("user_inventory_code_in", "51b1057ad57d15ee"), ("user_inventory_code_in_for_free", "18c287f77d33432f"),
    ("db_code_in", "2664a5f26389ce6c"), ("db_instruction_code_in", "1e0b64c9e07925a3"),
    ("wallet_connection_code_in", "ccd7f49131b75e94"),
])
def test_anchor_tags_match_protocol_table(name, printed):
    from iq_etl.protocol import anchor_tag
    assert tag(name).hex() == printed
    assert anchor_tag(name) == tag(name)


# --- G2 Pinocchio (§3) ---------------------------------------------------------------------------

def test_pinocchio_chunk_method0_base64_payload():
    data = bytes.fromhex("04" "000102030405060708090a0b0c0d0e0f" "07000000" "00") + b"aGVsbG8="
    rec = roundtrip(G2, data)
    assert (rec.generation, rec.kind, rec.instruction) == ("g2_pinocchio", "chunk", "chunk")
    assert rec.session_id == SID and rec.chunk_index == 7 and rec.method == 0
    assert rec.payload == b"hello" and rec.session_account == KEYS[1]
    assert session_account_position(rec) == 1


def test_pinocchio_chunk_method0_not_base64_keeps_raw():
    data = bytes.fromhex("04" + "00" * 16 + "01000000" "00") + b"not base64!"
    rec = roundtrip(G2, data)
    assert rec.payload == b"not base64!" and rec.variant == "raw"


def test_pinocchio_chunk_noncanonical_base64_is_raw():
    # "aGk" lacks padding; "aGl=" has non-zero trailing bits: the seed's strict engine refused both.
    for text in (b"aGk", b"aGl="):
        rec = roundtrip(G2, bytes.fromhex("04" + "00" * 16 + "00000000" "00") + text)
        assert rec.payload == text


def test_pinocchio_chunk_other_method_is_verbatim():
    data = bytes.fromhex("04" + "11" * 16 + "02000000" "03") + b"aGVsbG8="
    rec = roundtrip(G2, data)
    assert rec.method == 3 and rec.payload == b"aGVsbG8=" and rec.chunk_index == 2


def test_pinocchio_chunk_string_variant():
    # 04 · id16 · index u32 · String("aGVsbG8=") · method u8
    data = bytes.fromhex("04" + SID.hex() + "05000000" "08000000") + b"aGVsbG8=" + b"\x00"
    rec = roundtrip(G2, data)
    assert rec.variant == "string" and rec.chunk_index == 5 and rec.method == 0 and rec.payload == b"hello"


def test_pinocchio_chunk_needs_a_payload_byte():
    assert isinstance(decode(G2, KEYS, bytes.fromhex("04" + "00" * 16 + "00000000" "00")), NotDecodable)


def test_pinocchio_finalize_with_and_without_root():
    data = bytes.fromhex("05" + SID.hex() + "0a000000")
    rec = roundtrip(G2, data)
    assert (rec.kind, rec.instruction, rec.total_chunks, rec.merkle_root) == ("finalize", "finalize", 10, None)
    rec = roundtrip(G2, data + ROOT)
    assert rec.merkle_root == ROOT and rec.to_json()["merkle_root"] == "ab" * 32


def test_pinocchio_finalize_partial_root_is_ignored_like_the_seed():
    rec = decode(G2, KEYS, bytes.fromhex("05" + SID.hex() + "0a000000") + ROOT[:20])
    assert isinstance(rec, IQRecord) and rec.merkle_root is None and rec.total_chunks == 10


# --- G2 legacy (§4) ------------------------------------------------------------------------------

@pytest.mark.parametrize("tag_bytes, name", [
    (tag("post_hybrid_chunk"), "post_hybrid_chunk"),
    (bytes.fromhex("04f78d7320c33748"), "legacy_chunk_04f78d7320c33748"),
    (bytes.fromhex("044bafd7c25bed4f"), "legacy_chunk_044bafd7c25bed4f"),
])
def test_legacy_chunk(tag_bytes, name):
    data = tag_bytes + SID + struct.pack("<I", 9) + s("aGVsbG8=") + b"\x02"
    rec = roundtrip(G2, data, mode="legacy")
    assert (rec.generation, rec.kind, rec.instruction) == ("g2_legacy", "chunk", name)
    assert rec.chunk_index == 9 and rec.method == 2 and rec.payload == b"hello" and rec.session_account == KEYS[1]


def test_legacy_chunk_without_method_and_raw_fallback():
    data = tag("post_hybrid_chunk") + SID + struct.pack("<I", 0) + s("plain text!")
    rec = roundtrip(G2, data, mode="legacy")
    assert rec.method is None and rec.payload == b"plain text!"


def test_legacy_finalize_hybrid_session():
    data = tag("finalize_hybrid_session") + SID + struct.pack("<I", 3)
    rec = roundtrip(G2, data, mode="legacy")
    assert (rec.kind, rec.session_id, rec.total_chunks, rec.merkle_root) == ("finalize", SID, 3, None)
    assert roundtrip(G2, data + ROOT, mode="legacy").merkle_root == ROOT


def test_legacy_finalize_bundle_has_no_session_id():
    data = tag("finalize_bundle") + struct.pack("<I", 4) + ROOT
    rec = roundtrip(G2, data, mode="legacy")
    assert rec.instruction == "finalize_bundle" and rec.session_id is None
    assert rec.total_chunks == 4 and rec.merkle_root == ROOT and rec.session_account == KEYS[1]


def test_passthrough_tries_pinocchio_then_legacy():
    legacy = tag("finalize_hybrid_session") + SID + struct.pack("<I", 3)
    assert decode(G2, KEYS, legacy, mode="passthrough").generation == "g2_legacy"
    assert isinstance(decode(G2, KEYS, legacy, mode="pinocchio"), NotDecodable)
    assert isinstance(decode(G2, KEYS, legacy), NotDecodable)  # auto on 4jB7 = Pinocchio only
    pin = bytes.fromhex("05" + SID.hex() + "03000000")
    assert decode(G2, KEYS, pin, mode="passthrough").generation == "g2_pinocchio"
    assert isinstance(decode(G2, KEYS, pin, mode="legacy"), NotDecodable)


# --- G3 (§5) -------------------------------------------------------------------------------------

def test_g3_create_session():
    data = tag("create_session") + bytes.fromhex("2a00000000000000")
    rec = roundtrip(G3, data)
    assert (rec.generation, rec.kind, rec.seq, rec.session_account) == ("g3", "create_session", 42, KEYS[2])
    assert session_account_position(rec) == 2


def test_g3_post_chunk_u8_and_python_sdk_u32():
    body = tag("post_chunk") + bytes.fromhex("03000000") + s("iVBORw0KGgo=")
    rec = roundtrip(G3, body + b"\x00\x01")
    assert (rec.kind, rec.chunk_index, rec.method, rec.decode_break) == ("chunk", 3, 0, 1)
    assert rec.payload == b"iVBORw0KGgo=" and rec.session_account == KEYS[1] and rec.variant is None
    rec = roundtrip(G3, body + bytes.fromhex("02000000" "01000000"))
    assert (rec.method, rec.decode_break, rec.variant) == (2, 1, "u32")


def test_g3_post_chunk_tolerates_trailing_bytes():
    data = tag("post_chunk") + bytes.fromhex("03000000") + s("abc") + b"\x00\x00\xff\xff\xff"
    rec = decode(G3, KEYS, data)
    assert isinstance(rec, IQRecord) and rec.payload == b"abc" and (rec.method, rec.decode_break) == (0, 0)


def test_g3_send_code():
    data = tag("send_code") + s("piece-2") + s("Genesis") + b"\x00\x00"
    rec = roundtrip(G3, data)
    assert (rec.generation, rec.kind, rec.instruction) == ("g3", "linked_piece", "send_code")
    assert rec.payload == b"piece-2" and rec.before_tx == "Genesis" and rec.session_account is None
    assert session_account_position(rec) is None


def _meta(**kw) -> str:
    return json.dumps(kw)


def test_g3_user_inventory_code_in_session_upload():
    meta = _meta(filetype="png", method=0, filename="a.png", total_chunks=5)
    data = (tag("user_inventory_code_in") + s(SESSION_PDA) + s(meta)
            + bytes.fromhex("01" "0700000000000000" "05000000"))
    rec = roundtrip(G3, data)
    assert (rec.kind, rec.seq, rec.total_chunks, rec.on_chain_path) == ("finalize", 7, 5, SESSION_PDA)
    assert rec.metadata == json.loads(meta) and rec.metadata_raw == meta
    assert rec.session_account == KEYS[4] and rec.payload is None and rec.tail_tx is None
    assert session_account_position(rec) == 4


def test_g3_finaliser_total_from_metadata_when_option_none():
    meta = _meta(filetype="txt", method=0, filename="a.txt", total_chunks=12)
    rec = roundtrip(G3, tag("user_inventory_code_in") + s(SESSION_PDA) + s(meta) + b"\x00")
    assert rec.total_chunks == 12 and rec.seq is None


def test_g3_finaliser_session_option_wins_over_metadata():
    meta = _meta(total_chunks=12)
    data = tag("user_inventory_code_in") + s("") + s(meta) + b"\x01" + struct.pack("<QI", 1, 3)
    assert roundtrip(G3, data).total_chunks == 3


def test_g3_inline_upload_payload_is_metadata_data():
    meta = _meta(filetype="txt", method=0, filename="hi.txt", total_chunks=1, data="hello inline")
    accounts = KEYS[:4] + [G3] + KEYS[5:6]  # absent optional session account = the program id
    rec = roundtrip(G3, tag("user_inventory_code_in") + s("") + s(meta) + b"\x00", accounts=accounts)
    assert rec.payload == b"hello inline" and rec.session_account is None and rec.on_chain_path == ""


def test_g3_linked_list_finaliser_sets_tail_tx():
    meta = _meta(filetype="txt", method=0, filename="l.txt", total_chunks=2)
    accounts = KEYS[:4] + [G3]
    rec = roundtrip(G3, tag("user_inventory_code_in") + s(TAIL) + s(meta) + b"\x00", accounts=accounts)
    assert rec.tail_tx == TAIL and rec.on_chain_path == TAIL and rec.session_account is None


def test_g3_absent_session_account_falls_back_to_on_chain_path():
    accounts = KEYS[:4] + [G3]
    rec = roundtrip(G3, tag("user_inventory_code_in") + s(SESSION_PDA) + s("{}") + b"\x00", accounts=accounts)
    assert rec.session_account == SESSION_PDA


def test_g3_invalid_metadata_json_kept_raw():
    rec = roundtrip(G3, tag("user_inventory_code_in") + s(SESSION_PDA) + s("{not json") + b"\x00")
    assert rec.metadata is None and rec.metadata_raw == "{not json"
    assert rec.to_json()["metadata"] == "{not json" and rec.total_chunks is None


def test_g3_user_inventory_code_in_for_free_with_proof():
    proof = [bytes([1]) * 32, bytes([2]) * 32]
    data = (tag("user_inventory_code_in_for_free") + s(SESSION_PDA) + s(_meta(total_chunks=1))
            + b"\x01" + struct.pack("<QI", 0, 1) + struct.pack("<I", 2) + b"".join(proof))
    rec = roundtrip(G3, data)
    assert rec.proof == tuple(proof) and rec.seq == 0 and rec.total_chunks == 1 and rec.session_account == KEYS[4]


@pytest.mark.parametrize("name", ["db_code_in", "db_instruction_code_in", "wallet_connection_code_in"])
def test_g3_db_finalisers(name):
    db_root_id, seed = b"my-root", bytes.fromhex("00ff10")
    data = (tag(name) + struct.pack("<I", len(db_root_id)) + db_root_id + struct.pack("<I", 3) + seed
            + s(SESSION_PDA) + s(_meta(total_chunks=2)) + b"\x01" + struct.pack("<QI", 9, 2))
    rec = roundtrip(G3, data)
    assert (rec.instruction, rec.kind, rec.seq, rec.total_chunks) == (name, "finalize", 9, 2)
    assert rec.db_root_id == db_root_id and rec.table_seed == seed and rec.session_account == KEYS[4]


def test_g3_and_g1_share_the_db_code_in_tag_but_not_its_args():
    g1_data = tag("db_code_in") + s("alice") + s(TAIL) + s("image") + s("merkleroot")
    g1_rec = roundtrip(G1, g1_data)
    assert (g1_rec.generation, g1_rec.kind) == ("g1", "linked_index")
    # Read with G3's args, the G1 strings land in db_root_id/table_seed/on_chain_path/metadata and the
    # session option is missing: not decodable, and the reason says where it ran out.
    g3_result = decode(G3, KEYS, g1_data)
    assert isinstance(g3_result, NotDecodable) and "session option tag" in g3_result.reason


# --- G1 (§6) -------------------------------------------------------------------------------------

def test_g1_send_code():
    data = tag("send_code") + s("first piece") + s("Genesis") + b"\x00\x00"
    rec = roundtrip(G1, data)
    assert (rec.generation, rec.kind, rec.payload, rec.before_tx) == ("g1", "linked_piece", b"first piece", "Genesis")


def test_g1_db_code_in():
    data = tag("db_code_in") + s("alice") + s(TAIL) + s("image/png") + s("3xRoot")
    rec = roundtrip(G1, data)
    assert (rec.kind, rec.handle, rec.tail_tx, rec.type_field, rec.offset) == (
        "linked_index", "alice", TAIL, "image/png", "3xRoot")
    assert rec.session_account is None


def test_g1_db_code_in_for_free():
    data = tag("db_code_in_for_free") + s("bob") + s(TAIL) + s("text") + s("r")
    assert roundtrip(G1, data).instruction == "db_code_in_for_free"


def test_to_json_field_names_are_the_fixed_ones():
    rec = decode(G2, KEYS, bytes.fromhex("04" + SID.hex() + "07000000" "00") + b"aGVsbG8=")
    assert list(rec.to_json()) == [
        "decodable", "generation", "kind", "instruction", "session_account", "session_id", "chunk_index",
        "total_chunks", "seq", "method", "decode_break", "merkle_root", "payload_base64", "on_chain_path",
        "metadata", "before_tx", "handle", "tail_tx", "type_field", "offset"]
    assert rec.to_json()["payload_base64"] == base64.b64encode(b"hello").decode()
    assert rec.to_json()["session_id"] == SID.hex()
