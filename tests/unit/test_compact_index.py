"""Old Faithful compact indexes (compactindexsized, magic `compiszd`): the reader and the writer against
yellowstone-faithful's own expected bytes, xxHash64 against published vectors and the C library, and
the slot → CID → (offset, size) lookup on the real epoch-0 fixture.

Vectors, with where they come from:
- xxHash64: github.com/cespare/xxhash/v2@ab37246 xxhash_test.go TestAll (the library Go's index uses).
- whole index files: rpcpool/yellowstone-faithful@6bba09dbf655 compactindexsized/build8_test.go
  TestBuilder8 and build36_test.go TestBuilder36 (the builder's expected output, byte for byte, and
  its bucket/entry assertions); header_test.go TestHeader; query_test.go TestOpen_HeaderOnly;
  indexes/index-cid-to-offset-and-size_test.go TestOffsetAndSize.
"""
from __future__ import annotations

import base64
import ctypes
import ctypes.util
import random
import shutil
import struct

import libipld
import pytest

from iq_etl.errors import SourceMissing
from iq_etl.ingest.sources.car import compact_index as ci
from iq_etl.ingest.sources.car.byte_range import LocalSource
from iq_etl.ingest.sources.car.reader import CarFile
from tests.support import compact_index_writer as writer

S63 = b"Call me Ishmael. Some years ago--never mind how long precisely-"
XXH64_VECTORS = [  # (input, seed, xxh64) from cespare/xxhash xxhash_test.go
    (b"", 0, 0xEF46DB3751D8E999),
    (b"a", 0, 0xD24EC4F1A98C6E5B),
    (b"as", 0, 0x1C330FB2D66BE179),
    (b"asd", 0, 0x631C37CE72A97393),
    (b"asdf", 0, 0x415872F599CEA71E),
    (S63, 0, 0x02A2E85470D6FD96),
    (b"", 123, 0xE0DB84DE91F3E198),
    (b"asdf", 2**64 - 1, 0x9A2FD8473BE539B6),
    (S63, 54321, 0x1736D186DAF5D1CD),
]

# yellowstone-faithful compactindexsized/build8_test.go TestBuilder8: keys hello, world, blub with the
# u64 values 1, 2, 3, in a builder sized for 3 buckets (numItems 30,000).
BUILD8 = bytes.fromhex(
    "636f6d7069737a640e0000000800000000000000030000000100"
    "00000000010000000300" "4a0000000000"
    "00000000010000000300" "550000000000"
    "00000000010000000300" "600000000000"
    "e2db55" "0100000000000000" "92cdbb" "0200000000000000" "e3096b" "0300000000000000")

# build36_test.go TestBuilder36: keys hello, world, blub, foo → testCids[0..3] (36-byte CIDs), metadata
# kind=something, hello=world; transcribed from the test's byte literals.
BUILD36 = bytes.fromhex(
    "636f6d7069737a64290000002400000000000000030000000102046b696e6409736f6d657468696e670568656c6c6f05776f72"
    "6c6400000000010000000300650000000000000000000100000003008c000000000000000000020000000300b30000000000e2"
    "db550171122020eab30f58be69017f024291faa3dcf4c7f22f5612a7b2016f48fa175e53da6b92cdbb017112209cd0179a199c"
    "d9510afb9296cfd29f778a0040328bf8ff064621b93c57a5dd0f983dbd017112201b79026c3ddc740c3371f07a4b80b0430c82"
    "0a887213a69472c9d18a2dc78813e3096b01711220606754e44c05996ff9606627660da0da4f6010060282f9463dccde288072"
    "4167")
TEST_CIDS = ["bafyreiba5kzq6wf6neax6ascsh5khxhuy7zc6vqsu6zac32i7ilv4u62nm",
             "bafyreie42alzugm43fiqv64ss3h5fh3xriaeamul7d7qmrrbxe6fpjo5b4",
             "bafyreidam5koitaftfx7sydge5ta3ig2j5qbabqcql4umpom3yuia4sbm4",
             "bafyreia3pebgypo4oqgdg4pqpjfybmcdbsbavcdscotji4wj2gfc3r4icm"]
