"""`RpcSignatureSource` (sparse): `getTransaction` for known signatures, grouped into blocks per slot in
slot order. `getTransaction` does not say where in its block a transaction sits, so one
`getBlock(slot, transactionDetails="signatures")` per slot supplies the index (rows then carry the same
tx_index as the CAR source). Signatures given without a slot are located with `getSignatureStatuses`
(256 a call)."""
from __future__ import annotations

import threading
from contextlib import closing
from typing import Any, Iterable, Iterator, Mapping

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.client import RpcClient, SkippedSlot, history_commitment
from iq_etl.ingest.sources.rpc.convert import check, optional, require, transaction_from_rpc
from iq_etl.solana.model import ChainBlock, ChainTransaction

STATUSES_PER_CALL = 256


# signature -> slot, learnt from getSignatureStatuses. A finalized transaction never moves, so the
# cache is shared by every source in the process (the ingest stage opens one source per sub-range).
_SLOT_CACHE: dict[str, int] = {}


_SLOT_CACHE_MAX = 500_000


_SLOT_CACHE_LOCK = threading.Lock()


def locate_signatures(client: RpcClient, signatures: Iterable[str]) -> dict[str, int]:
    """signature -> slot via getSignatureStatuses(searchTransactionHistory). Unknown ones raise."""
    wanted = list(dict.fromkeys(signatures))
    with _SLOT_CACHE_LOCK:
        found = {s: _SLOT_CACHE[s] for s in wanted if s in _SLOT_CACHE}
    todo = [s for s in wanted if s not in found]
    chunks = [todo[i:i + STATUSES_PER_CALL] for i in range(0, len(todo), STATUSES_PER_CALL)]
    params = ([chunk, {"searchTransactionHistory": True}] for chunk in chunks)
    for chunk, result in zip(chunks, client.imap("getSignatureStatuses", params, batch_size=1)):
        where = f"getSignatureStatuses at {client.url_redacted}"
        check(result, "object", f"{where}: result")
        values = require(result, "value", "list", f"{where}: result")
        if len(values) != len(chunk):
            raise SourceError(f"{where}: expected {len(chunk)} statuses, got {len(values)}")
        missing = [sig for sig, status in zip(chunk, values) if status is None]  # null: not found (per the spec)
        if missing:
            raise SourceError(f"{where}: {len(missing)} signature(s) not found, e.g. {missing[0]}")
        for sig, status in zip(chunk, values):
            check(status, "object", f"{where}: status of {sig}", nullable=True)
            found[sig] = require(status, "slot", "int", f"{where}: status of {sig}")
    with _SLOT_CACHE_LOCK:
        if len(_SLOT_CACHE) + len(todo) > _SLOT_CACHE_MAX:
            _SLOT_CACHE.clear()
        _SLOT_CACHE.update((s, found[s]) for s in todo)
    return found


