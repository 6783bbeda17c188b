"""G3 "code_in" (9KLL…, current mainnet), Anchor (TS `idl/code_in.json`; docs/protocol.md §5).

  create_session(seq u64)                                   session = accounts[2]
  post_chunk(index u32, chunk String, method u8, decode_break u8)   session = accounts[1]
  send_code(code String, before_tx String, method u8, decode_break u8)   linked_piece (linked.py)
  code-in finalisers, session = accounts[4]:
    user_inventory_code_in(on_chain_path, metadata, Option<SessionFinalize>)
    user_inventory_code_in_for_free(on_chain_path, metadata, Option<SessionFinalize>, proof Vec<[u8;32]>)
    db_code_in / db_instruction_code_in(db_root_id bytes, table_seed bytes, on_chain_path, metadata, Option)
    wallet_connection_code_in(db_root_id bytes, connection_seed bytes, on_chain_path, metadata, Option)
  SessionFinalize = {seq u64, total_chunks u32}

Rules chosen here (docs/protocol.md leaves them open):
- post_chunk payload = the chunk string's UTF-8 bytes verbatim (the SDK joins the text; no base64).
- The Python SDK's u32 method/decode_break pair is recognised when exactly 8 bytes follow the string
  and the upper bytes are zero; the first byte of each is used and `variant` records "u32".
- Strings must be valid UTF-8 (the program's deserializer rejects anything else): otherwise the
  instruction is not decodable, with the offset in the reason.
- Finalisers: kind "finalize". total_chunks and seq come from SessionFinalize when Some; otherwise
  total_chunks is metadata.total_chunks when that is an integer in u32 range. metadata is the parsed
  JSON (None when not valid JSON; NaN/Infinity count as invalid) and metadata_raw always the text.
  on_chain_path: empty → inline upload, payload = metadata.data as UTF-8 when it is a string;
  80+ characters → linked-list tail, tail_tx = on_chain_path; otherwise a session PDA.
- The finaliser's session is accounts[4] unless that is the program id itself (an absent optional
  account, TS `toAccountMeta`); then a short on_chain_path (the session PDA in base58) is used.
"""
from __future__ import annotations

import json
from typing import Collection, Sequence

from iq_etl.protocol import borsh as w
from iq_etl.protocol.anchor import anchor_tag
from iq_etl.protocol.borsh import U32_MAX, DecodeError, Reader
from iq_etl.protocol.common import V_U32, pick_session, read_method_trailer, variant_of, write_method_trailer
from iq_etl.protocol.linked import SEND_CODE_TAG, decode_send_code, encode_send_code
from iq_etl.protocol.records import IQRecord

GENERATION = "g3"
LINKED_TAIL_MIN_CHARS = 80
CREATE_SESSION_POSITION = 2
POST_CHUNK_POSITION = 1
FINALISER_SESSION_POSITION = 4

# name → (name of the leading seed bytes argument or None, has a proof vector)
FINALISERS: dict[str, tuple[str | None, bool]] = {
    "user_inventory_code_in": (None, False),
    "user_inventory_code_in_for_free": (None, True),
    "db_code_in": ("table_seed", False),
    "db_instruction_code_in": ("table_seed", False),
    "wallet_connection_code_in": ("connection_seed", False),
}
CREATE_SESSION_TAG = anchor_tag("create_session")
POST_CHUNK_TAG = anchor_tag("post_chunk")
_FINALISER_TAGS = {anchor_tag(name): name for name in FINALISERS}


