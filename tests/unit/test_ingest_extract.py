"""Extraction: top-level and inner IQ instructions become rows; undecodable ones are kept with the
reason; keys loaded through lookup tables are seen; the session-PDA filter follows the seed."""
from __future__ import annotations

from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message, MessageAddressTableLookup, MessageV0
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from iq_etl.ingest.decode import Extracted, InstructionFilter, extract
from iq_etl.protocol import IQRecord, encode
from iq_etl.settings import G3_PROGRAM_ID
from iq_etl.solana.model import TX_FAILED, TX_OK, ChainTransaction, InnerInstruction, InnerInstructions, TxMeta
from iq_etl.warehouse.rows import RAW_COLUMNS, UNDECODED_COLUMNS

G3 = Pubkey.from_string(G3_PROGRAM_ID)
MEMO = Pubkey.from_string("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr")


def kp(n: int) -> Keypair:
    return Keypair.from_seed(bytes([n]) * 32)


def chunk_data(index: int, text: bytes) -> bytes:
    return encode(IQRecord(generation="g3", kind="chunk", instruction="post_chunk", chunk_index=index,
                           payload=text, method=0, decode_break=0))


def legacy_tx(payer: Keypair, session: Pubkey, data: bytes) -> VersionedTransaction:
    ix = Instruction(G3, data, [AccountMeta(payer.pubkey(), True, True), AccountMeta(session, False, True)])
    memo = Instruction(MEMO, b"hello", [])
    msg = Message.new_with_blockhash([memo, ix], payer.pubkey(), Hash.default())
    return VersionedTransaction(msg, [payer])


def row_dict(row, columns=RAW_COLUMNS):
    return dict(zip(columns, row))


FILTER = InstructionFilter(frozenset({G3_PROGRAM_ID}))


def test_top_level_chunk_row():
    payer, session = kp(1), kp(2).pubkey()
    tx = legacy_tx(payer, session, chunk_data(7, b"QUJD"))
    ctx = ChainTransaction(str(tx.signatures[0]), 400_000_123, 5, tx, TxMeta(status=TX_OK), block_time=1_700_000_000)
    out = Extracted()
    assert extract(ctx, FILTER, "car", "run1", out) == 1
    assert out.undecoded == []
    row = row_dict(out.rows[0])
    assert len(out.rows[0]) == len(RAW_COLUMNS)
    assert row["slot"] == 400_000_123 and row["tx_index"] == 5 and row["ix_index"] == 1 and row["inner_index"] == -1
    assert row["program_id"] == G3_PROGRAM_ID and row["generation"] == "g3" and row["kind"] == "chunk"
    assert row["session_account"] == str(session) and row["chunk_index"] == 7 and row["payload"] == b"QUJD"
    assert row["accounts"] == [str(payer.pubkey()), str(session)]
    assert row["tx_status"] == "ok" and row["source"] == "car" and row["run_id"] == "run1"
    assert row["block_time"] == 1_700_000_000


def test_failed_transaction_is_kept_and_flagged():
    payer, session = kp(1), kp(2).pubkey()
    tx = legacy_tx(payer, session, chunk_data(0, b"x"))
    ctx = ChainTransaction(str(tx.signatures[0]), 1, 0, tx, TxMeta(status=TX_FAILED, err="InstructionError(1, Custom(6000))"))
    out = Extracted()
    extract(ctx, FILTER, "car", "r", out)
    row = row_dict(out.rows[0])
    assert row["tx_status"] == "failed" and "Custom(6000)" in row["tx_error"]


def test_undecodable_instruction_is_stored_with_reason():
    payer, session = kp(1), kp(2).pubkey()
    tx = legacy_tx(payer, session, b"\xde\xad\xbe\xef" * 3)
    ctx = ChainTransaction(str(tx.signatures[0]), 1, 0, tx, TxMeta(status=TX_OK))
    out = Extracted()
    assert extract(ctx, FILTER, "car", "r", out) == 1
    assert out.rows == []
    row = row_dict(out.undecoded[0], UNDECODED_COLUMNS)
    assert row["reason"] and row["data"] == b"\xde\xad\xbe\xef" * 3 and row["program_id"] == G3_PROGRAM_ID


