"""A benchmark-sized development chain (>= 200,000 transactions over two epochs), read back whole
through the streaming CAR reader with the IQ key pre-filter."""
from __future__ import annotations

from solders.pubkey import Pubkey

from iq_etl.devchain.build import SLOTS_PER_EPOCH, build_chain
from iq_etl.devchain.chain import iter_chain, iter_expected_instructions

BENCH = dict(seed=0, sessions=170, noise_tx_per_slot=50, slots=4100, first_slot=924 * SLOTS_PER_EPOCH - 2000)


def test_benchmark_sized_chain(tmp_path):
    out = tmp_path / "bench"
    manifest = build_chain(out, **BENCH)
    counts = manifest.tx_counts
    total = counts["transactions"]
    assert total >= 200_000
    assert manifest.epochs == [923, 924]
    assert 0.003 <= counts["iq"] / total <= 0.01            # IQ share about 0.5%
    assert 0.25 <= counts["v0"] / total <= 0.35             # about 30% v0 with lookup tables
    assert counts["noise_vote"] / total > 0.3
    assert counts["noise_multi"] > 0 and counts["failed"] > 0

    wanted = [bytes(Pubkey.from_string(p)) for p in manifest.all_program_ids()]
    seen = matched = blocks = 0
    matched_sigs = set()
    for block in iter_chain(out, wanted_keys=wanted):
        if block.skipped:
            continue
        blocks += 1
        seen += block.transactions_seen
        matched += len(block.transactions)
        matched_sigs.update(t.signature for t in block.transactions)
    assert blocks == manifest.block_count
    assert seen == total
    # Every IQ transaction, plus the unrelated ones that list IQ program ids as plain accounts and
    # the deliberate call of an IQ program with an instruction outside the upload protocol.
    undecodable = manifest.hard_case("undecodable_iq_instruction").signatures
    assert len(undecodable) == 1 and set(undecodable) <= matched_sigs
    assert matched == counts["iq"] + counts["iq_account_only"] + len(undecodable)
    assert {r["signature"] for r in iter_expected_instructions(out)} <= matched_sigs
