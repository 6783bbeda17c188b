"""Streaming reader for Old Faithful CAR archives (one CARv1 file per epoch).

The file is read in large chunks (local file or HTTP Range stream) and walked section by section:
`uvarint(len) · CID · DAG-CBOR node`. Nodes are never all decoded: the walk looks at each
section's kind byte and only decodes Block nodes and the Transaction nodes that pass the
pre-filter, with libipld.decode_dag_cbor on that one section. A slot's nodes come before its Block
node (the last node of the slot), so only the current slot's candidate transactions and
DataFrames are buffered.

Pre-filter (`wanted_keys`, 32-byte keys): a transaction is a candidate when one of the keys occurs
verbatim in its section (keys are searched once per read chunk with bytes.find, so the per-section
cost is one comparison). A v0 transaction can name a program through an address lookup table: its
loaded keys are only in the compressed metadata, so v0 transactions are checked against the
decompressed metadata too. Multi-frame transactions are never rejected before reassembly.
Candidates are fully decoded and kept only if a key is one of their account keys (static keys plus
loaded addresses), the same rule every source applies.

With `epoch-{N}-slot-ranges.raw` next to the CAR the reader seeks straight to the first wanted
slot and stops after the last; without it, it walks from the start and drops earlier slots without
decoding their transactions.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from typing import Collection, Iterator, NamedTuple

import libipld
import zstandard
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.byte_range import READ_SIZE, ByteSource, RangeStream, open_source, sibling
from iq_etl.ingest.sources.car.format import (CID_LEN, CID_PREFIX, KIND_BLOCK, KIND_DATAFRAME, KIND_ENTRY, KIND_EPOCH,
                                       KIND_NAMES, KIND_REWARDS, KIND_SUBSET, KIND_TRANSACTION, MAX_SECTION_BYTES,
                                       SLOT_RANGE_RECORD, crc64_iso, parse_slot_ranges, slot_ranges_name)
from iq_etl.ingest.sources.car.tx_meta import MetaError, decode_meta, decompress, loaded_keys
from iq_etl.solana.model import ChainBlock, ChainTransaction
from iq_etl.solana.slots import SLOTS_PER_EPOCH, SlotRange, epoch_bounds, epoch_of

log = logging.getLogger(__name__)

DEFAULT_LOCATION = "https://files.old-faithful.net/{epoch}/epoch-{epoch}.car"
_FEW_KEYS = 16  # up to this many keys: search chunks with bytes.find; more: look keys up in a set
_MASK64 = (1 << 64) - 1
_EPOCH_IN_NAME = re.compile(r"epoch-(\d+)\.car$")
_MAX_HEADER = 1 << 20
# A single-frame DataFrame in a Transaction node: [6, null, null, null, bytes(len 2 or 1 bytes)...
_TX_FRAME_2B = b"\x86\x06\xf6\xf6\xf6\x59"
_TX_FRAME_1B = b"\x86\x06\xf6\xf6\xf6\x58"
_TXN_2B = b"\x85\x00" + _TX_FRAME_2B  # Transaction node [0, that frame, ...] with 5 fields
_TXN_1B = b"\x85\x00" + _TX_FRAME_1B
# zstandard's (de)compressor objects are not thread-safe (concurrent use can crash the process):
# one per thread, since ingest scans sub-ranges in a thread pool.
_zstd_local = threading.local()


def _zstd() -> zstandard.ZstdDecompressor:
    dctx = getattr(_zstd_local, "dctx", None)
    if dctx is None:
        dctx = _zstd_local.dctx = zstandard.ZstdDecompressor()
    return dctx


class IncompleteRange(SourceError):
    """The data ended before the requested last slot: coverage is incomplete, never success."""

    def __init__(self, message: str, last_covered_slot: int | None):
        super().__init__(message)
        self.last_covered_slot = last_covered_slot


class Section(NamedTuple):
    offset: int   # file offset of the section's length prefix
    cid: bytes
    kind: int
    data: bytes   # the DAG-CBOR node


@dataclass
class CarHeader:
    roots: list[bytes]
    version: int
    data_offset: int  # where the first section starts


def _uvarint(buf: bytes, pos: int, n: int) -> tuple[int, int] | None:
    """(value, position after) or None when the buffer ends inside the varint."""
    value = shift = 0
    for i in range(pos, min(n, pos + 10)):
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    if n - pos >= 10:
        raise ValueError("varint longer than 10 bytes")
    return None


def _cid_length(buf: bytes, p: int, end: int) -> int:
    """Length of the CID at buf[p:end] (CIDv1: version, codec, multihash code, digest length, digest)."""
    if buf.startswith(CID_PREFIX, p):
        return CID_LEN
    q = p
    fields = []
    for _ in range(4):
        got = _uvarint(buf, q, end)
        if got is None:
            raise ValueError("section ends inside its CID")
        value, q = got
        fields.append(value)
    version, _codec, _mh_code, digest_len = fields
    if version != 1 or digest_len > 64 or q + digest_len > end:
        raise ValueError(f"bad CID (version {version}, digest length {digest_len})")
    return q + digest_len - p


def _frame_fields(frame, where: str) -> tuple:
    """(hash, index, total, data, next) of a decoded DataFrame list, absent trailing fields as None."""
    if not isinstance(frame, list) or len(frame) < 5 or frame[0] != KIND_DATAFRAME:
        raise ValueError(f"{where}: not a DataFrame")
    data = frame[4]
    if not isinstance(data, bytes):
        raise ValueError(f"{where}: DataFrame data is not a byte string")
    nxt = frame[5] if len(frame) > 5 else None
    return frame[1], frame[2], frame[3], data, nxt


class CarFile:
    """One CAR file (local path or URL): header, sections, and slot-by-slot blocks."""

    def __init__(self, location: str, *, wanted_keys: Collection[bytes] | None = None,
                 source: ByteSource | None = None, read_size: int = READ_SIZE, verify_cids: bool = False,
                 epoch: int | None = None, http_options: dict | None = None):
        self.location = str(location)
        self.http_options = http_options or {}
        self.source = source or open_source(self.location, **self.http_options)
        self.name = self.source.name
        self.read_size = read_size
        self.verify_cids = verify_cids
        if wanted_keys is not None:
            keys = tuple(dict.fromkeys(bytes(k) for k in wanted_keys))
            bad = [k for k in keys if len(k) != 32]
            if bad:
                raise ValueError(f"wanted_keys must be 32-byte keys; got {len(bad[0])} bytes")
            self.wanted: tuple[bytes, ...] | None = keys
        else:
            self.wanted = None
        m = _EPOCH_IN_NAME.search(self.name)
        self.epoch = epoch if epoch is not None else (int(m.group(1)) if m else None)
        self._header: CarHeader | None = None

    # -- errors
    def _error(self, what: str, offset: int, slot_hint: str) -> SourceError:
        return SourceError(f"{self.name}: {what} at byte offset {offset} ({slot_hint})")

    @staticmethod
    def _slot_hint(prev_slot: int | None) -> str:
        return f"in the slot after slot {prev_slot}" if prev_slot is not None else "in the first slot of the data"

    # -- header
    def header(self) -> CarHeader:
        if self._header is None:
            head = self.source.read_range(0, 11)
            got = _uvarint(head, 0, len(head)) if head else None
            if got is None:
                raise self._error("file too short for a CAR header", 0, "header")
            length, p = got
            if length == 0 or length > _MAX_HEADER:
                raise self._error(f"implausible CAR header length {length}", 0, "header")
            raw = self.source.read_range(p, p + length)
            if len(raw) < length:
                raise self._error("file ends inside the CAR header", p, "header")
            try:
                obj = libipld.decode_dag_cbor(raw)
            except Exception as exc:
                raise self._error(f"corrupt CAR header ({exc})", p, "header") from None
            if not isinstance(obj, dict) or obj.get("version") != 1:
                raise self._error("not a CARv1 header", p, "header")
            self._header = CarHeader(list(obj.get("roots") or []), 1, p + length)
        return self._header

    # -- slot-ranges index
    def slot_ranges(self, first_slot: int, last_slot: int) -> list[tuple[int, int, int]] | None:
        """[(slot, offset, length)] for first..last from `epoch-{N}-slot-ranges.raw` next to the
        CAR, or None when there is no such index (or the epoch of the file is unknown)."""
        if self.epoch is None:
            return None
        lo, hi = epoch_bounds(self.epoch)
        first, last = max(first_slot, lo), min(last_slot, hi)
        if first > last:
            return []
        index = open_source(sibling(self.location, slot_ranges_name(self.epoch)), **self.http_options)
        try:
            if not index.exists():
                return None
            rec = SLOT_RANGE_RECORD.size
            raw = index.read_range((first - lo) * rec, (last - lo + 1) * rec)
        except SourceError as exc:
            log.warning("%s: slot-ranges index unusable (%s); scanning from the start", self.name, exc)
            return None
        if len(raw) != (last - first + 1) * rec:
            log.warning("%s: slot-ranges index %s is short; scanning from the start", self.name, index.name)
            return None
        return parse_slot_ranges(raw, first)

    # -- generic section walk (inspect, index, tests)
    def iter_sections(self, start: int | None = None, end: int | None = None) -> Iterator[Section]:
        """Every section in [start, end) (default: the whole file after the header)."""
        if start is None:
            start = self.header().data_offset
        stream = self.source.open(start, end)
        try:
            buf = b""
            base = start
            pos = 0
            eof = False
            while True:
                n = len(buf)
                while pos < n:
                    try:
                        got = _uvarint(buf, pos, n)
                    except ValueError:
                        raise self._error("corrupt section length", base + pos, "section walk") from None
                    if got is None:
                        break
                    length, p = got
                    if length > MAX_SECTION_BYTES or length < 2:
                        raise self._error(f"corrupt section length {length}", base + pos, "section walk")
                    e = p + length
                    if e > n:
                        break
                    try:
                        cid_len = _cid_length(buf, p, e)
                    except ValueError as exc:
                        raise self._error(str(exc), base + pos, "section walk") from None
                    d = p + cid_len
                    kind = buf[d + 1] if e - d >= 2 and buf[d] & 0xE0 == 0x80 else -1
                    yield Section(base + pos, buf[p:d], kind, buf[d:e])
                    pos = e
                if eof:
                    if pos < n:
                        raise self._error(f"file truncated inside a section ({n - pos} bytes left over)",
                                          base + pos, "section walk")
                    return
                chunk = stream.read(self.read_size)
                if not chunk:
                    eof = True
                buf = buf[pos:] + chunk
                base += pos
                pos = 0
        finally:
            stream.close()

    # -- the slot walk -------------------------------------------------------------------------------
    def iter_slots(self, first_slot: int | None = None, last_slot: int | None = None, *,
                   use_index: bool = True, yield_skipped: bool = True) -> Iterator[ChainBlock]:
        """Blocks for first..last in slot order, with skipped slots as `ChainBlock(skipped=True)`.

        None bounds mean "whatever the file holds" (no coverage claims on that side). With a bound,
        raises IncompleteRange (after yielding what it had) when the data does not reach it and
        nothing says the missing slots are empty."""
        ranges = None
        if use_index and first_slot is not None and last_slot is not None:
            ranges = self.slot_ranges(first_slot, last_slot)
        if ranges is not None:
            yield from self._iter_indexed(ranges, first_slot, last_slot, yield_skipped)
            return
        # Without an index, a full epoch file (its epoch known from its name) starts at the epoch's
        # first block, so slots before its first block are skipped; for other files nothing is known.
        walk = _SlotWalk(self, first_slot, last_slot, yield_skipped, leading_gap_skipped=self.epoch is not None)
        walk.expect_roots = {bytes(r) for r in self.header().roots}
        yield from walk.run(self.header().data_offset, None)
        if walk.stopped_past_last or last_slot is None:
            return
        covered = walk.coverage_end()
        if yield_skipped and covered is not None:
            lo = first_slot if first_slot is not None else covered + 1
            if walk.last_block_slot is not None:
                lo = max(lo, walk.last_block_slot + 1)
            for s in range(lo, min(covered, last_slot) + 1):
                yield ChainBlock(slot=s, skipped=True)
        if covered is None or covered < last_slot:
            shown = "no block" if walk.last_block_slot is None else f"last block at slot {walk.last_block_slot}"
            raise IncompleteRange(f"{self.name}: data ends before slot {last_slot} ({shown}; covers up to "
                                  f"{covered if covered is not None else 'nothing'})", covered)

    def _iter_indexed(self, ranges, first_slot: int, last_slot: int, yield_skipped: bool) -> Iterator[ChainBlock]:
        present = [(s, off, ln) for s, off, ln in ranges if ln]
        if present:
            start = min(off for _, off, _ in present)
            end = max(off + ln for _, off, ln in present)
            walk = _SlotWalk(self, first_slot, last_slot, yield_skipped, leading_gap_skipped=True)
            yield from walk.run(start, end)
            if walk.last_block_slot != present[-1][0]:
                raise IncompleteRange(
                    f"{self.name}: slot-ranges index lists slot {present[-1][0]} but the data ended after "
                    f"slot {walk.last_block_slot}", walk.last_block_slot)
            after = present[-1][0] + 1
        else:
            after = first_slot
        covered_to = ranges[-1][0] if ranges else first_slot - 1
        if yield_skipped:
            for s in range(after, covered_to + 1):
                yield ChainBlock(slot=s, skipped=True)
        if covered_to < last_slot:  # the range goes past this file's epoch
            raise IncompleteRange(f"{self.name}: covers slots up to {covered_to}, asked up to {last_slot}",
                                  covered_to)


class _SlotWalk:
    """One pass over a byte range of a CAR: the hot loop of the reader."""

    def __init__(self, car: CarFile, first_slot: int | None, last_slot: int | None, yield_skipped: bool,
                 leading_gap_skipped: bool):
        self.car = car
        self.first = first_slot if first_slot is not None else 0
        self.last = last_slot if last_slot is not None else 2**63 - 1
        self.check_start = first_slot is not None
        self.leading_gap_skipped = leading_gap_skipped
        self.yield_skipped = yield_skipped
        self.last_block_slot: int | None = None
        self.max_subset_slot: int | None = None
        self.saw_epoch_node: int | None = None
        # When walking a whole file: its header roots (Old Faithful's root is the last node, the
        # Epoch node or a Subset). Reaching the end without meeting one means the file was cut short
        # at a section boundary.
        self.expect_roots: set[bytes] = set()
        self.root_seen = False
        self.stopped_past_last = False

    def coverage_end(self) -> int | None:
        """Last slot the walked data speaks for: blocks seen, subsets' declared ranges, the epoch node."""
        ends = [s for s in (self.last_block_slot, self.max_subset_slot) if s is not None]
        if self.saw_epoch_node is not None:
            ends.append(epoch_bounds(self.saw_epoch_node).last_slot)
        return max(ends) if ends else None

    def run(self, start: int, end: int | None) -> Iterator[ChainBlock]:
        car = self.car
        name = car.name
        wanted = car.wanted
        few_keys = wanted is not None and len(wanted) <= _FEW_KEYS
        keyset = frozenset(wanted) if wanted is not None else frozenset()
        verify = car.verify_cids
        fast = few_keys and not verify
        first = self.first
        stream: RangeStream = car.source.open(start, end)
        inf = 1 << 62
        # One reused buffer: bytes [0, n) are valid; each refill moves the unread tail to the front
        # and reads into the rest (no per-chunk allocation, no page faults on fresh memory).
        buf = bytearray(max(car.read_size, 1 << 16))
        n = 0
        base = start  # file offset of buf[0]
        pos = 0
        need = 0      # bytes the incomplete section at pos needs in the buffer
        eof = False
        hits: list[int] = []
        hi = 0
        next_hit = inf
        # the slot being assembled
        cands: list[tuple[int, bytes, bytes, int, bool]] = []  # (offset, cid, node bytes, position, complex)
        frames: dict[bytes, bytes] = {}
        seen = 0
        prev_slot = self.last_block_slot
        try:
            while True:
                n1 = n - 1  # a section needs at least 2 bytes of varint lookahead in the buffer
                while pos < n1:
                    b0 = buf[pos]
                    if b0 >= 0x80 and buf[pos + 1] < 0x80:
                        p = pos + 2
                        e = p + ((b0 & 0x7F) | (buf[pos + 1] << 7))
                    elif b0 < 0x80:
                        p = pos + 1
                        e = p + b0
                    else:
                        try:
                            got = _uvarint(buf, pos, n)
                        except ValueError:
                            raise car._error("corrupt section length", base + pos, car._slot_hint(prev_slot)) from None
                        if got is None:
                            need = 11
                            break
                        length, p = got
                        if length > MAX_SECTION_BYTES:
                            raise car._error(f"corrupt section length {length}", base + pos, car._slot_hint(prev_slot))
                        e = p + length
                    if e > n:
                        need = e - pos
                        break
                    if buf.startswith(CID_PREFIX, p):
                        d = p + 36
                        # Hot path (pre-filter on, few keys): a Transaction node whose data is a
                        # single DataFrame of 24..65535 bytes, i.e. nearly every transaction.
                        if not fast:
                            ts = 0
                        elif buf.startswith(_TXN_2B, d):
                            ts = d + 10
                            te = ts + (buf[d + 8] << 8 | buf[d + 9])
                        elif buf.startswith(_TXN_1B, d):
                            ts = d + 9
                            te = ts + buf[d + 8]
                        else:
                            ts = 0
                        if ts:
                            seen += 1
                            if next_hit < e:
                                while next_hit < pos:
                                    hi += 1
                                    next_hit = hits[hi] if hi < len(hits) else inf
                                if next_hit < e:
                                    cands.append((base + pos, bytes(buf[p:d]), bytes(buf[d:e]), seen - 1, False))
                                    pos = e
                                    continue
                            # No wanted key in the section. One signature and a legacy message (all
                            # keys static): rejected. v0: the metadata's loaded keys are checked.
                            if buf[ts] == 1 and te < e and (buf[te] == 0xF6 or buf[te] == 0x80):
                                if buf[ts + 65] >= 0x80:
                                    verdict = _meta_verdict(buf, te, e, wanted)
                                    if verdict:
                                        cands.append((base + pos, bytes(buf[p:d]), bytes(buf[d:e]), seen - 1,
                                                      verdict == 2))
                            else:
                                verdict = _quick_verdict(buf, d, e, wanted, None)
                                if verdict:
                                    cands.append((base + pos, bytes(buf[p:d]), bytes(buf[d:e]), seen - 1,
                                                  verdict == 2))
                            pos = e
                            continue
                    else:
                        try:
                            d = p + _cid_length(buf, p, e)
                        except ValueError as exc:
                            raise car._error(str(exc), base + pos, car._slot_hint(prev_slot)) from None
                    if e - d < 2 or buf[d] & 0xE0 != 0x80:
                        raise car._error("corrupt section: node is not a CBOR array", base + pos,
                                         car._slot_hint(prev_slot))
                    kind = buf[d + 1]
                    if kind == KIND_TRANSACTION:
                        seen += 1
                        if wanted is None:
                            verdict = 1
                        elif few_keys:
                            if next_hit < e:
                                while next_hit < pos:
                                    hi += 1
                                    next_hit = hits[hi] if hi < len(hits) else inf
                            verdict = 1 if next_hit < e else _quick_verdict(buf, d, e, wanted, None)
                        else:
                            verdict = _quick_verdict(buf, d, e, wanted, keyset)
                        if verdict:
                            cands.append((base + pos, bytes(buf[p:d]), bytes(buf[d:e]), seen - 1, verdict == 2))
                    elif kind == KIND_ENTRY or kind == KIND_REWARDS:
                        pass
                    elif kind == KIND_BLOCK:
                        block = self._block(buf, p, d, e, base + pos, prev_slot)
                        slot = block.slot
                        if prev_slot is not None and slot <= prev_slot:
                            raise car._error(f"block for slot {slot} after slot {prev_slot} (out of order)",
                                             base + pos, f"slot {slot}")
                        if slot > self.last:
                            if prev_slot is None and self.check_start and not self.leading_gap_skipped:
                                raise IncompleteRange(f"{name}: data starts at slot {slot}, asked for slots "
                                                      f"{first}..{self.last}", None)
                            self.stopped_past_last = True
                            if self.yield_skipped and (prev_slot is not None or self.check_start):
                                lo = max(first, prev_slot + 1 if prev_slot is not None else first)
                                for s in range(lo, self.last + 1):
                                    yield ChainBlock(slot=s, skipped=True)
                            return
                        if slot >= first:
                            if prev_slot is None and slot > first and self.check_start \
                                    and not self.leading_gap_skipped:
                                raise IncompleteRange(f"{name}: data starts at slot {slot}, asked from slot {first}",
                                                      None)
                            if self.yield_skipped and (prev_slot is not None or self.check_start):
                                lo = max(first, prev_slot + 1 if prev_slot is not None else first)
                                for s in range(lo, slot):
                                    yield ChainBlock(slot=s, skipped=True)
                            block.transactions_seen = seen
                            block.transactions = self._transactions(block, cands, frames)
                        prev_slot = self.last_block_slot = slot
                        cands = []
                        frames = {}
                        seen = 0
                        if slot >= first:
                            yield block
                    elif kind == KIND_DATAFRAME:
                        frames[bytes(buf[p:d])] = bytes(buf[d:e])
                    elif kind == KIND_SUBSET:
                        node = self._decode(buf, d, e, base + pos, prev_slot)
                        if len(node) > 2 and isinstance(node[2], int):
                            self.max_subset_slot = max(self.max_subset_slot or 0, node[2])
                        if bytes(buf[p:d]) in self.expect_roots:
                            self.root_seen = True
                    elif kind == KIND_EPOCH:
                        node = self._decode(buf, d, e, base + pos, prev_slot)
                        if len(node) > 1 and isinstance(node[1], int):
                            self.saw_epoch_node = node[1]
                        if bytes(buf[p:d]) in self.expect_roots:
                            self.root_seen = True
                    else:
                        raise car._error(f"unexpected node kind {kind}", base + pos, car._slot_hint(prev_slot))
                    if verify and kind != KIND_TRANSACTION and kind != KIND_BLOCK:
                        self._verify(buf, p, d, e, base + pos, prev_slot)
                    pos = e
                if eof:
                    if pos < n:
                        raise car._error(f"data truncated inside a section ({n - pos} bytes left over)",
                                         base + pos, car._slot_hint(prev_slot))
                    if cands or seen or frames:
                        what = "range" if end is not None else "file"
                        raise car._error(f"{what} ends inside a slot (no Block node after its transactions)",
                                         base + pos, car._slot_hint(prev_slot))
                    if self.expect_roots and not self.root_seen:
                        raise car._error("file ends before its root node (truncated at a section boundary?)",
                                         base + pos, car._slot_hint(prev_slot))
                    return
                # refill: move the unread tail to the front, grow for a section bigger than the buffer
                left = n - pos
                if left:
                    buf[0:left] = buf[pos:n]
                base += pos
                pos = 0
                if need > len(buf):
                    buf.extend(bytes(need - len(buf)))
                need = 0
                with memoryview(buf) as view:
                    got = stream.readinto(view[left:])
                n = left + got
                if not got:
                    eof = True
                if few_keys:
                    hits = _find_all(buf, wanted, n)
                    hi = 0
                    next_hit = hits[0] if hits else inf
        finally:
            stream.close()

    # -- helpers (called per block / per candidate, not per section)
    def _decode(self, buf: bytes, d: int, e: int, offset: int, prev_slot: int | None):
        try:
            node = libipld.decode_dag_cbor(bytes(buf[d:e]))
        except Exception as exc:
            raise self.car._error(f"corrupt section ({exc})", offset, self.car._slot_hint(prev_slot)) from None
        if not isinstance(node, list) or not node:
            raise self.car._error("corrupt section: node is not a list", offset, self.car._slot_hint(prev_slot))
        return node

    def _verify(self, buf: bytes, p: int, d: int, e: int, offset: int, prev_slot: int | None) -> None:
        if buf.startswith(CID_PREFIX, p) and hashlib.sha256(buf[d:e]).digest() != buf[p + 4:d]:
            raise self.car._error(f"CID mismatch for section {_cid_text(buf[p:d])}", offset,
                                  self.car._slot_hint(prev_slot))

    def _block(self, buf: bytes, p: int, d: int, e: int, offset: int, prev_slot: int | None) -> ChainBlock:
        self._verify(buf, p, d, e, offset, prev_slot)
        node = self._decode(buf, d, e, offset, prev_slot)
        try:
            slot = node[1]
            if not isinstance(slot, int):
                raise TypeError("slot is not an integer")
            meta = node[4] if len(node) > 4 and isinstance(node[4], list) else []
            parent = meta[0] if len(meta) > 0 else None
            block_time = meta[1] if len(meta) > 1 else None
            height = meta[2] if len(meta) > 2 else None
        except (IndexError, TypeError) as exc:
            raise self.car._error(f"corrupt Block node ({exc})", offset, self.car._slot_hint(prev_slot)) from None
        return ChainBlock(slot=slot, parent_slot=parent, block_time=block_time or None, block_height=height)

    def _transactions(self, block: ChainBlock, cands, frames) -> list[ChainTransaction]:
        car = self.car
        wanted = car.wanted
        epoch = epoch_of(block.slot)
        out = []
        for offset, cid, node_bytes, position, _complex in cands:
            where = f"slot {block.slot}"
            if hashlib.sha256(node_bytes).digest() != cid[4:] and cid.startswith(CID_PREFIX):
                raise car._error(f"CID mismatch for transaction section {_cid_text(cid)}", offset, where)
            try:
                node = libipld.decode_dag_cbor(node_bytes)
            except Exception as exc:
                raise car._error(f"corrupt Transaction node ({exc})", offset, where) from None
            if not isinstance(node, list) or len(node) < 4 or node[0] != KIND_TRANSACTION:
                raise car._error("corrupt Transaction node (wrong shape)", offset, where)
            if node[3] != block.slot:
                raise car._error(f"Transaction node of slot {node[3]} inside slot {block.slot}", offset, where)
            try:
                tx_bytes = _payload(node[1], frames)
                meta_bytes = _payload(node[2], frames)
            except _FrameError as exc:
                raise car._error(f"transaction {_cid_text(cid)}: {exc}", offset, where) from None
            try:
                tx = VersionedTransaction.from_bytes(tx_bytes)
            except Exception as exc:
                raise car._error(f"transaction {_cid_text(cid)} is not a valid VersionedTransaction ({exc})",
                                 offset, where) from None
            try:
                meta = decode_meta(meta_bytes, epoch=epoch)
            except MetaError as exc:
                raise car._error(f"transaction {_cid_text(cid)}: bad metadata ({exc})", offset, where) from None
            index = node[4] if len(node) > 4 and isinstance(node[4], int) else position
            ctx = ChainTransaction(signature=str(tx.signatures[0]) if tx.signatures else "", slot=block.slot,
                                   index=index, transaction=tx, meta=meta, block_time=block.block_time)
            if wanted is not None and not _mentions(ctx, wanted):
                continue
            out.append(ctx)
        return out