class RpcSignatureSource:
    """Known signatures via getTransaction, as blocks per slot in slot order.

    `signatures`: signatures (their slots are looked up), or a mapping signature -> slot, or
    (signature, slot) pairs (what discovery returns; saves the lookup). `iter_blocks(first, last)`
    yields one ChainBlock per slot of the range holding at least one of them; `transactions_seen`
    is the number fetched for that slot (the rest of the block is never downloaded)."""

    def __init__(self, client: RpcClient, signatures: Iterable[str] | Mapping[str, int] | Iterable[tuple[str, int]]):
        self.client = client
        self._slots: dict[str, int] = {}
        self._unknown: list[str] = []
        items = signatures.items() if isinstance(signatures, Mapping) else signatures
        for item in items:
            if isinstance(item, str):
                self._unknown.append(item)
            else:
                sig, slot = item
                self._slots[str(sig)] = int(slot)

    def _all_slots(self) -> dict[str, int]:
        if self._unknown:
            self._slots.update(locate_signatures(self.client, self._unknown))
            self._unknown = []
        return self._slots

    def iter_blocks(self, first_slot: int, last_slot: int) -> Iterator[ChainBlock]:
        if first_slot > last_slot:
            raise SourceError(f"slot range {first_slot}:{last_slot} is empty")
        picked = sorted((slot, sig) for sig, slot in self._all_slots().items() if first_slot <= slot <= last_slot)
        if not picked:
            return
        commitment = history_commitment(self.client)
        slots = list(dict.fromkeys(slot for slot, _ in picked))
        tx_params = ([sig, {"encoding": "base64", "maxSupportedTransactionVersion": 0, "commitment": commitment}]
                     for _, sig in picked)
        block_params = ([slot, {"transactionDetails": "signatures", "rewards": False,
                                "maxSupportedTransactionVersion": 0, "commitment": commitment}] for slot in slots)
        tx_results = self.client.imap("getTransaction", tx_params)
        block_results = self.client.imap("getBlock", block_params)
        with closing(tx_results), closing(block_results):  # leaving early stops both prefetches at once
            pos = 0
            for slot, block_result in zip(slots, block_results):
                where = f"getBlock({slot}) at {self.client.url_redacted}"
                if isinstance(block_result, SkippedSlot) or block_result is None:
                    raise SourceError(f"{where}: no block for a slot that holds transaction {picked[pos][1]}")
                check(block_result, "object", f"{where}: result")
                # transactionDetails=signatures: the list is always sent (empty for an empty block)
                sigs = require(block_result, "signatures", "list", f"{where}: block")
                order: dict[str, int] = {}
                for i, s in enumerate(sigs):
                    seen = order.setdefault(check(s, "str", f"{where}: signature {i}"), i)
                    if seen != i:  # the later place would silently win: the in-slot order is unknown
                        raise SourceError(f"{where}: signature {i} repeats {s} of signature {seen}; a block lists "
                                          "each transaction once")
                block = ChainBlock(slot=slot, parent_slot=require(block_result, "parentSlot", "int", f"{where}: block"),
                                   block_time=require(block_result, "blockTime", "int", f"{where}: block", nullable=True),
                                   block_height=require(block_result, "blockHeight", "int", f"{where}: block",
                                                        nullable=True))
                while pos < len(picked) and picked[pos][0] == slot:
                    sig = picked[pos][1]
                    result = next(tx_results)
                    pos += 1
                    block.transactions.append(self._transaction(sig, slot, result, order))
                block.transactions.sort(key=lambda t: t.index)
                block.transactions_seen = len(block.transactions)
                yield block

    def _transaction(self, sig: str, slot: int, result: Any, order: Mapping[str, int]) -> ChainTransaction:
        where = f"getTransaction({sig}) at {self.client.url_redacted}"
        if result is None or isinstance(result, SkippedSlot):
            raise SourceError(f"{where}: not found at commitment {history_commitment(self.client)}")
        check(result, "object", f"{where}: result")
        node_slot = require(result, "slot", "int", f"{where}: result")
        if node_slot != slot:
            raise SourceError(f"{where}: the node says slot {node_slot}, discovery said {slot}")
        index = order.get(sig)
        if index is None:
            raise SourceError(f"{where}: not among the signatures of block {slot}")
        # not in the RPC spec; some nodes state it, and then it must agree with the block
        stated = optional(result, "transactionIndex", "int", f"{where}: result")
        if stated is not None and stated != index:
            raise SourceError(f"{where}: transactionIndex {stated} but position {index} in block {slot}")
        block_time = require(result, "blockTime", "int", f"{where}: result", nullable=True)
        tx = transaction_from_rpc(result, slot=slot, index=index, block_time=block_time, where=f"getTransaction({sig})")
        if tx.signature != sig:
            raise SourceError(f"{where}: the node returned transaction {tx.signature}")
        self.client.stats.add(transactions_fetched=1)
        return tx