def _reject_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def parse_metadata(text: str):
    """The parsed metadata JSON, or None when it is not valid (strict) JSON."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None


def _metadata_total_chunks(metadata) -> int | None:
    if isinstance(metadata, dict):
        value = metadata.get("total_chunks")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32_MAX:
            return value
    return None


def _inline_payload(metadata) -> bytes | None:
    if isinstance(metadata, dict) and isinstance(metadata.get("data"), str):
        try:
            return metadata["data"].encode("utf-8")
        except UnicodeEncodeError:  # lone surrogate from a \ud800 escape: not representable as bytes
            return None
    return None


def _decode_create_session(data, program_id, accounts, session_pdas) -> IQRecord:
    seq = Reader(data, 8).u64("create_session seq")
    return IQRecord(generation=GENERATION, kind="create_session", instruction="create_session",
                    session_account=pick_session(accounts, CREATE_SESSION_POSITION, session_pdas), seq=seq)


def _decode_post_chunk(data, program_id, accounts, session_pdas) -> IQRecord:
    r = Reader(data, 8)
    index = r.u32("post_chunk index")
    chunk = r.string("post_chunk chunk")
    method, decode_break, u32_form = read_method_trailer(r, "post_chunk")
    return IQRecord(
        generation=GENERATION, kind="chunk", instruction="post_chunk",
        session_account=pick_session(accounts, POST_CHUNK_POSITION, session_pdas),
        chunk_index=index, payload=chunk.encode("utf-8"), method=method, decode_break=decode_break,
        variant=variant_of(V_U32 if u32_form else None),
    )


def _finaliser_session(accounts, program_id, session_pdas, on_chain_path: str) -> str | None:
    if session_pdas:
        for key in accounts:
            if key in session_pdas:
                return key
    if len(accounts) > FINALISER_SESSION_POSITION and accounts[FINALISER_SESSION_POSITION] != program_id:
        return accounts[FINALISER_SESSION_POSITION]
    if 0 < len(on_chain_path) < LINKED_TAIL_MIN_CHARS:
        return on_chain_path
    return None


def _decode_finaliser(name: str, data, program_id, accounts, session_pdas) -> IQRecord:
    seed_arg, has_proof = FINALISERS[name]
    r = Reader(data, 8)
    db_root_id = table_seed = None
    if seed_arg is not None:
        db_root_id = r.bytes_(f"{name} db_root_id")
        table_seed = r.bytes_(f"{name} {seed_arg}")
    on_chain_path = r.string(f"{name} on_chain_path")
    metadata_raw = r.string(f"{name} metadata")
    seq = total_chunks = None
    if r.option_tag(f"{name} session"):
        seq = r.u64(f"{name} session.seq")
        total_chunks = r.u32(f"{name} session.total_chunks")
    proof = r.vec_fixed(32, f"{name} proof") if has_proof else None
    metadata = parse_metadata(metadata_raw)
    if total_chunks is None:
        total_chunks = _metadata_total_chunks(metadata)
    payload = _inline_payload(metadata) if on_chain_path == "" else None
    tail_tx = on_chain_path if len(on_chain_path) >= LINKED_TAIL_MIN_CHARS else None
    return IQRecord(
        generation=GENERATION, kind="finalize", instruction=name,
        session_account=_finaliser_session(accounts, program_id, session_pdas, on_chain_path),
        total_chunks=total_chunks, seq=seq, payload=payload, on_chain_path=on_chain_path,
        metadata=metadata, metadata_raw=metadata_raw, tail_tx=tail_tx,
        db_root_id=db_root_id, table_seed=table_seed, proof=proof,
    )


def decode(data: bytes, program_id: str, accounts: Sequence[str], session_pdas: Collection[str]) -> IQRecord:
    tag = data[:8]
    if tag == POST_CHUNK_TAG:
        return _decode_post_chunk(data, program_id, accounts, session_pdas)
    name = _FINALISER_TAGS.get(tag)
    if name is not None:
        return _decode_finaliser(name, data, program_id, accounts, session_pdas)
    if tag == CREATE_SESSION_TAG:
        return _decode_create_session(data, program_id, accounts, session_pdas)
    if tag == SEND_CODE_TAG:
        return decode_send_code(GENERATION, data)
    raise DecodeError(f"g3: tag {tag.hex() or '(empty)'} is not a file instruction")


def encode(rec: IQRecord) -> bytes:
    name = rec.instruction
    if name == "post_chunk":
        if not isinstance(rec.payload, (bytes, bytearray)):
            raise ValueError("post_chunk: payload is required")
        try:
            chunk = bytes(rec.payload).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("post_chunk: payload must be UTF-8 text (it is a Borsh String)") from None
        return (POST_CHUNK_TAG + w.u32(rec.chunk_index, "chunk_index") + w.string(chunk, "chunk")
                + write_method_trailer(rec.method, rec.decode_break, rec.variant))
    if name == "create_session":
        return CREATE_SESSION_TAG + w.u64(rec.seq, "seq")
    if name == "send_code":
        return encode_send_code(rec)
    if name in FINALISERS:
        seed_arg, has_proof = FINALISERS[name]
        out = anchor_tag(name)
        if seed_arg is not None:
            out += w.bytes_(rec.db_root_id, "db_root_id") + w.bytes_(rec.table_seed, seed_arg)
        metadata_raw = rec.metadata_raw
        if metadata_raw is None:
            metadata_raw = json.dumps(rec.metadata, separators=(",", ":"))
        out += w.string(rec.on_chain_path, "on_chain_path") + w.string(metadata_raw, "metadata")
        if rec.seq is None:
            out += b"\0"
        else:
            out += b"\1" + w.u64(rec.seq, "seq") + w.u32(rec.total_chunks, "total_chunks")
        if has_proof:
            proof = rec.proof if rec.proof is not None else ()
            out += w.u32(len(proof), "proof count") + b"".join(w.fixed(p, 32, "proof item") for p in proof)
        return out
    raise ValueError(f"g3 has no instruction {name!r}")