class _FrameError(ValueError):
    pass


def _cid_text(cid: bytes) -> str:
    """base32 multibase text of a CID, as IPFS tools show it."""
    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


def _payload(frame, frames: dict[bytes, bytes]) -> bytes:
    """Bytes of an embedded DataFrame, joining continuation frames (by index) and checking the CRC."""
    try:
        hash_, index, total, data, nxt = _frame_fields(frame, "embedded frame")
    except ValueError as exc:
        raise _FrameError(str(exc)) from None
    if not nxt and hash_ is None:
        if total not in (None, 0, 1):
            raise _FrameError(f"DataFrame says {total} frames but links none")
        return data  # the common case: one frame, no hash
    parts = [(index or 0, data)]
    stack = list(nxt or ())
    visited = set()
    while stack:
        link = stack.pop()
        if link in visited:
            raise _FrameError(f"DataFrame {_cid_text(link)} linked twice")
        visited.add(link)
        raw = frames.get(link)
        if raw is None:
            raise _FrameError(f"continuation DataFrame {_cid_text(link)} not found in the slot")
        try:
            sub = libipld.decode_dag_cbor(raw)
            h2, i2, t2, d2, n2 = _frame_fields(sub, f"DataFrame {_cid_text(link)}")
        except ValueError as exc:
            raise _FrameError(str(exc)) from None
        except Exception as exc:
            raise _FrameError(f"corrupt DataFrame {_cid_text(link)} ({exc})") from None
        if i2 is None:
            raise _FrameError(f"continuation DataFrame {_cid_text(link)} has no index")
        parts.append((i2, d2))
        if n2:
            stack.extend(n2)
    parts.sort(key=lambda item: item[0])
    if total is not None and len(parts) != total:
        raise _FrameError(f"expected {total} DataFrames, found {len(parts)}")
    joined = b"".join(d for _, d in parts)
    if hash_ is not None and crc64_iso(joined) != hash_ & _MASK64:
        raise _FrameError(f"CRC-64/ISO mismatch over {len(parts)} DataFrames (stored {hash_ & _MASK64:#018x}, "
                          f"computed {crc64_iso(joined):#018x})")
    return joined


