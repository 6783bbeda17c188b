"""CarWriter output: valid Old Faithful layout (checked with an independent CBOR decoder), multi-frame
DataFrames with CRC-64/ISO, the slot-ranges index, and reading it back with and without seeking."""
from __future__ import annotations

import random

import cbor2
import libipld
import pytest

from iq_etl.devchain.car_writer import CarWriter, Link, encode_dag_cbor
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.format import (
    SLOT_RANGE_RECORD,
    crc64_iso,
    crc_to_cbor_int,
    parse_slot_ranges,
    slot_ranges_name,
)
from iq_etl.ingest.sources.car.inspect import build_slot_ranges, summarize
from iq_etl.ingest.sources.car.reader import CarFile, IncompleteRange
from iq_etl.ingest.sources.car.source import CarSource
from iq_etl.solana.model import TX_OK, TX_UNKNOWN, TxMeta
from tests.support.car_sections import header_span, sections
from tests.support.synthetic_car import PROGRAM_KEY, build_synthetic_car, legacy_transfer, v0_with_lookups

EPOCH = 2
SLOT0 = EPOCH * 432_000


def _sections(path):
    """Independent parse with cbor2: (cid bytes, node) per section, after the header."""
    data = path.read_bytes()
    start, end = header_span(data)
    return cbor2.loads(data[start:end]), [(data[c:n], cbor2.loads(data[n:e])) for _, c, n, e in sections(data)]


def _write(tmp_path, slots, **options):
    path = tmp_path / str(EPOCH) / f"epoch-{EPOCH}.car"
    with CarWriter(path, **options) as w:
        for slot, txs in slots:
            w.add_slot(slot, slot - 1, 1_700_000_000 + slot, slot - 10, txs)
    return path


def _txs(rnd, n, meta=None):
    return [(legacy_transfer(rnd), meta or TxMeta(status=TX_OK, fee=5000, log_messages=["x" * 40])) for _ in range(n)]


def test_written_file_is_valid_dag_cbor_with_explicit_links(tmp_path):
    rnd = random.Random(3)
    # one-signature transactions start with 0x01 and would look like CIDs to libipld's encoder
    path = _write(tmp_path, [(SLOT0, _txs(rnd, 5)), (SLOT0 + 3, _txs(rnd, 2))])
    header, sections = _write_and_parse = _sections(path)
    assert header["version"] == 1
    root = header["roots"][0]
    assert isinstance(root, cbor2.CBORTag) and root.tag == 42
    kinds = [node[0] for _, node in sections]
    assert kinds.count(0) == 7 and kinds.count(2) == 2 and kinds[-2:] == [3, 4]
    assert root.value[1:] == sections[-1][0]  # the root is the Epoch node
    for _cid, node in sections:
        if node[0] == 0:
            assert type(node[1][4]) is bytes and node[1][4][0] == 1  # a byte string, never a tag
        if node[0] == 1:
            assert all(isinstance(link, cbor2.CBORTag) and link.tag == 42 for link in node[3])
    # libipld agrees on every node
    _, nodes = libipld.decode_car(path.read_bytes())
    assert len(nodes) == len(sections)


def test_block_fields_and_order(tmp_path):
    path = _write(tmp_path, [(SLOT0 + 1, _txs(random.Random(1), 3))], txs_per_entry=2, ticks_per_slot=2)
    _, sections = _sections(path)
    kinds = [node[0] for _, node in sections]
    assert kinds == [0, 0, 1, 0, 1, 1, 1, 2, 3, 4]  # transactions before their entry, block last
    block = sections[7][1]
    assert block[1] == SLOT0 + 1 and block[4] == [SLOT0, 1_700_000_000 + SLOT0 + 1, SLOT0 + 1 - 10]
    blocks = list(CarSource(str(path)).iter_blocks(SLOT0 + 1, SLOT0 + 1))
    assert blocks[0].parent_slot == SLOT0 and blocks[0].block_height == SLOT0 - 9
    assert [t.index for t in blocks[0].transactions] == [0, 1, 2]


def test_slot_ranges_index_matches_the_sections(tmp_path):
    rnd = random.Random(4)
    path = _write(tmp_path, [(SLOT0 + s, _txs(rnd, s % 3)) for s in (0, 1, 5, 9)])
    raw = (path.parent / slot_ranges_name(EPOCH)).read_bytes()
    assert len(raw) == 432_000 * SLOT_RANGE_RECORD.size
    records = {s: (o, n) for s, o, n in parse_slot_ranges(raw, SLOT0) if n}
    assert sorted(records) == [SLOT0, SLOT0 + 1, SLOT0 + 5, SLOT0 + 9]
    car = CarFile(str(path))
    for slot, (offset, length) in records.items():
        sections = list(car.iter_sections(offset, offset + length))  # raises if the range cuts a section
        assert sections[0].offset == offset
        assert sections[-1].kind == 2 and libipld.decode_dag_cbor(sections[-1].data)[1] == slot
        assert all(s.kind in (0, 1, 6) for s in sections[:-1])
    # `car index` rebuilds the same records
    assert build_slot_ranges(CarFile(str(path))) == (EPOCH, records)


