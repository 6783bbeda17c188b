"""Byte-level IQ pre-filter for CAR Transaction sections: find wanted 32-byte keys in raw section bytes
(and, for v0 transactions, among the addresses they load from lookup tables, which live only in the
compressed metadata) before any section is decoded. Used by the hot slot walk in reader.py and,
rule for rule, by the compiled walker (`_walker.c`).

Lookup-table cache: a v0 message names its loaded addresses as (table, index) pairs; the addresses
themselves are only in the zstd metadata. Lookup-table entries never change once written (a table
only grows), so (table, index) -> "is a wanted key" learned from metadata already decompressed answers
later transactions without decompressing theirs. Top-level program ids are always static keys (the
runtime rejects a program id loaded from a table), so this matters for CPI calls only; the cache
answers per wanted-key set and is shared by every scan in the process (`lookup_cache`)."""
from __future__ import annotations

import threading

import zstandard
from solders.pubkey import Pubkey

from iq_etl.ingest.sources.car.tx_meta import MetaError, decompress, loaded_addresses
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


def _section_hits(buf, keys: tuple[bytes, ...], pos: int, n: int) -> list[int]:
    """Sorted positions in [pos, e) where a key starts (and ends within buf[:n]), e the end of the
    section at pos: `_find_all` for one section (the compiled walker's stops). [] when the section's
    length cannot be read (the walk reports or waits for more data)."""
    value = shift = 0
    p = pos
    for p in range(pos, min(n, pos + 10)):
        byte = buf[p]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    else:
        return []
    end = min(p + 1 + value + 31, n)
    found: list[int] = []
    for key in keys:
        i = buf.find(key, pos, end)
        while i != -1:
            found.append(i)
            i = buf.find(key, i + 1, end)
    found.sort()
    return found


def _static_hit(buf, s: int, te: int, e: int, hits: list[int], hi: int) -> bool:
    """Whether one of the wanted-key positions hits[hi:] (those before e, the section's end) is one
    of the static account keys of the transaction whose data is buf[s:te]: the few-keys pre-filter's
    rule (a key elsewhere, e.g. in instruction data, does not make a candidate). True as well when
    the message cannot be read in place (the full decoder decides). The compiled walker applies the
    same rule by comparing the static keys."""
    end = te if te < e else e
    nsig = buf[s]
    if nsig >= 0x80:
        return True
    m = s + 1 + 64 * nsig
    if m >= end:
        return True
    h0 = m + 1 if buf[m] & 0x80 else m
    nkeys, k0 = _cu16(buf, h0 + 3, end)
    if nkeys < 0:
        return True
    kend = k0 + 32 * nkeys
    if kend > end:
        return True
    for i in range(hi, len(hits)):
        h = hits[i]
        if h >= e:
            break
        if k0 <= h < kend and not (h - k0) & 31:
            return True
    return False


