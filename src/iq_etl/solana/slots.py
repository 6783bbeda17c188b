"""Slot ranges in Jetstreamer's syntax: `S:E` an inclusive slot range, `N` one epoch, `A-B` an
inclusive epoch range. An epoch is 432,000 slots; epoch of a slot = slot // 432000."""
from __future__ import annotations

import datetime as _dt
import re
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

from iq_etl.errors import SettingsError

SLOTS_PER_EPOCH = 432_000

# Mainnet-beta's first slot: 2020-03-16. A slot takes at least 400 ms, so an epoch at least two days:
# no epoch beyond this many days / 2 can exist yet (the real tip is lower: slots are often slower).
_GENESIS = _dt.date(2020, 3, 16)
_MIN_EPOCH_DAYS = SLOTS_PER_EPOCH * 0.4 / 86_400


def newest_possible_epoch(today: _dt.date | None = None) -> int:
    """An upper bound on the chain tip's epoch today (no network needed)."""
    days = ((today or _dt.date.today()) - _GENESIS).days
    return int(days / _MIN_EPOCH_DAYS) + 1


_SLOT_RANGE = re.compile(r"^\s*([0-9]+)\s*:\s*([0-9]+)\s*$")  # ASCII digits only: "١٢" is not a slot
_EPOCH_RANGE = re.compile(r"^\s*([0-9]+)\s*-\s*([0-9]+)\s*$")
_EPOCH = re.compile(r"^\s*([0-9]+)\s*$")


class SlotRange(NamedTuple):
    first_slot: int
    last_slot: int  # inclusive

    @property
    def slot_count(self) -> int:
        return self.last_slot - self.first_slot + 1

    def epochs(self) -> range:
        """Epochs this range touches, in order."""
        return range(epoch_of(self.first_slot), epoch_of(self.last_slot) + 1)

    def split_by_epoch(self) -> Iterator[tuple[int, "SlotRange"]]:
        """(epoch, the part of this range inside that epoch) for every epoch touched."""
        for epoch in self.epochs():
            lo, hi = epoch_bounds(epoch)
            yield epoch, SlotRange(max(lo, self.first_slot), min(hi, self.last_slot))

    def __str__(self) -> str:
        return f"{self.first_slot}:{self.last_slot}"


def epoch_of(slot: int) -> int:
    if slot < 0:
        raise ValueError(f"slot {slot} is negative")
    return slot // SLOTS_PER_EPOCH


def epoch_bounds(epoch: int) -> SlotRange:
    """First and last slot (inclusive) of an epoch."""
    if epoch < 0:
        raise ValueError(f"epoch {epoch} is negative")
    first = epoch * SLOTS_PER_EPOCH
    return SlotRange(first, first + SLOTS_PER_EPOCH - 1)


def parse_slot_spec(spec: str) -> SlotRange:
    """Parse `S:E` (slots), `N` (an epoch) or `A-B` (epochs, inclusive) into a SlotRange."""
    text = str(spec)
    if m := _SLOT_RANGE.match(text):
        first, last = int(m.group(1)), int(m.group(2))
        if first > last:
            raise SettingsError(f"slot range {spec!r}: start {first} is after end {last}")
        newest = epoch_bounds(newest_possible_epoch()).last_slot
        if last > newest:
            raise SettingsError(f"slot range {spec!r}: slot {last} is beyond the chain tip (no slot after {newest} "
                                "can exist today)")
        return SlotRange(first, last)
    tip = newest_possible_epoch()
    if m := _EPOCH_RANGE.match(text):
        a, b = int(m.group(1)), int(m.group(2))
        if b > tip:
            hint = f"; did you mean the slot range {a}:{b}?" if a <= b else ""
            raise SettingsError(f"epoch range {spec!r}: epoch {b} is beyond the chain tip (at most epoch {tip} today)"
                                f"{hint} (A-B means epochs, S:E means slots)")
        if a > b:
            raise SettingsError(f"epoch range {spec!r}: start epoch {a} is after end epoch {b}")
        return SlotRange(epoch_bounds(a).first_slot, epoch_bounds(b).last_slot)
    if m := _EPOCH.match(text):
        epoch = int(m.group(1))
        if epoch > tip:
            raise SettingsError(f"epoch {spec!r} is beyond the chain tip (at most epoch {tip} today); did you mean "
                                f"slot {epoch}, i.e. the slot range {epoch}:{epoch}? (N means an epoch, S:E slots)")
        return epoch_bounds(epoch)
    raise SettingsError(f"slot spec {spec!r}: expected S:E (slots), N (an epoch) or A-B (epochs)")


# --- range arithmetic ------------------------------------------------------------------------


def covered(rng: SlotRange, done: Sequence[tuple[int, int]]) -> bool:
    """True when the union of `done` ranges covers every slot of `rng`."""
    need = rng.first_slot
    for first, last in done:  # sorted by first
        if first > need:
            break
        if last >= need:
            need = last + 1
            if need > rng.last_slot:
                return True
    return need > rng.last_slot


def split_range(rng: SlotRange, size: int) -> list[SlotRange]:
    return [SlotRange(s, min(s + size - 1, rng.last_slot)) for s in range(rng.first_slot, rng.last_slot + 1, size)]


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[SlotRange]:
    """Sorted, non-overlapping, non-adjacent inclusive ranges (any `(first, last)` pairs in)."""
    merged: list[SlotRange] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1].last_slot + 1:
            merged[-1] = SlotRange(merged[-1].first_slot, max(merged[-1].last_slot, last))
        else:
            merged.append(SlotRange(first, last))
    return merged


def subtract(wanted: Iterable[tuple[int, int]], covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `wanted` not inside any `covered` range (all inclusive)."""
    cov = merge_ranges(covered)
    out: list[tuple[int, int]] = []
    for a, b in merge_ranges(wanted):
        start = a
        for c, d in cov:
            if d < start:
                continue
            if c > b:
                break
            if c > start:
                out.append((start, c - 1))
            start = max(start, d + 1)
            if start > b:
                break
        if start <= b:
            out.append((start, b))
    return out


def available_parts(ranges: Iterable[tuple[int, int]], epoch_available: Callable[[int], bool]) -> list[SlotRange]:
    """The parts of `ranges` in epochs whose archive exists (the current epoch's CAR file, or epochs
    before a development chain's first, do not)."""
    out: list[tuple[int, int]] = []
    for a, b in merge_ranges(ranges):
        start = a
        while start <= b:
            epoch = start // SLOTS_PER_EPOCH
            end = min(b, (epoch + 1) * SLOTS_PER_EPOCH - 1)
            if epoch_available(epoch):
                out.append((start, end))
            start = end + 1
    return merge_ranges(out)
