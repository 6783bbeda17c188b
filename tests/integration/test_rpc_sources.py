"""RPC sources and discovery against the real loopback server, checked against the CAR source."""
from __future__ import annotations

import pytest

from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_index import RpcChain
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.source import CarSource
from iq_etl.ingest.sources.rpc.blocks import RpcBlockSource
from iq_etl.ingest.sources.rpc.client import RpcClient
from iq_etl.ingest.sources.rpc.discovery import cursor_name, discover_program, discover_windows
from iq_etl.ingest.sources.rpc.signatures import RpcSignatureSource
from iq_etl.warehouse.cursors import Cursor, CursorStore
from tests.support.rpc_chain import FIRST_SLOT, PDAS, PROGRAM, build_blocks, pda, transactions, write_chain_dir

FAST = dict(rps=None, method_rps=None, backoff_base=0.01, backoff_max=0.05, max_retries=6)
SKIPPED = [FIRST_SLOT + 3, FIRST_SLOT + 7, FIRST_SLOT + 8]
SLOTS = 14
LAST = FIRST_SLOT + SLOTS - 1


def serve(blocks):
    return serve_rpc(RpcChain.from_blocks(blocks))


@pytest.fixture(scope="module")
def chain_blocks():
    return build_blocks(slots=SLOTS, tx_per_slot=6, skipped=SKIPPED)


@pytest.fixture(scope="module")
def car_dir(chain_blocks, tmp_path_factory):
    return write_chain_dir(chain_blocks, tmp_path_factory.mktemp("chain"))


@pytest.fixture
def server(chain_blocks):
    srv = serve(chain_blocks)
    yield srv
    srv.shutdown()


@pytest.fixture
def client(server):
    with RpcClient(server.url, **FAST) as c:
        yield c


def car_blocks(car_dir, first, last, wanted=None):
    return list(CarSource(str(car_dir / "{epoch}" / "epoch-{epoch}.car"), wanted_keys=wanted).iter_blocks(first, last))


def block_facts(blocks):
    return [(b.slot, b.skipped, b.parent_slot, b.block_time, b.block_height, b.transactions_seen) for b in blocks]


# --- dense ------------------------------------------------------------------------------------------

def test_dense_source_equals_car_source(client, car_dir, chain_blocks):
    rpc = list(RpcBlockSource(client).iter_blocks(FIRST_SLOT, LAST))
    car = car_blocks(car_dir, FIRST_SLOT, LAST)
    assert block_facts(rpc) == block_facts(car) == block_facts(chain_blocks)
    assert transactions(rpc) == transactions(car) == transactions(chain_blocks)
    assert [b.slot for b in rpc if b.skipped] == SKIPPED


def test_dense_filter_sees_lookup_table_keys_like_car(client, car_dir):
    wanted = {bytes(PDAS[1])}
    rpc = list(RpcBlockSource(client, wanted_keys=wanted).iter_blocks(FIRST_SLOT + 1, LAST - 1))
    car = car_blocks(car_dir, FIRST_SLOT + 1, LAST - 1, wanted)
    assert block_facts(rpc) == block_facts(car)
    assert transactions(rpc) == transactions(car)
    kept = transactions(rpc)
    assert kept and all(str(PDAS[1]) in tx.account_keys() for tx in kept)
    # at least one was kept only because of a key loaded from the lookup table
    assert any(str(PDAS[1]) not in [str(k) for k in tx.transaction.message.account_keys] for tx in kept)
    assert sum(b.transactions_seen for b in rpc) > len(kept)


def test_dense_source_refuses_to_call_a_missing_block_skipped(client, server, chain_blocks):
    from iq_etl.devchain.servers.rpc_faults import Faults

    hole = FIRST_SLOT + 5
    server.set_faults(Faults(hide_blocks=frozenset({hole})))
    source = RpcBlockSource(client)
    got = []
    with pytest.raises(SourceError, match=rf"getBlock\({hole}\).*-32009.*getBlocks lists the slot"):
        for block in source.iter_blocks(FIRST_SLOT, LAST):
            got.append(block)
    assert [b.slot for b in got] == list(range(FIRST_SLOT, hole))  # what came before is intact
    assert server.counters.by_method["getBlocks"] == 1  # asked once, when the first skip appeared
    # real skipped slots alone pass the check; without it, the hole would be taken for a skip
    assert [b.slot for b in RpcBlockSource(client, verify_skips=False).iter_blocks(hole, hole) if b.skipped] == [hole]


# --- sparse -----------------------------------------------------------------------------------------

