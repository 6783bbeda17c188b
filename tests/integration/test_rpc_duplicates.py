"""A block listing the same transaction twice is refused (hostile peers round 2, item 7): before, a
getBlock reply with every transaction twice was ingested as 138 rows for 69, and FINAL kept the
repeat's tx_index (2 -> 7), so the in-slot order the marts use differed from the chain. Against the
devchain server with a tampered answer."""
from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_faults import Faults
from iq_etl.devchain.servers.rpc_index import RpcChain
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.rpc.blocks import RpcBlockSource
from iq_etl.ingest.sources.rpc.client import RpcClient
from iq_etl.ingest.sources.rpc.signatures import RpcSignatureSource
from tests.support.rpc_chain import FIRST_SLOT, build_blocks

FAST = dict(rps=None, method_rps=None, backoff_base=0.01, backoff_max=0.05, max_retries=3)
SLOTS = 6
LAST = FIRST_SLOT + SLOTS - 1
BAD = FIRST_SLOT + 1


@pytest.fixture(scope="module")
def chain_blocks():
    return build_blocks(slots=SLOTS, tx_per_slot=5, seed=23)  # signatures no other test module locates


@pytest.fixture
def server(chain_blocks):
    srv = serve_rpc(RpcChain.from_blocks(chain_blocks))
    yield srv
    srv.shutdown()


def tamper_block(slot: int, change: Callable[[dict], Any], details: str = "full") -> Faults:
    def tamper(method, params, result):
        if (method == "getBlock" and params[0] == slot and isinstance(result, dict)
                and params[1].get("transactionDetails", "full") == details):
            return change(json.loads(json.dumps(result)))
        return result
    return Faults(tamper=tamper)


def repeat_third(block: dict) -> dict:
    block["transactions"].append(block["transactions"][2])
    return block


def twice(block: dict) -> dict:
    block["transactions"] = block["transactions"] * 2
    return block


@pytest.mark.parametrize("change, index, first", [(repeat_third, 5, 2), (twice, 5, 0)])
def test_a_block_listing_a_transaction_twice_is_refused(server, chain_blocks, change, index, first):
    sig = chain_blocks[BAD - FIRST_SLOT].transactions[first].signature
    server.set_faults(tamper_block(BAD, change))
    with RpcClient(server.url, **FAST) as client:
        with pytest.raises(SourceError) as info:
            list(RpcBlockSource(client).iter_blocks(FIRST_SLOT, LAST))
    assert str(info.value) == (f"getBlock({BAD}) at {server.url}: transaction {index} repeats signature {sig} of "
                               f"transaction {first}; a block lists each transaction once")


def test_the_filter_does_not_hide_a_repeat(server, chain_blocks):
    """The repeat is refused even when the repeated transaction touches no wanted key."""
    sig = chain_blocks[BAD - FIRST_SLOT].transactions[2].signature
    server.set_faults(tamper_block(BAD, repeat_third))
    with RpcClient(server.url, **FAST) as client:
        with pytest.raises(SourceError, match=f"transaction 5 repeats signature {sig} of transaction 2"):
            list(RpcBlockSource(client, wanted_keys=["11111111111111111111111111111112"]).iter_blocks(BAD, BAD))


def test_a_signature_list_naming_one_twice_is_refused(server, chain_blocks):
    """The sparse source takes a transaction's place in its block from getBlock(signatures)."""
    txs = chain_blocks[BAD - FIRST_SLOT].transactions
    sig = txs[1].signature

    def repeat(block):
        block["signatures"].append(block["signatures"][1])
        return block

    server.set_faults(tamper_block(BAD, repeat, details="signatures"))
    with RpcClient(server.url, **FAST) as client:
        with pytest.raises(SourceError) as info:
            list(RpcSignatureSource(client, {tx.signature: BAD for tx in txs}).iter_blocks(BAD, BAD))
    assert str(info.value) == (f"getBlock({BAD}) at {server.url}: signature 5 repeats {sig} of signature 1; a block "
                               "lists each transaction once")


def test_through_ingest_a_repeated_transaction_leaves_its_range_not_done(server, chain_blocks, settings):
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.warehouse import client as wh

    sig = chain_blocks[BAD - FIRST_SLOT].transactions[2].signature
    server.set_faults(tamper_block(BAD, repeat_third))
    wh.close_client()
    try:
        with pytest.raises(SourceError) as info:
            run_ingest(settings, IngestRequest(slot_spec=f"{FIRST_SLOT}:{LAST}", source="rpc-blocks",
                                               rpc_url=server.url, rpc_options=FAST, subrange_slots=3))
        rows = wh.get_client(settings).query(
            "SELECT first_slot, last_slot, status FROM iq.scan_ranges FINAL ORDER BY first_slot").result_rows
    finally:
        wh.close_client()
    text = str(info.value)
    assert f"getBlock({BAD}) at {server.url}: transaction 5 repeats signature {sig} of transaction 2" in text
    assert "\n" not in text
    statuses = {(a, b): s for a, b, s in rows}
    assert statuses.get((FIRST_SLOT, FIRST_SLOT + 2)) == "failed"
    assert "done" not in [s for (a, b), s in statuses.items() if a <= BAD <= b]
