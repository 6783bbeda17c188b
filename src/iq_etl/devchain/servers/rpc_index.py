"""The development chain in memory for the JSON-RPC server: blocks by slot, transactions by
signature, and each account address's signature history."""
from __future__ import annotations

import bisect
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from solders.transaction import VersionedTransaction

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.convert import is_v0
from iq_etl.solana.model import ChainBlock, ChainTransaction, TxMeta


@dataclass(slots=True)
class _Tx:
    """A transaction as stored: wire bytes (parsed again on demand) keep memory small."""
    slot: int
    index: int
    wire: bytes
    meta: TxMeta
    signature: str
    block_time: int | None
    v0: bool

    def chain_tx(self) -> ChainTransaction:
        return ChainTransaction(self.signature, self.slot, self.index, VersionedTransaction.from_bytes(self.wire),
                                self.meta, self.block_time)


@dataclass(slots=True)
class _Block:
    slot: int
    parent_slot: int | None
    block_time: int | None
    block_height: int | None
    txs: list[_Tx]


class RpcChain:
    """The ledger the server answers from. Feed blocks with `from_blocks` / `add_blocks` (in any
    order; slots without a block inside [first_slot, last_slot] are skipped slots)."""

    def __init__(self) -> None:
        self.blocks: dict[int, _Block] = {}
        self.skipped: set[int] = set()
        self.by_signature: dict[str, _Tx] = {}
        self._by_address: dict[str, list[tuple[int, bytes, str]]] = {}  # ascending (slot, sig bytes, sig)
        self._sorted: set[str] = set()
        self._lock = threading.Lock()
        self.first_slot: int | None = None
        self.last_slot: int | None = None

    @classmethod
    def from_blocks(cls, blocks: Iterable[ChainBlock]) -> "RpcChain":
        chain = cls()
        chain.add_blocks(blocks)
        return chain

    @classmethod
    def from_dir(cls, chain_dir: str | Path) -> "RpcChain":
        """Load a development chain folder through the CAR reader."""
        from iq_etl.ingest.sources.car.source import CarSource

        root = Path(chain_dir)
        manifest_path = root / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            first, last = int(manifest["first_slot"]), int(manifest["last_slot"])
        except FileNotFoundError:
            raise SourceError(f"{manifest_path}: no development chain here (run `iq-etl devchain build`)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{manifest_path}: no usable first_slot/last_slot ({type(exc).__name__}: {exc})") from None
        template = str(root / "{epoch}" / "epoch-{epoch}.car")
        chain = cls()
        chain.add_blocks(CarSource(template).iter_blocks(first, last))
        chain.extend_range(first, last)
        return chain

    def extend_range(self, first: int, last: int) -> None:
        """Declare [first, last] served: slots in it without a block answer as skipped."""
        with self._lock:
            self.first_slot = first if self.first_slot is None else min(self.first_slot, first)
            self.last_slot = last if self.last_slot is None else max(self.last_slot, last)

    def add_blocks(self, blocks: Iterable[ChainBlock]) -> None:
        for block in blocks:
            self.add_block(block)

    def add_block(self, block: ChainBlock) -> None:
        with self._lock:
            self.first_slot = block.slot if self.first_slot is None else min(self.first_slot, block.slot)
            self.last_slot = block.slot if self.last_slot is None else max(self.last_slot, block.slot)
            if block.skipped:
                self.skipped.add(block.slot)
                return
            if block.slot in self.blocks:
                raise ValueError(f"slot {block.slot} added twice")
            txs = []
            for position, tx in enumerate(block.transactions):
                index = tx.index if tx.index is not None else position
                stored = _Tx(block.slot, index, bytes(tx.transaction), tx.meta, tx.signature,
                             tx.block_time if tx.block_time is not None else block.block_time,
                             is_v0(tx.transaction))
                if stored.signature in self.by_signature:
                    raise ValueError(f"signature {stored.signature} appears twice (slot {block.slot})")
                txs.append(stored)
                self.by_signature[stored.signature] = stored
                sig_bytes = bytes(tx.transaction.signatures[0])
                for key in dict.fromkeys(tx.account_keys()):
                    self._by_address.setdefault(key, []).append((block.slot, sig_bytes, stored.signature))
                    self._sorted.discard(key)
            txs.sort(key=lambda t: t.index)
            self.blocks[block.slot] = _Block(block.slot, block.parent_slot, block.block_time, block.block_height, txs)

    def address_history(self, address: str) -> list[tuple[int, bytes, str]]:
        """(slot, signature bytes, signature) ascending; getSignaturesForAddress walks it backwards."""
        with self._lock:
            entries = self._by_address.get(address, [])
            if address not in self._sorted:
                entries.sort()
                self._sorted.add(address)
            return entries

    def slot_state(self, slot: int) -> str:
        """'block', 'skipped' (inside the served span, or below it) or 'future' (above the tip)."""
        if slot in self.blocks:
            return "block"
        if self.last_slot is None or slot > self.last_slot:
            return "future"
        return "skipped"

    def block_slots(self) -> list[int]:
        return sorted(self.blocks)

    def block_height(self, slot: int) -> int:
        block = self.blocks[slot]
        if block.block_height is not None:
            return block.block_height
        return bisect.bisect_right(self.block_slots(), slot) - 1
