"""An implementation of the G1 Merkle root (db_code_in `offset`) independent of iq-etl's: hashlib
and a ten-line base58, written from IQ6900/iq6900_backend src/provider/main.provider.ts
(generateMerkleRoot; docs/protocol.md §9)."""
from __future__ import annotations

import hashlib

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def b58(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = ""
    while number:
        number, rem = divmod(number, 58)
        out = ALPHABET[rem] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


def g1_root(pieces: list[bytes]) -> str:
    """Leaves base58(sha256(piece)); parent base58(sha256(left + right)) over the base58 texts; the
    last node of an odd level is paired with itself; one leaf is the root."""
    layer = [b58(hashlib.sha256(p).digest()) for p in pieces]
    while len(layer) > 1:
        layer = [b58(hashlib.sha256((layer[i] + (layer[i + 1] if i + 1 < len(layer) else layer[i])).encode()).digest())
                 for i in range(0, len(layer), 2)]
    return layer[0]