KEYS = [b"hello", b"world", b"blub", b"foo"]


def cid_bytes(text: str) -> bytes:
    body = text[1:].upper()
    return base64.b32decode(body + "=" * (-len(body) % 8))


class MemorySource:
    """A ByteSource over bytes that counts what is read."""

    def __init__(self, data: bytes, name: str = "mem.index"):
        self.data, self.name = data, name
        self.ranges: list[tuple[int, int]] = []

    def exists(self) -> bool:
        return True

    def size(self) -> int:
        return len(self.data)

    def read_range(self, start: int, end: int) -> bytes:
        self.ranges.append((start, end))
        return self.data[start:end]

    def open(self, start=0, end=None):  # pragma: no cover - not used by the index reader
        raise NotImplementedError

    @property
    def bytes_read(self) -> int:
        return sum(min(e, len(self.data)) - s for s, e in self.ranges if s < len(self.data))


# --- xxHash64 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("data,seed,want", XXH64_VECTORS)
def test_xxh64_published_vectors(data, seed, want):
    assert ci.xxh64(data, seed) == want


def test_xxh64_matches_the_c_library_on_every_length():
    """libxxhash (Debian's libxxhash0, the reference C code) where it is installed: every length from 0
    to 200 bytes covers each tail path and the 32-byte stripes."""
    path = ctypes.util.find_library("xxhash")
    if path is None:
        pytest.skip("libxxhash is not installed")
    lib = ctypes.CDLL(path)
    lib.XXH64.restype = ctypes.c_uint64
    lib.XXH64.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64]
    rnd = random.Random(24)
    for n in range(201):
        data = rnd.randbytes(n)
        seed = rnd.getrandbits(64) if n % 3 else 0
        assert ci.xxh64(data, seed) == lib.XXH64(data, n, seed), n


# --- the format against yellowstone-faithful's files -----------------------------------------------

def test_writer_reproduces_yellowstone_faithfuls_builder8_file():
    items = [(b"hello", struct.pack("<Q", 1)), (b"world", struct.pack("<Q", 2)), (b"blub", struct.pack("<Q", 3))]
    assert writer.build(items, 8, num_items=30_000) == BUILD8


def test_writer_reproduces_yellowstone_faithfuls_builder36_file():
    values = [cid_bytes(c) for c in TEST_CIDS]
    built = writer.build(list(zip(KEYS, values)), 36, num_items=30_000,
                         metadata=[(b"kind", b"something"), (b"hello", b"world")])
    assert built == BUILD36


def test_reader_on_builder8_file():
    src = MemorySource(BUILD8)
    index = ci.CompactIndex(src)
    h = index.header()
    assert (h.value_size, h.num_buckets, h.version, h.metadata, h.size) == (8, 3, 1, [], 26)
    # the bucket headers TestBuilder8 asserts: domain 0, one entry each, hash length 3, at 74, 85, 96
    assert [index.bucket_header(i) for i in range(3)] == [
        ci.BucketHeader(0, 1, 3, 74), ci.BucketHeader(0, 1, 3, 85), ci.BucketHeader(0, 1, 3, 96)]
    with pytest.raises(ci.CompactIndexError, match="out of range"):
        index.bucket_header(3)
    assert [index.lookup(k) for k in (b"hello", b"world", b"blub")] == [struct.pack("<Q", v) for v in (1, 2, 3)]
    assert ci.entry_hash(0, b"blub") == 0x6B09E3  # TestBuilder8: bucket 2 holds {Hash: 0x6b09e3, Value: 3}


def test_reader_on_builder36_file():
    index = ci.CompactIndex(MemorySource(BUILD36))
    h = index.header()
    assert (h.value_size, h.num_buckets, h.size) == (36, 3, 53)
    assert h.metadata == [(b"kind", b"something"), (b"hello", b"world")] and h.kind == b"something"
    assert [index.bucket_header(i) for i in range(3)] == [
        ci.BucketHeader(0, 1, 3, 101), ci.BucketHeader(0, 1, 3, 140), ci.BucketHeader(0, 2, 3, 179)]
    # TestBuilder36: bucket 2 loads as [{12402072, testCids[3]}, {7014883, testCids[2]}] (Eytzinger order)
    bh, data = index.bucket(2)
    entries = [(int.from_bytes(data[i:i + 3], "little"), data[i + 3:i + 39]) for i in range(0, len(data), 39)]
    assert entries == [(12402072, cid_bytes(TEST_CIDS[3])), (7014883, cid_bytes(TEST_CIDS[2]))]
    for key, cid in zip(KEYS, TEST_CIDS):
        assert index.lookup(key) == cid_bytes(cid)
    assert ci.bucket_of(b"foo", 3) == 2 and ci.bucket_of(b"hello", 3) == 0 and ci.bucket_of(b"world", 3) == 1


