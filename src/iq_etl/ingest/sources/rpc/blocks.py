"""Chain sources over Solana JSON-RPC, and discovery of what to fetch.

- `RpcBlockSource` (dense): `getBlock` for every slot of a range (full, base64, rewards off), in slot
  order with parallel prefetch; skipped slots become `ChainBlock(skipped=True)`; transactions are
  pre-filtered by account keys (static + loaded) like the CAR source.
- `RpcSignatureSource` (sparse): `getTransaction` for known signatures, grouped into blocks per
  slot in slot order. `getTransaction` does not say where in its block a transaction sits, so one
  `getBlock(slot, transactionDetails="signatures")` per slot supplies the index (rows then carry the
  same tx_index as the CAR source). Signatures given without a slot are located with
  `getSignatureStatuses` (256 a call).
- `discover_windows` (the seed's `--session-pda` semantics) and `discover_program` (a live tail
  with its `until` cursor in iq.cursors, see `CursorStore`).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Collection, Iterable, Iterator, Mapping

from solders.pubkey import Pubkey

from iq_etl.errors import SourceError
from iq_etl.warehouse.cursors import Cursor, CursorStore
from iq_etl.solana.model import ChainBlock, ChainTransaction
from iq_etl.ingest.sources.rpc.client import RpcClient, SkippedSlot
from iq_etl.ingest.sources.rpc.convert import err_text, transaction_from_rpc

SIGNATURES_PAGE_LIMIT = 1000
STATUSES_PER_CALL = 256
CURSOR_PREFIX = "rpc-signatures:"


def _history_commitment(client: RpcClient) -> str:
    # getBlock / getTransaction / getSignaturesForAddress refuse "processed".
    return "confirmed" if client.commitment == "processed" else client.commitment


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
                       "maxSupportedTransactionVersion": 0, "commitment": _history_commitment(self.client)}]

    def iter_blocks(self, first_slot: int, last_slot: int) -> Iterator[ChainBlock]:
        if first_slot > last_slot:
            raise SourceError(f"slot range {first_slot}:{last_slot} is empty")
        slots = range(first_slot, last_slot + 1)
        confirmed: set[int] | None = None
        # Full blocks are big (MBs on mainnet): one per POST, prefetched by the worker pool.
        results = self.client.imap("getBlock", (self.block_params(s) for s in slots), batch_size=1)
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
        spans = [[lo, min(lo + self.GET_BLOCKS_SPAN - 1, last_slot), {"commitment": _history_commitment(self.client)}]
                 for lo in range(first_slot, last_slot + 1, self.GET_BLOCKS_SPAN)]
        out: set[int] = set()
        for span, result in zip(spans, self.client.imap("getBlocks", spans, batch_size=1)):
            if not isinstance(result, list):
                raise SourceError(f"getBlocks({span[0]}, {span[1]}) at {self.client.url_redacted}: expected a list")
            out.update(int(s) for s in result)
        return out

    def block_from_result(self, slot: int, result: Any) -> ChainBlock:
        if isinstance(result, SkippedSlot):
            return ChainBlock(slot=slot, skipped=True)
        if not isinstance(result, dict):
            raise SourceError(f"getBlock({slot}) at {self.client.url_redacted}: no block in the answer ({result!r:.80})")
        entries = result.get("transactions") or []
        block_time = result.get("blockTime")
        block = ChainBlock(slot=slot, parent_slot=result.get("parentSlot"), block_time=block_time,
                           block_height=result.get("blockHeight"), transactions_seen=len(entries))
        for index, entry in enumerate(entries):
            tx = transaction_from_rpc(entry, slot=slot, index=index, block_time=block_time,
                                      where=f"getBlock({slot}) transaction {index}")
            if self.wanted is None or not self.wanted.isdisjoint(tx.account_keys()):
                block.transactions.append(tx)
        self.client.stats.add(blocks_fetched=1, transactions_fetched=len(entries))
        return block


# --- sparse: getTransaction per signature -----------------------------------------------------------

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
        values = result.get("value") if isinstance(result, dict) else None
        if not isinstance(values, list) or len(values) != len(chunk):
            raise SourceError(f"getSignatureStatuses at {client.url_redacted}: expected {len(chunk)} statuses")
        missing = [sig for sig, status in zip(chunk, values) if not status]
        if missing:
            raise SourceError(f"getSignatureStatuses at {client.url_redacted}: {len(missing)} signature(s) not found, "
                              f"e.g. {missing[0]}")
        for sig, status in zip(chunk, values):
            found[sig] = int(status["slot"])
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
        commitment = _history_commitment(self.client)
        slots = list(dict.fromkeys(slot for slot, _ in picked))
        tx_params = ([sig, {"encoding": "base64", "maxSupportedTransactionVersion": 0, "commitment": commitment}]
                     for _, sig in picked)
        block_params = ([slot, {"transactionDetails": "signatures", "rewards": False,
                                "maxSupportedTransactionVersion": 0, "commitment": commitment}] for slot in slots)
        tx_results = self.client.imap("getTransaction", tx_params)
        block_results = self.client.imap("getBlock", block_params)
        pos = 0
        for slot, block_result in zip(slots, block_results):
            if isinstance(block_result, SkippedSlot) or not isinstance(block_result, dict):
                raise SourceError(f"getBlock({slot}) at {self.client.url_redacted}: no block for a slot that holds "
                                  f"transaction {picked[pos][1]}")
            order = {sig: i for i, sig in enumerate(block_result.get("signatures") or [])}
            block = ChainBlock(slot=slot, parent_slot=block_result.get("parentSlot"),
                               block_time=block_result.get("blockTime"), block_height=block_result.get("blockHeight"))
            while pos < len(picked) and picked[pos][0] == slot:
                sig = picked[pos][1]
                result = next(tx_results)
                pos += 1
                block.transactions.append(self._transaction(sig, slot, result, order))
            block.transactions.sort(key=lambda t: t.index)
            block.transactions_seen = len(block.transactions)
            yield block

    def _transaction(self, sig: str, slot: int, result: Any, order: Mapping[str, int]) -> ChainTransaction:
        where = f"getTransaction({sig})"
        if result is None or isinstance(result, SkippedSlot):
            raise SourceError(f"{where} at {self.client.url_redacted}: not found at commitment "
                              f"{_history_commitment(self.client)}")
        if result.get("slot") != slot:
            raise SourceError(f"{where}: the node says slot {result.get('slot')}, discovery said {slot}")
        index = order.get(sig)
        if index is None:
            raise SourceError(f"{where}: not among the signatures of block {slot}")
        stated = result.get("transactionIndex")  # newer nodes state it; it must agree with the block
        if isinstance(stated, int) and stated != index:
            raise SourceError(f"{where}: transactionIndex {stated} but position {index} in block {slot}")
        tx = transaction_from_rpc(result, slot=slot, index=index, block_time=result.get("blockTime"), where=where)
        if tx.signature != sig:
            raise SourceError(f"{where}: the node returned transaction {tx.signature}")
        self.client.stats.add(transactions_fetched=1)
        return tx


# --- discovery: getSignaturesForAddress -------------------------------------------------------------

@dataclass(frozen=True)
class SignatureInfo:
    signature: str
    slot: int
    err: str | None          # compact JSON as in TxMeta.err; failed transactions are kept
    block_time: int | None


def page_signatures(client: RpcClient, address: str, *, until: str | None = None, before: str | None = None,
                    max_pages: int | None = None, limit: int = SIGNATURES_PAGE_LIMIT) -> Iterator[list[SignatureInfo]]:
    """Pages of getSignaturesForAddress, newest first, each continuing `before` the last one's
    oldest signature, until a short page, `until`, or `max_pages` pages."""
    pages = 0
    while max_pages is None or pages < max_pages:
        cfg: dict[str, Any] = {"limit": limit, "commitment": _history_commitment(client)}
        if before:
            cfg["before"] = before
        if until:
            cfg["until"] = until
        result = client.call("getSignaturesForAddress", [address, cfg])
        if not isinstance(result, list):
            raise SourceError(f"getSignaturesForAddress({address}) at {client.url_redacted}: expected a list")
        pages += 1
        page = [SignatureInfo(e["signature"], int(e["slot"]), err_text(e.get("err")), e.get("blockTime"))
                for e in result]
        client.stats.add(signatures_paged=len(page))
        yield page
        if len(page) < limit:
            return
        before = page[-1].signature


@dataclass
class PdaWindow:
    """The slot window found for one session PDA. `truncated`: max pages were read and the last was
    full, so older signatures may exist below `min_slot`."""
    pda: str
    signatures: int
    pages: int
    truncated: bool
    min_slot: int | None = None
    max_slot: int | None = None
    first_slot: int | None = None   # min_slot - padding (not below 0)
    last_slot: int | None = None    # max_slot + padding


@dataclass
class Discovery:
    windows: list[PdaWindow]
    signatures: dict[str, SignatureInfo] = field(default_factory=dict)
    padding: int = 0
    max_pages: int = 0

    @property
    def truncated(self) -> bool:
        return any(w.truncated for w in self.windows)

    def merged_ranges(self) -> list[tuple[int, int]]:
        """The padded windows, overlapping or adjacent ones merged, in slot order."""
        spans = sorted((w.first_slot, w.last_slot) for w in self.windows if w.first_slot is not None)
        merged: list[list[int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        return [(a, b) for a, b in merged]

    def all_signatures(self) -> list[str]:
        """Every signature found (each once), oldest slot first."""
        return [s.signature for s in sorted(self.signatures.values(), key=lambda s: s.slot)]

    def signature_slots(self) -> dict[str, int]:
        """signature -> slot: give this to RpcSignatureSource to skip the slot lookup."""
        return {s.signature: s.slot for s in sorted(self.signatures.values(), key=lambda s: s.slot)}

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": [asdict(w) for w in self.windows],
            "merged_ranges": [list(r) for r in self.merged_ranges()],
            "signatures": len(self.signatures),
            "failed_signatures": sum(1 for s in self.signatures.values() if s.err is not None),
            "truncated": self.truncated,
            "truncated_pdas": [w.pda for w in self.windows if w.truncated],
            "padding": self.padding,
            "max_pages": self.max_pages,
        }


def discover_windows(client: RpcClient, pdas: Iterable[str], max_pages: int = 25, padding: int = 200, *,
                     page_limit: int = SIGNATURES_PAGE_LIMIT) -> Discovery:
    """Page getSignaturesForAddress (`page_limit` = 1000 a page, at most `max_pages`) for each session
    PDA, take min/max slot, pad both ends by `padding`. A PDA whose last allowed page was full is
    marked truncated (older signatures may exist): reported in the result, never dropped silently."""
    if max_pages < 1:
        raise SourceError("max signature pages must be at least 1")
    if padding < 0:
        raise SourceError("slot padding must not be negative")
    found = Discovery(windows=[], padding=padding, max_pages=max_pages)
    for pda in dict.fromkeys(pdas):
        count = pages = 0
        lo = hi = None
        last_full = False
        for page in page_signatures(client, pda, max_pages=max_pages, limit=page_limit):
            pages += 1
            count += len(page)
            last_full = len(page) == page_limit
            for info in page:
                found.signatures.setdefault(info.signature, info)
                lo = info.slot if lo is None else min(lo, info.slot)
                hi = info.slot if hi is None else max(hi, info.slot)
        window = PdaWindow(pda=pda, signatures=count, pages=pages, truncated=pages >= max_pages and last_full)
        if lo is not None:
            window.min_slot, window.max_slot = lo, hi
            window.first_slot, window.last_slot = max(0, lo - padding), hi + padding
        found.windows.append(window)
    return found


# --- live tail: program id + cursor -----------------------------------------------------------------

def cursor_name(program_id: str) -> str:
    return CURSOR_PREFIX + program_id


@dataclass
class ProgramDiscovery:
    """New signatures of a program since its stored cursor. Ingest them, then `commit(store)`:
    a crash before the commit re-discovers them next run instead of losing them."""
    program_id: str
    cursor_name: str
    previous: Cursor | None
    newest: Cursor | None          # what commit() stores; None when nothing is new
    signatures: dict[str, SignatureInfo]   # oldest slot first
    pages: int
    truncated: bool                # max pages hit before reaching the cursor (or, first run, the start)

    def all_signatures(self) -> list[str]:
        return list(self.signatures)

    def signature_slots(self) -> dict[str, int]:
        return {s: info.slot for s, info in self.signatures.items()}

    def slot_range(self) -> tuple[int, int] | None:
        if not self.signatures:
            return None
        slots = [info.slot for info in self.signatures.values()]
        return min(slots), max(slots)

    def commit(self, store: CursorStore, *, allow_gap: bool = False) -> None:
        """Store `newest` as the cursor. Refuses when signatures between the old cursor and what was
        read were left unread (truncated), unless allow_gap."""
        if self.newest is None:
            return
        if self.truncated and self.previous is not None and not allow_gap:
            raise SourceError(
                f"{self.cursor_name}: discovery stopped after {self.pages} pages before reaching the stored cursor "
                f"(slot {self.previous.slot}); committing would skip signatures. Rerun without a page limit, "
                "backfill the gap with a slot range, or commit with allow_gap")
        store.set(self.cursor_name, self.newest.signature, self.newest.slot)

    def to_json(self) -> dict[str, Any]:
        rng = self.slot_range()
        return {
            "program_id": self.program_id,
            "cursor": self.cursor_name,
            "previous": asdict(self.previous) if self.previous else None,
            "newest": asdict(self.newest) if self.newest else None,
            "signatures": len(self.signatures),
            "pages": self.pages,
            "truncated": self.truncated,
            "slot_range": list(rng) if rng else None,
        }


def discover_program(client: RpcClient, program_id: str, cursor_store: CursorStore, *,
                     max_pages: int | None = None, first_run_max_pages: int = 25,
                     page_limit: int = SIGNATURES_PAGE_LIMIT) -> ProgramDiscovery:
    """Signatures of `program_id` newer than its cursor (`until`), paging back as far as needed.

    With a cursor, paging is unbounded unless `max_pages` is given (truncation is then reported and
    `commit` refuses to skip the gap). Without one (first run), at most `first_run_max_pages` pages
    are read: the tail starts there, older history is a backfill's job (reported as truncated)."""
    name = cursor_name(program_id)
    previous = cursor_store.get(name)
    limit_pages = max_pages if previous is not None else (max_pages or first_run_max_pages)
    collected: list[SignatureInfo] = []
    pages = 0
    last_full = False
    for page in page_signatures(client, program_id, until=previous.signature if previous else None,
                                max_pages=limit_pages, limit=page_limit):
        pages += 1
        last_full = len(page) == page_limit
        collected.extend(page)
    truncated = limit_pages is not None and pages >= limit_pages and last_full
    newest = Cursor(collected[0].signature, collected[0].slot) if collected else None
    ordered: dict[str, SignatureInfo] = {}
    for info in sorted(reversed(collected), key=lambda i: i.slot):  # oldest first, stable within a slot
        ordered.setdefault(info.signature, info)
    return ProgramDiscovery(program_id=program_id, cursor_name=name, previous=previous, newest=newest,
                            signatures=ordered, pages=pages, truncated=truncated)
