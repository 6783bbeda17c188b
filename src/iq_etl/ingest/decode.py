"""Turn one chain transaction into IQ rows: every top-level and inner (CPI) instruction whose
program is an IQ program becomes a decoded row, or an undecoded row with the reason. Nothing that
matches the filter is dropped. Pure: no I/O, no knowledge of sources or storage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection

from solders.pubkey import Pubkey

from iq_etl.protocol import decode
from iq_etl.protocol.records import IQRecord
from iq_etl.solana.model import ChainTransaction
from iq_etl.warehouse.rows import RawInstruction, UndecodedInstruction

_raw_row = RawInstruction._make  # from a list: the hot path keeps building lists
_undecoded_row = UndecodedInstruction._make



@dataclass(frozen=True)
class InstructionFilter:
    """Which instructions to keep: program in `program_ids` and, when `session_pdas` is set, at least
    one instruction account in it (the seed's IQ_SESSION_PDA_LIST rule)."""

    program_ids: frozenset[str]
    session_pdas: frozenset[str] = frozenset()
    mode: str = "auto"

    @classmethod
    def from_settings(cls, settings: Any, extra_program_ids: Collection[str] = ()) -> "InstructionFilter":
        return cls(frozenset(settings.program_ids) | frozenset(extra_program_ids),
                   frozenset(settings.session_pdas), settings.reader_mode)

    def wanted_keys(self) -> frozenset[bytes]:
        """32-byte keys a transaction must mention to possibly match: the program ids."""
        return frozenset(bytes(Pubkey.from_string(p)) for p in self.program_ids)


@dataclass
class Extracted:
    rows: list[RawInstruction] = field(default_factory=list)
    undecoded: list[UndecodedInstruction] = field(default_factory=list)


def _record_row(rec: IQRecord) -> list[Any]:
    return [
        rec.generation, rec.kind, rec.instruction, rec.session_account or "",
        rec.session_id.hex() if rec.session_id is not None else "",
        rec.chunk_index, rec.total_chunks, rec.seq, rec.method, rec.decode_break,
        rec.merkle_root.hex() if rec.merkle_root is not None else "",
        rec.payload if rec.payload is not None else b"",
        rec.on_chain_path or "", rec.metadata_raw or "", rec.before_tx or "", rec.handle or "",
        rec.tail_tx or "", rec.type_field or "", rec.offset or "",
    ]


def extract(tx: ChainTransaction, filt: InstructionFilter, source: str, run_id: str, out: Extracted) -> int:
    """Append the IQ rows of `tx` to `out`; return how many instructions matched the filter."""
    keys = tx.account_keys()
    nkeys = len(keys)
    meta = tx.meta
    tx_index = tx.index if tx.index is not None else -1
    tx_error = meta.err or ""
    matched = 0

    def handle(ix_index: int, inner_index: int, program_index: int, account_indexes: bytes | list[int],
               data: bytes, stack_height: int | None) -> None:
        nonlocal matched
        program = keys[program_index] if program_index < nkeys else None
        if program is None:
            return  # cannot be an IQ program we know of; malformed indexes of other programs are not ours
        if program not in filt.program_ids:
            return
        bad = [a for a in account_indexes if a >= nkeys]
        accounts = [keys[a] for a in account_indexes if a < nkeys]
        if filt.session_pdas and not any(a in filt.session_pdas for a in accounts):
            return
        matched += 1
        head = [tx.slot, tx.block_time, tx.signature, tx_index, ix_index, inner_index]
        if bad:
            reason = f"account index {bad[0]} out of range ({nkeys} keys): metadata incomplete?"
            out.undecoded.append(_undecoded_row(head + [program, accounts, data, reason, meta.status, tx_error, source,
                                                        run_id]))
            return
        result = decode(program, accounts, data, mode=filt.mode, session_pdas=filt.session_pdas)
        if isinstance(result, IQRecord):
            out.rows.append(_raw_row(head + [stack_height, program] + _record_row(result)
                                     + [accounts, data, meta.status, tx_error, source, run_id]))
        else:
            out.undecoded.append(_undecoded_row(head + [program, accounts, data, result.reason, meta.status, tx_error,
                                                        source, run_id]))

    for ix_index, ix in enumerate(tx.transaction.message.instructions):
        handle(ix_index, -1, ix.program_id_index, bytes(ix.accounts), bytes(ix.data), None)
    for group in meta.inner_instructions:
        for inner_index, inner in enumerate(group.instructions):
            handle(group.index, inner_index, inner.program_id_index, inner.accounts, inner.data, inner.stack_height)
    return matched