def _find_all(buf: bytes | bytearray, keys: tuple[bytes, ...], n: int) -> list[int]:
    """Sorted positions in buf[:n] where any key starts."""
    found: list[int] = []
    for key in keys:
        i = buf.find(key, 0, n)
        while i != -1:
            found.append(i)
            i = buf.find(key, i + 1, n)
    found.sort()
    return found


def _quick_verdict(buf: bytes, d: int, e: int, wanted: tuple[bytes, ...], keyset: frozenset | None) -> int:
    """For a Transaction section whose bytes do not contain a wanted key (few-keys mode) or
    whose keys still need checking (many-keys mode): 0 = reject, 1 = candidate, 2 = candidate that
    needs full decoding to tell (multi-frame or unusual layout).

    Reads the common layout in place: `[0, [6, null, null, null, bytes tx, null|[]], [6, null,
    null, null, bytes meta, ...], slot, index]`. Anything else is left to the full decoder."""
    if e - d < 16:
        return 2
    # data DataFrame: 0x86 0x06 then hash, index, total all null for a single frame
    if buf[d + 2] != 0x86 or buf[d + 3] != 0x06 or buf[d + 4] != 0xF6 or buf[d + 5] != 0xF6 or buf[d + 6] != 0xF6:
        return 2
    q = d + 7
    h = buf[q]
    if h == 0x59:
        s = q + 3
        ln = buf[q + 1] << 8 | buf[q + 2]
    elif h == 0x58:
        s = q + 2
        ln = buf[q + 1]
    elif 0x40 <= h <= 0x57:
        s = q + 1
        ln = h - 0x40
    else:
        return 2
    te = s + ln
    if te + 8 > e:
        return 2
    nxt = buf[te]
    if nxt != 0xF6 and nxt != 0x80:
        return 2  # linked continuation frames
    nsig = buf[s]
    if nsig >= 0x80:
        return 2
    m = s + 1 + 64 * nsig
    if m >= te:
        return 2
    version = buf[m]
    if keyset is not None:
        # many keys: look the static account keys up in the set
        h0 = m + 1 if version & 0x80 else m
        nkeys = buf[h0 + 3]
        k = h0 + 4
        if nkeys >= 0x80:
            nkeys = (nkeys & 0x7F) | (buf[h0 + 4] << 7)
            k += 1
        if k + 32 * nkeys > te:
            return 2
        for i in range(nkeys):
            if bytes(buf[k + 32 * i:k + 32 * i + 32]) in keyset:
                return 1
    if not version & 0x80:
        return 0  # legacy message: every key is static, none matched
    # v0: keys may come from address lookup tables; they are in the metadata's loaded addresses
    return _meta_verdict(buf, te, e, wanted, keyset)


