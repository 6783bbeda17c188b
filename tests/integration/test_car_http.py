"""CarSource over HTTP against the loopback Range server laid out like the Old Faithful bucket."""
from __future__ import annotations

import shutil

import pytest

from iq_etl.devchain.servers.files import Faults, serve_files
from iq_etl.ingest.sources.car.inspect import summarize
from iq_etl.ingest.sources.car.reader import CarFile, IncompleteRange
from iq_etl.ingest.sources.car.source import CarSource
from tests.support.net import free_port
from tests.support.synthetic_car import PROGRAM_KEY, build_synthetic_car

EPOCH = 6
FAST = {"backoff": 0.01, "retries": 4}


def _digest(blocks):
    return [(b.slot, b.skipped, b.transactions_seen, [t.signature for t in b.transactions]) for b in blocks]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    root = tmp_path_factory.mktemp("bucket")
    chain = build_synthetic_car(root, 3000, epoch=EPOCH, tx_per_slot=60, wanted_every=20)
    return root, chain


def test_seek_over_http_matches_local(bucket):
    root, chain = bucket
    lo, hi = chain.slots[5], chain.slots[20]
    local = list(CarSource(str(root / "{epoch}" / "epoch-{epoch}.car"), wanted_keys=[PROGRAM_KEY]).iter_blocks(lo, hi))
    srv = serve_files(root)
    try:
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", wanted_keys=[PROGRAM_KEY], http_options=FAST)
        remote = list(src.iter_blocks(lo, hi))
        gets = [r for m, path, r in srv.state.requests if m == "GET" and path.endswith(".car")]
    finally:
        srv.shutdown()
    assert _digest(remote) == _digest(local)
    assert any(b.transactions for b in remote)
    # seeked: one ranged GET starting at the first wanted slot, not at the start of the file
    assert len(gets) == 1 and not gets[0].startswith("bytes=0-")


def test_connection_dropped_mid_file_is_survived(bucket):
    root, chain = bucket
    local = list(CarSource(str(chain.car_path), wanted_keys=[PROGRAM_KEY]).iter_blocks(chain.first_slot, chain.last_slot))
    srv = serve_files(root, faults=Faults(drop_after_bytes=150_000, drop_times=3))
    try:
        src = CarSource(f"{srv.url}/{EPOCH}/epoch-{EPOCH}.car", wanted_keys=[PROGRAM_KEY], read_size=64 << 10,
                        use_index=False, http_options=FAST)
        remote = list(src.iter_blocks(chain.first_slot, chain.last_slot))
        assert srv.state.drops == 3
    finally:
        srv.shutdown()
    assert _digest(remote) == _digest(local)
    assert [t.signature for b in remote for t in b.transactions] == chain.wanted_signatures


def test_missing_epoch_file_is_incomplete_coverage(bucket):
    root, chain = bucket
    srv = serve_files(root)
    try:
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", http_options=FAST)
        got = []
        with pytest.raises(IncompleteRange) as info:
            for block in src.iter_blocks(chain.last_slot - 2, (EPOCH + 1) * 432_000 + 5):
                got.append(block.slot)
    finally:
        srv.shutdown()
    assert got[0] == chain.last_slot - 2 and got[-1] == (EPOCH + 1) * 432_000 - 1  # the rest of epoch 6
    assert f"epoch-{EPOCH + 1}.car" in str(info.value)


def test_fixture_over_http_without_index(fixtures_dir, tmp_path):
    shutil.copy(fixtures_dir / "epoch-0-2.car", tmp_path / "epoch-0-2.car")
    srv = serve_files(tmp_path, faults=Faults(drop_after_bytes=30_000, drop_times=1))
    try:
        url = f"{srv.url}/epoch-0-2.car"
        blocks = list(CarSource(url, read_size=8192, http_options=FAST).iter_blocks(10, 19))
        summary = summarize(CarFile(url, http_options=FAST))
        assert srv.state.drops == 1
    finally:
        srv.shutdown()
    assert [b.slot for b in blocks] == list(range(10, 20))
    assert sum(b.transactions_seen for b in blocks) == 41
    assert summary.kinds["entry"] == 668


