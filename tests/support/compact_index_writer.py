"""Writes yellowstone-faithful compatible compact indexes (`compactindexsized`, magic `compiszd`), and
Old Faithful's slot-to-cid / cid-to-offset-and-size pair for a CAR file.

Follows rpcpool/yellowstone-faithful `compactindexsized/build.go` step by step: buckets =
ceil(items / 10,000); a key goes to `bucket_of(key)`; each bucket tries hash domains 0, 1, … until
its 3-byte entry hashes do not collide, sorts its entries by hash and lays them out in Eytzinger
order; the file is header · bucket header table · buckets in order. `tests/unit/test_compact_index.py`
checks the bytes against that repository's own expected files (build8_test.go, build36_test.go).

Also runnable: `python -m tests.support.compact_index_writer CAR [OUT_DIR]` writes the pair next to
the CAR (or into OUT_DIR).
"""
from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import libipld

from iq_etl.ingest.sources.car.compact_index import (
    KIND_CID_TO_OFFSET_AND_SIZE,
    KIND_SLOT_TO_CID,
    MAGIC,
    META_EPOCH,
    META_KIND,
    META_NETWORK,
    META_ROOT_CID,
    OFFSET_AND_SIZE_VALUE_SIZE,
    SLOT_TO_CID_VALUE_SIZE,
    TARGET_ENTRIES_PER_BUCKET,
    VERSION,
    bucket_of,
    encode_offset_and_size,
    entry_hash,
    index_names,
)
from iq_etl.ingest.sources.car.format import KIND_BLOCK
from iq_etl.solana.slots import SLOTS_PER_EPOCH

HASH_LEN = 3
MINE_ATTEMPTS = 1000


def _eytzinger(items: list) -> list:
    out = [None] * len(items)
    it = iter(items)

    def fill(k: int) -> None:
        if k <= len(items):
            fill(2 * k)
            out[k - 1] = next(it)
            fill(2 * k + 1)

    fill(1)
    return out


def _hash_bucket(entries: list[tuple[bytes, bytes]], domain: int) -> list[tuple[int, bytes]] | None:
    """[(entry hash, value)] of a bucket under `domain`, None at the first collision (hashBucket)."""
    seen: set[int] = set()
    out = []
    for key, value in entries:
        h = entry_hash(domain, key, HASH_LEN)
        if h in seen:
            return None
        seen.add(h)
        out.append((h, value))
    return out


def header_bytes(value_size: int, num_buckets: int, metadata: list[tuple[bytes, bytes]]) -> bytes:
    rest = struct.pack("<QIB", value_size, num_buckets, VERSION) + bytes([len(metadata)])
    for key, value in metadata:
        rest += bytes([len(key)]) + key + bytes([len(value)]) + value
    return MAGIC + struct.pack("<I", len(rest)) + rest


def build(items: list[tuple[bytes, bytes]], value_size: int, *, num_items: int | None = None,
          metadata: list[tuple[bytes, bytes]] | None = None) -> bytes:
    """The bytes of a compactindexsized file holding `items` [(key, value)]. `num_items` sizes the
    bucket count as the Go builder's numItems does (default: len(items))."""
    count = num_items if num_items is not None else len(items)
    if count <= 0:
        raise ValueError("an index needs numItems > 0")
    nb = (count + TARGET_ENTRIES_PER_BUCKET - 1) // TARGET_ENTRIES_PER_BUCKET
    buckets: list[list[tuple[bytes, bytes]]] = [[] for _ in range(nb)]
    seen = set()
    for key, value in items:
        if len(value) != value_size:
            raise ValueError(f"value of {len(value)} bytes in an index of {value_size}-byte values")
        if key in seen:
            raise ValueError(f"key {key!r} inserted twice")
        seen.add(key)
        buckets[bucket_of(key, nb)].append((key, value))
    head = header_bytes(value_size, nb, metadata or [])
    offset = len(head) + 16 * nb
    table = b""
    body = []
    for entries in buckets:
        for domain in range(MINE_ATTEMPTS):
            hashed = _hash_bucket(entries, domain)
            if hashed is not None:
                break
        else:
            raise ValueError("no collision-free hash domain in 1000 attempts")
        hashed.sort(key=lambda e: e[0])
        data = b"".join(h.to_bytes(HASH_LEN, "little") + v for h, v in _eytzinger(hashed))
        table += struct.pack("<IIBx", domain, len(entries), HASH_LEN) + offset.to_bytes(6, "little")
        body.append(data)
        offset += len(data)
    return head + table + b"".join(body)


