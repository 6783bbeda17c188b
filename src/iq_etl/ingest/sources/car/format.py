"""Small facts of the Old Faithful CAR format shared by the reader and the writer: node kinds,
CIDs, the DataFrame CRC and the `epoch-{N}-slot-ranges.raw` seek index."""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Mapping, NamedTuple

from iq_etl.solana.slots import SLOTS_PER_EPOCH, epoch_bounds

KIND_TRANSACTION, KIND_ENTRY, KIND_BLOCK, KIND_SUBSET, KIND_EPOCH, KIND_REWARDS, KIND_DATAFRAME = range(7)
KIND_NAMES = ("transaction", "entry", "block", "subset", "epoch", "rewards", "dataframe")

# CIDv1 · dag-cbor (0x71) · sha2-256 (0x12) · 32-byte digest
CID_PREFIX = b"\x01\x71\x12\x20"
CID_LEN = 36
IDENTITY_EMPTY_CID = b"\x01\x55\x00\x00"  # `bafkqaaa`: what blocks without rewards link to

MAX_SECTION_BYTES = 32 << 20  # Go's reader caps a section at 32 MiB; bigger is corruption

SLOT_RANGE_RECORD = struct.Struct("<QI")  # offset u64 LE · length u32 LE


def cid_for(node_bytes: bytes) -> bytes:
    return CID_PREFIX + hashlib.sha256(node_bytes).digest()


def slot_ranges_name(epoch: int) -> str:
    return f"epoch-{epoch}-slot-ranges.raw"


# --- CRC-64/GO-ISO (Go's hash/crc64 with the ISO table: reflected poly 0xD8.., init and xorout all ones)

def _make_crc_table() -> list[int]:
    poly = 0xD800000000000000
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _make_crc_table()
_MASK64 = (1 << 64) - 1
try:
    from iq_etl.ingest.sources.car._walker import crc64_iso as _crc64_native
except ImportError:  # not built: the Python loop
    _crc64_native = None


def crc64_iso(data: bytes) -> int:
    """Unsigned CRC as Go's crc64.Checksum(data, MakeTable(ISO)). Only multi-frame payloads are
    hashed (rare): the compiled walker's loop when it is built, else a table-driven Python loop."""
    if _crc64_native is not None:
        return _crc64_native(data)
    return _crc64_python(data)


def _crc64_python(data: bytes) -> int:
    table = _CRC_TABLE
    crc = _MASK64
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK64


def crc_to_cbor_int(crc: int) -> int:
    """DataFrame hashes are stored as signed 64-bit CBOR integers."""
    return crc - (1 << 64) if crc >= 1 << 63 else crc


# --- epoch-{N}-slot-ranges.raw -----------------------------------------------------------------------

def write_slot_ranges(path: str | os.PathLike, epoch: int, ranges: Mapping[int, tuple[int, int]]) -> Path:
    """Write the 432,000 × 12-byte index (all-zero records for slots without a block), atomically."""
    path = Path(path)
    first = epoch_bounds(epoch).first_slot
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.truncate(SLOTS_PER_EPOCH * SLOT_RANGE_RECORD.size)  # sparse: most records stay zero
        for slot, (offset, length) in sorted(ranges.items()):
            rel = slot - first
            if not 0 <= rel < SLOTS_PER_EPOCH:
                raise ValueError(f"slot {slot} is outside epoch {epoch}")
            if length > 0xFFFFFFFF:
                raise ValueError(f"slot {slot}: byte range of {length} bytes does not fit the index")
            f.seek(rel * SLOT_RANGE_RECORD.size)
            f.write(SLOT_RANGE_RECORD.pack(offset, length))
    os.replace(tmp, path)
    return path


class SlotSpan(NamedTuple):
    """What a slot scan needs from the index records of first..last: the byte range [start, end)
    holding every present slot, the last present slot (None: no block in the range) and how many
    slots are present."""
    first_slot: int
    last_slot: int
    start: int
    end: int
    last_present: int | None
    present: int


def slot_span(raw: bytes, first_slot: int) -> SlotSpan:
    """One pass over the records (from first_slot on), without a Python object per slot: a whole
    epoch's index (432,000 records, 5 MB) costs its bytes, not the 70 MB of a list of tuples."""
    if len(raw) % SLOT_RANGE_RECORD.size:
        raise ValueError(f"slot-ranges data of {len(raw)} bytes is not a whole number of 12-byte records")
    start = end = 0
    last = -1
    present = 0
    i = -1
    for i, (off, length) in enumerate(SLOT_RANGE_RECORD.iter_unpack(raw)):
        if length:
            if not present or off < start:
                start = off
            if off + length > end:
                end = off + length
            last = i
            present += 1
    count = i + 1
    return SlotSpan(first_slot, first_slot + count - 1, start, end,
                    first_slot + last if present else None, present)


def parse_slot_ranges(raw: bytes, first_slot: int) -> list[tuple[int, int, int]]:
    """Records (from first_slot on) -> [(slot, offset, length)] with length 0 for slots without a block."""
    if len(raw) % SLOT_RANGE_RECORD.size:
        raise ValueError(f"slot-ranges data of {len(raw)} bytes is not a whole number of 12-byte records")
    return [(first_slot + i, off, length)
            for i, (off, length) in enumerate(SLOT_RANGE_RECORD.iter_unpack(raw))]