def test_seek_with_index_equals_scan_without(tmp_path):
    chain = build_synthetic_car(tmp_path, 3000, epoch=EPOCH, tx_per_slot=50, wanted_every=40)
    loc = str(tmp_path / "{epoch}" / "epoch-{epoch}.car")
    lo, hi = chain.slots[10], chain.slots[30] + 1
    with_index = list(CarSource(loc, wanted_keys=[PROGRAM_KEY]).iter_blocks(lo, hi))
    without = list(CarSource(loc, wanted_keys=[PROGRAM_KEY], use_index=False).iter_blocks(lo, hi))
    assert [(b.slot, b.skipped, b.transactions_seen, [t.signature for t in b.transactions]) for b in with_index] == \
           [(b.slot, b.skipped, b.transactions_seen, [t.signature for t in b.transactions]) for b in without]
    assert [b.slot for b in with_index] == list(range(lo, hi + 1))
    assert any(b.skipped for b in with_index)


def test_seeking_reads_only_the_wanted_slots(tmp_path):
    chain = build_synthetic_car(tmp_path, 2000, epoch=EPOCH, tx_per_slot=100)
    path = chain.car_path
    wanted = chain.slots[5]
    summary = summarize(CarFile(str(path)), wanted, wanted)
    raw = (path.parent / slot_ranges_name(EPOCH)).read_bytes()
    _, _, length = parse_slot_ranges(raw[(wanted - SLOT0) * 12:(wanted - SLOT0 + 1) * 12], wanted)[0]
    assert summary.transactions_per_slot == {wanted: 100}
    assert summary.bytes_read < length and summary.kinds["subset"] == 0


def test_multi_frame_dataframes_reassemble(tmp_path):
    rnd = random.Random(5)
    big = TxMeta(status=TX_OK, fee=1, log_messages=[f"line {i} {rnd.random()}" for i in range(50)])
    txs = [(v0_with_lookups(rnd), big), (legacy_transfer(rnd), big)]
    path = _write(tmp_path, [(SLOT0, txs)], max_frame_bytes=64)
    _, sections = _sections(path)
    frames = [node for _, node in sections if node[0] == 6]
    assert len(frames) > 6
    tx_nodes = [node for _, node in sections if node[0] == 0]
    for node in tx_nodes:
        first = node[1]
        assert first[2] == 0 and first[3] > 1 and len(first[5]) == first[3] - 1
    blocks = list(CarSource(str(path)).iter_blocks(SLOT0, SLOT0))
    got = [(bytes(t.transaction), t.meta) for t in blocks[0].transactions]
    assert got == [(wire, meta) for wire, meta in txs]


def test_crc_mismatch_names_the_cid(tmp_path):
    rnd = random.Random(6)
    wire = legacy_transfer(rnd)
    path = _write(tmp_path, [(SLOT0, [(wire, TxMeta(status=TX_UNKNOWN))])], max_frame_bytes=100)
    data = bytearray(path.read_bytes())
    # flip a byte of the second frame's payload (inside the DataFrame node that precedes the tx)
    _, sections = _sections(path)
    frame_payload = sections[0][1][4]
    at = data.index(frame_payload)
    data[at + 5] ^= 0xFF
    bad = tmp_path / "bad.car"
    bad.write_bytes(bytes(data))
    with pytest.raises(SourceError) as info:
        list(CarFile(str(bad)).iter_slots(yield_skipped=False))
    msg = str(info.value)
    assert "CRC-64/ISO mismatch" in msg and "bafy" in msg and str(bad) in msg and f"slot {SLOT0}" in msg


def test_crc64_iso_known_values():
    assert crc64_iso(b"123456789") == 0xB90956C775A41001
    assert crc_to_cbor_int(crc64_iso(b"hello world")) == -5057754212900164546  # YF vector dataFrame_raw0


def test_writer_rejects_bad_input(tmp_path):
    w = CarWriter(tmp_path / "x.car")
    w.add_slot(10, 9, None, None, [])
    with pytest.raises(ValueError):
        w.add_slot(10, 9, None, None, [])
    with pytest.raises(ValueError):
        w.add_slot(432_000, 10, None, None, [])
    w.close()
    assert (tmp_path / "epoch-0-slot-ranges.raw").exists()


def test_range_past_an_incomplete_epoch_file(tmp_path):
    """A CAR without an Epoch node that stops early is incomplete coverage, never success."""
    rnd = random.Random(7)
    path = _write(tmp_path, [(SLOT0, _txs(rnd, 1)), (SLOT0 + 2, _txs(rnd, 1))], write_epoch_node=False)
    (path.parent / slot_ranges_name(EPOCH)).unlink()
    got = []
    with pytest.raises(IncompleteRange) as info:
        for block in CarSource(str(path)).iter_blocks(SLOT0, SLOT0 + 10):
            got.append((block.slot, block.skipped))
    assert got == [(SLOT0, False), (SLOT0 + 1, True), (SLOT0 + 2, False)]
    assert info.value.last_covered_slot == SLOT0 + 2


def test_epoch_node_covers_the_rest_of_the_epoch(tmp_path):
    rnd = random.Random(8)
    path = _write(tmp_path, [(SLOT0, _txs(rnd, 1))])
    (path.parent / slot_ranges_name(EPOCH)).unlink()
    blocks = list(CarSource(str(path)).iter_blocks(SLOT0, SLOT0 + 5))
    assert [(b.slot, b.skipped) for b in blocks] == [(SLOT0, False)] + [(SLOT0 + i, True) for i in range(1, 6)]


def test_encoder_never_turns_bytes_into_links():
    cid_like = b"\x01\x71\x12\x20" + bytes(32)
    assert encode_dag_cbor([cid_like]) == b"\x81\x58\x24" + cid_like
    assert encode_dag_cbor([Link(cid_like)]) == b"\x81\xd8\x2a\x58\x25\x00" + cid_like