def default_metadata(epoch: int, root_cid: bytes, network: str, kind: bytes) -> list[tuple[bytes, bytes]]:
    """As yellowstone-faithful indexes.setDefaultMetadata writes it: epoch, rootCid, network, kind."""
    return [(META_EPOCH, struct.pack("<Q", epoch)), (META_ROOT_CID, root_cid), (META_NETWORK, network.encode()),
            (META_KIND, kind)]


def car_sections(car_path: str | os.PathLike):
    """(root CIDs, [(offset, size, cid, node bytes)]) of a CARv1 file, read independently of iq_etl's reader."""
    data = Path(car_path).read_bytes()

    def uvarint(p: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            b = data[p]
            value |= (b & 0x7F) << shift
            p += 1
            if b < 0x80:
                return value, p
            shift += 7

    length, p = uvarint(0)
    header = libipld.decode_dag_cbor(data[p:p + length])
    p += length
    sections = []
    while p < len(data):
        start = p
        length, q = uvarint(p)
        # CIDv1: version, codec, multihash code, digest length, digest
        c = q
        for _ in range(3):
            _, c = uvarint(c)
        digest_len, c = uvarint(c)
        c += digest_len
        sections.append((start, q + length - start, data[q:c], data[c:q + length]))
        p = q + length
    return header["roots"], sections


def write_for_car(car_path: str | os.PathLike, epoch: int, out_dir: str | os.PathLike | None = None, *,
                  network: str = "mainnet", extra_slots: dict[int, bytes] | None = None) -> tuple[Path, Path]:
    """Write `epoch-{N}-{root}-{network}-slot-to-cid.index` and `...-cid-to-offset-and-size.index` for
    the CAR, as yellowstone-faithful's indexers do (slot-to-cid sized for a whole epoch). extra_slots
    {slot: CID} adds wrong slot entries (tests: what a truncated-hash false positive returns)."""
    roots, sections = car_sections(car_path)
    root = bytes(roots[0])
    c2o = []
    s2c = []
    for offset, size, cid, node in sections:
        c2o.append((cid, encode_offset_and_size(offset, size)))
        if len(node) > 1 and node[0] >> 5 == 4 and node[1] == KIND_BLOCK:  # a CBOR array of kind 2
            obj = libipld.decode_dag_cbor(node)
            s2c.append((struct.pack("<Q", obj[1]), cid))
    for slot, cid in (extra_slots or {}).items():
        s2c.append((struct.pack("<Q", slot), cid))
    out = Path(out_dir) if out_dir is not None else Path(car_path).parent
    s2c_name, c2o_name = index_names(epoch, root, network)
    s2c_path, c2o_path = out / s2c_name, out / c2o_name
    s2c_path.write_bytes(build(s2c, SLOT_TO_CID_VALUE_SIZE, num_items=SLOTS_PER_EPOCH,
                               metadata=default_metadata(epoch, root, network, KIND_SLOT_TO_CID)))
    c2o_path.write_bytes(build(c2o, OFFSET_AND_SIZE_VALUE_SIZE,
                               metadata=default_metadata(epoch, root, network, KIND_CID_TO_OFFSET_AND_SIZE)))
    return s2c_path, c2o_path


if __name__ == "__main__":
    import re

    car = Path(sys.argv[1])
    m = re.search(r"epoch-(\d+)", car.name)
    if not m:
        sys.exit("the CAR's name must hold its epoch (epoch-N.car)")
    for path in write_for_car(car, int(m.group(1)), sys.argv[2] if len(sys.argv) > 2 else None):
        print(path)
