"""Named row types of the raw tables, one field per column in migration order. Column lists and the
dedup key derive from them, never from positions.

NamedTuples because rows are built on the ingest hot path (one per IQ instruction): `_make` over a
list costs about what the plain list did (bench/bench_ingest.py), and the warehouse client takes
them as they are."""
from __future__ import annotations

import hashlib
from typing import NamedTuple


class RawInstruction(NamedTuple):
    """One row of `iq.raw_instructions` (002_raw_instructions.sql): an IQ instruction a decoder accepted."""

    slot: int
    block_time: int | None
    signature: str
    tx_index: int
    ix_index: int
    inner_index: int
    stack_height: int | None
    program_id: str
    generation: str
    kind: str
    instruction: str
    session_account: str
    session_id: str
    chunk_index: int | None
    total_chunks: int | None
    seq: int | None
    method: int | None
    decode_break: int | None
    merkle_root: str
    payload: bytes
    on_chain_path: str
    metadata: str
    before_tx: str
    handle: str
    tail_tx: str
    type_field: str
    offset: str
    accounts: list[str]
    data: bytes
    tx_status: str
    tx_error: str
    source: str
    run_id: str


class UndecodedInstruction(NamedTuple):
    """One row of `iq.undecoded_instructions` (003_undecoded_instructions.sql): an IQ program's
    instruction no decoder accepted, kept with the reason."""

    slot: int
    block_time: int | None
    signature: str
    tx_index: int
    ix_index: int
    inner_index: int
    program_id: str
    accounts: list[str]
    data: bytes
    reason: str
    tx_status: str
    tx_error: str
    source: str
    run_id: str


RAW_COLUMNS: tuple[str, ...] = RawInstruction._fields
UNDECODED_COLUMNS: tuple[str, ...] = UndecodedInstruction._fields


def dedup_key(row: RawInstruction | UndecodedInstruction) -> bytes:
    """The instruction's identity for insert dedup: both tables' ORDER BY key (slot, signature,
    ix_index, inner_index) plus a digest of the raw data, i.e. the instruction's content."""
    return f"{row.slot}|{row.signature}|{row.ix_index}|{row.inner_index}|".encode() + hashlib.sha256(row.data).digest()
