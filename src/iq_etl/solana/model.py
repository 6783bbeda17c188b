"""What every chain source yields. Identical across CAR, rpc-blocks and rpc-signatures, so the
ingest stage turns the same chain into the same rows whatever the source."""
from __future__ import annotations

from dataclasses import dataclass, field

from solders.transaction import VersionedTransaction

# Transaction status as known from its metadata.
TX_OK = "ok"
TX_FAILED = "failed"
TX_UNKNOWN = "unknown"  # empty metadata (early epochs): never silently "success"


@dataclass(slots=True)
class InnerInstruction:
    program_id_index: int      # index into the full key list (static + loaded writable + loaded readonly)
    accounts: bytes            # account indexes into the same list
    data: bytes
    stack_height: int | None = None


@dataclass(slots=True)
class InnerInstructions:
    index: int                 # the top-level instruction these were invoked by
    instructions: list[InnerInstruction]


@dataclass(slots=True)
class TxMeta:
    status: str                                 # TX_OK | TX_FAILED | TX_UNKNOWN
    err: str | None = None                      # error description when failed (JSON-ish text or hex)
    fee: int | None = None
    loaded_writable: list[str] = field(default_factory=list)   # base58 keys from address lookup tables
    loaded_readonly: list[str] = field(default_factory=list)
    inner_instructions: list[InnerInstructions] = field(default_factory=list)
    log_messages: list[str] | None = None
    compute_units: int | None = None


@dataclass(slots=True)
class ChainTransaction:
    signature: str              # base58 of the first signature
    slot: int
    index: int | None           # position in the block (None when the source cannot tell)
    transaction: VersionedTransaction
    meta: TxMeta
    block_time: int | None = None

    def account_keys(self) -> list[str]:
        """Full key list: static keys, then loaded writable, then loaded readonly (v0 rule)."""
        keys = [str(k) for k in self.transaction.message.account_keys]
        return keys + list(self.meta.loaded_writable) + list(self.meta.loaded_readonly)


@dataclass(slots=True)
class ChainBlock:
    slot: int
    parent_slot: int | None = None
    block_time: int | None = None
    block_height: int | None = None
    skipped: bool = False                 # the slot produced no block (recorded, not an error)
    transactions: list[ChainTransaction] = field(default_factory=list)  # those that passed the pre-filter
    transactions_seen: int = 0            # every transaction in the block, filtered or not
