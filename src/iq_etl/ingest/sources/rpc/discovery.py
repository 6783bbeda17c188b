"""Discovery of what to fetch over JSON-RPC (`getSignaturesForAddress`): `discover_windows` (the seed's
`--session-pda` semantics: the slot window of each PDA's signatures) and `discover_program` (a live tail
of an IQ program with its `until` cursor in iq.cursors, see `CursorStore`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.client import RpcClient, history_commitment
from iq_etl.ingest.sources.rpc.convert import check, err_text, require
from iq_etl.warehouse.cursors import Cursor, CursorStore

SIGNATURES_PAGE_LIMIT = 1000


CURSOR_PREFIX = "rpc-signatures:"


@dataclass(frozen=True)
class SignatureInfo:
    signature: str
    slot: int
    err: str | None          # compact JSON as in TxMeta.err; failed transactions are kept
    block_time: int | None


def signature_info(entry: Any, where: str) -> SignatureInfo:
    """One getSignaturesForAddress entry. `err` and `blockTime` are always sent (null when none/unknown)."""
    check(entry, "object", where)
    return SignatureInfo(require(entry, "signature", "str", where), require(entry, "slot", "int", where),
                         err_text(require(entry, "err", "any", where, nullable=True)),
                         require(entry, "blockTime", "int", where, nullable=True))


def page_signatures(client: RpcClient, address: str, *, until: str | None = None, before: str | None = None,
                    max_pages: int | None = None, limit: int = SIGNATURES_PAGE_LIMIT) -> Iterator[list[SignatureInfo]]:
    """Pages of getSignaturesForAddress, newest first, each continuing `before` the last one's
    oldest signature, until a short page, `until`, or `max_pages` pages."""
    pages = 0
    while max_pages is None or pages < max_pages:
        cfg: dict[str, Any] = {"limit": limit, "commitment": history_commitment(client)}
        if before:
            cfg["before"] = before
        if until:
            cfg["until"] = until
        result = client.call("getSignaturesForAddress", [address, cfg])
        where = f"getSignaturesForAddress({address}) at {client.url_redacted}"
        check(result, "list", f"{where}: result")
        pages += 1
        page = [signature_info(e, f"{where}: entry {i}") for i, e in enumerate(result)]
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