def test_an_http_ingest_reports_its_transfer(tmp_path, settings):
    """Issue 24 item 1: the ingest summary says how fast the archive was read, over how many connections."""
    from iq_etl.devchain.build import build_chain
    from iq_etl.devchain.chain import load_manifest
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.warehouse import client as wh

    chain = tmp_path / "chain"
    build_chain(chain, seed=3, sessions=40, noise_tx_per_slot=1, slots=600)
    manifest = load_manifest(chain)
    srv = serve_files(chain)
    wh.close_client()
    try:
        summary = run_ingest(settings, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                                                     car_url=srv.url + "/{epoch}/epoch-{epoch}.car",
                                                     extra_program_ids=tuple(manifest.extra_program_ids)))
    finally:
        wh.close_client()
        srv.shutdown()
    assert not summary.incomplete and summary.car_http is not None
    assert summary.car_http["bytes_fetched"] > 0 and summary.car_http["connections_peak"] >= 1
    assert summary.car_http["mb_per_s"] > 0


def test_mirrors_first_that_serves_an_epoch_and_a_dead_one_left(tmp_path, warehouses, settings, caplog):
    """Issue 24 item 5: IQ_CAR_URL lists mirrors; per epoch the first that serves it is used; a mirror
    that cannot be reached is left after MIRROR_FAILURES tries; rows equal a local ingest."""
    import logging

    from iq_etl.devchain.build import build_chain
    from iq_etl.devchain.chain import car_template, load_manifest
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.ingest.sources.car import source as car_source
    from iq_etl.solana.slots import epoch_bounds
    from iq_etl.warehouse import client as wh

    chain = tmp_path / "chain"
    build_chain(chain, seed=24, sessions=40, noise_tx_per_slot=1, slots=1200, first_slot=epoch_bounds(924).first_slot - 600)
    manifest = load_manifest(chain)
    partial = tmp_path / "partial"            # a private mirror that has epoch 923 only
    shutil.copytree(chain / "923", partial / "923")
    dead = f"http://127.0.0.1:{free_port()}/{{epoch}}/epoch-{{epoch}}.car"
    full = serve_files(chain)
    car_source._MIRROR_FAILED.clear()
    mirrors = " | ".join([dead, car_template(partial), full.url + "/{epoch}/epoch-{epoch}.car"])
    spec = f"{manifest.first_slot}:{manifest.last_slot}"
    extra = tuple(manifest.extra_program_ids)
    wh.close_client()
    try:
        with caplog.at_level(logging.INFO, logger=car_source.__name__):
            got = run_ingest(settings, IngestRequest(slot_spec=spec, car_url=mirrors, extra_program_ids=extra,
                                                     subrange_slots=100))
        rows = wh.get_client(settings).query(
            "SELECT slot, signature, ix_index, inner_index FROM iq.raw_instructions FINAL ORDER BY 1, 2, 3, 4").result_rows
    finally:
        wh.close_client()
        full.shutdown()
    assert not got.incomplete and rows
    said = [r.getMessage() for r in caplog.records]
    assert any("epoch 924: read from mirror http://127.0.0.1" in m for m in said)
    assert any("failed 3 times in a row" in m and "left for the next mirror" in m for m in said)
    # the same rows as a local ingest of the whole chain
    warehouses.release("warehouse")     # its rows are read: in remote mode the shared server is free for "local"
    local = warehouses.settings("local")
    wh.close_client()
    try:
        run_ingest(local, IngestRequest(slot_spec=spec, car_url=car_template(chain), extra_program_ids=extra))
        expected = wh.get_client(local).query(
            "SELECT slot, signature, ix_index, inner_index FROM iq.raw_instructions FINAL ORDER BY 1, 2, 3, 4").result_rows
    finally:
        wh.close_client()
    assert rows == expected


def test_an_unindexed_epoch_is_read_in_one_pass(tmp_path, settings):
    """Issue 24 item 3: without slot-ranges.raw or compact indexes, the sub-ranges of an epoch each read
    the archive from byte 0 (10.9x the file for 20 sub-ranges); now the epoch is read once (<= 1.05x)."""
    from iq_etl.devchain.build import build_chain
    from iq_etl.devchain.chain import load_manifest
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.warehouse import client as wh

    chain = tmp_path / "chain"
    build_chain(chain, seed=7, sessions=40, noise_tx_per_slot=2, slots=1000)
    manifest = load_manifest(chain)
    for index in chain.rglob("*slot-ranges.raw"):
        index.unlink()
    car = next(chain.rglob("epoch-*.car"))
    srv = serve_files(chain)
    wh.close_client()
    try:
        summary = run_ingest(settings, IngestRequest(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                                                     car_url=srv.url + "/{epoch}/epoch-{epoch}.car",
                                                     extra_program_ids=tuple(manifest.extra_program_ids),
                                                     subrange_slots=100))
        body = srv.state.body_bytes
    finally:
        wh.close_client()
        srv.shutdown()
    assert not summary.incomplete and len(summary.ranges) == 1
    assert body <= 1.05 * car.stat().st_size, (body, car.stat().st_size)
