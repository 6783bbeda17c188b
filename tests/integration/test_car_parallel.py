"""Parallel ranged reads (issue 24 items 1 and 2) against loopback hosts that cap each connection,
wait before answering, clamp long-lived connections, stall, throttle with 429/503 storms and reset
connections mid-piece: the rows always equal a local read of the same file, bytes fetched stay
bounded, and a host that throttles beyond the patience fails the read (never a silent success).
No assertion on wall-clock time."""
from __future__ import annotations

import pytest

from iq_etl.devchain.servers.files import Faults, serve_files
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car import byte_range
from iq_etl.ingest.sources.car.byte_range import STATS, HttpSource
from iq_etl.ingest.sources.car.parallel import ParallelStream, open_parallel
from iq_etl.ingest.sources.car.source import CarSource
from tests.support.synthetic_car import PROGRAM_KEY, build_synthetic_car

EPOCH = 8
PIECE = 128 << 10
FAST = {"backoff": 0.01, "retries": 4, "piece": PIECE}


def _digest(blocks):
    return [(b.slot, b.skipped, b.transactions_seen, [t.signature for t in b.transactions]) for b in blocks]


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    root = tmp_path_factory.mktemp("bucket")
    chain = build_synthetic_car(root, 6000, epoch=EPOCH, tx_per_slot=60, wanted_every=20)
    template = str(root / "{epoch}" / "epoch-{epoch}.car")
    lo, hi = chain.slots[3], chain.slots[-3]
    local = _digest(CarSource(template, wanted_keys=[PROGRAM_KEY]).iter_blocks(lo, hi))
    assert any(row[3] for row in local)
    return root, chain, lo, hi, local


def _remote(srv, lo, hi, **options):
    src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", wanted_keys=[PROGRAM_KEY],
                    http_options={**FAST, **options})
    return _digest(src.iter_blocks(lo, hi))


@pytest.mark.parametrize("k", [1, 2, 4, 16])
def test_capped_slow_host_rows_equal_local_for_every_k(bucket, k):
    root, chain, lo, hi, local = bucket
    size = chain.car_path.stat().st_size
    index = next(chain.car_path.parent.glob("*slot-ranges.raw")).stat().st_size
    srv = serve_files(root, faults=Faults(rate=20e6, latency=0.01))
    try:
        before = STATS.snapshot()["fetched"]
        assert _remote(srv, lo, hi, connections=k) == local
        fetched = STATS.snapshot()["fetched"] - before
        if k > 1:
            assert srv.state.max_open <= k
    finally:
        srv.shutdown()
    assert fetched <= size + index  # the indexed span once (pieces never overlap), the index once


def test_resets_mid_piece_are_resumed(bucket):
    root, _, lo, hi, local = bucket
    srv = serve_files(root, faults=Faults(drop_after_bytes=50_000, drop_every=3, drop_reset=True))
    try:
        assert _remote(srv, lo, hi, connections=4, retries=6) == local
        assert srv.state.drops >= 1
    finally:
        srv.shutdown()


def test_a_stalled_connection_is_replaced(bucket):
    root, _, lo, hi, local = bucket
    before = STATS.snapshot()["replaced_stalled"]
    srv = serve_files(root, faults=Faults(stall_every=3, stall_after_bytes=10_000))
    try:
        assert _remote(srv, lo, hi, connections=4, stall=0.3, retries=8) == local
    finally:
        srv.shutdown()
    assert STATS.snapshot()["replaced_stalled"] > before


def test_clamped_connections_give_the_same_rows(bucket):
    """Every other connection is clamped to 50 KB/s after 0.2 s; the lanes far below their peers
    are replaced (when the monitor catches them in time) and the rows never change."""
    root, _, lo, hi, local = bucket
    srv = serve_files(root, faults=Faults(rate=5e6, clamp_after=0.2, clamp_rate=50_000, clamp_every=2))
    try:
        assert _remote(srv, lo, hi, connections=4, slow=0.3) == local
    finally:
        srv.shutdown()


