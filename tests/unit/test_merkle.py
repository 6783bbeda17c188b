"""The G1 Merkle root (db_code_in `offset`, docs/protocol.md §6 and §9): the devchain's generator
against an independent implementation (tests/support/merkle.py: hashlib and a ten-line base58), and
a fixed vector that two implementations (ClickHouse's base58Encode/SHA256 in the mart's macro and
tests/support/merkle.py's) agree on."""
from __future__ import annotations

import hashlib

import pytest

from iq_etl.devchain.uploads.files import g1_offset
from tests.support.merkle import b58
from tests.support.merkle import g1_root as root


def test_base58_helper_matches_known_encodings():
    assert b58(b"\0" * 32) == "1" * 32
    assert b58(bytes(range(1, 33)))[:4] == "4wBq"  # solders/bs58 of bytes 1..32 starts so
    assert b58(b"hello world") == "StV1DL6CwTryKyV"


def test_known_vector():
    # Computed independently by this file and by the mart's SQL (arrayFold over base58Encode(SHA256)).
    assert root([b"a", b"b", b"c"]) == "BQiZxHcoE6zAGTBdoYuGuoM7T2LQEcP7HJN56bQmsKH8"
    assert root([b"a"]) == b58(hashlib.sha256(b"a").digest())


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_devchain_offset_is_the_backends_root(count):
    pieces = [f"piece {i} ü".encode() * (i + 1) for i in range(count)]
    assert g1_offset(pieces) == root(pieces)


def test_a_changed_piece_or_order_changes_the_root():
    pieces = [b"one", b"two", b"three", b"four", b"five"]
    good = root(pieces)
    assert root([b"one", b"two", b"thrEe", b"four", b"five"]) != good
    assert root([b"two", b"one", b"three", b"four", b"five"]) != good
    # Pairing an odd node with itself (the backend's `layer[i + 1] || layer[i]`) has a known blind
    # spot: the same list with its last piece repeated has the same root (docs/protocol.md §9 says
    # so; G1 declares no piece count to tell them apart).
    assert root(pieces + [b"five"]) == good
