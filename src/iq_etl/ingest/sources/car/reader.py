"""Streaming reader for Old Faithful CAR archives (one CARv1 file per epoch).

The file is read in large chunks (local file or HTTP Range stream) and walked section by section:
`uvarint(len) · CID · DAG-CBOR node`. Nodes are never all decoded: the walk looks at each
section's kind byte and only decodes Block nodes and the Transaction nodes that pass the
pre-filter, with libipld.decode_dag_cbor on that one section. A slot's nodes come before its Block
node (the last node of the slot), so only the current slot's candidate transactions and
DataFrames are buffered.

Pre-filter (`wanted_keys`, 32-byte keys): a transaction is a candidate when one of the keys is one
of its message's static account keys (keys are searched once per read chunk with bytes.find, so the
per-section cost is one comparison; with more than 16 keys the static keys are looked up in a set).
A v0 transaction can name a program through an address lookup table: its loaded keys are only in
the compressed metadata, so v0 transactions are checked through the lookup-table cache
(prefilter.LookupCache), decompressing the metadata only when a lookup is unknown. Multi-frame
transactions are never rejected before reassembly. Candidates are fully decoded and kept only if a
key is one of their account keys (static keys plus loaded addresses), the same rule every source
applies.

The hot loop runs in the compiled walker (`_walker.c`) when it is built and `IQ_SCANNER` allows
(scanner.py): it drops what this loop would drop and stops at every other section, which this
loop then handles, so both give the same candidates and errors.

With `epoch-{N}-slot-ranges.raw` next to the CAR, or else Old Faithful's compact indexes
(`epoch-{N}-{root CID}-mainnet-slot-to-cid.index` and `...-cid-to-offset-and-size.index`,
compact_index.py), the reader seeks straight to the first wanted slot and stops after the last;
without either, it walks from the start and drops earlier slots without decoding their transactions.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Collection, Iterator, NamedTuple

import libipld
from solders.transaction import VersionedTransaction

from iq_etl.errors import SourceError, SourceMissing
from iq_etl.ingest.sources.car import compact_index
from iq_etl.ingest.sources.car.byte_range import READ_SIZE, ByteSource, RangeStream, open_byte_source, sibling
from iq_etl.ingest.sources.car.format import (
    CID_LEN,
    CID_PREFIX,
    KIND_BLOCK,
    KIND_DATAFRAME,
    KIND_ENTRY,
    KIND_EPOCH,
    KIND_REWARDS,
    KIND_SUBSET,
    KIND_TRANSACTION,
    MAX_SECTION_BYTES,
    SLOT_RANGE_RECORD,
    SlotSpan,
    crc64_iso,
    parse_slot_ranges,
    slot_ranges_name,
    slot_span,
)
from iq_etl.ingest.sources.car.prefilter import (
    _TX_FRAME_1B,
    _TX_FRAME_2B,
    _find_all,
    _lut_verdict,
    _mentions,
    _meta_verdict,
    _quick_verdict,
    _section_hits,
    _static_hit,
    lookup_cache,
)
from iq_etl.ingest.sources.car.scanner import native_walk, resolve
from iq_etl.ingest.sources.car.tx_meta import MetaError, decode_meta
from iq_etl.solana.model import ChainBlock, ChainTransaction
from iq_etl.solana.slots import epoch_bounds, epoch_of

log = logging.getLogger(__name__)

_FEW_KEYS = 16  # up to this many keys: search chunks with bytes.find; more: look keys up in a set
_MASK64 = (1 << 64) - 1
_EPOCH_IN_NAME = re.compile(r"epoch-(\d+)\.car$")
_MAX_HEADER = 1 << 20
_TXN_2B = b"\x85\x00" + _TX_FRAME_2B  # Transaction node [0, that frame, ...] with 5 fields
_TXN_1B = b"\x85\x00" + _TX_FRAME_1B


_UNINDEXED_SAID: set[str] = set()


def _say_unindexed(car: str, looked_for: list[str], epoch: int, why: str | None = None) -> None:
    """Once per archive and process: without a seek index every sub-range of the epoch is read from
    the start of the CAR (a 404 used to be logged nowhere while a run read ~10x the file)."""
    if car in _UNINDEXED_SAID:
        return
    _UNINDEXED_SAID.add(car)
    log.warning("%s: no slot-ranges index and no usable compact indexes (looked for %s%s): each sub-range of "
                "epoch %d is read from the start of the archive, so use few, large sub-ranges for this epoch "
                "or a mirror that has one of these files", car, ", ".join(looked_for),
                f"; {why}" if why else "", epoch)


class IncompleteRange(SourceError):
    """The data ended before the requested last slot: coverage is incomplete, never success."""

    def __init__(self, message: str, last_covered_slot: int | None):
        super().__init__(message)
        self.last_covered_slot = last_covered_slot


class MissingArchive(IncompleteRange, SourceMissing):
    """The archive of (part of) the range is not there at all (not published, 404): incomplete, and
    retrying will not help."""


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
                 epoch: int | None = None, http_options: dict | None = None, scanner: str | None = None):
        """scanner: 'python', 'native' or 'auto' (None: `IQ_SCANNER`, default auto; see scanner.py)."""
        self.location = str(location)
        self.scanner = resolve(scanner)
        self.http_options = http_options or {}
        self.source = source or open_byte_source(self.location, **self.http_options)
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

    @property
    def scanner_used(self) -> str:
        """The walker a slot scan of this file runs: the compiled one covers the key pre-filter with
        few keys and unverified CIDs (what ingest does); everything else is the Python walk."""
        fast = self.wanted is not None and len(self.wanted) <= _FEW_KEYS and not self.verify_cids
        return "native" if self.scanner == "native" and fast else "python"

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

    # -- seek indexes: epoch-{N}-slot-ranges.raw, else the compact pair (slot-to-cid, cid-to-offset-and-size)
    def _epoch_clip(self, first_slot: int, last_slot: int) -> tuple[int, int, int] | None:
        """(first, last, epoch's first slot) of first..last clipped to the file's epoch; None when the
        epoch of the file is unknown."""
        if self.epoch is None:
            return None
        lo, hi = epoch_bounds(self.epoch)
        return max(first_slot, lo), min(last_slot, hi), lo

    def _slot_index(self, first_slot: int, last_slot: int) -> tuple[bytes, int] | None:
        """(raw records of first..last clipped to the file's epoch, first slot of them) from
        `epoch-{N}-slot-ranges.raw` next to the CAR; None when there is no usable file (or the epoch
        of the file is unknown); (b"", first) when the range misses the epoch."""
        clip = self._epoch_clip(first_slot, last_slot)
        if clip is None:
            return None
        first, last, lo = clip
        if first > last:
            return b"", first
        assert self.epoch is not None
        index = open_byte_source(sibling(self.location, slot_ranges_name(self.epoch)), **self.http_options)
        try:
            if not index.exists():
                return None
            rec = SLOT_RANGE_RECORD.size
            raw = index.read_range((first - lo) * rec, (last - lo + 1) * rec)
        except SourceError as exc:
            log.warning("%s: slot-ranges index unusable (%s)", self.name, exc)
            return None
        if len(raw) != (last - first + 1) * rec:
            log.warning("%s: slot-ranges index %s is short", self.name, index.name)
            return None
        return raw, first

    def _compact_span(self, first: int, last: int) -> tuple[SlotSpan | None, list[str], str | None]:
        """(span of first..last from the compact indexes or None, the index names looked for, why they
        were not used). Their names hold the root CID of the CAR header (base32, as Old Faithful names
        them); the lookups read the index headers and the few buckets needed (compact_index.py)."""
        assert self.epoch is not None
        try:
            header = self.header()
        except SourceError as exc:
            return None, ["the compact indexes (epoch-%d-<root CID>-mainnet-*.index)" % self.epoch], \
                f"CAR header unreadable ({exc})"
        if not header.roots:
            return None, [], "the CAR header names no root CID"
        root = bytes(header.roots[0])
        names = compact_index.index_names(self.epoch, root)
        sources = [open_byte_source(sibling(self.location, n), **self.http_options) for n in names]
        looked_for = [src.name for src in sources]
        try:
            s2c = compact_index.open_index(sources[0], compact_index.KIND_SLOT_TO_CID,
                                           compact_index.SLOT_TO_CID_VALUE_SIZE, epoch=self.epoch, root_cid=root)
            c2o = compact_index.open_index(sources[1], compact_index.KIND_CID_TO_OFFSET_AND_SIZE,
                                           compact_index.OFFSET_AND_SIZE_VALUE_SIZE, epoch=self.epoch,
                                           root_cid=root)
            locator = compact_index.SlotLocator(self.source, self.epoch, header.data_offset, s2c, c2o)
            return locator.span(first, last), looked_for, None
        except SourceMissing:
            return None, looked_for, None
        except SourceError as exc:
            log.warning("%s: compact indexes unusable (%s)", self.name, exc)
            return None, looked_for, str(exc)

    def slot_span(self, first_slot: int, last_slot: int) -> SlotSpan | None:
        """The byte range and last present slot of first..last: from the slot-ranges index (parsed in
        one pass, no object per slot), else from the compact indexes (`present` is then a lower
        bound); None when neither is there (said once per archive, naming the files looked for)."""
        got = self._slot_index(first_slot, last_slot)
        if got is not None:
            raw, first = got
            return slot_span(raw, first)
        clip = self._epoch_clip(first_slot, last_slot)
        if clip is None:
            return None
        assert self.epoch is not None
        first, last, _ = clip
        span, looked_for, why = self._compact_span(first, last)
        if span is not None:
            return span
        ranges = open_byte_source(sibling(self.location, slot_ranges_name(self.epoch)), **self.http_options).name
        _say_unindexed(self.name, [ranges] + looked_for, self.epoch, why)
        return None

    def slot_ranges(self, first_slot: int, last_slot: int) -> list[tuple[int, int, int]] | None:
        """[(slot, offset, length)] for first..last from `epoch-{N}-slot-ranges.raw` next to the
        CAR, or None when there is no such index (or the epoch of the file is unknown). A list entry
        per slot: for a whole epoch prefer `slot_span` (which also reads the compact indexes)."""
        got = self._slot_index(first_slot, last_slot)
        if got is None:
            return None
        raw, first = got
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
        span = None
        if use_index and first_slot is not None and last_slot is not None:
            span = self.slot_span(first_slot, last_slot)
        if span is not None:
            yield from self._iter_indexed(span, first_slot, last_slot, yield_skipped)
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

    def _iter_indexed(self, span: SlotSpan, first_slot: int, last_slot: int,
                      yield_skipped: bool) -> Iterator[ChainBlock]:
        if span.last_present is not None:
            walk = _SlotWalk(self, first_slot, last_slot, yield_skipped, leading_gap_skipped=True)
            yield from walk.run(span.start, span.end)
            if walk.last_block_slot != span.last_present:
                raise IncompleteRange(
                    f"{self.name}: slot-ranges index lists slot {span.last_present} but the data ended after "
                    f"slot {walk.last_block_slot}", walk.last_block_slot)
            after = span.last_present + 1
        else:
            after = first_slot
        covered_to = span.last_slot if span.last_slot >= span.first_slot else first_slot - 1
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
        cache = lookup_cache(keyset, car.location.rsplit("/", 2)[0]) if wanted is not None else None
        walker = native_walk() if car.scanner_used == "native" else None
        tables = cache.tables if cache is not None else {}
        keys_blob = b"".join(wanted) if wanted is not None else b""
        lut_checks = 0  # v0 transactions checked here or answered by the compiled walker (cache statistics)
        verify = car.verify_cids
        fast = few_keys and not verify
        first = self.first
        stream: RangeStream = car.source.open(start, end)
        inf = 1 << 62
        # One reused buffer: bytes [0, n) are valid; each refill moves the unread tail to the front
        # and reads into the rest (no per-chunk allocation, no page faults on fresh memory).
        buf = bytearray(max(car.read_size, 1 << 16))
        starts = buf.startswith  # the buffer object never changes (refills write into it)
        cid_prefix, txn_2b, txn_1b = CID_PREFIX, _TXN_2B, _TXN_1B
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
                    if walker is not None:
                        # the compiled walker drops what this loop would drop and stops at the first
                        # section that needs this loop (see _walker.c)
                        pos, k, c, maybe_tx = walker(buf, pos, n, keys_blob, tables)
                        seen += k
                        lut_checks += c
                        if pos >= n1:
                            break
                        # the wanted keys of this one section (a Block, frame... needs none)
                        hits = _section_hits(buf, wanted, pos, n) if maybe_tx else []
                        hi = 0
                        next_hit = hits[0] if hits else inf
                    b0 = buf[pos]
                    if b0 >= 0x80 and (b1 := buf[pos + 1]) < 0x80:
                        p = pos + 2
                        e = p + ((b0 & 0x7F) | (b1 << 7))
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
                    if starts(cid_prefix, p):
                        d = p + 36
                        # Hot path (pre-filter on, few keys): a Transaction node whose data is a
                        # single DataFrame of 24..65535 bytes, i.e. nearly every transaction.
                        if not fast:
                            ts = 0
                        elif starts(txn_2b, d):
                            ts = d + 10
                            te = ts + (buf[d + 8] << 8 | buf[d + 9])
                        elif starts(txn_1b, d):
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
                                if next_hit < e and _static_hit(buf, ts, te, e, hits, hi):
                                    cands.append((base + pos, bytes(buf[p:d]), bytes(buf[d:e]), seen - 1, False))
                                    pos = e
                                    continue
                            # No wanted key among the static keys. One signature and a legacy message (all
                            # keys static): rejected. v0: the metadata's loaded keys are checked.
                            if buf[ts] == 1 and te < e and (buf[te] == 0xF6 or buf[te] == 0x80):
                                if buf[ts + 65] >= 0x80:
                                    # _v0_verdict inlined (the most common check): the cache, else metadata
                                    lut_checks += 1
                                    verdict = _lut_verdict(buf, ts + 65, te, cache)
                                    if verdict < 0:
                                        cache.misses += 1
                                        verdict = _meta_verdict(buf, te, e, wanted, None, cache, ts + 65)
                                    if verdict:
                                        cands.append((base + pos, bytes(buf[p:d]), bytes(buf[d:e]), seen - 1,
                                                      verdict == 2))
                            else:
                                verdict = _quick_verdict(buf, d, e, wanted, None, cache)
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
                            verdict = 1 if next_hit < e else _quick_verdict(buf, d, e, wanted, None, cache)
                        else:
                            verdict = _quick_verdict(buf, d, e, wanted, keyset, cache)
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
                if few_keys and walker is None:
                    hits = _find_all(buf, wanted, n)
                    hi = 0
                    next_hit = hits[0] if hits else inf
        finally:
            stream.close()
            if lut_checks:
                cache.checks += lut_checks

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


# --- whole-file summaries: inspect and index ---------------------------------------------------------


__all__ = ["CarFile", "CarHeader", "Section", "IncompleteRange", "MissingArchive"]
