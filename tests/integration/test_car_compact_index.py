"""Seeking in a CAR served over HTTP without `epoch-{N}-slot-ranges.raw` but with Old Faithful's compact
indexes (slot-to-cid, cid-to-offset-and-size; written by tests/support/compact_index_writer.py the way
yellowstone-faithful builds them): sub-ranges are read from their own bytes, not from byte 0, and give
the rows a local ingest gives. Only loopback traffic."""
from __future__ import annotations

import logging
import re
import shutil

import pytest

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template, load_manifest
from iq_etl.devchain.servers.files import serve_files
from iq_etl.ingest.request import IngestRequest
from iq_etl.ingest.run import run_ingest
from iq_etl.ingest.sources.car import compact_index, reader
from iq_etl.ingest.sources.car.source import CarSource
from iq_etl.warehouse import client as wh
from tests.support.compact_index_writer import write_for_car
from tests.support.synthetic_car import PROGRAM_KEY, build_synthetic_car

EPOCH = 6
FAST = {"backoff": 0.01, "retries": 4}
_RANGE = re.compile(r"bytes=(\d+)-(\d*)")
KEY_COLUMNS = ("slot, signature, tx_index, ix_index, inner_index, program_id, generation, kind, session_account, "
               "session_id, chunk_index, total_chunks, hex(payload), hex(data), tx_status")


def _digest(blocks):
    return [(b.slot, b.skipped, b.transactions_seen, [t.signature for t in b.transactions]) for b in blocks]


def _bytes_asked(requests, suffix: str, size: int) -> list[tuple[int, int]]:
    """[(start, end)] of the GETs on files ending with `suffix` (end exclusive, clipped to the size)."""
    out = []
    for method, path, rng in requests:
        if method != "GET" or not path.endswith(suffix):
            continue
        m = _RANGE.match(rng or "bytes=0-")
        assert m, rng
        start = int(m.group(1))
        end = min(int(m.group(2)) + 1 if m.group(2) else size, size)
        out.append((start, end))
    return out


