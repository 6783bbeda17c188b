"""The JSON body the reader backend receives, built from one `iq.sessions_ready_to_export` row.

Field names follow the seed plugin (docs/protocol.md §8) so the backend sees what it always saw; fields
that do not apply to an upload's shape (a G3 session has no session_id, a linked list no merkle
root...) are null. iq-etl adds `sha256`, `program_id`, `generation`, `verification` (verified /
unverifiable: docs/protocol.md, "Verification") and a few descriptive fields; extra fields are
accepted by the backend.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, fields
from typing import Any, Sequence

# The columns this module reads from the mart (the export contract: docs/DECISIONS.md, "Upload keys and
# the export contract").
UPLOAD_COLUMNS: tuple[str, ...] = (
    "upload_key", "generation", "program_id", "session_account", "session_id", "total_chunks",
    "chunk_count", "merkle_root", "method", "first_slot", "last_slot", "finalize_slot",
    "finalize_signature", "payload_base64", "sha256", "payload_length", "file_base64", "file_sha256",
    "decode_rule", "filename", "filetype", "metadata", "verification", "verification_reason",
)
# Free text from chain metadata: read as bytes (it may not be valid UTF-8) and decoded leniently.
TEXT_FROM_CHAIN: tuple[str, ...] = ("filename", "filetype", "metadata")

# `verification` values (docs/protocol.md, "Verification"): the mart's verdict on whether the rebuilt
# bytes are the ones the chain commits to. A MISMATCH is never sent.
VERIFIED, MISMATCH, UNVERIFIABLE = "verified", "mismatch", "unverifiable"
VERIFICATIONS: tuple[str, ...] = (VERIFIED, MISMATCH, UNVERIFIABLE)

# The seed's `reader_mode` named the G2 instruction layout. Other generations have no such mode.
READER_MODE_BY_GENERATION = {"g2_pinocchio": "pinocchio", "g2_legacy": "legacy"}

# Fields of the seed's body, in its order (docs/protocol.md §8).
SEED_FIELDS: tuple[str, ...] = (
    "session_pubkey", "session_id", "total_chunks", "chunk_count", "payload_base64", "merkle_root",
    "reader_mode", "first_slot", "last_slot", "finalize_slot", "finalize_signature", "compression_method",
)


@dataclass(frozen=True)
class ReadyUpload:
    """One complete upload as the mart describes it (payload included)."""

    upload_key: str
    generation: str
    program_id: str
    session_account: str
    session_id: str
    total_chunks: int
    chunk_count: int
    merkle_root: str
    method: int | None
    first_slot: int
    last_slot: int
    finalize_slot: int | None
    finalize_signature: str
    payload_base64: str
    sha256: str
    payload_length: int
    file_base64: str
    file_sha256: str
    decode_rule: str
    filename: str
    filetype: str
    metadata: str
    verification: str
    verification_reason: str

    @classmethod
    def from_row(cls, columns: Sequence[str], row: Sequence[Any]) -> "ReadyUpload":
        values = dict(zip(columns, row))
        missing = [f.name for f in fields(cls) if f.name not in values]
        if missing:
            raise ValueError(f"sessions_ready_to_export row lacks column(s) {', '.join(missing)}")
        for name in TEXT_FROM_CHAIN:
            if isinstance(values[name], (bytes, bytearray)):
                values[name] = bytes(values[name]).decode("utf-8", errors="replace")
        return cls(**{f.name: values[f.name] for f in fields(cls)})

    @property
    def idempotency_key(self) -> str:
        """Stable across runs and processes: the same upload with the same content has the same key."""
        return f"{self.upload_key}:{self.sha256}"


def payload_problem(upload: ReadyUpload) -> str | None:
    """Why `payload_base64` cannot be sent as this upload's content (not base64, or its bytes do
    not hash to `sha256` / have another length), or None when it is consistent."""
    try:
        joined = base64.b64decode(upload.payload_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"payload_base64 of {upload.upload_key} is not base64: {exc}"
    if len(joined) != upload.payload_length or hashlib.sha256(joined).hexdigest() != upload.sha256:
        return f"payload of {upload.upload_key} does not match its sha256/payload_length; not sent"
    return None


def verification_problem(verification: str, reason: str, upload_key: str) -> str | None:
    """Why an upload must not be sent because of its verification (a mismatch: its bytes are not
    what the chain commits to), or None. An unknown value is refused too: the mart and this code
    disagree about the contract."""
    if verification == MISMATCH:
        return f"verification mismatch: {reason or 'the rebuilt bytes are not what the chain commits to'}; never exported"
    if verification not in VERIFICATIONS:
        return f"unknown verification {verification!r} for {upload_key}; not sent"
    return None


def _or_none(text: str | None) -> str | None:
    return text if text else None


def build_body(upload: ReadyUpload, include_payload: bool = True) -> dict[str, Any]:
    """The seed-compatible body (plus iq-etl's fields). `include_payload=False` gives the file
    target's `upload.json` (everything but `payload_base64`)."""
    body: dict[str, Any] = {
        "session_pubkey": _or_none(upload.session_account),
        "session_id": _or_none(upload.session_id),
        "total_chunks": int(upload.total_chunks),
        "chunk_count": int(upload.chunk_count),
        "payload_base64": upload.payload_base64,
        "merkle_root": _or_none(upload.merkle_root),
        "reader_mode": READER_MODE_BY_GENERATION.get(upload.generation),
        "first_slot": int(upload.first_slot),
        "last_slot": int(upload.last_slot),
        # The seed fell back to the last chunk's slot when no finalize was seen.
        "finalize_slot": int(upload.finalize_slot if upload.finalize_slot is not None else upload.last_slot),
        "finalize_signature": _or_none(upload.finalize_signature),
        "compression_method": None if upload.method is None else int(upload.method),
        # iq-etl's additions.
        "sha256": upload.sha256,
        "program_id": upload.program_id,
        "generation": upload.generation,
        "upload_key": upload.upload_key,
        "payload_length": int(upload.payload_length),
        "file_sha256": _or_none(upload.file_sha256),
        "decode_rule": _or_none(upload.decode_rule),
        "filename": _or_none(upload.filename),
        "filetype": _or_none(upload.filetype),
        # verified / unverifiable (a mismatch is never sent) and why.
        "verification": upload.verification,
        "verification_reason": _or_none(upload.verification_reason),
    }
    if not include_payload:
        del body["payload_base64"]
    return body
