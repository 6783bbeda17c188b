"""Slot ranges in Jetstreamer's syntax: `S:E` an inclusive slot range, `N` one epoch, `A-B` an
inclusive epoch range. An epoch is 432,000 slots; epoch of a slot = slot // 432000."""
from __future__ import annotations

import re
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

from iq_etl.errors import SettingsError

SLOTS_PER_EPOCH = 432_000

_SLOT_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
_EPOCH_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")
_EPOCH = re.compile(r"^\s*(\d+)\s*$")


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
        return SlotRange(first, last)
    if m := _EPOCH_RANGE.match(text):
        a, b = int(m.group(1)), int(m.group(2))
        if a > b:
            raise SettingsError(f"epoch range {spec!r}: start epoch {a} is after end epoch {b}")
        return SlotRange(epoch_bounds(a).first_slot, epoch_bounds(b).last_slot)
    if m := _EPOCH.match(text):
        return epoch_bounds(int(m.group(1)))
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


def available_parts(ranges: Iterable[tuple[int, int]], epoch_available: Callable[[int], bool]) -> list[tuple[int, int]]:
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
