"""Truncated and corrupted copies of a real fixture: every failure is a SourceError naming the file,
the byte offset and the slot, never a silent drop or a traceback from deep inside a decoder."""
from __future__ import annotations

import re

import libipld
import pytest

from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.reader import CarFile, IncompleteRange
from iq_etl.ingest.sources.car.source import CarSource
from tests.support.car_sections import sections as car_sections

NAME = "epoch-0-1.car"




def _read_all(path, **kw):
    return list(CarSource(str(path), **kw).iter_blocks(0, 9))


def _assert_positioned(exc: SourceError, path):
    msg = str(exc)
    assert str(path) in msg
    assert re.search(r"byte offset \d+", msg), msg
    assert "slot" in msg, msg


@pytest.fixture
def sample(fixtures_dir):
    return (fixtures_dir / NAME).read_bytes()


@pytest.mark.parametrize("cut", [1, 30, 58, 100, 5000, 50_000, 96_000, -1])
def test_truncated_copies(sample, tmp_path, cut):
    path = tmp_path / NAME
    path.write_bytes(sample[:cut])
    with pytest.raises(SourceError) as info:
        _read_all(path)
    msg = str(info.value)
    assert str(path) in msg and "byte offset" in msg


def test_truncated_at_a_section_boundary(sample, tmp_path):
    """Dropping whole trailing sections (the Subset root, or slots) is still caught."""
    sections = car_sections(sample)
    for keep in (len(sections) - 1, len(sections) - 200):
        path = tmp_path / NAME
        path.write_bytes(sample[:sections[keep][0]])
        with pytest.raises(SourceError) as info:
            _read_all(path)
        _assert_positioned(info.value, path)


def test_truncation_reported_after_the_good_slots(sample, tmp_path):
    sections = car_sections(sample)
    path = tmp_path / NAME
    path.write_bytes(sample[:sections[len(sections) // 2][3] + 10])
    got = []
    with pytest.raises(SourceError) as info:
        for block in CarSource(str(path)).iter_blocks(0, 9):
            got.append(block.slot)
    assert got and got == list(range(len(got)))
    assert f"slot after slot {got[-1]}" in str(info.value)


def test_bad_cid(sample, tmp_path):
    off, p, _, _ = car_sections(sample)[5]
    data = bytearray(sample)
    data[p] = 0x07  # CID version 7
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as info:
        _read_all(path)
    _assert_positioned(info.value, path)
    assert "CID" in str(info.value) and f"byte offset {off}" in str(info.value)


def test_unexpected_node_kind(sample, tmp_path):
    off, _, d, _ = car_sections(sample)[3]
    data = bytearray(sample)
    data[d + 1] = 9
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as info:
        _read_all(path)
    _assert_positioned(info.value, path)
    assert "unexpected node kind 9" in str(info.value) and f"byte offset {off}" in str(info.value)


def test_corrupt_transaction_bytes_fail_the_cid_check(sample, tmp_path):
    tx = next(s for s in car_sections(sample) if sample[s[2] + 1] == 0)
    data = bytearray(sample)
    data[tx[3] - 100] ^= 0x55  # inside the transaction's signature/message
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as info:
        _read_all(path)
    _assert_positioned(info.value, path)
    assert "CID mismatch" in str(info.value) and f"byte offset {tx[0]}" in str(info.value)


def test_corrupt_block_node(sample, tmp_path):
    block = next(s for s in car_sections(sample) if sample[s[2] + 1] == 2)
    data = bytearray(sample)
    data[block[2] + 2] = 0xFF  # a CBOR break where the slot should be
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as info:
        _read_all(path)
    _assert_positioned(info.value, path)


def test_corrupt_section_length(sample, tmp_path):
    off = car_sections(sample)[10][0]
    data = bytearray(sample)
    data[off:off + 2] = b"\xff\xff"  # a varint that claims a huge section
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError) as info:
        _read_all(path)
    _assert_positioned(info.value, path)


def test_verify_mode_checks_entries_too(sample, tmp_path):
    entry = next(s for s in car_sections(sample) if sample[s[2] + 1] == 1)
    data = bytearray(sample)
    data[entry[3] - 1] ^= 0x01  # inside the entry hash: not decoded by the normal walk
    path = tmp_path / NAME
    path.write_bytes(bytes(data))
    assert len(_read_all(path)) == 10
    with pytest.raises(SourceError) as info:
        _read_all(path, verify_cids=True)
    assert "CID mismatch" in str(info.value)


def test_not_a_car(tmp_path):
    path = tmp_path / "x.car"
    path.write_bytes(b"\x05hello world")
    with pytest.raises(SourceError) as info:
        CarFile(str(path)).header()
    assert str(path) in str(info.value)
    with pytest.raises(SourceError):
        CarFile(str(tmp_path / "missing.car")).header()


def test_incomplete_range_is_a_source_error(fixtures_dir):
    assert issubclass(IncompleteRange, SourceError)
    with pytest.raises(IncompleteRange):
        list(CarSource(str(fixtures_dir / NAME)).iter_blocks(0, 10))


def test_sections_decode_after_a_good_read(sample):
    # guard for the helpers above: the independent parser agrees with libipld
    assert len(car_sections(sample)) == len(libipld.decode_car(sample)[1])