def test_a_429_storm_pauses_every_connection_and_the_read_completes(bucket):
    root, _, lo, hi, local = bucket
    before = STATS.snapshot()["throttle_pauses"]
    srv = serve_files(root, faults=Faults(fail_status=429, storm_after_gets=3, storm_seconds=0.6, retry_after="1"))
    try:
        assert _remote(srv, lo, hi, connections=4, retries=1) == local  # 429s do not use up the retries
        assert srv.state.fails >= 1
    finally:
        srv.shutdown()
    assert STATS.snapshot()["throttle_pauses"] > before


def test_throttling_beyond_the_patience_fails_the_read(bucket):
    root, _, lo, hi, _ = bucket
    srv = serve_files(root, faults=Faults(fail_status=503, storm_after_gets=2, storm_seconds=3600, retry_after="1"))
    try:
        with pytest.raises(SourceError, match="IQ_CAR_PATIENCE"):
            _remote(srv, lo, hi, connections=4, patience=1.5)
    finally:
        srv.shutdown()


def test_memory_and_read_ahead_are_bounded(bucket):
    """At most K piece buffers at any time, and a reader that stops early leaves at most K pieces
    fetched past what it read."""
    root, chain, _, _, _ = bucket
    data = chain.car_path.read_bytes()
    k = 4
    srv = serve_files(root, faults=Faults(rate=20e6))
    try:
        src = HttpSource(f"{srv.url}/{EPOCH}/epoch-{EPOCH}.car", connections=k, piece=PIECE, backoff=0.01)
        stream = open_parallel(src, 1000, None)  # no known end: to the object's size (one HEAD)
        assert isinstance(stream, ParallelStream)
        got = bytearray()
        most = 0
        buf = bytearray(100_000)
        while len(got) < 3 * PIECE:
            n = stream.readinto(memoryview(buf))
            assert n
            got += buf[:n]
            most = max(most, len(stream._pieces), len(stream._pieces) + len(stream._free))
        stream.close()
        assert bytes(got) == data[1000:1000 + len(got)]
        assert most <= k
        gets = [r for m, _, r in srv.state.requests if m == "GET"]
        starts = sorted(int(r.split("=")[1].split("-")[0]) for r in gets)
        assert max(starts) < 1000 + len(got) + k * PIECE
    finally:
        srv.shutdown()


def test_each_epoch_index_is_read_once_per_process(bucket):
    root, _, lo, hi, local = bucket
    srv = serve_files(root)
    try:
        mid = (lo + hi) // 2
        src = CarSource(srv.url + "/{epoch}/epoch-{epoch}.car", wanted_keys=[PROGRAM_KEY],
                        http_options={**FAST, "connections": 4})
        rows = _digest(src.iter_blocks(lo, mid)) + _digest(src.iter_blocks(mid + 1, hi))
        index = [(m, r) for m, path, r in srv.state.requests if path.endswith("slot-ranges.raw")]
    finally:
        srv.shutdown()
    assert rows == local
    assert len([m for m, _ in index if m == "GET"]) == 1 and len([m for m, _ in index if m == "HEAD"]) <= 1


def test_the_shared_pool_is_one_per_process():
    assert byte_range.shared_session() is byte_range.shared_session()
    assert HttpSource("http://127.0.0.1:9/x.car").session is byte_range.shared_session()


