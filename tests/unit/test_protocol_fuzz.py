"""Robustness: no input makes a decoder raise. Random bytes, bytes behind every known tag, valid
encodings truncated or mutated: the result is a record or a NotDecodable with a reason, never an
exception (and never the registry's safety net, which would mean a decoder bug). A decoded record
always re-encodes to bytes that decode to the same record."""
from __future__ import annotations

import hashlib
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iq_etl.protocol import IQRecord, NotDecodable, decode, encode

G1 = "FG5nDUjz4S1FBs2rZrXsKsa7J34e21WF17F8nFL9uwWi"
G2 = "4jB7tZybufNfgs8HRj9DiSCMYfEqb8jWkxKcnZnA1vBt"
G3 = "9KLLchQVJpGkw4jPuUmnvqESdR7mtNCYr3qS4iQLabs"
UNKNOWN = "Unknown111111111111111111111111111111111111"
ACCOUNTS = [f"Acct{i:02d}" + "1" * 38 for i in range(11)]
EXAMPLES = int(os.environ.get("IQ_FUZZ_EXAMPLES", "3000"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

NAMES = ["post_hybrid_chunk", "finalize_hybrid_session", "finalize_bundle", "create_session", "post_chunk",
         "send_code", "user_inventory_code_in", "user_inventory_code_in_for_free", "db_code_in",
         "db_instruction_code_in", "wallet_connection_code_in", "db_code_in_for_free"]
TAGS = [hashlib.sha256(b"global:" + n.encode()).digest()[:8] for n in NAMES]
TAGS += [bytes.fromhex("04f78d7320c33748"), bytes.fromhex("044bafd7c25bed4f"), b"\x04", b"\x05"]


def s(text: bytes) -> bytes:
    return struct.pack("<I", len(text)) + text


# Valid instructions of every kind (from the spec), to truncate and mutate.
SID = bytes(range(16))
SEEDS = [
    b"\x04" + SID + struct.pack("<IB", 1, 0) + b"aGVsbG8=",
    b"\x04" + SID + struct.pack("<I", 1) + s(b"aGVsbG8=") + b"\x00",
    b"\x05" + SID + struct.pack("<I", 3) + b"\xab" * 32,
    TAGS[0] + SID + struct.pack("<I", 2) + s(b"aGVsbG8=") + b"\x01",
    TAGS[1] + SID + struct.pack("<I", 3) + b"\xcd" * 32,
    TAGS[2] + struct.pack("<I", 3) + b"\xcd" * 32,
    TAGS[3] + struct.pack("<Q", 5),
    TAGS[4] + struct.pack("<I", 1) + s(b"chunk text") + b"\x00\x00",
    TAGS[4] + struct.pack("<I", 1) + s(b"chunk text") + struct.pack("<II", 0, 0),
    TAGS[5] + s(b"piece") + s(b"Genesis") + b"\x00\x00",
    TAGS[6] + s(b"S" * 44) + s(b'{"total_chunks": 2, "data": "x"}') + b"\x01" + struct.pack("<QI", 1, 2),
    TAGS[7] + s(b"") + s(b'{"data": "inline"}') + b"\x00" + struct.pack("<I", 1) + b"\x01" * 32,
    TAGS[8] + s(b"root") + s(b"tbl") + s(b"5" * 88) + s(b"{}") + b"\x00",
    TAGS[9] + s(b"root") + s(b"tbl") + s(b"S" * 44) + s(b"[1,2]") + b"\x01" + struct.pack("<QI", 2, 9),
    TAGS[10] + s(b"root") + s(b"conn") + s(b"") + s(b"not json") + b"\x00",
    TAGS[11] + s(b"alice") + s(b"5" * 88) + s(b"image") + s(b"offset"),
    TAGS[8] + s(b"alice") + s(b"5" * 88) + s(b"image") + s(b"offset"),
]


@st.composite
def mutated(draw):
    seed = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(seed) - 1))
        seed[pos] = draw(st.integers(0, 255))
    return bytes(seed)


@st.composite
def truncated(draw):
    seed = draw(st.sampled_from(SEEDS))
    return seed[:draw(st.integers(0, len(seed)))]


instruction_bytes = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda t, rest: t + rest, st.sampled_from(TAGS), st.binary(max_size=120)),
    truncated(),
    mutated(),
    st.builds(lambda seed, extra: seed + extra, st.sampled_from(SEEDS), st.binary(min_size=1, max_size=40)),
)


def check(program_id: str, data: bytes, mode: str = "auto") -> None:
    result = decode(program_id, ACCOUNTS, data, mode=mode)
    if isinstance(result, NotDecodable):
        assert result.reason and not result.reason.startswith("decoder error"), result.reason
        return
    assert isinstance(result, IQRecord)
    again = decode(program_id, ACCOUNTS, encode(result), mode=mode)
    assert again == result and again.variant == result.variant


@FUZZ
@given(instruction_bytes)
def test_fuzz_g1(data):
    check(G1, data)


@FUZZ
@given(instruction_bytes)
def test_fuzz_g2_pinocchio(data):
    check(G2, data, "pinocchio")


@FUZZ
@given(instruction_bytes)
def test_fuzz_g2_legacy(data):
    check(G2, data, "legacy")


@FUZZ
@given(instruction_bytes)
def test_fuzz_g3(data):
    check(G3, data)


@FUZZ
@given(instruction_bytes)
def test_fuzz_unknown_program_passthrough(data):
    check(UNKNOWN, data)


def test_every_truncation_of_every_seed_is_handled():
    programs = [(G1, "auto"), (G2, "passthrough"), (G3, "auto"), (UNKNOWN, "auto")]
    for seed in SEEDS:
        for cut in range(len(seed) + 1):
            for program_id, mode in programs:
                check(program_id, seed[:cut], mode)
