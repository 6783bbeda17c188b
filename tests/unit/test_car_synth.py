"""Synthetic Old Faithful CARs for reader tests and throughput measurements.

Transactions are assembled as wire bytes directly (fast enough to write 100k+ of them) and look
like mainnet traffic: one-transfer legacy transactions, vote transactions, and v0 transactions
with address lookup tables whose loaded keys are only in the metadata. A share of transactions
mentions a "program" key, either as a static key or (for v0) through a lookup table.

The generator lives in tests/support/synthetic_car.py.
"""
from __future__ import annotations

import random

from solders.transaction import VersionedTransaction

from tests.support.synthetic_car import PROGRAM_KEY, b58_signature, legacy_transfer, v0_with_lookups, vote

# --- tests of the generator itself ------------------------------------------------------------------

def test_synthetic_transactions_parse_with_solders():
    rnd = random.Random(1)
    for wire in (legacy_transfer(rnd), legacy_transfer(rnd, PROGRAM_KEY), vote(rnd), v0_with_lookups(rnd),
                 v0_with_lookups(rnd, static_extra=PROGRAM_KEY)):
        tx = VersionedTransaction.from_bytes(wire)
        assert bytes(tx) == wire
        assert str(tx.signatures[0]) == b58_signature(wire)


def test_v0_lookup_tables_are_in_the_message():
    tx = VersionedTransaction.from_bytes(v0_with_lookups(random.Random(2), n_writable=3, n_readonly=1))
    lookups = tx.message.address_table_lookups
    assert len(lookups) == 1
    assert bytes(lookups[0].writable_indexes) == bytes([0, 1, 2])