def test_threads_hand_an_unindexed_epoch_to_one_worker(tmp_path, settings_env):
    """Issue 24 item 3, last sentence: with --threads, an epoch without any index goes to one worker as
    one job (one pass, <= 1.05x its file), while an indexed epoch's sub-ranges are still shared out;
    the rows equal a single-process ingest of the same archives."""
    from iq_etl.devchain.build import build_chain
    from iq_etl.devchain.chain import load_manifest
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.settings import load_settings
    from iq_etl.solana.slots import SLOTS_PER_EPOCH
    from iq_etl.warehouse import client as wh

    chain = tmp_path / "chain"
    build_chain(chain, seed=7, sessions=40, noise_tx_per_slot=2, slots=1000, first_slot=923 * SLOTS_PER_EPOCH - 500)
    manifest = load_manifest(chain)
    (chain / "922" / "epoch-922-slot-ranges.raw").unlink()   # epoch 922: no index at all
    sizes = {e: (chain / str(e) / f"epoch-{e}.car").stat().st_size for e in (922, 923)}
    spec = f"{manifest.first_slot}:{manifest.last_slot}"
    programs = tuple(manifest.extra_program_ids)

    def ingest(folder, threads, url):
        wh.close_client()
        mine = load_settings({**settings_env, "IQ_CLICKHOUSE_DSN": f"chdb://{folder}"}, dotenv=tmp_path / "none")
        try:
            summary = run_ingest(mine, IngestRequest(slot_spec=spec, car_url=url, extra_program_ids=programs,
                                                     subrange_slots=100, threads=threads))
            rows = wh.get_client(mine).query("SELECT slot, signature, ix_index, inner_index FROM "
                                             "iq.raw_instructions FINAL ORDER BY 1, 2, 3, 4").result_rows
            return summary, rows
        finally:
            wh.close_client()

    srv = serve_files(chain)
    try:
        summary, rows = ingest(tmp_path / "wh-threads", 2, srv.url + "/{epoch}/epoch-{epoch}.car")
        asked = _bytes_asked(srv.state.requests, "/922/epoch-922.car", sizes[922])
    finally:
        srv.shutdown()
    _, local_rows = ingest(tmp_path / "wh-local", 1, str(chain / "{epoch}" / "epoch-{epoch}.car"))
    assert not summary.incomplete and rows == local_rows and rows
    first_923 = 923 * SLOTS_PER_EPOCH
    old = [r for r in summary.ranges if r["last_slot"] < first_923]
    new = [r for r in summary.ranges if r["first_slot"] >= first_923]
    assert [(r["first_slot"], r["last_slot"]) for r in old] == [(manifest.first_slot, first_923 - 1)]
    assert len(new) == 5 and len(old) + len(new) == len(summary.ranges)
    assert asked <= 1.05 * sizes[922], (asked, sizes[922])   # what was asked of its file: an upper bound


def _bytes_asked(requests, path, size):
    """Bytes the GETs of `path` asked for (a Range's span; the whole file without one)."""
    import re

    total = 0
    for method, got, rng in requests:
        if method != "GET" or got != path:
            continue
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        total += (int(m.group(2)) + 1 if m.group(2) else size) - int(m.group(1)) if m else size
    return total



def test_car_scan_says_mb_per_second_and_connections_in_use(bucket, capsys):
    """Issue 24 item 1: `car scan` over HTTP reports its MB/s and the connections in use (at most and on
    average), and the same counts as a local scan."""
    import json

    from solders.pubkey import Pubkey

    from iq_etl.cli.main import main

    root, chain, lo, hi, local = bucket
    key = str(Pubkey.from_bytes(PROGRAM_KEY))
    srv = serve_files(root, faults=Faults(rate=20e6))
    try:
        assert main(["car", "scan", srv.url + "/{epoch}/epoch-{epoch}.car", "--slots", f"{lo}:{hi}", "--key", key,
                     "--car-connections", "4", "--json"]) == 0
        remote = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert main(["car", "scan", srv.url + "/{epoch}/epoch-{epoch}.car", "--slots", f"{lo}:{hi}", "--key", key,
                     "--car-connections", "4"]) == 0
        text = capsys.readouterr().out
    finally:
        srv.shutdown()
    assert main(["car", "scan", str(root / "{epoch}" / "epoch-{epoch}.car"), "--slots", f"{lo}:{hi}", "--key", key,
                 "--json"]) == 0
    mine = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (remote["blocks"], remote["transactions_seen"], remote["transactions_matched"]) == \
        (mine["blocks"], mine["transactions_seen"], mine["transactions_matched"])
    assert remote["connections"] == 4 and 2 <= remote["connections_peak"] <= 4
    assert 0 < remote["connections_mean"] <= 4 and remote["mb_per_second"] > 0
    assert mine["connections_mean"] is None
    assert " MB/s over HTTP: 4 connection(s) per stream, " in text and " on average), " in text, text
