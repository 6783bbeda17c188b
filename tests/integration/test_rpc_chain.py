"""A small chain of real signed transactions for the RPC tests, and the conversion tests.

`build_blocks` makes ChainBlocks from solders-built, signed legacy and v0 transactions: IQ-looking
calls that name a session PDA directly or only through an address lookup table, failed ones,
inner instructions, memos, unrelated traffic and skipped slots. `write_chain_dir` stores them as an
Old Faithful CAR folder (CarWriter) so the server can also be loaded the way `devchain serve` does.
"""
from __future__ import annotations

import base64
import json

import pytest
from solders.message import MessageV0
from solders.rpc.responses import GetBlockResp, GetSignaturesForAddressResp, GetTransactionResp
from solders.transaction_status import EncodedTransactionWithStatusMeta

from iq_etl.ingest.sources.rpc.convert import (
    b58decode,
    b58encode,
    memo_of,
    meta_from_rpc,
    meta_to_rpc,
    transaction_from_rpc,
    transaction_to_rpc,
)
from iq_etl.solana.model import TX_FAILED, TX_OK, TX_UNKNOWN, InnerInstruction, TxMeta
from tests.support.rpc_chain import FIRST_SLOT, PDAS, PROGRAM, build_blocks, digest, transactions

# --- conversion tests -----------------------------------------------------------------------------

def test_base58_round_trip_and_known_values():
    assert b58encode(b"") == ""
    assert b58encode(b"\0\0\x01") == "112"
    assert b58encode(bytes(PROGRAM)) == str(PROGRAM)
    for n in range(0, 70, 7):
        raw = b"\0" * (n % 3) + digest("b58", n)[: n % 33]
        assert b58decode(b58encode(raw)) == raw
    with pytest.raises(ValueError, match="invalid base58 character"):
        b58decode("0OIl")


@pytest.mark.parametrize("with_version", [True, False])
def test_every_transaction_kind_round_trips_through_rpc_json(with_version):
    blocks = build_blocks(slots=3, tx_per_slot=5)
    for tx in transactions(blocks):
        if tx.transaction.message.__class__ is MessageV0 and not with_version:
            continue  # mainnet refuses those (tested on the server)
        body = json.loads(json.dumps(transaction_to_rpc(tx, encoding="base64", with_version=with_version)))
        back = transaction_from_rpc(body, slot=tx.slot, index=tx.index, block_time=tx.block_time)
        assert back == tx
        assert ("version" in body) is with_version


def test_meta_json_is_what_solders_and_mainnet_use():
    blocks = build_blocks(slots=1, tx_per_slot=5)
    failed = [tx for tx in transactions(blocks) if tx.meta.status == TX_FAILED]
    body = transaction_to_rpc(failed[0], encoding="base64", with_version=True)
    meta = body["meta"]
    assert meta["err"] == {"InstructionError": [0, {"Custom": 2}]}
    assert meta["status"] == {"Err": meta["err"]}
    fieldless = transaction_to_rpc(failed[1], encoding="base64", with_version=True)["meta"]
    assert fieldless["err"] == "InsufficientFundsForFee"
    v0 = transactions(blocks)[1]
    m = transaction_to_rpc(v0, encoding="base64", with_version=True)["meta"]
    assert m["loadedAddresses"]["writable"] == v0.meta.loaded_writable
    ix = m["innerInstructions"][0]["instructions"][0]
    # inner instruction data is base58 in the base64 encoding too (agave's UiCompiledInstruction)
    assert b58decode(ix["data"]) == v0.meta.inner_instructions[0].instructions[0].data
    assert ix["stackHeight"] == 2
    parsed = EncodedTransactionWithStatusMeta.from_json(json.dumps(body))
    assert bytes(parsed.transaction) == bytes(failed[0].transaction)


def test_json_encoding_describes_the_same_message():
    for tx in transactions(build_blocks(slots=1, tx_per_slot=5)):
        body = transaction_to_rpc(tx, encoding="json", with_version=True)
        msg = body["transaction"]["message"]
        assert body["transaction"]["signatures"][0] == tx.signature
        assert msg["accountKeys"] == [str(k) for k in tx.transaction.message.account_keys]
        assert [b58decode(ix["data"]) for ix in msg["instructions"]] == \
            [bytes(ix.data) for ix in tx.transaction.message.instructions]
        assert ("addressTableLookups" in msg) is (body["version"] == 0)
        EncodedTransactionWithStatusMeta.from_json(json.dumps(body))  # solders accepts it


