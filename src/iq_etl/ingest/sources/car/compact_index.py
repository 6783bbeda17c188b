"""Old Faithful's compact indexes (`compactindexsized`, magic `compiszd`) read over any ByteSource, and
the slot → Block CID → (offset, size) lookup that lets a reader seek in an epoch CAR without
`epoch-{N}-slot-ranges.raw`.

Format (rpcpool/yellowstone-faithful `compactindexsized/compactindex.go`, `query.go`, `build.go`;
`indexmeta/`; `indexes/`), all integers little-endian:

    header   magic "compiszd" · u32 rest_len · u64 value_size · u32 num_buckets · u8 version (1)
             · u8 n_kv · n_kv × (u8 key_len · key · u8 value_len · value)        (rest_len covers
             everything after the length field)
    table    num_buckets × 16 bytes, right after the header:
             u32 hash_domain · u32 num_entries · u8 hash_len (3) · u8 0 · u48 file_offset
    buckets  num_entries × (hash_len-byte truncated hash · value_size-byte value), sorted by hash and
             laid out in Eytzinger (BFS) order, at file_offset

    bucket of a key   u = xxhash64(key); n = num_buckets; while u < (2**64 - n) % n: u = murmur3
                      finaliser(u); bucket = u % n
    hash in a bucket  xxhash64(32-byte block holding u32 hash_domain, then zeros · key) masked to
                      hash_len bytes; the builder tries domains 0, 1, … until the bucket has no
                      collision, so a present key always finds its own entry, and an absent key
                      can find another key's entry (a false positive: the hash is truncated)

Old Faithful's two seek indexes, named `epoch-{N}-{root CID, base32}-{network}-{kind}.index`:
`slot-to-cid` (key: slot u64 LE, value: the Block node's 36-byte CID) and `cid-to-offset-and-size`
(key: CID bytes, value: u48 offset of the section's length prefix · u24 section size including that
prefix). Metadata keys: `epoch` (u64 LE), `rootCid` (CID bytes), `network`, `kind`.

Reading is bounded: the header (at most 1 MiB), one 16-byte bucket header and one bucket (at most
MAX_BUCKET_BYTES) per lookup, buckets kept in a small LRU cache. xxHash64 is implemented here in pure
Python (keys are 8 to 36 bytes and a slot range needs a handful of lookups).
"""
from __future__ import annotations

import logging
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import libipld

from iq_etl.errors import SourceError, SourceMissing
from iq_etl.ingest.sources.car.byte_range import ByteSource
from iq_etl.ingest.sources.car.format import KIND_BLOCK, SlotSpan
from iq_etl.solana.slots import epoch_bounds

log = logging.getLogger(__name__)

MAGIC = b"compiszd"
DEPRECATED_MAGIC = b"rdcecidx"  # compactindex36 / the first cid-to-offset format: not read here
VERSION = 1
BUCKET_HEADER = struct.Struct("<IIBx6s")  # hash domain, entries, hash length, pad, u48 file offset
HASH_PREFIX_LEN = 32
MAX_HEADER_BYTES = 1 << 20
MAX_BUCKET_BYTES = 32 << 20
DEFAULT_CACHE_BYTES = 16 << 20
_FIRST_READ = 4096  # the header, usually the bucket table of a slot-to-cid index, or a whole small file
TARGET_ENTRIES_PER_BUCKET = 10_000  # what the builder aims for (build.go)

KIND_SLOT_TO_CID = b"slot-to-cid"
KIND_CID_TO_OFFSET_AND_SIZE = b"cid-to-offset-and-size"
META_KIND, META_EPOCH, META_ROOT_CID, META_NETWORK = b"kind", b"epoch", b"rootCid", b"network"
SLOT_TO_CID_VALUE_SIZE = 36
OFFSET_AND_SIZE_VALUE_SIZE = 9  # u48 offset · u24 size
DEFAULT_NETWORK = "mainnet"

_M64 = (1 << 64) - 1


class CompactIndexError(SourceError):
    """A compact index that is there but cannot be used (not the format, wrong kind, corrupt)."""


# --- xxHash64 (the reference algorithm; Go's github.com/cespare/xxhash/v2 Sum64 with seed 0) -------

_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _M64
    return (_rotl(acc, 31) * _P1) & _M64


def _merge(acc: int, val: int) -> int:
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _M64


