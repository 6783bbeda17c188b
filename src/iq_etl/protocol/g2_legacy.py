"""G2-legacy Anchor hybrid program (id not public): docs/protocol.md §4, byte-for-byte the seed's rules.

  post_hybrid_chunk (+ two unnamed tags the seed also accepted)
      tag[8] · session_id[16] · chunk_index u32 · chunk String · optional method u8
  finalize_hybrid_session  tag[8] · session_id[16] · total_chunks u32 · optional merkle_root[32]
  finalize_bundle          tag[8] · total_chunks u32 · optional merkle_root[32]   (no session id)

The chunk text is base64-decoded (canonical, raw fallback) whatever the method, as the seed did; its
bytes are kept as they are (no UTF-8 check: payload is bytes, so nothing is lost). Like the seed, a
chunk shorter than 33 bytes is refused and bytes after the method / after a 32-byte root are ignored.
The session is accounts[1] for all three (finalize_bundle has no session id: the account is the
session, as in the seed).
"""
from __future__ import annotations

from typing import Collection, Sequence

from iq_etl.protocol import borsh as w
from iq_etl.protocol.anchor import anchor_tag
from iq_etl.protocol.borsh import DecodeError, Reader
from iq_etl.protocol.common import V_RAW, has_token, pick_session, seed_base64, seed_base64_encode, variant_of
from iq_etl.protocol.records import IQRecord

GENERATION = "g2_legacy"
SESSION_POSITION = 1
# Names for the two tags without a known IDL name (they start with 0x04 and may be Pinocchio
# chunks the seed misread; docs/protocol.md §4). The name carries the tag so encode() can rebuild it.
CHUNK_TAGS = {
    anchor_tag("post_hybrid_chunk"): "post_hybrid_chunk",
    bytes.fromhex("04f78d7320c33748"): "legacy_chunk_04f78d7320c33748",
    bytes.fromhex("044bafd7c25bed4f"): "legacy_chunk_044bafd7c25bed4f",
}
FINALIZE_HYBRID_TAG = anchor_tag("finalize_hybrid_session")
FINALIZE_BUNDLE_TAG = anchor_tag("finalize_bundle")
TAG_BY_NAME = {name: tag for tag, name in CHUNK_TAGS.items()}
TAG_BY_NAME["finalize_hybrid_session"] = FINALIZE_HYBRID_TAG
TAG_BY_NAME["finalize_bundle"] = FINALIZE_BUNDLE_TAG
_MIN_CHUNK = 8 + 16 + 4 + 4 + 1  # the seed's minimum


def _decode_chunk(name: str, data: bytes, accounts: Sequence[str], session_pdas: Collection[str]) -> IQRecord:
    if len(data) < _MIN_CHUNK:
        raise DecodeError(f"{name}: {len(data)} bytes, needs at least {_MIN_CHUNK}")
    r = Reader(data, 8)
    session_id = r.fixed(16, f"{name} session_id")
    chunk_index = r.u32(f"{name} chunk_index")
    text = r.bytes_(f"{name} chunk")
    method = r.u8(f"{name} method") if r.remaining() else None
    payload, decoded = seed_base64(text)
    return IQRecord(
        generation=GENERATION, kind="chunk", instruction=name,
        session_account=pick_session(accounts, SESSION_POSITION, session_pdas),
        session_id=session_id, chunk_index=chunk_index, method=method, payload=payload,
        variant=variant_of(None if decoded else V_RAW),
    )


def _decode_finalize(name: str, data: bytes, accounts: Sequence[str], session_pdas: Collection[str],
                     with_session_id: bool) -> IQRecord:
    r = Reader(data, 8)
    session_id = r.fixed(16, f"{name} session_id") if with_session_id else None
    total_chunks = r.u32(f"{name} total_chunks")
    merkle_root = r.fixed(32, "merkle_root") if r.remaining() >= 32 else None
    return IQRecord(
        generation=GENERATION, kind="finalize", instruction=name,
        session_account=pick_session(accounts, SESSION_POSITION, session_pdas),
        session_id=session_id, total_chunks=total_chunks, merkle_root=merkle_root,
    )


def decode(data: bytes, accounts: Sequence[str], session_pdas: Collection[str]) -> IQRecord:
    tag = data[:8]
    name = CHUNK_TAGS.get(tag)
    if name is not None:
        return _decode_chunk(name, data, accounts, session_pdas)
    if tag == FINALIZE_HYBRID_TAG:
        return _decode_finalize("finalize_hybrid_session", data, accounts, session_pdas, True)
    if tag == FINALIZE_BUNDLE_TAG:
        return _decode_finalize("finalize_bundle", data, accounts, session_pdas, False)
    raise DecodeError(f"legacy: unknown tag {tag.hex() or '(empty)'}")


def encode(rec: IQRecord) -> bytes:
    tag = TAG_BY_NAME.get(rec.instruction)
    if tag is None:
        raise ValueError(f"g2_legacy has no instruction {rec.instruction!r}")
    if rec.kind == "chunk":
        if rec.payload is None:
            raise ValueError(f"{rec.instruction}: payload is required")
        text = seed_base64_encode(rec.payload, has_token(rec.variant, V_RAW), rec.instruction)
        out = tag + w.fixed(rec.session_id, 16, "session_id") + w.u32(rec.chunk_index, "chunk_index") + w.bytes_(text, "chunk")
        if rec.method is not None:
            out += w.u8(rec.method, "method")
        return out
    out = tag
    if rec.instruction == "finalize_hybrid_session":
        out += w.fixed(rec.session_id, 16, "session_id")
    elif rec.session_id is not None:
        raise ValueError("finalize_bundle carries no session_id")
    out += w.u32(rec.total_chunks, "total_chunks")
    if rec.merkle_root is not None:
        out += w.fixed(rec.merkle_root, 32, "merkle_root")
    return out