def test_meta_edge_cases():
    assert meta_from_rpc(None).status == TX_UNKNOWN
    assert meta_to_rpc(TxMeta(TX_UNKNOWN)) is None
    m = meta_from_rpc({"err": None, "fee": 5000, "innerInstructions": None, "logMessages": None})
    assert m == TxMeta(TX_OK, None, 5000, [], [], [], None, None)
    m = meta_from_rpc({"err": {"InstructionError": [1, "InvalidArgument"]}, "fee": 5000,
                       "innerInstructions": [{"index": 1, "instructions": [
                           {"programIdIndex": 2, "accounts": [0, 1], "data": "3Bxs4h24hBtQy9rw"}]}],
                       "logMessages": [], "loadedAddresses": {"writable": [], "readonly": []},
                       "computeUnitsConsumed": 7})
    assert m.status == TX_FAILED and m.err == '{"InstructionError":[1,"InvalidArgument"]}'
    assert m.inner_instructions[0].instructions[0] == InnerInstruction(2, b"\0\1", b58decode("3Bxs4h24hBtQy9rw"), None)
    from iq_etl.errors import SourceError
    with pytest.raises(SourceError, match="slot 5 tx 1.*malformed transaction meta"):
        meta_from_rpc({"err": None, "innerInstructions": [{"index": 0, "instructions": [{"data": "x"}]}]},
                      where="slot 5 tx 1")
    with pytest.raises(SourceError, match="not in a binary encoding"):
        transaction_from_rpc({"transaction": {"signatures": []}, "meta": None}, slot=1, index=0, block_time=None)
    with pytest.raises(SourceError, match="undecodable transaction"):
        transaction_from_rpc({"transaction": [base64.b64encode(b"junk").decode(), "base64"], "meta": None},
                             slot=1, index=0, block_time=None)


def test_memo_rendering_matches_agave():
    memo_tx = transactions(build_blocks(slots=1, tx_per_slot=5))[3]
    assert memo_of(memo_tx) == "[6] memo 3"
    assert memo_of(transactions(build_blocks(slots=1, tx_per_slot=1))[0]) is None


def test_solders_parses_the_server_responses(rpc_chain_server):
    """Whole responses (not just fragments) parse with solders' typed response classes."""
    import requests

    server, blocks = rpc_chain_server
    v0 = transactions(blocks)[1]
    for encoding in ("json", "base64"):
        raw = requests.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "getTransaction",
                                              "params": [v0.signature, {"encoding": encoding,
                                                                        "maxSupportedTransactionVersion": 0}]}).text
        parsed = GetTransactionResp.from_json(raw)
        assert parsed.value.slot == v0.slot and parsed.value.block_time == v0.block_time
    raw = requests.post(server.url, json={"jsonrpc": "2.0", "id": 2, "method": "getBlock",
                                          "params": [FIRST_SLOT, {"encoding": "base64", "maxSupportedTransactionVersion": 0,
                                                                  "rewards": False}]}).text
    block = GetBlockResp.from_json(raw).value
    assert [str(t.transaction.signatures[0]) for t in block.transactions] == \
        [t.signature for t in blocks[0].transactions]
    assert block.rewards is None and block.parent_slot == blocks[0].parent_slot
    raw = requests.post(server.url, json={"jsonrpc": "2.0", "id": 3, "method": "getSignaturesForAddress",
                                          "params": [str(PDAS[0]), {"limit": 3}]}).text
    assert len(GetSignaturesForAddressResp.from_json(raw).value) == 3


@pytest.fixture
def rpc_chain_server():
    from iq_etl.devchain.servers.rpc import serve_rpc
    from iq_etl.devchain.servers.rpc_index import RpcChain

    blocks = build_blocks(slots=6, skipped=[FIRST_SLOT + 3])
    server = serve_rpc(RpcChain.from_blocks(blocks))
    try:
        yield server, blocks
    finally:
        server.shutdown()