def xxh64(data: bytes, seed: int = 0) -> int:
    """XXH64 of `data` (unsigned 64-bit)."""
    n = len(data)
    p = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _M64
        v2 = (seed + _P2) & _M64
        v3 = seed & _M64
        v4 = (seed - _P1) & _M64
        limit = n - 32
        unpack = struct.Struct("<4Q").unpack_from
        while p <= limit:
            a, b, c, d = unpack(data, p)
            v1 = _round(v1, a)
            v2 = _round(v2, b)
            v3 = _round(v3, c)
            v4 = _round(v4, d)
            p += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _M64
        h = _merge(_merge(_merge(_merge(h, v1), v2), v3), v4)
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while p + 8 <= n:
        h ^= _round(0, _U64.unpack_from(data, p)[0])
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        p += 8
    if p + 4 <= n:
        h ^= (_U32.unpack_from(data, p)[0] * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        p += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h


def _mix(x: int) -> int:
    """Murmur3's 64-bit finaliser (a permutation), as `hashUint64` in compactindex.go."""
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & _M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & _M64
    x ^= x >> 33
    return x


def bucket_of(key: bytes, num_buckets: int) -> int:
    """The bucket a key belongs to (`Header.BucketHash`): xxHash64 of the key, re-mixed while it falls
    in the short range that would bias `% num_buckets`."""
    u = xxh64(key)
    reject = ((1 << 64) - num_buckets) % num_buckets
    while u < reject:
        u = _mix(u)
    return u % num_buckets


def entry_hash(domain: int, key: bytes, hash_len: int = 3) -> int:
    """The truncated per-bucket hash of a key (`EntryHash64` masked to hash_len bytes)."""
    block = _U32.pack(domain) + bytes(HASH_PREFIX_LEN - 4)
    return xxh64(block + key) & ((1 << (8 * hash_len)) - 1)


# --- the file --------------------------------------------------------------------------------------

@dataclass
class Header:
    value_size: int
    num_buckets: int
    version: int
    metadata: list[tuple[bytes, bytes]]
    size: int  # bytes before the bucket header table

    def get(self, key: bytes) -> bytes | None:
        """The first value for a metadata key (as indexmeta.Meta.Get)."""
        for k, v in self.metadata:
            if k == key:
                return v
        return None

    @property
    def kind(self) -> bytes | None:
        return self.get(META_KIND)

    @property
    def epoch(self) -> int | None:
        raw = self.get(META_EPOCH)
        return _U64.unpack(raw)[0] if raw is not None and len(raw) == 8 else None

    @property
    def root_cid(self) -> bytes | None:
        return self.get(META_ROOT_CID)

    @property
    def network(self) -> str | None:
        raw = self.get(META_NETWORK)
        return raw.decode("utf-8", "replace") if raw is not None else None


def parse_header(buf: bytes, name: str = "index") -> Header:
    """The file header from the first bytes of an index (at least the whole header)."""
    if len(buf) < 12:
        raise CompactIndexError(f"{name}: too short for a compact index header ({len(buf)} bytes)")
    magic = bytes(buf[:8])
    if magic == DEPRECATED_MAGIC:
        raise CompactIndexError(f"{name}: deprecated compactindex format ({magic.decode()}), not supported")
    if magic != MAGIC:
        raise CompactIndexError(f"{name}: not a compactindexsized file (magic {magic!r})")
    rest = _U32.unpack_from(buf, 8)[0]
    size = 12 + rest
    if rest < 14 or size > MAX_HEADER_BYTES:
        raise CompactIndexError(f"{name}: implausible header length {rest}")
    if len(buf) < size:
        raise CompactIndexError(f"{name}: file ends inside its header ({len(buf)} of {size} bytes)")
    value_size, num_buckets, version = struct.unpack_from("<QIB", buf, 12)
    if version != VERSION:
        raise CompactIndexError(f"{name}: unsupported index version {version}")
    if value_size == 0:
        raise CompactIndexError(f"{name}: value size not set")
    if num_buckets == 0:
        raise CompactIndexError(f"{name}: no buckets")
    meta: list[tuple[bytes, bytes]] = []
    p = 25
    try:
        count = buf[p]
        p += 1
        for _ in range(count):
            klen = buf[p]
            key = bytes(buf[p + 1:p + 1 + klen])
            p += 1 + klen
            vlen = buf[p]
            value = bytes(buf[p + 1:p + 1 + vlen])
            p += 1 + vlen
            if len(key) != klen or len(value) != vlen or p > size:
                raise IndexError
            meta.append((key, value))
    except IndexError:
        raise CompactIndexError(f"{name}: metadata runs past the header") from None
    return Header(value_size, num_buckets, version, meta, size)


class BucketHeader(NamedTuple):
    domain: int
    entries: int
    hash_len: int
    offset: int


def parse_bucket_header(raw: bytes) -> BucketHeader:
    domain, entries, hash_len, off = BUCKET_HEADER.unpack(raw)
    return BucketHeader(domain, entries, hash_len, int.from_bytes(off, "little"))


def search_bucket(data: bytes, entries: int, hash_len: int, value_size: int, target: int) -> bytes | None:
    """The value stored under `target` in a bucket's entries (Eytzinger layout, as searchEytzinger)."""
    stride = hash_len + value_size
    i = 0
    while i < entries:
        p = i * stride
        h = int.from_bytes(data[p:p + hash_len], "little")
        if h == target:
            return bytes(data[p + hash_len:p + stride])
        i = (i << 1) | 1
        if h < target:
            i += 1
    return None


@dataclass
class CompactIndex:
    """One compactindexsized file over a ByteSource. `lookup(key)` reads the header once, then per
    bucket its 16-byte header and its entries (cached, LRU by bytes). Thread-safe."""

    source: ByteSource
    cache_bytes: int = DEFAULT_CACHE_BYTES
    max_bucket_bytes: int = MAX_BUCKET_BYTES
    _header: Header | None = field(default=None, init=False, repr=False)
    _table: bytes | None = field(default=None, init=False, repr=False)
    _whole: bytes | None = field(default=None, init=False, repr=False)
    _buckets: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _cached: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    reads: int = field(default=0, init=False)       # byte ranges read (for tests and logs)
    bytes_read: int = field(default=0, init=False)

    @property
    def name(self) -> str:
        return self.source.name

    def _read(self, start: int, end: int) -> bytes:
        if self._whole is not None:  # a small file came whole with the first read
            return self._whole[start:end]
        data = self.source.read_range(start, end)
        with self._lock:
            self.reads += 1
            self.bytes_read += len(data)
        return data

    def header(self) -> Header:
        if self._header is None:
            size = self.source.size()  # known from the existence check (one HEAD)
            head = self._read(0, min(_FIRST_READ, size))
            if len(head) >= size:
                self._whole = head
            if len(head) >= 12 and head[:8] == MAGIC:
                need = 12 + _U32.unpack_from(head, 8)[0]
                if len(head) < need <= MAX_HEADER_BYTES:
                    head += self._read(len(head), need)
            header = parse_header(head, self.name)
            table_end = header.size + header.num_buckets * BUCKET_HEADER.size
            if table_end <= 64 << 10:  # a small bucket table comes with the header
                if len(head) < table_end:
                    head += self._read(len(head), table_end)
                if len(head) < table_end:
                    raise CompactIndexError(f"{self.name}: file ends inside its bucket table")
                self._table = bytes(head[header.size:table_end])
            self._header = header
        return self._header

    def bucket_header(self, i: int) -> BucketHeader:
        header = self.header()
        if not 0 <= i < header.num_buckets:
            raise CompactIndexError(f"{self.name}: bucket {i} out of range ({header.num_buckets} buckets)")
        if self._table is not None:
            raw = self._table[i * 16:i * 16 + 16]
        else:
            at = header.size + i * BUCKET_HEADER.size
            raw = self._read(at, at + BUCKET_HEADER.size)
            if len(raw) != BUCKET_HEADER.size:
                raise CompactIndexError(f"{self.name}: file ends inside bucket header {i}")
        return parse_bucket_header(raw)

    def bucket(self, i: int) -> tuple[BucketHeader, bytes]:
        with self._lock:
            got = self._buckets.get(i)
            if got is not None:
                self._buckets.move_to_end(i)
                return got
        bh = self.bucket_header(i)
        if bh.hash_len == 0 or bh.hash_len > 8:
            raise CompactIndexError(f"{self.name}: bucket {i} has hash length {bh.hash_len}")
        size = bh.entries * (bh.hash_len + self.header().value_size)
        if size > self.max_bucket_bytes:
            raise CompactIndexError(f"{self.name}: bucket {i} holds {bh.entries} entries ({size} bytes), more "
                                    f"than the {self.max_bucket_bytes} bytes read for one bucket")
        data = self._read(bh.offset, bh.offset + size) if size else b""
        if len(data) != size:
            raise CompactIndexError(f"{self.name}: file ends inside bucket {i} (offset {bh.offset}, "
                                    f"{len(data)} of {size} bytes)")
        got = (bh, data)
        with self._lock:
            if i not in self._buckets:
                self._buckets[i] = got
                self._cached += size
                while self._cached > self.cache_bytes and len(self._buckets) > 1:
                    _, (_, old) = self._buckets.popitem(last=False)
                    self._cached -= len(old)
        return got

    def lookup(self, key: bytes) -> bytes | None:
        """The value stored for `key`, or None. An absent key can return another key's value (the
        stored hashes are truncated): callers check what the value points at."""
        header = self.header()
        bh, data = self.bucket(bucket_of(key, header.num_buckets))
        return search_bucket(data, bh.entries, bh.hash_len, header.value_size,
                             entry_hash(bh.domain, key, bh.hash_len))

    def check(self, kind: bytes, value_size: int, *, epoch: int | None = None,
              root_cid: bytes | None = None) -> None:
        """Raise CompactIndexError unless this is an index of `kind` with `value_size`-byte values
        (and, when its metadata says so, of `epoch` and `root_cid`)."""
        h = self.header()
        if h.kind is not None and h.kind != kind:
            raise CompactIndexError(f"{self.name}: index kind {h.kind!r}, expected {kind!r}")
        if h.value_size != value_size:
            raise CompactIndexError(f"{self.name}: values of {h.value_size} bytes, expected {value_size}")
        if epoch is not None and h.epoch is not None and h.epoch != epoch:
            raise CompactIndexError(f"{self.name}: index of epoch {h.epoch}, expected {epoch}")
        if root_cid is not None and h.root_cid is not None and h.root_cid != root_cid:
            raise CompactIndexError(f"{self.name}: index of another archive (root CID differs)")


# --- slot → CID → (offset, size) -------------------------------------------------------------------

def cid_text(cid: bytes) -> str:
    """A CID as Old Faithful names it in file names: base32 lower-case multibase (`b…`)."""
    import base64

    return "b" + base64.b32encode(cid).decode().lower().rstrip("=")


def index_names(epoch: int, root_cid: bytes, network: str = DEFAULT_NETWORK) -> tuple[str, str]:
    """(slot-to-cid, cid-to-offset-and-size) file names of an epoch whose CAR has `root_cid`."""
    base = f"epoch-{epoch}-{cid_text(root_cid)}-{network}"
    return f"{base}-slot-to-cid.index", f"{base}-cid-to-offset-and-size.index"


def decode_offset_and_size(value: bytes) -> tuple[int, int]:
    if len(value) != OFFSET_AND_SIZE_VALUE_SIZE:
        raise ValueError(f"offset-and-size value of {len(value)} bytes")
    return int.from_bytes(value[:6], "little"), int.from_bytes(value[6:9], "little")


def encode_offset_and_size(offset: int, size: int) -> bytes:
    if not 0 <= offset < 1 << 48 or not 0 <= size < 1 << 24:
        raise ValueError(f"offset {offset} / size {size} does not fit u48 / u24")
    return offset.to_bytes(6, "little") + size.to_bytes(3, "little")


def _uvarint(buf: bytes) -> tuple[int, int]:
    value = shift = 0
    for i, byte in enumerate(buf[:10]):
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    raise ValueError("bad varint")


class SlotLocator:
    """Byte ranges of an epoch CAR's slots from its slot-to-cid and cid-to-offset-and-size indexes.

    A slot's data ends with its Block node, so the data of slots first..last runs from the end of the
    Block section of the last present slot before `first` (or the end of the CAR header when there is
    none in the epoch) to the end of the Block section of the last present slot up to `last`. Every
    Block found is read back (its section is small) and must be the Block of the slot asked for: a
    truncated-hash false positive for a skipped slot is treated as absent."""

    def __init__(self, car: ByteSource, epoch: int, data_offset: int, slot_to_cid: CompactIndex,
                 cid_to_offset: CompactIndex):
        self.car = car
        self.epoch = epoch
        self.data_offset = data_offset
        self.slot_to_cid = slot_to_cid
        self.cid_to_offset = cid_to_offset
        self.false_positives = 0

    def block_section(self, slot: int) -> tuple[int, int] | None:
        """(offset, size) of the Block section of `slot`, None when the slot has no block."""
        cid = self.slot_to_cid.lookup(_U64.pack(slot))
        if cid is None:
            return None
        value = self.cid_to_offset.lookup(cid)
        if value is None:
            self.false_positives += 1
            return None
        offset, size = decode_offset_and_size(value)
        if size < 2 or size > MAX_BUCKET_BYTES:
            raise CompactIndexError(f"{self.cid_to_offset.name}: implausible section size {size} (slot {slot})")
        raw = self.car.read_range(offset, offset + size)
        try:
            length, p = _uvarint(raw)
            if p + length != size or len(raw) != size or raw[p:p + len(cid)] != cid:
                raise ValueError("the section there is not the indexed CID")
            node = libipld.decode_dag_cbor(raw[p + len(cid):])
            is_block = isinstance(node, list) and len(node) > 1 and node[0] == KIND_BLOCK
        except ValueError as exc:
            raise CompactIndexError(f"{self.car.name}: compact indexes point slot {slot} at byte {offset}, "
                                    f"where there is no such section ({exc})") from None
        if not is_block or node[1] != slot:
            self.false_positives += 1  # another slot's block: this slot was skipped
            return None
        return offset, size

    def last_present(self, first: int, last: int) -> tuple[int, int, int] | None:
        """(slot, offset, size) of the last slot of first..last with a block, None when none has one."""
        for slot in range(last, first - 1, -1):
            got = self.block_section(slot)
            if got is not None:
                return slot, got[0], got[1]
        return None

    def span(self, first: int, last: int) -> SlotSpan:
        """What `format.slot_span` gives from slot-ranges records (first..last within the epoch);
        `present` is a lower bound here (the slots confirmed on the way: 0 or 1)."""
        lo = epoch_bounds(self.epoch).first_slot
        found = self.last_present(first, last)
        if found is None:
            return SlotSpan(first, last, 0, 0, None, 0)
        slot, offset, size = found
        before = self.last_present(lo, first - 1)
        start = before[1] + before[2] if before is not None else self.data_offset
        if start > offset:
            raise CompactIndexError(f"{self.car.name}: compact indexes put slot {before[0] if before else '?'} "
                                    f"after slot {slot}")
        return SlotSpan(first, last, start, offset + size, slot, 1)


# --- opened indexes, shared by the sub-ranges of an epoch in one process ----------------------------

_OPEN: OrderedDict[str, CompactIndex] = OrderedDict()
_OPEN_MAX = 4
_OPEN_LOCK = threading.Lock()


def open_index(source: ByteSource, kind: bytes, value_size: int, *, epoch: int | None = None,
               root_cid: bytes | None = None) -> CompactIndex:
    """The CompactIndex at `source` checked for kind, value size, epoch and root (cached per name).
    Raises SourceMissing when it is not there, CompactIndexError when it is unusable."""
    with _OPEN_LOCK:
        index = _OPEN.get(source.name)
        if index is not None:
            _OPEN.move_to_end(source.name)
    if index is None:
        if not source.exists():
            raise SourceMissing(f"{source.name}: not found")
        index = CompactIndex(source)
        index.check(kind, value_size, epoch=epoch, root_cid=root_cid)
        with _OPEN_LOCK:
            _OPEN[source.name] = index
            while len(_OPEN) > _OPEN_MAX:
                _OPEN.popitem(last=False)
    else:
        index.check(kind, value_size, epoch=epoch, root_cid=root_cid)
    return index


def forget_open_indexes() -> None:
    """Drop the cached indexes (tests; a rebuilt mirror)."""
    with _OPEN_LOCK:
        _OPEN.clear()


__all__ = ["CompactIndex", "CompactIndexError", "Header", "BucketHeader", "SlotLocator", "xxh64", "bucket_of",
           "entry_hash", "parse_header", "parse_bucket_header", "search_bucket", "index_names", "cid_text",
           "decode_offset_and_size", "encode_offset_and_size", "open_index", "forget_open_indexes", "MAGIC"]