def _quick_verdict(buf: bytes, d: int, e: int, wanted: tuple[bytes, ...], keyset: frozenset | None,
                   cache: LookupCache | None = None) -> int:
    """For a Transaction section with no wanted static key found (few-keys mode) or whose keys
    still need checking (many-keys mode): 0 = reject, 1 = candidate, 2 = candidate that
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
    # v0: keys may come from address lookup tables (cache, else the metadata's loaded addresses)
    return _v0_verdict(buf, m, te, e, wanted, keyset, cache)


# --- lookup tables ----------------------------------------------------------------------------------

# Status of (table, index) in a table's 256-byte map: not learned yet, learned and not wanted, wanted.
UNKNOWN, NOT_WANTED, WANTED = 0, 1, 2
MAX_CACHED_TABLES = 1 << 15  # about 14 MB at most; the cache starts over when it is full
MAX_CACHED_SECTIONS = 1 << 15  # whole lookup sections remembered (beyond: answered index by index)


class LookupCache:
    """(lookup table, index) -> wanted or not, for one set of wanted keys. `tables` maps a 32-byte
    table address to a bytearray(256) of statuses (the compiled walker reads the same dict).
    `checks` counts v0 transactions checked, `misses` those that needed their metadata decompressed."""

    __slots__ = ("wanted", "tables", "sections", "checks", "misses", "learned", "resets")

    def __init__(self, wanted: frozenset[bytes]):
        self.wanted = wanted
        self.tables: dict[bytes, bytearray] = {}
        # the verdict of a whole lookup section (its bytes, count to end of message) once every index
        # in it is known: a pure function of `tables`, so it is dropped with them
        self.sections: dict[bytes, int] = {}
        self.checks = self.misses = self.learned = self.resets = 0

    def learn(self, lookups: list[tuple[bytes, bytes, bytes]], writable: list[bytes], readonly: list[bytes]) -> bool:
        """Record what a transaction's metadata loaded for its lookups [(table, writable indexes,
        readonly indexes)]. Nothing is learned when the counts disagree (e.g. a transaction that
        failed before loading its tables)."""
        if sum(len(w) for _, w, _ in lookups) != len(writable) or \
                sum(len(r) for _, _, r in lookups) != len(readonly):
            return False
        tables = self.tables
        if len(tables) + len(lookups) > MAX_CACHED_TABLES:
            tables.clear()
            self.sections.clear()
            self.resets += 1
        wanted = self.wanted
        wi = ri = 0
        for table, w, r in lookups:
            status = tables.get(table)
            if status is None:
                status = tables[table] = bytearray(256)
            for index in w:
                status[index] = WANTED if writable[wi] in wanted else NOT_WANTED
                wi += 1
            for index in r:
                status[index] = WANTED if readonly[ri] in wanted else NOT_WANTED
                ri += 1
        self.learned += 1
        return True

    def stats(self) -> dict[str, int | float]:
        return {"v0_checked": self.checks, "metadata_decompressed": self.misses,
                "hit_rate": round(1 - self.misses / self.checks, 4) if self.checks else 0.0,
                "tables": len(self.tables), "learned_from": self.learned, "resets": self.resets}


_caches: dict[frozenset[bytes], LookupCache] = {}
_caches_lock = threading.Lock()


_scopes: dict[frozenset[bytes], str] = {}


def lookup_cache(wanted, scope: str | None = None) -> LookupCache:
    """The process's cache for this set of wanted keys, for one chain: `scope` names where the archive
    lives (its folder or URL prefix). Table entries never change on one chain, but two chains (a dev
    chain and mainnet, two test chains) may reuse a table address with other entries, so a scan of
    another scope starts a fresh cache. None: whichever cache is current (for its statistics)."""
    key = frozenset(wanted)
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None or (scope is not None and _scopes.get(key) != scope):
            cache = _caches[key] = LookupCache(key)
            if scope is not None:
                _scopes[key] = scope
    return cache


def reset_lookup_caches() -> None:
    """Forget everything learned (tests and benchmarks start cold with it)."""
    with _caches_lock:
        _caches.clear()
        _scopes.clear()


def _cu16(buf, q: int, end: int) -> tuple[int, int]:
    """Solana compact-u16 at buf[q:end] -> (value, position after); (-1, q) when malformed or past end."""
    if q >= end:
        return -1, q
    b0 = buf[q]
    if b0 < 0x80:
        return b0, q + 1
    if q + 1 >= end:
        return -1, q
    b1 = buf[q + 1]
    if b1 < 0x80:
        return (b0 & 0x7F) | b1 << 7, q + 2
    if q + 2 >= end or buf[q + 2] > 3:
        return -1, q
    return (b0 & 0x7F) | (b1 & 0x7F) << 7 | buf[q + 2] << 14, q + 3


def _lookups(buf, m: int, te: int) -> list[tuple[int, int, int, int, int]] | None:
    """The address-table lookups of the v0 message at buf[m:te] (m: its version byte) as
    [(table position, writable start, writable count, readonly start, readonly count)], or None when
    the message does not parse to exactly te. The compiled walker parses by the same rules."""
    if buf[m] != 0x80:
        return None  # a message version after v0: unknown layout
    n, q = _cu16(buf, m + 4, te)  # version byte, 3 header bytes, then the static keys
    if n < 0:
        return None
    q += 32 * n + 32  # keys, recent blockhash
    n, q = _cu16(buf, q, te)
    if n < 0:
        return None
    for _ in range(n):  # instructions: program index, accounts, data
        a, q = _cu16(buf, q + 1, te)
        if a < 0:
            return None
        b, q = _cu16(buf, q + a, te)
        if b < 0:
            return None
        q += b
    n, q = _cu16(buf, q, te)
    if n < 0:
        return None
    out = []
    for _ in range(n):
        t = q
        w, q = _cu16(buf, q + 32, te)
        if w < 0:
            return None
        ws = q
        r, q = _cu16(buf, q + w, te)
        if r < 0:
            return None
        out.append((t, ws, w, q, r))
        q += r
    return out if q == te else None


def _lut_verdict(buf, m: int, te: int, cache: LookupCache) -> int:
    """-1 = cannot tell from the cache (message does not parse to exactly te, or a (table, index) not
    learned yet), 1 = a loaded address is wanted, 0 = none is. The same function as
    `_lookups` + the cache, written for speed: one-byte lengths inline, and no bounds check per read
    (q only grows and every read is followed by a step past it, so q == te at the end means every
    read was inside the message). The compiled walker computes the same function."""
    if buf[m] != 0x80:
        return -1
    try:
        n = buf[m + 4]
        if n < 0x80:
            q = m + 37 + 32 * n  # version, 3 header bytes, count, keys, recent blockhash
        else:
            n, q = _cu16(buf, m + 4, te)
            if n < 0:
                return -1
            q += 32 * n + 32
        if q >= te:
            return -1
        n = buf[q]
        q += 1
        if n >= 0x80:
            n, q = _cu16(buf, q - 1, te)
            if n < 0:
                return -1
        for _ in range(n):  # instructions: program index, accounts, data
            a = buf[q + 1]
            if a < 0x80:
                q += 2 + a
            else:
                a, q = _cu16(buf, q + 1, te)
                if a < 0:
                    return -1
                q += a
            b = buf[q]
            if b < 0x80:
                q += 1 + b
            else:
                b, q = _cu16(buf, q, te)
                if b < 0:
                    return -1
                q += b
            if q >= te:
                return -1
        tail = bytes(buf[q:te])
        sections = cache.sections
        verdict = sections.get(tail, -1)
        if verdict >= 0:
            return verdict
        n = buf[q]
        q += 1
        if n >= 0x80:
            n, q = _cu16(buf, q - 1, te)
            if n < 0:
                return -1
        tables = cache.tables
        verdict = 0
        for _ in range(n):  # lookups: table address, writable indexes, readonly indexes
            status = tables.get(bytes(buf[q:q + 32]))
            if status is None:
                return -1
            q += 32
            w = buf[q]
            if w < 0x80:
                ws = q + 1
            else:
                w, ws = _cu16(buf, q, te)
                if w < 0:
                    return -1
            q = ws + w
            r = buf[q]
            if r < 0x80:
                rs = q + 1
            else:
                r, rs = _cu16(buf, q, te)
                if r < 0:
                    return -1
            q = rs + r
            if q > te:
                return -1
            mapped = buf[ws:ws + w].translate(status) + buf[rs:q].translate(status)
            if UNKNOWN in mapped:
                return -1
            if WANTED in mapped:
                verdict = 1
    except IndexError:
        return -1
    if q != te:
        return -1
    if len(sections) < MAX_CACHED_SECTIONS:
        sections[tail] = verdict
    return verdict


def _v0_verdict(buf, m: int, te: int, e: int, wanted: tuple[bytes, ...], keyset: frozenset | None,
                cache: LookupCache | None = None) -> int:
    """Loaded-address check of a v0 transaction whose message is buf[m:te] and whose section ends at e
    (its metadata DataFrame follows te): the lookup-table cache first, the metadata on a miss.
    0 = no wanted loaded key, 1 = one, 2 = cannot tell without full decoding."""
    if cache is None:
        cache = lookup_cache(wanted)
    cache.checks += 1
    verdict = _lut_verdict(buf, m, te, cache)
    if verdict >= 0:
        return verdict
    cache.misses += 1
    return _meta_verdict(buf, te, e, wanted, keyset, cache, m)


def _meta_verdict(buf, te: int, e: int, wanted: tuple[bytes, ...], keyset: frozenset | None = None,
                  cache: LookupCache | None = None, m: int = -1) -> int:
    """Check a v0 transaction's metadata for wanted loaded keys; buf[te] is the byte after the
    transaction data (its DataFrame's `next`), the metadata DataFrame follows; buf[m] is the message's
    version byte (-1: unknown). What the metadata says is learned into `cache`.
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
    try:
        writable, readonly = loaded_addresses(plain)
    except MetaError:
        # not protobuf (legacy bincode predates lookup tables): the keys anywhere in the bytes
        if keyset is None:
            return 1 if any(key in plain for key in wanted) else 0
        return 2
    if cache is not None and m >= 0:
        found = _lookups(buf, m, te)
        if found:
            cache.learn([(bytes(buf[t:t + 32]), bytes(buf[ws:ws + w]), bytes(buf[rs:rs + r]))
                         for t, ws, w, rs, r in found], writable, readonly)
    wanted_set = keyset if keyset is not None else wanted
    for key in writable:
        if key in wanted_set:
            return 1
    for key in readonly:
        if key in wanted_set:
            return 1
    return 0


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
