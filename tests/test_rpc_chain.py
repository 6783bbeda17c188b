"""A small chain of real signed transactions for the RPC tests, and the conversion tests.

`build_blocks` makes ChainBlocks from solders-built, signed legacy and v0 transactions: IQ-looking
calls that name a session PDA directly or only through an address lookup table, failed ones,
inner instructions, memos, unrelated traffic and skipped slots. `write_chain_dir` stores them as an
Old Faithful CAR folder (CarWriter) so the server can also be loaded the way `devchain serve` does.
"""
from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Iterable

import pytest
from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.rpc.responses import GetBlockResp, GetSignaturesForAddressResp, GetTransactionResp
from solders.transaction import VersionedTransaction
from solders.transaction_status import EncodedTransactionWithStatusMeta

from iq_etl.settings import G3_PROGRAM_ID
from iq_etl.solana.model import (TX_FAILED, TX_OK, TX_UNKNOWN, ChainBlock, ChainTransaction, InnerInstruction,
                                  InnerInstructions, TxMeta)
from iq_etl.ingest.sources.rpc.convert import (b58decode, b58encode, memo_of, meta_from_rpc, meta_to_rpc,
                                        transaction_from_rpc, transaction_to_rpc)

FIRST_SLOT = 400_000_000                       # IQ era, inside epoch 925
PROGRAM = Pubkey.from_string(G3_PROGRAM_ID)
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")
SYSTEM = Pubkey.from_string("11111111111111111111111111111111")
OTHER_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")