def _meta_verdict(buf, te: int, e: int, wanted: tuple[bytes, ...], keyset: frozenset | None = None) -> int:
    """Check a v0 transaction's metadata for wanted loaded keys; buf[te] is the byte after the
    transaction data (its DataFrame's `next`), the metadata DataFrame follows.
    0 = none, 1 = found, 2 = cannot tell without full decoding."""
    if buf[te] != 0xF6 and buf[te] != 0x80:
        return 2  # the transaction data continues in linked frames
    mq = te + 1
    if buf.startswith(_TX_FRAME_1B, mq):
        s = mq + 7
        me = s + buf[mq + 6]
    elif buf.startswith(_TX_FRAME_2B, mq):
        s = mq + 8
        me = s + (buf[mq + 6] << 8 | buf[mq + 7])
    else:
        return 2  # empty, tiny, huge or multi-frame metadata: leave it to the full decoder
    if me >= e or (buf[me] != 0xF6 and buf[me] != 0x80):
        return 2
    try:
        plain = _zstd().decompress(buf[s:me])
    except zstandard.ZstdError:
        try:
            plain = decompress(buf[s:me])  # frames without a content size in their header
        except MetaError:
            return 2  # let the full decoder report it if the slot is wanted
    if keyset is None:
        for key in wanted:
            if key in plain:
                return 1
        return 0
    try:
        return 1 if not keyset.isdisjoint(loaded_keys(plain)) else 0
    except MetaError:
        return 2


