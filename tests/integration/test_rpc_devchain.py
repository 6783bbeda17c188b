"""On a real development chain (`build_chain`, served from its CAR files as `iq-etl devchain serve`
does): the CAR source, the dense RPC source and the sparse RPC source yield the same IQ transactions,
and the ingest stage's extraction turns them into the same rows."""
from __future__ import annotations

import pytest
from solders.pubkey import Pubkey

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_faults import Faults
from iq_etl.ingest.decode import Extracted, InstructionFilter, extract
from iq_etl.ingest.sources.car.source import CarSource
from iq_etl.ingest.sources.rpc.blocks import RpcBlockSource
from iq_etl.ingest.sources.rpc.client import RpcClient
from iq_etl.ingest.sources.rpc.discovery import discover_program, discover_windows
from iq_etl.ingest.sources.rpc.signatures import RpcSignatureSource
from iq_etl.settings import DEFAULT_PROGRAM_IDS, G3_PROGRAM_ID
from iq_etl.warehouse.cursors import CursorStore
from iq_etl.warehouse.rows import RAW_COLUMNS, UNDECODED_COLUMNS

FAST = dict(rps=None, method_rps=None, backoff_base=0.01, backoff_max=0.05, max_retries=10)


@pytest.fixture(scope="module")
def devchain(tmp_path_factory):
    out = tmp_path_factory.mktemp("devchain")
    manifest = build_chain(out, seed=5, slots=400, sessions=39, noise_tx_per_slot=2)
    server = serve_rpc(out)
    yield out, manifest, server
    server.shutdown()


def iq_filter(manifest) -> InstructionFilter:
    return InstructionFilter(frozenset(DEFAULT_PROGRAM_IDS) | frozenset(manifest.extra_program_ids))


def car_source(out, wanted):
    return CarSource(str(out / "{epoch}" / "epoch-{epoch}.car"), wanted_keys=wanted)


def facts(blocks):
    return [(b.slot, b.skipped, b.parent_slot, b.block_time, b.block_height, b.transactions_seen) for b in blocks]


def txs(blocks):
    return [tx for b in blocks for tx in b.transactions]


def rows(transactions, filt, source) -> tuple[list, list]:
    """Extracted rows without the columns that name the source and the run."""
    out = Extracted()
    for tx in transactions:
        extract(tx, filt, source, "run", out)
    raw_keep = [i for i, c in enumerate(RAW_COLUMNS) if c not in ("source", "run_id")]
    und_keep = [i for i, c in enumerate(UNDECODED_COLUMNS) if c not in ("source", "run_id")]
    return [[r[i] for i in raw_keep] for r in out.rows], [[r[i] for i in und_keep] for r in out.undecoded]


def test_dense_rpc_equals_car_on_the_devchain(devchain):
    out, manifest, server = devchain
    filt = iq_filter(manifest)
    wanted = filt.wanted_keys()
    with RpcClient(server.url, **FAST) as client:
        rpc_blocks = list(RpcBlockSource(client, wanted_keys=wanted).iter_blocks(manifest.first_slot, manifest.last_slot))
    car_blocks = list(car_source(out, wanted).iter_blocks(manifest.first_slot, manifest.last_slot))
    assert facts(rpc_blocks) == facts(car_blocks)
    assert [b.slot for b in rpc_blocks if b.skipped] == sorted(manifest.skipped_slots)
    assert sum(b.transactions_seen for b in rpc_blocks) == manifest.tx_counts["transactions"]
    assert txs(rpc_blocks) == txs(car_blocks)
    rpc_rows, car_rows = rows(txs(rpc_blocks), filt, "rpc-blocks"), rows(txs(car_blocks), filt, "car")
    assert rpc_rows == car_rows and len(rpc_rows[0]) > 100


def test_sparse_rpc_equals_car_for_discovered_sessions(devchain):
    out, manifest, server = devchain
    filt = iq_filter(manifest)
    pdas = sorted({u.session_account for u in manifest.uploads if u.session_account})
    assert len(pdas) > 10
    with RpcClient(server.url, **FAST) as client:
        found = discover_windows(client, pdas, padding=200)
        assert not found.truncated
        source = RpcSignatureSource(client, found.all_signatures())  # slots located via getSignatureStatuses
        sparse = [b for first, last in found.merged_ranges() for b in source.iter_blocks(first, last)]
    wanted = frozenset(bytes(Pubkey.from_string(p)) for p in pdas)
    car = [b for first, last in found.merged_ranges()
           for b in car_source(out, wanted).iter_blocks(max(first, manifest.first_slot), min(last, manifest.last_slot))]
    assert txs(sparse) == txs(car)
    # every upload signature of those sessions (failed ones too) was found
    expected = {s for u in manifest.uploads if u.session_account for s in u.signatures}
    assert expected <= set(found.all_signatures())
    assert rows(txs(sparse), filt, "rpc-signatures") == rows(txs(car), filt, "car")


def test_sparse_dense_and_car_agree_on_iq_transactions_under_faults(devchain):
    """The three sources, the RPC ones through a flaky server, hold the same IQ transactions."""
    out, manifest, server = devchain
    filt = iq_filter(manifest)
    wanted = filt.wanted_keys()
    car = txs(car_source(out, wanted).iter_blocks(manifest.first_slot, manifest.last_slot))
    server.set_faults(Faults(error_rate=0.1, drop_rate=0.05, burst=(40, 3), retry_after=0.01, seed=9))
    try:
        with RpcClient(server.url, **FAST) as client:
            dense = txs(RpcBlockSource(client, wanted_keys=wanted).iter_blocks(manifest.first_slot, manifest.last_slot))
            sigs: dict[str, int] = {}
            for program in manifest.all_program_ids():
                for info in discover_windows(client, [program], padding=0).signatures.values():
                    sigs[info.signature] = info.slot
            sparse = txs(RpcSignatureSource(client, sigs).iter_blocks(manifest.first_slot, manifest.last_slot))
            assert client.stats.retries > 0
    finally:
        server.set_faults(None)
    key = [(tx.signature, tx.slot, tx.index, tx.meta) for tx in car]
    assert [(tx.signature, tx.slot, tx.index, tx.meta) for tx in dense] == key
    # the sparse source only sees transactions that name a program id in their key list (never a CPI-only one)
    named = [t for t in car if set(t.account_keys()) & set(manifest.all_program_ids())]
    assert [(tx.signature, tx.slot, tx.index, tx.meta) for tx in sparse] == \
        [(tx.signature, tx.slot, tx.index, tx.meta) for tx in named]


def test_program_tail_on_the_devchain(devchain, warehouse):
    out, manifest, server = devchain
    store = CursorStore(warehouse)
    g3 = bytes(Pubkey.from_string(G3_PROGRAM_ID))
    car = txs(car_source(out, {g3}).iter_blocks(manifest.first_slot, manifest.last_slot))
    with RpcClient(server.url, **FAST) as client:
        run1 = discover_program(client, G3_PROGRAM_ID, store)
        assert set(run1.all_signatures()) == {tx.signature for tx in car}
        run1.commit(store)
        run2 = discover_program(client, G3_PROGRAM_ID, store)
    assert run2.all_signatures() == [] and run2.previous == run1.newest
