"""An independent parse of a CARv1 byte string (no iq-etl code), for tests that check or damage CARs."""
from __future__ import annotations


def uvarint(data: bytes, p: int) -> tuple[int, int]:
    """(value, position after it) of the unsigned LEB128 varint at `p`."""
    v = s = 0
    while True:
        b = data[p]
        v |= (b & 0x7F) << s
        p += 1
        if b < 0x80:
            return v, p
        s += 7


def header_span(data: bytes) -> tuple[int, int]:
    """(start, end) of the CBOR header."""
    n, p = uvarint(data, 0)
    return p, p + n


def sections(data: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, cid start, node start, end) of every section after the header (36-byte CIDs)."""
    pos, out = header_span(data)[1], []
    while pos < len(data):
        n, p = uvarint(data, pos)
        out.append((pos, p, p + 36, p + n))
        pos = p + n
    return out
