"""Whole-file summaries of a CAR archive: what `iq-etl car inspect` prints and what `car index` writes
(the `epoch-N-slot-ranges.raw` slot index)."""
from __future__ import annotations

from dataclasses import dataclass

import libipld

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.format import (
    KIND_BLOCK,
    KIND_DATAFRAME,
    KIND_EPOCH,
    KIND_NAMES,
    KIND_SUBSET,
    KIND_TRANSACTION,
)
from iq_etl.ingest.sources.car.reader import CarFile, Section, _cid_text, _FrameError, _payload
from iq_etl.solana.slots import epoch_of


@dataclass
class CarSummary:
    kinds: dict[str, int]
    first_slot: int | None
    last_slot: int | None
    transactions_per_slot: dict[int, int]
    first_signatures: list[str]
    bytes_read: int

    def as_json(self) -> dict:
        return {"kinds": self.kinds, "first_slot": self.first_slot, "last_slot": self.last_slot,
                "transactions_per_slot": {str(k): v for k, v in self.transactions_per_slot.items()},
                "first_signatures": self.first_signatures}


def _first_signature(car: CarFile, section: Section, frames: dict[bytes, bytes], slot: int) -> str:
    from solders.signature import Signature

    try:
        node = libipld.decode_dag_cbor(section.data)
        data = _payload(node[1], frames)
        if not data or data[0] == 0 or data[0] >= 0x80 or len(data) < 65:
            raise ValueError("transaction has no signature")
        return str(Signature.from_bytes(data[1:65]))
    except (_FrameError, ValueError, IndexError, TypeError) as exc:
        raise car._error(f"transaction {_cid_text(section.cid)}: {exc}", section.offset, f"slot {slot}") from None
    except Exception as exc:
        raise car._error(f"corrupt Transaction node ({exc})", section.offset, f"slot {slot}") from None


def summarize(car: CarFile, first_slot: int | None = None, last_slot: int | None = None, *,
              progress=None) -> CarSummary:
    """Node counts by kind, slots, transactions per slot and the first 3 signatures (file order).

    With a slot range only nodes of those slots count (Subset and Epoch nodes met on the way too);
    with a slot-ranges index the walk seeks straight to the range. `progress(offset)` is called now
    and then with the current byte offset."""
    start = end = None
    if first_slot is not None and last_slot is not None:
        span = car.slot_span(first_slot, last_slot)
        if span is not None:
            if span.last_present is None:
                return CarSummary({k: 0 for k in KIND_NAMES}, None, None, {}, [], 0)
            start, end = span.start, span.end
    lo = first_slot if first_slot is not None else -1
    hi = last_slot if last_slot is not None else 2**63
    kinds = dict.fromkeys(KIND_NAMES, 0)
    pending = dict.fromkeys(KIND_NAMES, 0)
    per_slot: dict[int, int] = {}
    signatures: list[str] = []
    sig_sections: list[Section] = []
    frames: dict[bytes, bytes] = {}
    seen_slots: list[int] = []
    prev_slot = None
    count = 0
    offset = start or 0
    for section in car.iter_sections(start, end):
        count += 1
        offset = section.offset
        if progress is not None and count % 4096 == 0:
            progress(offset)
        kind = section.kind
        if not 0 <= kind < len(KIND_NAMES):
            raise car._error(f"unexpected node kind {kind}", section.offset, car._slot_hint(prev_slot))
        if kind in (KIND_SUBSET, KIND_EPOCH):
            kinds[KIND_NAMES[kind]] += 1
            continue
        pending[KIND_NAMES[kind]] += 1
        if kind == KIND_TRANSACTION and len(signatures) + len(sig_sections) < 3:
            sig_sections.append(section)
        elif kind == KIND_DATAFRAME and len(signatures) < 3:
            frames[section.cid] = section.data  # may continue one of the first transactions
        if kind != KIND_BLOCK:
            continue
        try:
            slot = libipld.decode_dag_cbor(section.data)[1]
        except Exception as exc:
            raise car._error(f"corrupt Block node ({exc})", section.offset, car._slot_hint(prev_slot)) from None
        if not isinstance(slot, int):
            raise car._error("corrupt Block node (slot is not an integer)", section.offset, car._slot_hint(prev_slot))
        if slot > hi:
            break
        if slot >= lo:
            for name in KIND_NAMES:
                kinds[name] += pending[name]
            per_slot[slot] = pending["transaction"]
            seen_slots.append(slot)
            for tx_section in sig_sections:
                signatures.append(_first_signature(car, tx_section, frames, slot))
        prev_slot = slot
        pending = dict.fromkeys(KIND_NAMES, 0)
        sig_sections = []
        frames = {}
    if progress is not None:
        progress(offset)
    return CarSummary(kinds, min(seen_slots) if seen_slots else None, max(seen_slots) if seen_slots else None,
                      per_slot, signatures[:3], offset - (start or 0))


def build_slot_ranges(car: CarFile, progress=None) -> tuple[int, dict[int, tuple[int, int]]]:
    """(epoch, {slot: (offset, length)}) for a CAR without an index: each slot's range runs from its
    first node after the previous Block node to the end of its own Block node."""
    ranges: dict[int, tuple[int, int]] = {}
    slot_start = None
    epoch = None
    prev_slot = None
    count = 0
    for section in car.iter_sections():
        count += 1
        if progress is not None and count % 4096 == 0:
            progress(section.offset)
        if section.kind in (KIND_SUBSET, KIND_EPOCH) and slot_start is None:
            continue  # between slots: not part of any slot's range
        if slot_start is None:
            slot_start = section.offset
        if section.kind != KIND_BLOCK:
            continue
        try:
            slot = libipld.decode_dag_cbor(section.data)[1]
        except Exception as exc:
            raise car._error(f"corrupt Block node ({exc})", section.offset, car._slot_hint(prev_slot)) from None
        if prev_slot is not None and slot <= prev_slot:
            raise car._error(f"block for slot {slot} after slot {prev_slot} (out of order)", section.offset,
                             f"slot {slot}")
        if epoch is None:
            epoch = epoch_of(slot)
        elif epoch_of(slot) != epoch:
            raise car._error(f"slot {slot} is not in epoch {epoch} like the slots before it", section.offset,
                             f"slot {slot}")
        end = section.offset + len(section.data) + len(section.cid) + _uvarint_len(len(section.data) + len(section.cid))
        ranges[slot] = (slot_start, end - slot_start)
        slot_start = None
        prev_slot = slot
    if slot_start is not None:
        raise car._error("file ends inside a slot (no Block node after its nodes)", slot_start,
                         car._slot_hint(prev_slot))
    if epoch is None:
        raise SourceError(f"{car.name}: no Block nodes, so no epoch to index")
    return epoch, ranges


def _uvarint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size