def test_inner_instruction_through_lookup_table():
    """A v0 transaction whose IQ program and session are loaded from a lookup table and invoked by CPI."""
    payer = kp(3)
    session = kp(4).pubkey()
    table = kp(5).pubkey()
    outer_program = kp(6).pubkey()
    lookup = MessageAddressTableLookup(table, bytes([0]), bytes([1]))
    outer = Instruction(outer_program, b"\x01", [AccountMeta(payer.pubkey(), True, True)])
    msg = MessageV0.try_compile(payer.pubkey(), [outer], [], Hash.default())
    msg = MessageV0(msg.header, msg.account_keys, msg.recent_blockhash, msg.instructions, [lookup])
    tx = VersionedTransaction(msg, [payer])
    # full keys: [payer, outer_program] + writable [session] + readonly [G3]
    inner = InnerInstruction(program_id_index=3, accounts=bytes([0, 2]), data=chunk_data(2, b"ZZ"), stack_height=2)
    meta = TxMeta(status=TX_OK, loaded_writable=[str(session)], loaded_readonly=[G3_PROGRAM_ID],
                  inner_instructions=[InnerInstructions(index=0, instructions=[inner])])
    ctx = ChainTransaction(str(tx.signatures[0]), 9, 1, tx, meta)
    assert FILTER.wanted_keys() == {bytes(G3)}
    out = Extracted()
    assert extract(ctx, FILTER, "rpc-blocks", "r", out) == 1
    row = row_dict(out.rows[0])
    assert (row["ix_index"], row["inner_index"], row["stack_height"]) == (0, 0, 2)
    assert row["session_account"] == str(session) and row["chunk_index"] == 2 and row["payload"] == b"ZZ"


def test_session_pda_filter_follows_the_seed():
    payer, s1, s2 = kp(1), kp(2).pubkey(), kp(7).pubkey()
    tx1 = legacy_tx(payer, s1, chunk_data(0, b"a"))
    tx2 = legacy_tx(payer, s2, chunk_data(0, b"b"))
    filt = InstructionFilter(frozenset({G3_PROGRAM_ID}), session_pdas=frozenset({str(s2)}))
    out = Extracted()
    n1 = extract(ChainTransaction(str(tx1.signatures[0]), 1, 0, tx1, TxMeta(status=TX_OK)), filt, "car", "r", out)
    n2 = extract(ChainTransaction(str(tx2.signatures[0]), 1, 1, tx2, TxMeta(status=TX_OK)), filt, "car", "r", out)
    assert (n1, n2) == (0, 1)
    assert [row_dict(r)["session_account"] for r in out.rows] == [str(s2)]


def test_missing_loaded_addresses_is_an_undecoded_row_not_a_crash():
    payer = kp(3)
    table = kp(5).pubkey()
    ix = Instruction(G3, chunk_data(0, b"a"), [AccountMeta(payer.pubkey(), True, True)])
    msg = MessageV0.try_compile(payer.pubkey(), [ix], [], Hash.default())
    # the instruction references key index 2, which only the (absent) loaded addresses would supply
    from solders.instruction import CompiledInstruction
    bad_ix = CompiledInstruction(1, chunk_data(0, b"a"), bytes([0, 2]))
    msg = MessageV0(msg.header, msg.account_keys, msg.recent_blockhash, [bad_ix],
                    [MessageAddressTableLookup(table, bytes([0]), bytes())])
    tx = VersionedTransaction(msg, [payer])
    out = Extracted()
    assert extract(ChainTransaction(str(tx.signatures[0]), 1, 0, tx, TxMeta(status=TX_OK)), FILTER, "car", "r", out) == 1
    assert "out of range" in row_dict(out.undecoded[0], UNDECODED_COLUMNS)["reason"]
