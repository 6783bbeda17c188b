"""G2 "HybridV2 / Pinocchio" (4jB7…): 1-byte tags (docs/protocol.md §3, the seed plugin's default).

  chunk    04 · session_id[16] · chunk_index u32 · method u8 · payload to the end (≥ 1 byte)
           or the older TS SDK form 04 · session_id[16] · chunk_index u32 · String · method u8
  finalize 05 · session_id[16] · total_chunks u32 · optional merkle_root[32]

Which chunk form applies is decided from the bytes alone: the String form when the u32 after the
index is exactly the number of bytes left minus 4 (prefix) minus 1 (method), else the seed's form.
A seed-form chunk looks like the String form only when its method byte and first three payload
bytes spell that exact length (payload starting with `n 00 00` and method = low byte), which base64
text never does; encode() refuses such records instead of writing bytes that decode differently.
Method 0 payloads are base64-decoded (canonical base64, raw fallback) in both forms, as the seed
did for its form. The session account is accounts[1] (seed rule; the real order is not public).
"""
from __future__ import annotations

from typing import Collection, Sequence

from iq_etl.protocol import borsh as w
from iq_etl.protocol.borsh import DecodeError, Reader
from iq_etl.protocol.common import V_RAW, V_STRING, has_token, pick_session, seed_base64, seed_base64_encode, variant_of
from iq_etl.protocol.records import IQRecord

GENERATION = "g2_pinocchio"
CHUNK_TAG = 0x04
FINALIZE_TAG = 0x05
SESSION_POSITION = 1
_HEADER = 1 + 16 + 4  # tag, session id, index/total


def decode_chunk(data: bytes, accounts: Sequence[str], session_pdas: Collection[str]) -> IQRecord:
    if len(data) < _HEADER + 1:
        raise DecodeError(f"pinocchio chunk: {len(data)} bytes, needs at least {_HEADER + 2}")
    session_id = data[1:17]
    chunk_index = int.from_bytes(data[17:21], "little")
    left = len(data) - _HEADER
    string_form = left >= 5 and int.from_bytes(data[21:25], "little") == left - 5
    if string_form:
        text = data[25:-1]
        method = data[-1]
    else:
        method = data[21]
        text = data[22:]
        if not text:
            raise DecodeError("pinocchio chunk: empty payload at offset 22")
    raw = False
    payload = text
    if method == 0:
        payload, decoded = seed_base64(text)
        raw = not decoded
    return IQRecord(
        generation=GENERATION, kind="chunk", instruction="chunk",
        session_account=pick_session(accounts, SESSION_POSITION, session_pdas),
        session_id=session_id, chunk_index=chunk_index, method=method, payload=payload,
        variant=variant_of(V_STRING if string_form else None, V_RAW if raw else None),
    )


def decode_finalize(data: bytes, accounts: Sequence[str], session_pdas: Collection[str]) -> IQRecord:
    r = Reader(data, 1)
    session_id = r.fixed(16, "pinocchio finalize session_id")
    total_chunks = r.u32("pinocchio finalize total_chunks")
    # Seed rule: a root is present when 32 more bytes are; shorter or longer tails are ignored
    # (the raw instruction data is stored next to the record, so nothing is lost).
    merkle_root = r.fixed(32, "merkle_root") if r.remaining() >= 32 else None
    return IQRecord(
        generation=GENERATION, kind="finalize", instruction="finalize",
        session_account=pick_session(accounts, SESSION_POSITION, session_pdas),
        session_id=session_id, total_chunks=total_chunks, merkle_root=merkle_root,
    )


DECODERS = {CHUNK_TAG: decode_chunk, FINALIZE_TAG: decode_finalize}


def decode(data: bytes, accounts: Sequence[str], session_pdas: Collection[str]) -> IQRecord:
    if not data:
        raise DecodeError("empty instruction data")
    decoder = DECODERS.get(data[0])
    if decoder is None:
        raise DecodeError(f"pinocchio: unknown tag 0x{data[0]:02x}")
    return decoder(data, accounts, session_pdas)


def encode(rec: IQRecord) -> bytes:
    if rec.instruction == "chunk":
        method = w.check_u8(rec.method, "method")
        if rec.payload is None:
            raise ValueError("pinocchio chunk: payload is required")
        text = rec.payload
        if method == 0:
            text = seed_base64_encode(rec.payload, has_token(rec.variant, V_RAW), "pinocchio chunk")
        head = bytes((CHUNK_TAG,)) + w.fixed(rec.session_id, 16, "session_id") + w.u32(rec.chunk_index, "chunk_index")
        if has_token(rec.variant, V_STRING):
            return head + w.bytes_(text, "chunk") + bytes((method,))
        return head + bytes((method,)) + text
    if rec.instruction == "finalize":
        out = bytes((FINALIZE_TAG,)) + w.fixed(rec.session_id, 16, "session_id") + w.u32(rec.total_chunks, "total_chunks")
        if rec.merkle_root is not None:
            out += w.fixed(rec.merkle_root, 32, "merkle_root")
        return out
    raise ValueError(f"g2_pinocchio has no instruction {rec.instruction!r}")
