"""The loopback Solana JSON-RPC server: mainnet's method semantics, errors and batches, over real HTTP."""
from __future__ import annotations

import pytest
import requests

from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_index import RpcChain
from tests.support.rpc_chain import FIRST_SLOT, OTHER_PROGRAM, PDAS, build_blocks, transactions, write_chain_dir

SKIPPED = FIRST_SLOT + 4
LAST = FIRST_SLOT + 9


@pytest.fixture(scope="module")
def chain_blocks():
    return build_blocks(slots=10, tx_per_slot=5, skipped=[SKIPPED])


@pytest.fixture(scope="module")
def server(chain_blocks):
    srv = serve_rpc(RpcChain.from_blocks(chain_blocks))
    yield srv
    srv.shutdown()


def rpc(server, method, *params, raw=False):
    body = requests.post(server.url, json={"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)},
                         timeout=10).json()
    if raw:
        return body
    assert "error" not in body, body
    return body["result"]


def keys_of(tx) -> list[str]:
    return tx.account_keys()


def test_signatures_for_address_newest_first_and_complete(server, chain_blocks):
    pda = str(PDAS[1])
    expected = [tx for tx in transactions(chain_blocks) if pda in keys_of(tx)]
    # some of them name the PDA only through a lookup table: they must be indexed too
    assert any(pda not in [str(k) for k in tx.transaction.message.account_keys] for tx in expected)
    got = rpc(server, "getSignaturesForAddress", pda)
    assert sorted(e["signature"] for e in got) == sorted(tx.signature for tx in expected)
    slots = [e["slot"] for e in got]
    assert slots == sorted(slots, reverse=True)
    by_sig = {tx.signature: tx for tx in expected}
    for e in got:
        tx = by_sig[e["signature"]]
        assert set(e) == {"signature", "slot", "err", "memo", "blockTime", "confirmationStatus"}
        assert e["blockTime"] == tx.block_time and e["confirmationStatus"] == "finalized"
        assert (e["err"] is None) == (tx.meta.err is None)


def test_paging_with_before_and_until(server, chain_blocks):
    pda = str(PDAS[0])
    everything = [e["signature"] for e in rpc(server, "getSignaturesForAddress", pda)]
    assert len(everything) > 6
    paged, before = [], None
    while True:
        cfg = {"limit": 4, **({"before": before} if before else {})}
        page = rpc(server, "getSignaturesForAddress", pda, cfg)
        paged += [e["signature"] for e in page]
        if len(page) < 4:
            break
        before = page[-1]["signature"]
    assert paged == everything
    # until is exclusive and stops the walk; before+until select the span between them
    assert [e["signature"] for e in rpc(server, "getSignaturesForAddress", pda, {"until": everything[3]})] == everything[:3]
    span = rpc(server, "getSignaturesForAddress", pda, {"before": everything[1], "until": everything[5]})
    assert [e["signature"] for e in span] == everything[2:5]
    # a `before` signature the node does not know gives an empty list, as on mainnet
    unknown = "1" * 64
    assert rpc(server, "getSignaturesForAddress", pda, {"before": unknown}) == []


def test_within_a_slot_the_order_is_not_ledger_order(server, chain_blocks):
    # Most transactions name OTHER_PROGRAM, so it collects several signatures per slot. Newest first
    # in ledger terms would be index descending within a slot; the blockstore orders by signature.
    got = rpc(server, "getSignaturesForAddress", str(OTHER_PROGRAM))
    by_sig = {tx.signature: tx for tx in transactions(chain_blocks)}
    seen_out_of_order = False
    for a, b in zip(got, got[1:]):
        if a["slot"] == b["slot"]:
            seen_out_of_order |= by_sig[a["signature"]].index < by_sig[b["signature"]].index
    assert seen_out_of_order, "the server should not hand out ledger order within a slot"


def test_signature_limit_and_param_errors(server):
    body = rpc(server, "getSignaturesForAddress", str(PDAS[0]), {"limit": 1001}, raw=True)
    assert body["error"] == {"code": -32602, "message": "Invalid limit; max 1000"}
    body = rpc(server, "getSignaturesForAddress", "not-a-key", raw=True)
    assert body["error"]["code"] == -32602
    body = rpc(server, "getTransaction", transactions(build_blocks(slots=1))[0].signature,
               {"commitment": "processed"}, raw=True)
    assert body["error"]["message"] == "Method does not support commitment below `confirmed`"


def test_get_transaction_versions_and_unknown(server, chain_blocks):
    txs = transactions(chain_blocks)
    legacy, v0 = txs[0], txs[1]
    body = rpc(server, "getTransaction", v0.signature, {"encoding": "base64"}, raw=True)
    assert body["error"] == {
        "code": -32015,
        "message": "Transaction version (0) is not supported by the requesting client. Please try the request "
                   "again with the following configuration parameter: \"maxSupportedTransactionVersion\": 0"}
    without = rpc(server, "getTransaction", legacy.signature, "json")  # the old encoding-string form
    assert "version" not in without and without["transaction"]["signatures"] == [legacy.signature]
    with_v = rpc(server, "getTransaction", legacy.signature, {"encoding": "base64", "maxSupportedTransactionVersion": 0})
    assert with_v["version"] == "legacy" and with_v["slot"] == legacy.slot
    assert rpc(server, "getTransaction", v0.signature, {"maxSupportedTransactionVersion": 0})["version"] == 0
    assert rpc(server, "getTransaction", "1" * 64, {"maxSupportedTransactionVersion": 0}) is None


def test_get_block_details_and_skipped_slots(server, chain_blocks):
    full = rpc(server, "getBlock", FIRST_SLOT, {"encoding": "base64", "maxSupportedTransactionVersion": 0,
                                                "transactionDetails": "full", "rewards": False})
    assert len(full["transactions"]) == 5 and "rewards" not in full and "signatures" not in full
    assert full["blockHeight"] == chain_blocks[0].block_height and full["blockTime"] == chain_blocks[0].block_time
    sigs = rpc(server, "getBlock", FIRST_SLOT + 1, {"transactionDetails": "signatures", "maxSupportedTransactionVersion": 0})
    assert sigs["signatures"] == [tx.signature for tx in chain_blocks[1].transactions]
    assert sigs["rewards"] == [] and "transactions" not in sigs
    after_gap = rpc(server, "getBlock", SKIPPED + 1, {"transactionDetails": "none"})
    assert after_gap["parentSlot"] == SKIPPED - 1
    assert after_gap["previousBlockhash"] == rpc(server, "getBlock", SKIPPED - 1, {"transactionDetails": "none"})["blockhash"]
    # a block with v0 transactions needs maxSupportedTransactionVersion, as on mainnet
    assert rpc(server, "getBlock", FIRST_SLOT, raw=True)["error"]["code"] == -32015
    assert rpc(server, "getBlock", SKIPPED, raw=True)["error"] == {
        "code": -32009, "message": f"Slot {SKIPPED} was skipped, or missing in long-term storage"}
    assert rpc(server, "getBlock", LAST + 1, raw=True)["error"] == {
        "code": -32004, "message": f"Block not available for slot {LAST + 1}"}


def test_chain_facts_methods(server, chain_blocks):
    assert rpc(server, "getSlot") == LAST
    assert rpc(server, "getFirstAvailableBlock") == FIRST_SLOT
    assert rpc(server, "getBlockHeight") == chain_blocks[-1].block_height
    assert rpc(server, "getHealth") == "ok"
    assert rpc(server, "getBlocks", FIRST_SLOT, LAST) == [b.slot for b in chain_blocks if not b.skipped]
    assert rpc(server, "getBlockTime", FIRST_SLOT) == chain_blocks[0].block_time
    tx = transactions(chain_blocks)[2]
    status = rpc(server, "getSignatureStatuses", [tx.signature, "1" * 64], {"searchTransactionHistory": True})
    assert status["value"][0]["slot"] == tx.slot and status["value"][0]["err"] is not None
    assert status["value"][1] is None


def test_protocol_errors_and_batches(server):
    assert rpc(server, "getBalance", str(PDAS[0]), raw=True)["error"] == {"code": -32601, "message": "Method not found"}
    r = requests.post(server.url, data=b"{not json", timeout=10).json()
    assert r["error"]["code"] == -32700 and r["id"] is None
    r = requests.post(server.url, json=[], timeout=10).json()
    assert r["error"]["code"] == -32600
    batch = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p}
             for i, (m, p) in enumerate([("getSlot", []), ("getBlock", [SKIPPED]), ("nope", [])])]
    replies = {r["id"]: r for r in requests.post(server.url, json=batch, timeout=10).json()}
    assert replies[0]["result"] == LAST
    assert replies[1]["error"]["code"] == -32009
    assert replies[2]["error"]["code"] == -32601
    assert server.counters.by_method["getSlot"] >= 1
    # GET is not JSON-RPC; /health answers like a validator's
    assert requests.get(server.url + "/health", timeout=10).text == "ok"