def test_sparse_source_equals_car_source(client, car_dir, server):
    found = discover_windows(client, [str(p) for p in PDAS[:2]], padding=0)
    wanted = {bytes(p) for p in PDAS[:2]}
    car = [tx for tx in transactions(car_blocks(car_dir, FIRST_SLOT, LAST, wanted))]
    # given with slots (what discovery knows) ...
    with_slots = list(RpcSignatureSource(client, found.signature_slots()).iter_blocks(FIRST_SLOT, LAST))
    assert transactions(with_slots) == car
    assert [b.transactions_seen for b in with_slots] == [len(b.transactions) for b in with_slots]
    # ... or as bare signatures (located with getSignatureStatuses), read in two sub-ranges
    mid = FIRST_SLOT + 6
    source = RpcSignatureSource(client, found.all_signatures())
    split = list(source.iter_blocks(FIRST_SLOT, mid)) + list(source.iter_blocks(mid + 1, LAST))
    assert transactions(split) == car
    assert [b.slot for b in split] == sorted({tx.slot for tx in car})
    assert server.counters.by_method["getSignatureStatuses"] >= 1
    # one getBlock(signatures) per slot gives the index; the CAR's tx_index is the reference
    assert all(tx.index is not None for tx in transactions(split))


def test_sparse_source_with_an_empty_range(client, chain_blocks):
    sigs = {tx.signature: tx.slot for tx in transactions(chain_blocks)[:3]}
    assert list(RpcSignatureSource(client, sigs).iter_blocks(LAST, LAST)) == []
    with pytest.raises(SourceError, match="empty"):
        list(RpcSignatureSource(client, sigs).iter_blocks(LAST, FIRST_SLOT))


# --- discovery --------------------------------------------------------------------------------------

def test_discovery_pages_with_before_pads_and_reports(client, server, chain_blocks):
    target = str(PDAS[0])
    expected = [tx for tx in transactions(chain_blocks) if target in tx.account_keys()]
    found = discover_windows(client, [target], max_pages=25, padding=7, page_limit=5)
    assert set(found.all_signatures()) == {tx.signature for tx in expected}
    (w,) = found.windows
    pages_needed = len(expected) // 5 + 1  # a full last page needs one more (empty or short) request
    assert (w.pages, w.signatures, w.truncated) == (pages_needed, len(expected), False)
    assert server.counters.by_method["getSignaturesForAddress"] == pages_needed
    lo, hi = min(tx.slot for tx in expected), max(tx.slot for tx in expected)
    assert (w.min_slot, w.max_slot, w.first_slot, w.last_slot) == (lo, hi, lo - 7, hi + 7)
    assert found.merged_ranges() == [(lo - 7, hi + 7)]
    report = found.to_json()
    assert report["merged_ranges"] == [[lo - 7, hi + 7]] and report["truncated"] is False
    assert report["failed_signatures"] == sum(1 for tx in expected if tx.meta.err is not None) > 0
    assert client.stats.signatures_paged == len(expected)


def test_discovery_truncation_is_reported(client):
    found = discover_windows(client, [str(PDAS[0]), str(PDAS[2])], max_pages=2, padding=0, page_limit=4)
    w0, w2 = found.windows
    assert w0.truncated and w0.pages == 2 and w0.signatures == 8
    assert w2.truncated and found.truncated
    assert found.to_json()["truncated_pdas"] == [str(PDAS[0]), str(PDAS[2])]
    # without the page cap the same PDA is complete, and its window reaches further back
    full = discover_windows(client, [str(PDAS[0])], padding=0, page_limit=4)
    assert not full.truncated and full.windows[0].signatures > 8
    assert full.windows[0].min_slot < w0.min_slot


def test_discovery_at_mainnet_page_size():
    """1000 signatures a page, as on mainnet: 2,160 signatures need 3 pages; 2 pages are truncated."""
    blocks = build_blocks(slots=72, tx_per_slot=30, targets=[pda(9)], only_kinds=(0, 1, 2))
    srv = serve(blocks)
    try:
        with RpcClient(srv.url, **FAST) as c:
            short = discover_windows(c, [str(pda(9))], max_pages=2, padding=0)
            full = discover_windows(c, [str(pda(9))], max_pages=25, padding=0)
    finally:
        srv.shutdown()
    assert short.truncated and short.windows[0].signatures == 2000
    # the newest 2000: the window it reports starts above the real first slot
    assert short.windows[0].min_slot > FIRST_SLOT
    assert not full.truncated and (full.windows[0].pages, full.windows[0].signatures) == (3, 2160)
    assert full.merged_ranges() == [(FIRST_SLOT, FIRST_SLOT + 71)]


