"""The reader backend body: the seed's fields with the seed's names, nulls where a shape has no value."""
from __future__ import annotations

import base64
import hashlib

from iq_etl.devchain.servers.reader_backend import SEED_FIELDS as BACKEND_FIELDS
from iq_etl.export.body import SEED_FIELDS, ReadyUpload, build_body
from tests.support.export_rows import COLUMN_NAMES, SESSION_A, SIG_TAIL, upload_row


def _upload(row: dict) -> ReadyUpload:
    return ReadyUpload.from_row(COLUMN_NAMES, [row[c] for c in COLUMN_NAMES])


def test_g2_session_body_has_every_seed_field_with_values():
    joined = b"hello chain"
    row = upload_row(f"{SESSION_A}:00112233445566778899aabbccddeeff", joined, method=3)
    body = build_body(_upload(row))
    assert list(body)[: len(SEED_FIELDS)] == list(SEED_FIELDS) == list(BACKEND_FIELDS)
    assert body["session_pubkey"] == SESSION_A
    assert body["session_id"] == "00112233445566778899aabbccddeeff"
    assert body["total_chunks"] == 3 and body["chunk_count"] == 3
    assert base64.b64decode(body["payload_base64"]) == joined
    assert body["sha256"] == hashlib.sha256(joined).hexdigest()
    assert body["merkle_root"] == "ab" * 32
    assert body["reader_mode"] == "pinocchio"
    assert (body["first_slot"], body["last_slot"], body["finalize_slot"]) == (1000, 1005, 1010)
    assert body["finalize_signature"] == "finsig"
    assert body["compression_method"] == 3
    assert body["program_id"] == row["program_id"] and body["generation"] == "g2_pinocchio"
    assert body["upload_key"] == row["upload_key"] and body["filename"] == "hello.txt"


def test_g3_session_nulls_what_does_not_apply_and_finalize_slot_falls_back():
    row = upload_row("SessPda111111111111111111111111111111111111", b"abc", generation="g3", session_id="",
                     merkle_root="", method=None, finalize_slot=None, finalize_signature="")
    row["session_account"] = "SessPda111111111111111111111111111111111111"
    body = build_body(_upload(row))
    assert body["session_id"] is None and body["merkle_root"] is None
    assert body["reader_mode"] is None  # G2 layouts only
    assert body["compression_method"] is None
    assert body["finalize_signature"] is None
    assert body["finalize_slot"] == body["last_slot"] == 1005


def test_linked_list_without_session_account_has_null_pubkey():
    row = upload_row(SIG_TAIL, b"piece one piece two", generation="g1", session_account="", session_id="",
                     merkle_root="", filename="")
    body = build_body(_upload(row))
    assert body["session_pubkey"] is None and body["filename"] is None
    assert body["reader_mode"] is None and body["generation"] == "g1"


def test_upload_json_body_is_the_same_without_the_payload():
    upload = _upload(upload_row(f"{SESSION_A}:ff", b"data"))
    full, meta = build_body(upload), build_body(upload, include_payload=False)
    assert "payload_base64" not in meta
    assert {k: v for k, v in full.items() if k != "payload_base64"} == meta


def test_idempotency_key_is_upload_key_and_sha256():
    upload = _upload(upload_row(f"{SESSION_A}:ff", b"data"))
    assert upload.idempotency_key == f"{SESSION_A}:ff:{hashlib.sha256(b'data').hexdigest()}"


def test_chain_text_read_as_bytes_is_decoded_leniently():
    row = upload_row(f"{SESSION_A}:ff", b"data")
    row["filename"] = b"caf\xc3\xa9\xff.txt"
    upload = _upload(row)
    assert upload.filename == "café\ufffd.txt"


def test_body_carries_the_verification_and_a_mismatch_is_never_sendable():
    from iq_etl.export.body import verification_problem

    row = upload_row(SIG_TAIL, b"piece one piece two", generation="g1", session_account="", session_id="",
                     merkle_root="", verification="verified",
                     verification_reason="G1 Merkle root of 2 piece(s) equals db_code_in offset")
    body = build_body(_upload(row))
    assert body["verification"] == "verified" and body["verification_reason"].startswith("G1 Merkle root")
    assert verification_problem("verified", "", SIG_TAIL) is None
    assert verification_problem("unverifiable", "G2 merkle_root algorithm is not public", SIG_TAIL) is None
    refused = verification_problem("mismatch", "G1 Merkle root of the 2 piece(s) is X but db_code_in offset is Y",
                                   SIG_TAIL)
    assert refused is not None and refused.startswith("verification mismatch: G1 Merkle root") \
        and refused.endswith("never exported")
    assert verification_problem("", "", SIG_TAIL) is not None   # an unknown verdict is not sent either
