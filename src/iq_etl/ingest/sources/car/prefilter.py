"""Byte-level IQ pre-filter for CAR Transaction sections: find wanted 32-byte keys in raw section bytes
(and in the decompressed metadata of v0 transactions, whose loaded keys live only there) before any
section is decoded. Used by the hot slot walk in reader.py."""
from __future__ import annotations

import threading

import zstandard
from solders.pubkey import Pubkey

from iq_etl.ingest.sources.car.tx_meta import MetaError, decompress, loaded_keys
from iq_etl.solana.model import ChainTransaction

# A single-frame DataFrame in a Transaction node: [6, null, null, null, bytes(len 2 or 1 bytes)...
_TX_FRAME_2B = b"\x86\x06\xf6\xf6\xf6\x59"


_TX_FRAME_1B = b"\x86\x06\xf6\xf6\xf6\x58"


# zstandard's (de)compressor objects are not thread-safe (concurrent use can crash the process):
# one per thread, since ingest scans sub-ranges in a thread pool.
_zstd_local = threading.local()


def _zstd() -> zstandard.ZstdDecompressor:
    dctx = getattr(_zstd_local, "dctx", None)
    if dctx is None:
        dctx = _zstd_local.dctx = zstandard.ZstdDecompressor()
    return dctx


def _find_all(buf: bytes | bytearray, keys: tuple[bytes, ...], n: int) -> list[int]:
    """Sorted positions in buf[:n] where any key starts."""
    found: list[int] = []
    for key in keys:
        i = buf.find(key, 0, n)
        while i != -1:
            found.append(i)
            i = buf.find(key, i + 1, n)
    found.sort()
    return found


def _quick_verdict(buf: bytes, d: int, e: int, wanted: tuple[bytes, ...], keyset: frozenset | None) -> int:
    """For a Transaction section whose bytes do not contain a wanted key (few-keys mode) or
    whose keys still need checking (many-keys mode): 0 = reject, 1 = candidate, 2 = candidate that
    needs full decoding to tell (multi-frame or unusual layout).

    Reads the common layout in place: `[0, [6, null, null, null, bytes tx, null|[]], [6, null,
    null, null, bytes meta, ...], slot, index]`. Anything else is left to the full decoder."""
    if e - d < 16:
        return 2
    # data DataFrame: 0x86 0x06 then hash, index, total all null for a single frame
    if buf[d + 2] != 0x86 or buf[d + 3] != 0x06 or buf[d + 4] != 0xF6 or buf[d + 5] != 0xF6 or buf[d + 6] != 0xF6:
        return 2
    q = d + 7
    h = buf[q]
    if h == 0x59:
        s = q + 3
        ln = buf[q + 1] << 8 | buf[q + 2]
    elif h == 0x58:
        s = q + 2
        ln = buf[q + 1]
    elif 0x40 <= h <= 0x57:
        s = q + 1
        ln = h - 0x40
    else:
        return 2
    te = s + ln
    if te + 8 > e:
        return 2
    nxt = buf[te]
    if nxt != 0xF6 and nxt != 0x80:
        return 2  # linked continuation frames
    nsig = buf[s]
    if nsig >= 0x80:
        return 2
    m = s + 1 + 64 * nsig
    if m >= te:
        return 2
    version = buf[m]
    if keyset is not None:
        # many keys: look the static account keys up in the set
        h0 = m + 1 if version & 0x80 else m
        nkeys = buf[h0 + 3]
        k = h0 + 4
        if nkeys >= 0x80:
            nkeys = (nkeys & 0x7F) | (buf[h0 + 4] << 7)
            k += 1
        if k + 32 * nkeys > te:
            return 2
        for i in range(nkeys):
            if bytes(buf[k + 32 * i:k + 32 * i + 32]) in keyset:
                return 1
    if not version & 0x80:
        return 0  # legacy message: every key is static, none matched
    # v0: keys may come from address lookup tables; they are in the metadata's loaded addresses
    return _meta_verdict(buf, te, e, wanted, keyset)


def _meta_verdict(buf, te: int, e: int, wanted: tuple[bytes, ...], keyset: frozenset | None = None) -> int:
    """Check a v0 transaction's metadata for wanted loaded keys; buf[te] is the byte after the
    transaction data (its DataFrame's `next`), the metadata DataFrame follows.
    0 = none, 1 = found, 2 = cannot tell without full decoding."""
    if buf[te] != 0xF6 and buf[te] != 0x80:
        return 2  # the transaction data continues in linked frames
    mq = te + 1
    if buf.startswith(_TX_FRAME_1B, mq):
        s = mq + 7
        me = s + buf[mq + 6]
    elif buf.startswith(_TX_FRAME_2B, mq):
        s = mq + 8
        me = s + (buf[mq + 6] << 8 | buf[mq + 7])
    else:
        return 2  # empty, tiny, huge or multi-frame metadata: leave it to the full decoder
    if me >= e or (buf[me] != 0xF6 and buf[me] != 0x80):
        return 2
    try:
        plain = _zstd().decompress(buf[s:me])
    except zstandard.ZstdError:
        try:
            plain = decompress(buf[s:me])  # frames without a content size in their header
        except MetaError:
            return 2  # let the full decoder report it if the slot is wanted
    if keyset is None:
        for key in wanted:
            if key in plain:
                return 1
        return 0
    try:
        return 1 if not keyset.isdisjoint(loaded_keys(plain)) else 0
    except MetaError:
        return 2


def _mentions(ctx: ChainTransaction, wanted: tuple[bytes, ...]) -> bool:
    """The authoritative filter: a wanted key is one of the transaction's account keys."""
    keys = {bytes(k) for k in ctx.transaction.message.account_keys}
    for key in wanted:
        if key in keys:
            return True
    if ctx.meta.loaded_writable or ctx.meta.loaded_readonly:
        loaded = {bytes(Pubkey.from_string(k)) for k in (*ctx.meta.loaded_writable, *ctx.meta.loaded_readonly)}
        return any(key in loaded for key in wanted)
    return False
