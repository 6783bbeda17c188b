"""A small synthetic chain of every transaction kind (legacy, v0 with lookup tables, failed, memo), as
ChainBlocks and as the devchain RPC server's chain folder."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from solders.address_lookup_table_account import AddressLookupTableAccount
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from iq_etl.settings import G3_PROGRAM_ID
from iq_etl.solana.model import (
    TX_FAILED,
    TX_OK,
    ChainBlock,
    ChainTransaction,
    InnerInstruction,
    InnerInstructions,
    TxMeta,
)

FIRST_SLOT = 400_000_000                       # IQ era, inside epoch 925


PROGRAM = Pubkey.from_string(G3_PROGRAM_ID)


MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


SYSTEM = Pubkey.from_string("11111111111111111111111111111111")


OTHER_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")


def digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode()).digest()


def pda(n: int) -> Pubkey:
    return Pubkey(digest("pda", n))


PDAS = [pda(0), pda(1), pda(2)]


TABLE = AddressLookupTableAccount(Pubkey(digest("table")), [PDAS[0], PDAS[1], PDAS[2], Pubkey(digest("loaded-ro"))])


def chain_tx(kind: int, n: int, slot: int, seed: int, target: Pubkey, block_time: int) -> tuple[VersionedTransaction, TxMeta]:
    payer = Keypair.from_seed(digest("payer", seed, n % 7))
    blockhash = Hash(digest("blockhash", slot - 1))
    data = digest("data", seed, n)[: 8 + n % 20]
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
                               b"\x03" + digest("cpi", n)[:9], 2)
        meta = TxMeta(TX_OK, None, 5000 + n, loaded_w, loaded_r, [InnerInstructions(0, [cpi])], logs, 3000 + n)
    elif kind == 2:  # failed IQ call
        msg = Message.new_with_blockhash([iq], payer.pubkey(), blockhash)
        meta = TxMeta(TX_FAILED, '{"InstructionError":[0,{"Custom":%d}]}' % (n % 5), 5000, [], [],
                      [], logs[:2] + [f"Program {PROGRAM} failed: custom program error: 0x{n % 5:x}"], 900)
    elif kind == 3:  # unrelated transfer-ish call with a memo; logs not recorded
        dest = Pubkey(digest("dest", n))
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
    Transaction n of the chain has kind n % 5 (see `chain_tx`) unless `only_kinds` cycles others."""
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
            vtx, meta = chain_tx(kind, n, slot, seed, targets[n % len(targets)], block_time)
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
