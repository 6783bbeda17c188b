"""`RpcBlockSource` (dense): `getBlock` for every slot of a range (full, base64, rewards off), in slot order
with parallel prefetch; skipped slots become `ChainBlock(skipped=True)`; transactions are pre-filtered by
account keys (static + loaded) like the CAR source."""
from __future__ import annotations

from contextlib import closing
from typing import Any, Collection, Iterator

from solders.pubkey import Pubkey

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.client import RpcClient, SkippedSlot, history_commitment
from iq_etl.ingest.sources.rpc.convert import check, require, shown, transaction_from_rpc
from iq_etl.solana.model import ChainBlock


def _wanted_set(wanted_keys: Collection[bytes | str] | None) -> frozenset[str] | None:
    if wanted_keys is None:
        return None
    out = set()
    for key in wanted_keys:
        if isinstance(key, (bytes, bytearray)):
            if len(key) != 32:
                raise SourceError(f"wanted key of {len(key)} bytes; expected 32")
            out.add(str(Pubkey.from_bytes(bytes(key))))
        else:
            out.add(str(key))
    return frozenset(out)


# --- dense: getBlock per slot -----------------------------------------------------------------------

class RpcBlockSource:
    """Every slot of a range via getBlock. `transactions_seen` counts all transactions of a block;
    `transactions` keeps those whose full key list holds a wanted key (all when wanted_keys is None).

    -32007/-32009 ("skipped, or missing ...") also come from nodes that merely lack a block. So the
    first time a range meets one, the source asks `getBlocks` for the range once (one call per
    500,000 slots) and raises SourceError if the node lists that slot as a confirmed block:
    a block it cannot serve is never recorded as skipped (`verify_skips=False` turns this off)."""

    GET_BLOCKS_SPAN = 500_000

    def __init__(self, client: RpcClient, wanted_keys: Collection[bytes | str] | None = None, *,
                 verify_skips: bool = True):
        self.client = client
        self.wanted = _wanted_set(wanted_keys)
        self.verify_skips = verify_skips

    def block_params(self, slot: int) -> list:
        return [slot, {"encoding": "base64", "transactionDetails": "full", "rewards": False,
                       "maxSupportedTransactionVersion": 0, "commitment": history_commitment(self.client)}]

    def iter_blocks(self, first_slot: int, last_slot: int) -> Iterator[ChainBlock]:
        if first_slot > last_slot:
            raise SourceError(f"slot range {first_slot}:{last_slot} is empty")
        slots = range(first_slot, last_slot + 1)
        # Full blocks are big (MBs on mainnet): one per POST, prefetched by the worker pool.
        results = self.client.imap("getBlock", (self.block_params(s) for s in slots), batch_size=1)
        confirmed: set[int] | None = None
        with closing(results):  # leaving early (an error, here or in the caller) stops the prefetch at once
            for slot, result in zip(slots, results):
                if isinstance(result, SkippedSlot) and self.verify_skips:
                    if confirmed is None:
                        confirmed = self.confirmed_blocks(first_slot, last_slot)
                    if slot in confirmed:
                        raise SourceError(
                            f"getBlock({slot}) at {self.client.url_redacted} answered {result.code} ({result.message}) "
                            "but getBlocks lists the slot as a confirmed block: the node lacks it. Use another RPC "
                            "node or the CAR source for this range")
                yield self.block_from_result(slot, result)

    def confirmed_blocks(self, first_slot: int, last_slot: int) -> set[int]:
        """Slots with a block in [first, last], per getBlocks."""
        spans = [[lo, min(lo + self.GET_BLOCKS_SPAN - 1, last_slot), {"commitment": history_commitment(self.client)}]
                 for lo in range(first_slot, last_slot + 1, self.GET_BLOCKS_SPAN)]
        out: set[int] = set()
        for span, result in zip(spans, self.client.imap("getBlocks", spans, batch_size=1)):
            where = f"getBlocks({span[0]}, {span[1]}) at {self.client.url_redacted}"
            check(result, "list", f"{where}: result")
            for i, s in enumerate(result):
                check(s, "int", f"{where}: entry {i}")
            out.update(result)
        return out

    def block_from_result(self, slot: int, result: Any) -> ChainBlock:
        """One getBlock(full) answer -> ChainBlock. Only a block that lists zero transactions is empty:
        a reply without `transactions` (missing or null) raises SourceError, and the range is not done;
        so does a block listing one signature twice."""
        if isinstance(result, SkippedSlot):
            return ChainBlock(slot=slot, skipped=True)
        where = f"getBlock({slot}) at {self.client.url_redacted}"
        if not isinstance(result, dict):
            raise SourceError(f"{where}: no block in the answer (result is {shown(result)}, expected an object)")
        # transactionDetails=full: agave sends the list, empty for a block without transactions
        entries = require(result, "transactions", "list", f"{where}: block")
        parent_slot = require(result, "parentSlot", "int", f"{where}: block")
        # always sent, null when the node does not know them
        block_time = require(result, "blockTime", "int", f"{where}: block", nullable=True)
        block_height = require(result, "blockHeight", "int", f"{where}: block", nullable=True)
        block = ChainBlock(slot=slot, parent_slot=parent_slot, block_time=block_time,
                           block_height=block_height, transactions_seen=len(entries))
        first_index: dict[str, int] = {}
        for index, entry in enumerate(entries):
            tx = transaction_from_rpc(entry, slot=slot, index=index, block_time=block_time,
                                      where=f"getBlock({slot}) transaction {index}")
            # A block holds a transaction once: a repeat would be written twice, and the warehouse keeps
            # one of them with the repeat's tx_index, so the in-slot order would differ from the chain.
            seen = first_index.setdefault(tx.signature, index)
            if seen != index:
                raise SourceError(f"{where}: transaction {index} repeats signature {tx.signature} of transaction "
                                  f"{seen}; a block lists each transaction once")
            if self.wanted is None or not self.wanted.isdisjoint(tx.account_keys()):
                block.transactions.append(tx)
        self.client.stats.add(blocks_fetched=1, transactions_fetched=len(entries))
        return block