def test_header_vectors():
    # header_test.go TestHeader: value size 42, 43 buckets, no metadata
    raw = b"compiszd" + bytes.fromhex("0e000000" "2a00000000000000" "2b000000" "01" "00")
    h = ci.parse_header(raw)
    assert (h.value_size, h.num_buckets, h.metadata, h.size) == (42, 43, [], 26)
    assert writer.header_bytes(42, 43, []) == raw
    # query_test.go TestOpen_HeaderOnly: two values under one key, the first one wins (Meta.Get)
    raw = (b"compiszd" + struct.pack("<I", 30) + bytes.fromhex("3713000000000000" "42000000" "01" "02")
           + b"\x03foo\x03bar" + b"\x03foo\x03baz")
    h = ci.parse_header(raw)
    assert (h.value_size, h.num_buckets) == (0x1337, 0x42)
    assert h.metadata == [(b"foo", b"bar"), (b"foo", b"baz")] and h.get(b"foo") == b"bar"


def test_header_value_size_limit_and_bad_files():
    with pytest.raises(ci.CompactIndexError, match="not a compactindexsized"):
        ci.parse_header(b"x" * 40)
    with pytest.raises(ci.CompactIndexError, match="deprecated"):
        ci.parse_header(b"rdcecidx" + bytes(24))
    with pytest.raises(ci.CompactIndexError, match="ends inside"):
        ci.parse_header(BUILD36[:40])
    with pytest.raises(ci.CompactIndexError, match="version"):
        ci.parse_header(BUILD8[:24] + b"\x02" + BUILD8[25:])


def test_offset_and_size_vector():
    # indexes/index-cid-to-offset-and-size_test.go TestOffsetAndSize
    assert ci.encode_offset_and_size(123, 456) == bytes([0x7B, 0, 0, 0, 0, 0, 0xC8, 0x01, 0x00])
    assert ci.decode_offset_and_size(bytes([0x7B, 0, 0, 0, 0, 0, 0xC8, 0x01, 0x00])) == (123, 456)
    with pytest.raises(ValueError):
        ci.encode_offset_and_size(1 << 48, 1)


# --- a big bucket: mined hash domain, Eytzinger layout, bounded reads ------------------------------

def _independent_lookup(data: bytes, key: bytes) -> bytes | None:
    """A second reader written from the format description: parse every field, scan every entry."""
    value_size, nb = struct.unpack_from("<QI", data, 12)
    size = 12 + struct.unpack_from("<I", data, 8)[0]
    u = ci.xxh64(key)
    while u < (2**64 - nb) % nb:
        u = ci._mix(u)
    b = u % nb
    domain, n, hlen = struct.unpack_from("<IIB", data, size + 16 * b)
    off = int.from_bytes(data[size + 16 * b + 10:size + 16 * b + 16], "little")
    want = ci.xxh64(struct.pack("<I", domain) + bytes(28) + key) & ((1 << (8 * hlen)) - 1)
    stride = hlen + value_size
    for i in range(n):
        p = off + i * stride
        if int.from_bytes(data[p:p + hlen], "little") == want:
            return data[p + hlen:p + stride]
    return None


@pytest.fixture(scope="module")
def slot_index():
    """A slot-to-cid-like index of 15,000 slots (every third one skipped) in 3 buckets of ~5,000 keys."""
    rnd = random.Random(5)
    items = [(struct.pack("<Q", s), b"\x01\x71\x12\x20" + rnd.randbytes(32)) for s in range(22_500) if s % 3]
    return items, writer.build(items, 36, num_items=30_000)