def _h(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


def pda(n: int) -> Pubkey:
    return Pubkey(_h("pda", n))


PDAS = [pda(0), pda(1), pda(2)]
TABLE = AddressLookupTableAccount(Pubkey(_h("table")), [PDAS[0], PDAS[1], PDAS[2], Pubkey(_h("loaded-ro"))])


def _tx(kind: int, n: int, slot: int, seed: int, target: Pubkey, block_time: int) -> tuple[VersionedTransaction, TxMeta]:
    payer = Keypair.from_seed(_h("payer", seed, n % 7))
    blockhash = Hash(_h("blockhash", slot - 1))
    data = _h("data", seed, n)[: 8 + n % 20]
    iq = Instruction(PROGRAM, data, [AccountMeta(payer.pubkey(), True, True), AccountMeta(target, False, True),
                                     AccountMeta(OTHER_PROGRAM, False, False)])
    logs = [f"Program {PROGRAM} invoke [1]", f"Program log: chunk {n}", f"Program {PROGRAM} success"]
    if kind == 0:    # legacy IQ call naming the PDA
        msg = Message.new_with_blockhash([iq], payer.pubkey(), blockhash)
        meta = TxMeta(TX_OK, None, 5000, [], [], [], logs, 1200 + n)
    elif kind == 1:  # v0: the PDA only in the lookup table (loaded writable), with a CPI
        msg = MessageV0.try_compile(payer.pubkey(), [iq], [TABLE], blockhash)
        keys = [str(k) for k in msg.account_keys]
        loaded_w = [str(TABLE.addresses[i]) for lk in msg.address_table_lookups for i in lk.writable_indexes]
        loaded_r = [str(TABLE.addresses[i]) for lk in msg.address_table_lookups for i in lk.readonly_indexes]
        full = keys + loaded_w + loaded_r
        cpi = InnerInstruction(full.index(str(OTHER_PROGRAM)), bytes([0, full.index(str(target))]),
                               b"\x03" + _h("cpi", n)[:9], 2)
        meta = TxMeta(TX_OK, None, 5000 + n, loaded_w, loaded_r, [InnerInstructions(0, [cpi])], logs, 3000 + n)
    elif kind == 2:  # failed IQ call
        msg = Message.new_with_blockhash([iq], payer.pubkey(), blockhash)
        meta = TxMeta(TX_FAILED, '{"InstructionError":[0,{"Custom":%d}]}' % (n % 5), 5000, [], [],
                      [], logs[:2] + [f"Program {PROGRAM} failed: custom program error: 0x{n % 5:x}"], 900)
    elif kind == 3:  # unrelated transfer-ish call with a memo; logs not recorded
        dest = Pubkey(_h("dest", n))
        msg = Message.new_with_blockhash(
            [Instruction(SYSTEM, b"\x02\x00\x00\x00" + n.to_bytes(8, "little"),
                         [AccountMeta(payer.pubkey(), True, True), AccountMeta(dest, False, True)]),
             Instruction(MEMO, f"memo {n}".encode(), [AccountMeta(payer.pubkey(), True, False)])],
            payer.pubkey(), blockhash)
        meta = TxMeta(TX_OK, None, 5000, [], [], [], None, None)
    else:            # v0 noise loading only an unrelated readonly key; a fieldless error
        other = Instruction(OTHER_PROGRAM, b"\x09", [AccountMeta(payer.pubkey(), True, True),
                                                     AccountMeta(TABLE.addresses[3], False, False)])
        msg = MessageV0.try_compile(payer.pubkey(), [other], [TABLE], blockhash)
        loaded_r = [str(TABLE.addresses[i]) for lk in msg.address_table_lookups for i in lk.readonly_indexes]
        meta = TxMeta(TX_FAILED, '"InsufficientFundsForFee"', 5000, [], loaded_r, [], [], 150)
    return VersionedTransaction(msg, [payer]), meta


def build_blocks(first_slot: int = FIRST_SLOT, slots: int = 12, *, seed: int = 0, tx_per_slot: int = 5,
                 skipped: Iterable[int] = (), targets: list[Pubkey] | None = None, counter_start: int = 0,
                 only_kinds: tuple[int, ...] | None = None) -> list[ChainBlock]:
    """Blocks for slots first..first+slots-1; slots in `skipped` (absolute numbers) have no block.
    Transaction n of the chain has kind n % 5 (see `_tx`) unless `only_kinds` cycles others."""
    targets = targets or PDAS
    skipped = set(skipped)
    blocks = []
    n = counter_start
    height = first_slot - 399_000_000
    for slot in range(first_slot, first_slot + slots):
        if slot in skipped:
            blocks.append(ChainBlock(slot=slot, skipped=True))
            continue
        block_time = 1_700_000_000 + (slot - FIRST_SLOT) // 2
        parent = slot - 1
        while parent in skipped:
            parent -= 1
        txs = []
        for index in range(tx_per_slot):
            kind = only_kinds[n % len(only_kinds)] if only_kinds else n % 5
            vtx, meta = _tx(kind, n, slot, seed, targets[n % len(targets)], block_time)
            txs.append(ChainTransaction(str(vtx.signatures[0]), slot, index, vtx, meta, block_time))
            n += 1
        blocks.append(ChainBlock(slot, parent, block_time, height, transactions=txs, transactions_seen=len(txs)))
        height += 1
    return blocks


def transactions(blocks: Iterable[ChainBlock]) -> list[ChainTransaction]:
    return [tx for b in blocks for tx in b.transactions]


def write_chain_dir(blocks: list[ChainBlock], out: Path) -> Path:
    """The blocks as `out/{epoch}/epoch-{epoch}.car` (+ slot-ranges index) and a manifest.json."""
    from iq_etl.devchain.car_writer import CarWriter
    from iq_etl.solana.slots import epoch_of

    writers: dict[int, CarWriter] = {}
    for b in blocks:
        if b.skipped:
            continue
        epoch = epoch_of(b.slot)
        if epoch not in writers:
            writers[epoch] = CarWriter(out / str(epoch) / f"epoch-{epoch}.car")
        writers[epoch].add_slot(b.slot, b.parent_slot, b.block_time, b.block_height,
                                [(tx.transaction, tx.meta) for tx in b.transactions])
    for w in writers.values():
        w.close()
    (out / "manifest.json").write_text(json.dumps({"first_slot": blocks[0].slot, "last_slot": blocks[-1].slot}))
    return out


# --- conversion tests -----------------------------------------------------------------------------

def test_base58_round_trip_and_known_values():
    assert b58encode(b"") == ""
    assert b58encode(b"\0\0\x01") == "112"
    assert b58encode(bytes(PROGRAM)) == str(PROGRAM)
    for n in range(0, 70, 7):
        raw = b"\0" * (n % 3) + _h("b58", n)[: n % 33]
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
    from iq_etl.devchain.servers.rpc import RpcChain, serve_rpc

    blocks = build_blocks(slots=6, skipped=[FIRST_SLOT + 3])
    server = serve_rpc(RpcChain.from_blocks(blocks))
    try:
        yield server, blocks
    finally:
        server.shutdown()
