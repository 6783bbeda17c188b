"""Typed results of decoding one IQ instruction. Shared by decoders, encoders, ingest and devchain."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

GENERATIONS = ("g1", "g2_pinocchio", "g2_legacy", "g3")
KINDS = ("chunk", "finalize", "create_session", "linked_piece", "linked_index")


@dataclass(frozen=True)
class IQRecord:
    """One decoded IQ instruction. Fields that do not apply are None.

    `payload` is the bytes this instruction contributes to the file (after the seed's base64 rule
    for G2 method 0; verbatim chunk text for G3; the piece for linked lists; metadata.data for
    inline G3 uploads). `metadata` is the parsed JSON object when valid, else None; `metadata_raw`
    always keeps the text as sent on chain.
    """

    generation: str
    kind: str
    instruction: str
    session_account: str | None = None
    session_id: bytes | None = None
    chunk_index: int | None = None
    total_chunks: int | None = None
    seq: int | None = None
    method: int | None = None
    decode_break: int | None = None
    merkle_root: bytes | None = None
    payload: bytes | None = None
    on_chain_path: str | None = None
    metadata: Any = None
    metadata_raw: str | None = None
    before_tx: str | None = None
    handle: str | None = None
    tail_tx: str | None = None
    type_field: str | None = None
    offset: str | None = None
    # Encoding details a faithful re-encoder needs (e.g. string-prefixed Pinocchio variant,
    # u32 method from the Python SDK). Not part of the decoded meaning.
    variant: str | None = field(default=None, compare=False)
    # G3 arguments that locate a file in an IQ database but are not part of the file itself; kept so
    # encode() can rebuild the instruction (not in to_json's output, whose fields are fixed).
    db_root_id: bytes | None = None       # db_code_in, db_instruction_code_in, wallet_connection_code_in
    table_seed: bytes | None = None       # table_seed; connection_seed for wallet_connection_code_in
    proof: tuple[bytes, ...] | None = None  # user_inventory_code_in_for_free: Vec<[u8; 32]>

    def to_json(self) -> dict[str, Any]:
        """The `iq-etl decode --json` shape. An interface: field names are fixed (test_protocol_cli)."""
        return {
            "decodable": True,
            "generation": self.generation,
            "kind": self.kind,
            "instruction": self.instruction,
            "session_account": self.session_account,
            "session_id": self.session_id.hex() if self.session_id is not None else None,
            "chunk_index": self.chunk_index,
            "total_chunks": self.total_chunks,
            "seq": self.seq,
            "method": self.method,
            "decode_break": self.decode_break,
            "merkle_root": self.merkle_root.hex() if self.merkle_root is not None else None,
            "payload_base64": base64.b64encode(self.payload).decode() if self.payload is not None else None,
            "on_chain_path": self.on_chain_path,
            "metadata": self.metadata if self.metadata is not None else self.metadata_raw,
            "before_tx": self.before_tx,
            "handle": self.handle,
            "tail_tx": self.tail_tx,
            "type_field": self.type_field,
            "offset": self.offset,
        }


@dataclass(frozen=True)
class NotDecodable:
    """An instruction of an IQ program that no decoder accepted, with the reason (stored, not dropped)."""

    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"decodable": False, "reason": self.reason}