def test_gzip_when_asked(server):
    r = requests.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "getBlock",
                                        "params": [FIRST_SLOT, {"maxSupportedTransactionVersion": 0}]},
                      headers={"Accept-Encoding": "gzip"}, timeout=10)
    assert r.headers.get("Content-Encoding") == "gzip"
    assert len(r.json()["result"]["transactions"]) == 5


def test_from_dir_serves_the_same_chain_as_from_blocks(tmp_path, chain_blocks, server):
    """Loaded through the CAR reader (as `devchain serve` does), the answers are identical."""
    write_chain_dir(chain_blocks, tmp_path / "chain")
    srv = serve_rpc(tmp_path / "chain")
    try:
        for method, params in [
            ("getBlock", [FIRST_SLOT, {"encoding": "base64", "maxSupportedTransactionVersion": 0}]),
            ("getBlock", [LAST, {"encoding": "json", "maxSupportedTransactionVersion": 0}]),
            ("getBlock", [SKIPPED]),
            ("getSignaturesForAddress", [str(PDAS[2])]),
            ("getTransaction", [transactions(chain_blocks)[6].signature, {"maxSupportedTransactionVersion": 0}]),
            ("getSlot", []), ("getFirstAvailableBlock", []), ("getBlockHeight", []),
        ]:
            assert rpc(srv, method, *params, raw=True) == rpc(server, method, *params, raw=True), method
    finally:
        srv.shutdown()
