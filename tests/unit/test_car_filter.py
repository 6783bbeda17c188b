"""The pre-filter: keep exactly the transactions that name a wanted key as an account (static or
loaded through a lookup table), whatever the frame layout, and count every transaction seen."""
from __future__ import annotations

import random

import pytest
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from iq_etl.devchain.car_writer import CarWriter
from iq_etl.errors import SourceError
from iq_etl.ingest.sources.car.source import CarSource
from iq_etl.solana.model import TX_OK, TxMeta
from tests.support.synthetic_car import (
    PROGRAM_KEY,
    build_synthetic_car,
    ix_wire,
    legacy_transfer,
    tx_wire,
    v0_with_lookups,
)

EPOCH = 4
PROGRAM_B58 = str(Pubkey.from_bytes(PROGRAM_KEY))


def _scan(chain_root, keys, last_slot=EPOCH * 432_000 + 3000, **kw):
    source = CarSource(str(chain_root / "{epoch}" / "epoch-{epoch}.car"), wanted_keys=keys, **kw)
    return list(source.iter_blocks(EPOCH * 432_000, last_slot))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    return root, build_synthetic_car(root, 4000, epoch=EPOCH, tx_per_slot=80, wanted_every=25, v0_share=0.4)


def test_keeps_exactly_the_transactions_naming_the_key(chain):
    root, info = chain
    blocks = _scan(root, [PROGRAM_KEY])
    kept = [t for b in blocks for t in b.transactions]
    assert [t.signature for t in kept] == info.wanted_signatures
    assert sum(b.transactions_seen for b in blocks) == info.transactions == 4000
    # some were found only through lookup tables: the key is not among their static keys
    lookup_only = [t for t in kept if PROGRAM_KEY not in {bytes(k) for k in t.transaction.message.account_keys}]
    assert lookup_only, "the synthetic chain should hide some keys in lookup tables"
    for t in lookup_only:
        assert t.meta.loaded_readonly or t.meta.loaded_writable
        assert PROGRAM_B58 in t.account_keys()


def test_many_keys_mode_agrees(chain):
    root, info = chain
    rnd = random.Random(9)
    keys = [PROGRAM_KEY] + [rnd.randbytes(32) for _ in range(40)]
    kept = [t.signature for b in _scan(root, keys) for t in b.transactions]
    assert kept == info.wanted_signatures


def test_no_filter_keeps_everything(chain):
    root, info = chain
    blocks = _scan(root, None)
    assert sum(len(b.transactions) for b in blocks) == info.transactions


def test_multi_frame_transactions_are_never_rejected_unassembled(tmp_path):
    """With 64-byte frames the key is split across DataFrames; none may be lost."""
    info = build_synthetic_car(tmp_path, 600, epoch=EPOCH, tx_per_slot=60, wanted_every=7, max_frame_bytes=64)
    kept = [t.signature for b in _scan(tmp_path, [PROGRAM_KEY]) for t in b.transactions]
    assert kept == info.wanted_signatures


def test_key_in_instruction_data_only_is_not_a_mention(tmp_path):
    rnd = random.Random(2)
    keys = [rnd.randbytes(32), rnd.randbytes(32), bytes(32)]
    decoy = tx_wire(rnd, (1, 0, 1), keys, [ix_wire(2, bytes([0, 1]), PROGRAM_KEY)])  # key bytes as data
    real = legacy_transfer(rnd, extra_key=PROGRAM_KEY)
    slot = EPOCH * 432_000
    with CarWriter(tmp_path / str(EPOCH) / f"epoch-{EPOCH}.car") as w:
        w.add_slot(slot, None, 1, 1, [(decoy, TxMeta(status=TX_OK, fee=1)), (real, TxMeta(status=TX_OK, fee=1))])
    blocks = _scan(tmp_path, [PROGRAM_KEY])
    assert [t.transaction for t in blocks[0].transactions] == [VersionedTransaction.from_bytes(real)]
    assert blocks[0].transactions_seen == 2


def test_lookup_key_found_for_multi_signature_v0(tmp_path):
    rnd = random.Random(3)
    wire = bytearray(v0_with_lookups(rnd))
    # turn it into a two-signature transaction (a layout the hot path leaves to the general check)
    wire = b"\x02" + bytes(wire[1:65]) + rnd.randbytes(64) + bytes(wire[65:])
    wire = bytearray(wire)
    wire[65 + 64 + 1] = 2  # header: two required signatures
    meta = TxMeta(status=TX_OK, fee=1, loaded_readonly=[PROGRAM_B58])
    slot = EPOCH * 432_000
    with CarWriter(tmp_path / str(EPOCH) / f"epoch-{EPOCH}.car") as w:
        w.add_slot(slot, None, 1, 1, [(bytes(wire), meta)])
    blocks = _scan(tmp_path, [PROGRAM_KEY])
    assert len(blocks[0].transactions) == 1


def test_earlier_slots_are_skipped_without_decoding(tmp_path):
    """Without an index the walk passes earlier slots; their transactions are never decoded, so a
    damaged transaction there only matters when that slot is asked for."""
    info = build_synthetic_car(tmp_path, 400, epoch=EPOCH, tx_per_slot=40, index=False)
    path = info.car_path
    data = bytearray(path.read_bytes())
    first_tx = data.index(b"\x85\x00\x86\x06")  # the first Transaction node, in the first slot
    data[first_tx + 80] ^= 0xFF
    path.write_bytes(bytes(data))
    later = info.slots[3]
    blocks = list(CarSource(str(path)).iter_blocks(later, later))
    assert blocks[0].transactions_seen == 40 and len(blocks[0].transactions) == 40
    with pytest.raises(SourceError):
        list(CarSource(str(path)).iter_blocks(info.slots[0], info.slots[0]))