def test_discovery_merges_overlapping_windows_and_keeps_apart_distant_ones():
    a, b, c = pda(20), pda(21), pda(22)
    blocks = (build_blocks(FIRST_SLOT, 6, targets=[a], only_kinds=(0,))
              + build_blocks(FIRST_SLOT + 10, 3, targets=[c], only_kinds=(1,), counter_start=100)
              + build_blocks(FIRST_SLOT + 300, 4, targets=[b], only_kinds=(2,), counter_start=200))
    srv = serve(blocks)
    try:
        with RpcClient(srv.url, **FAST) as client:
            found = discover_windows(client, [str(a), str(b), str(c), str(pda(23))], padding=5)
    finally:
        srv.shutdown()
    by_pda = {w.pda: w for w in found.windows}
    assert (by_pda[str(a)].first_slot, by_pda[str(a)].last_slot) == (FIRST_SLOT - 5, FIRST_SLOT + 10)
    assert (by_pda[str(c)].first_slot, by_pda[str(c)].last_slot) == (FIRST_SLOT + 5, FIRST_SLOT + 17)
    assert by_pda[str(pda(23))].signatures == 0 and by_pda[str(pda(23))].first_slot is None
    assert found.merged_ranges() == [(FIRST_SLOT - 5, FIRST_SLOT + 17), (FIRST_SLOT + 295, FIRST_SLOT + 308)]


# --- live tail --------------------------------------------------------------------------------------

def program_sigs(blocks):
    return [tx.signature for tx in transactions(blocks) if str(PROGRAM) in tx.account_keys()]


def test_program_tail_cursor_across_runs(warehouse):
    first = build_blocks(FIRST_SLOT, 6, tx_per_slot=4)
    later = build_blocks(FIRST_SLOT + 6, 4, tx_per_slot=4, counter_start=1000)
    store = CursorStore(warehouse)
    srv = serve(first)
    try:
        with RpcClient(srv.url, **FAST) as client:
            run1 = discover_program(client, str(PROGRAM), store, page_limit=7)
            assert run1.previous is None and not run1.truncated
            assert set(run1.all_signatures()) == set(program_sigs(first))
            slots = [run1.signature_slots()[s] for s in run1.all_signatures()]
            assert slots == sorted(slots)
            # a crash before commit: the next run finds the same signatures again
            again = discover_program(client, str(PROGRAM), store, page_limit=7)
            assert again.all_signatures() == run1.all_signatures()
            run1.commit(store)
            assert store.get(cursor_name(str(PROGRAM))) == run1.newest

            srv.chain.add_blocks(later)  # the chain moves on
            run2 = discover_program(client, str(PROGRAM), store, page_limit=7)
            assert run2.previous == run1.newest
            assert set(run2.all_signatures()) == set(program_sigs(later))
            run2.commit(store)

            run3 = discover_program(client, str(PROGRAM), store)
            assert run3.all_signatures() == [] and run3.newest is None and run3.pages == 1
            run3.commit(store)  # nothing new: the cursor stays
            assert store.get(cursor_name(str(PROGRAM))) == run2.newest
    finally:
        srv.shutdown()


def test_program_tail_refuses_to_skip_a_gap(warehouse):
    blocks = build_blocks(FIRST_SLOT, 8, tx_per_slot=4)
    store = CursorStore(warehouse)
    srv = serve(blocks)
    try:
        with RpcClient(srv.url, **FAST) as client:
            # the cursor is a position in the RPC's order (newest first; within a slot not ledger order)
            oldest = client.call("getSignaturesForAddress", [str(PROGRAM)])[-1]["signature"]
            store.set(cursor_name(str(PROGRAM)), oldest, FIRST_SLOT)
            short = discover_program(client, str(PROGRAM), store, max_pages=1, page_limit=3)
            assert short.truncated and len(short.signatures) == 3
            with pytest.raises(SourceError, match="stopped after 1 pages before reaching the stored cursor"):
                short.commit(store)
            assert store.get(cursor_name(str(PROGRAM))) == Cursor(oldest, FIRST_SLOT)
            whole = discover_program(client, str(PROGRAM), store, page_limit=3)
            assert not whole.truncated
            assert set(whole.all_signatures()) == set(program_sigs(blocks)) - {oldest}
    finally:
        srv.shutdown()


def test_cursor_store_latest_write_wins(warehouse):
    store = CursorStore(warehouse)
    assert store.get("rpc-signatures:x") is None
    for i in range(3):
        store.set("rpc-signatures:x", f"sig{i}", 100 + i)
    store.set("rpc-signatures:y", "other", 1)
    assert store.get("rpc-signatures:x") == Cursor("sig2", 102)
    # names are parameters, never pasted into SQL
    assert store.get("x' OR '1'='1") is None