def test_a_big_bucket_needs_a_mined_domain_and_every_key_is_found(slot_index):
    items, data = slot_index
    index = ci.CompactIndex(MemorySource(data))
    domains = [index.bucket_header(i).domain for i in range(index.header().num_buckets)]
    assert any(d > 0 for d in domains), domains  # ~12,000 keys in 3-byte hashes collide at domain 0
    for key, value in items[::37]:
        assert index.lookup(key) == value == _independent_lookup(data, key)
    # Eytzinger: an in-order walk of the implicit tree is sorted
    bh, raw = index.bucket(0)
    hashes = [int.from_bytes(raw[i:i + 3], "little") for i in range(0, len(raw), 39)]
    order: list[int] = []

    def walk(k: int) -> None:
        if k <= len(hashes):
            walk(2 * k)
            order.append(hashes[k - 1])
            walk(2 * k + 1)

    walk(1)
    assert order == sorted(order) and len(set(order)) == len(order) == bh.entries


def test_absent_keys_mostly_miss_and_false_positives_are_other_keys_values(slot_index):
    items, data = slot_index
    index = ci.CompactIndex(MemorySource(data))
    values = {v for _, v in items}
    hits = [index.lookup(struct.pack("<Q", s)) for s in range(0, 22_500, 3)]  # all absent
    false = [h for h in hits if h is not None]
    assert len(false) < 10  # ~5,000 entries per bucket / 2**24 hashes: about 2 in 7,500
    assert all(h in values for h in false)


def test_a_lookup_reads_the_header_and_one_bucket(slot_index):
    _, data = slot_index
    src = MemorySource(data)
    index = ci.CompactIndex(src)
    index.lookup(struct.pack("<Q", 1))
    assert len(src.ranges) == 2  # header + bucket table in one read, then the bucket
    assert src.bytes_read < len(data) * 0.6
    index.lookup(struct.pack("<Q", 1))
    assert len(src.ranges) == 2  # cached
    small = ci.CompactIndex(MemorySource(data), max_bucket_bytes=1000)
    with pytest.raises(ci.CompactIndexError, match="more than the 1000 bytes"):
        small.lookup(struct.pack("<Q", 1))


def test_check_rejects_the_wrong_kind_size_epoch_or_root():
    meta = writer.default_metadata(7, b"\x01root", "mainnet", ci.KIND_SLOT_TO_CID)
    data = writer.build([(struct.pack("<Q", 1), bytes(36))], 36, metadata=meta)
    index = ci.CompactIndex(MemorySource(data))
    index.check(ci.KIND_SLOT_TO_CID, 36, epoch=7, root_cid=b"\x01root")
    assert (index.header().epoch, index.header().network, index.header().root_cid) == (7, "mainnet", b"\x01root")
    for kwargs, match in (({"kind": ci.KIND_CID_TO_OFFSET_AND_SIZE}, "kind"), ({"value_size": 9}, "values of"),
                          ({"epoch": 8}, "epoch 7"), ({"root_cid": b"\x01other"}, "root CID")):
        args = {"kind": ci.KIND_SLOT_TO_CID, "value_size": 36, **kwargs}
        with pytest.raises(ci.CompactIndexError, match=match):
            index.check(args.pop("kind"), args.pop("value_size"), **args)


# --- slot → CID → (offset, size) on the real epoch-0 fixture ---------------------------------------

@pytest.fixture()
def real_epoch0(fixtures_dir, tmp_path):
    """Mainnet slots 0–9 (real Old Faithful bytes) as epoch-0.car, with compact indexes and no slot-ranges."""
    car = tmp_path / "epoch-0.car"
    shutil.copy(fixtures_dir / "epoch-0-1.car", car)
    ci.forget_open_indexes()
    return car


def _blocks(car_path, first, last):
    return [(b.slot, b.skipped, b.transactions_seen) for b in CarFile(str(car_path)).iter_slots(first, last)]