def _unindexed(root):
    for index in root.rglob("*slot-ranges.raw"):
        index.unlink()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A 3,000-transaction epoch-6 CAR with compact indexes and no slot-ranges file."""
    root = tmp_path_factory.mktemp("compact")
    chain = build_synthetic_car(root, 3000, epoch=EPOCH, tx_per_slot=60, wanted_every=20, index=False)
    paths = write_for_car(chain.car_path, EPOCH)
    return root, chain, paths


@pytest.fixture(autouse=True)
def _fresh_caches():
    compact_index.forget_open_indexes()
    reader._UNINDEXED_SAID.clear()
    yield
    compact_index.forget_open_indexes()


def test_a_sub_range_seeks_with_the_compact_indexes(synthetic, caplog):
    root, chain, (s2c, c2o) = synthetic
    assert not list(root.rglob("*slot-ranges.raw"))
    lo, hi = chain.slots[25], chain.slots[29]  # 5 of the ~50 slots
    local = list(CarSource(str(chain.car_path), wanted_keys=[PROGRAM_KEY], use_index=False).iter_blocks(lo, hi))
    size = chain.car_path.stat().st_size
    srv = serve_files(root)
    try:
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", wanted_keys=[PROGRAM_KEY], http_options=FAST)
        with caplog.at_level(logging.WARNING):
            remote = list(src.iter_blocks(lo, hi))
        requests = list(srv.state.requests)
    finally:
        srv.shutdown()
    assert _digest(remote) == _digest(local) and any(b.transactions for b in remote)
    assert not [r for r in caplog.records if "no slot-ranges index" in r.getMessage()]
    # slot-ranges.raw was looked for first (HEAD, 404), then the compact pair
    heads = [path for method, path, _ in requests if method == "HEAD"]
    assert any(p.endswith(f"epoch-{EPOCH}-slot-ranges.raw") for p in heads)
    assert any(p.endswith(s2c.name) for p in heads) and any(p.endswith(c2o.name) for p in heads)
    car = _bytes_asked(requests, ".car", size)
    header = [r for r in car if r[0] < 64]              # the CAR header (its root CID names the indexes)
    blocks = [r for r in car if r[0] >= 64 and r[1] - r[0] < 4096]  # Block sections read back to check slots
    data = [r for r in car if r not in header and r not in blocks]
    assert sum(e - s for s, e in header) < 200
    # the walk: one ranged GET at the sub-range's own bytes, far from byte 0, reading a small part of the file
    assert len(data) == 1 and data[0][0] > size // 10
    assert sum(e - s for s, e in car) < size // 5
    # slot-to-cid is small here (50 slots) and came whole in one GET; cid-to-offset-and-size: its header,
    # then its one bucket
    assert _bytes_asked(requests, s2c.name, s2c.stat().st_size) == [(0, s2c.stat().st_size)]
    (head, bucket) = _bytes_asked(requests, c2o.name, c2o.stat().st_size)
    assert head == (0, 4096) and bucket[1] == c2o.stat().st_size


def test_every_sub_range_reads_its_own_bytes(synthetic):
    """Ten sub-ranges of the epoch read the file about once in all (from byte 0 each, about 5.5 times)."""
    root, chain, _ = synthetic
    size = chain.car_path.stat().st_size
    slots = chain.slots
    bounds = [(slots[i], slots[min(i + len(slots) // 10, len(slots) - 1)] - (i + len(slots) // 10 < len(slots)))
              for i in range(0, len(slots), len(slots) // 10)]
    local = list(CarSource(str(chain.car_path), wanted_keys=[PROGRAM_KEY], use_index=False)
                 .iter_blocks(slots[0], slots[-1]))
    srv = serve_files(root)
    try:
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", wanted_keys=[PROGRAM_KEY], http_options=FAST)
        remote = [b for lo, hi in bounds if lo <= hi for b in src.iter_blocks(lo, hi)]
        requests = list(srv.state.requests)
    finally:
        srv.shutdown()
    assert _digest(remote) == _digest(local)
    asked = sum(e - s for s, e in _bytes_asked(requests, ".car", size))
    assert asked < size * 1.1


def test_without_either_index_the_warning_names_all_three_files(synthetic, tmp_path, caplog):
    root, chain, (s2c, c2o) = synthetic
    bare = tmp_path / "bare"
    shutil.copytree(root, bare)
    for index in bare.rglob("*.index"):
        index.unlink()
    srv = serve_files(bare)
    try:
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", wanted_keys=[PROGRAM_KEY], http_options=FAST)
        with caplog.at_level(logging.WARNING, logger=reader.__name__):
            for lo, hi in ((chain.slots[5], chain.slots[10]), (chain.slots[11], chain.slots[20])):
                list(src.iter_blocks(lo, hi))
    finally:
        srv.shutdown()
    said = [r.getMessage() for r in caplog.records if "no slot-ranges index" in r.getMessage()]
    assert len(said) == 1
    for name in (f"epoch-{EPOCH}-slot-ranges.raw", s2c.name, c2o.name):
        assert f"{srv.url}/{EPOCH}/{name}" in said[0]


@pytest.fixture(scope="module")
def devchain(tmp_path_factory):
    """The development chain (IQ uploads) twice: as built (slot-ranges index) and as a mirror that has
    only the compact indexes."""
    out = tmp_path_factory.mktemp("devchain")
    build_chain(out, seed=5, sessions=40, noise_tx_per_slot=2, slots=2400)
    mirror = tmp_path_factory.mktemp("mirror")
    shutil.copytree(out, mirror, dirs_exist_ok=True)
    _unindexed(mirror)
    for car in mirror.glob("*/epoch-*.car"):
        write_for_car(car, int(car.parent.name))
    return out, mirror, load_manifest(out)


def _ingest_rows(warehouses, manifest, name, car_url):
    wh.close_client()
    settings = warehouses.settings(name, IQ_PROGRAM_ID=",".join(manifest.all_program_ids()))
    try:
        summary = run_ingest(settings, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                                                     car_url=car_url, subrange_slots=500, threads=1))
        rows = wh.get_client(settings).query(f"SELECT {KEY_COLUMNS} FROM iq.raw_instructions FINAL ORDER BY slot, "
                                             "signature, ix_index, inner_index").result_rows
        return summary, rows
    finally:
        wh.close_client()
        warehouses.release(name)    # remote mode: the shared server is free for the next one


def test_ingest_through_compact_indexes_over_http_equals_local_ingest(devchain, warehouses, caplog):
    out, mirror, manifest = devchain
    _, local_rows = _ingest_rows(warehouses, manifest, "local", car_template(out))
    cars = {int(p.parent.name): p.stat().st_size for p in mirror.glob("*/epoch-*.car")}
    srv = serve_files(mirror)
    try:
        with caplog.at_level(logging.WARNING):
            summary, http_rows = _ingest_rows(warehouses, manifest, "http", srv.url + "/{epoch}/epoch-{epoch}.car")
        requests = list(srv.state.requests)
    finally:
        srv.shutdown()
    assert not summary.incomplete and local_rows and http_rows == local_rows
    assert not [r for r in caplog.records if "no slot-ranges index" in r.getMessage()]
    for epoch, size in cars.items():
        asked = _bytes_asked(requests, f"epoch-{epoch}.car", size)
        walks = [r for r in asked if r[1] - r[0] >= 4096]
        assert len(walks) >= 4 and len({s for s, _ in walks}) == len(walks)  # each sub-range its own start
        assert sum(e - s for s, e in asked) < size * 1.1  # from byte 0 each time: about 3 times the file
    # slot-to-cid (sized for a whole epoch: 44 buckets): its header and table, then only the buckets needed
    (s2c,) = mirror.glob("*/*-slot-to-cid.index")
    s2c_read = sum(e - s for s, e in _bytes_asked(requests, s2c.name, s2c.stat().st_size))
    assert s2c_read < s2c.stat().st_size // 2, (s2c_read, s2c.stat().st_size)