def _mentions(ctx: ChainTransaction, wanted: tuple[bytes, ...]) -> bool:
    """The authoritative filter: a wanted key is one of the transaction's account keys."""
    keys = {bytes(k) for k in ctx.transaction.message.account_keys}
    for key in wanted:
        if key in keys:
            return True
    if ctx.meta.loaded_writable or ctx.meta.loaded_readonly:
        loaded = {bytes(Pubkey.from_string(k)) for k in (*ctx.meta.loaded_writable, *ctx.meta.loaded_readonly)}
        return any(key in loaded for key in wanted)
    return False


# --- whole-file summaries: inspect and index ---------------------------------------------------------

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
        ranges = car.slot_ranges(first_slot, last_slot)
        if ranges is not None:
            present = [(off, ln) for _, off, ln in ranges if ln]
            if not present:
                return CarSummary({k: 0 for k in KIND_NAMES}, None, None, {}, [], 0)
            start = min(off for off, _ in present)
            end = max(off + ln for off, ln in present)
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


# --- CarSource ------------------------------------------------------------------------------------------

class CarSource:
    """Blocks from Old Faithful CARs. `location` is a path, an http(s) URL, or a template containing
    `{epoch}` (e.g. `/data/{epoch}/epoch-{epoch}.car`, default the public Old Faithful bucket)."""

    def __init__(self, location: str = DEFAULT_LOCATION, *, wanted_keys: Collection[bytes] | None = None,
                 use_index: bool = True, read_size: int = READ_SIZE, verify_cids: bool = False,
                 http_options: dict | None = None):
        """http_options: passed to HttpSource for URLs (retries, backoff, timeout, session)."""
        self.location = str(location)
        self.http_options = http_options
        self.wanted_keys = wanted_keys
        self.use_index = use_index
        self.read_size = read_size
        self.verify_cids = verify_cids
        self.is_template = "{epoch}" in self.location

    def location_for(self, epoch: int) -> str:
        return self.location.replace("{epoch}", str(epoch)) if self.is_template else self.location

    def car_file(self, epoch: int | None = None) -> CarFile:
        if self.is_template and epoch is None:
            raise ValueError(f"{self.location}: a template needs an epoch")
        loc = self.location_for(epoch) if epoch is not None else self.location
        return CarFile(loc, wanted_keys=self.wanted_keys, read_size=self.read_size, verify_cids=self.verify_cids,
                       epoch=epoch if self.is_template else None, http_options=self.http_options)

    def iter_blocks(self, first_slot: int, last_slot: int) -> Iterator[ChainBlock]:
        if first_slot > last_slot:
            raise ValueError(f"first slot {first_slot} is after last slot {last_slot}")
        if not self.is_template:
            yield from self.car_file().iter_slots(first_slot, last_slot, use_index=self.use_index)
            return
        for epoch, part in SlotRange(first_slot, last_slot).split_by_epoch():
            car = self.car_file(epoch)
            if not car.source.exists():
                raise IncompleteRange(f"{car.name}: not found (epoch {epoch}, slots {part})",
                                      part.first_slot - 1)
            yield from car.iter_slots(part.first_slot, part.last_slot, use_index=self.use_index)


__all__ = ["CarSource", "CarFile", "CarHeader", "Section", "IncompleteRange", "DEFAULT_LOCATION", "CarSummary",
           "summarize", "build_slot_ranges",
           "KIND_NAMES", "SLOTS_PER_EPOCH"]