def test_compact_span_on_real_old_faithful_bytes(real_epoch0):
    expected = {s: _blocks(real_epoch0, s, min(s + 3, 9)) for s in range(0, 10, 2)}
    s2c, c2o = writer.write_for_car(real_epoch0, 0)
    root = bytes(CarFile(str(real_epoch0)).header().roots[0])
    assert (s2c.name, c2o.name) == ci.index_names(0, root)
    assert s2c.name.startswith("epoch-0-bafy") and s2c.name.endswith("-mainnet-slot-to-cid.index")
    car = CarFile(str(real_epoch0))
    header = car.header()
    sections = list(car.iter_sections())
    ends = [s.offset for s in sections[1:]] + [real_epoch0.stat().st_size]
    blocks = {libipld.decode_dag_cbor(sec.data)[1]: (sec.offset, end - sec.offset)
              for sec, end in zip(sections, ends) if sec.kind == 2}
    assert sorted(blocks) == list(range(10))
    locator = ci.SlotLocator(LocalSource(real_epoch0), 0, header.data_offset,
                             ci.CompactIndex(LocalSource(s2c)), ci.CompactIndex(LocalSource(c2o)))
    for slot, where in blocks.items():
        assert locator.block_section(slot) == where
    assert locator.block_section(10) is None
    assert locator.span(0, 0) == (0, 0, header.data_offset, sum(blocks[0]), 0, 1)
    assert locator.span(3, 6) == (3, 6, sum(blocks[2]), sum(blocks[6]), 6, 1)
    assert locator.span(10, 20).last_present is None
    # the reader seeks with them and gives what a walk of the whole file gives
    for s in range(0, 10, 2):
        car = CarFile(str(real_epoch0))
        assert car.slot_span(s, min(s + 3, 9)) is not None
        assert _blocks(real_epoch0, s, min(s + 3, 9)) == expected[s]


def test_false_positive_slot_entries_are_absent(real_epoch0):
    """A lookup for a skipped slot can land on another slot's entry (3-byte hashes): the reader reads
    that Block back, sees another slot, and treats the slot as absent."""
    car = CarFile(str(real_epoch0))
    block_cids = {libipld.decode_dag_cbor(sec.data)[1]: sec.cid for sec in car.iter_sections() if sec.kind == 2}
    # slots 10..14 are not in this file; pretend the index answers them with slot 9's and 2's blocks
    s2c, c2o = writer.write_for_car(real_epoch0, 0, extra_slots={12: block_cids[9], 14: block_cids[2]})
    locator = ci.SlotLocator(LocalSource(real_epoch0), 0, car.header().data_offset,
                             ci.CompactIndex(LocalSource(s2c)), ci.CompactIndex(LocalSource(c2o)))
    assert locator.block_section(12) is None and locator.block_section(14) is None
    assert locator.false_positives == 2
    span = locator.span(5, 20)
    assert span.last_present == 9


def test_without_any_index_the_warning_names_every_file(real_epoch0, caplog):
    import logging

    from iq_etl.ingest.sources.car import reader

    reader._UNINDEXED_SAID.clear()
    car = CarFile(str(real_epoch0))
    with caplog.at_level(logging.WARNING, logger=reader.__name__):
        assert car.slot_span(3, 5) is None
        assert CarFile(str(real_epoch0)).slot_span(6, 7) is None
    said = [r.getMessage() for r in caplog.records if "no slot-ranges index" in r.getMessage()]
    names = ci.index_names(0, bytes(car.header().roots[0]))
    assert len(said) == 1
    assert "epoch-0-slot-ranges.raw" in said[0] and all(n in said[0] for n in names)


def test_open_index_missing_and_cached(real_epoch0):
    with pytest.raises(SourceMissing):
        ci.open_index(LocalSource(real_epoch0.with_name("nope.index")), ci.KIND_SLOT_TO_CID, 36)
    s2c, _ = writer.write_for_car(real_epoch0, 0)
    a = ci.open_index(LocalSource(s2c), ci.KIND_SLOT_TO_CID, 36, epoch=0)
    assert ci.open_index(LocalSource(s2c), ci.KIND_SLOT_TO_CID, 36, epoch=0) is a
    with pytest.raises(ci.CompactIndexError):
        ci.open_index(LocalSource(s2c), ci.KIND_SLOT_TO_CID, 36, epoch=1)
