"""Write Old Faithful-style CARv1 epoch files (used by the development chain and tests).

Nodes are encoded by the small DAG-CBOR encoder below, where links are explicit (`Link`): never
with libipld.encode_dag_cbor, which turns any byte string that parses as a CID into a link.

Per slot the file holds, bottom-up like Old Faithful: continuation DataFrames and Transaction nodes
(in block order), the Entry nodes after the transactions they list, then the Block node last.
Subset nodes follow every `blocks_per_subset` blocks and the Epoch node ends the file; the header's
root (a fixed-size placeholder rewritten on close) is the Epoch node. `close()` also writes
`epoch-{N}-slot-ranges.raw` next to the CAR.
"""
from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path
from typing import Iterable, Sequence

from solders.transaction import VersionedTransaction

from iq_etl.ingest.sources.car.format import (
    CID_LEN,
    IDENTITY_EMPTY_CID,
    KIND_BLOCK,
    KIND_DATAFRAME,
    KIND_ENTRY,
    KIND_EPOCH,
    KIND_SUBSET,
    KIND_TRANSACTION,
    cid_for,
    crc64_iso,
    crc_to_cbor_int,
    slot_ranges_name,
    write_slot_ranges,
)
from iq_etl.ingest.sources.car.tx_meta import encode_meta
from iq_etl.solana.model import TxMeta
from iq_etl.solana.slots import epoch_of

__all__ = ["CarWriter", "Link", "encode_meta", "encode_dag_cbor", "DEFAULT_MAX_FRAME_BYTES"]

DEFAULT_MAX_FRAME_BYTES = 1 << 20
_TICK_HASHES = 12_500


class Link(bytes):
    """A CID to be written as a DAG-CBOR link (tag 42 over 0x00 + CID bytes)."""


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + struct.pack(">H", n)
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + struct.pack(">I", n)
    return bytes((major << 5 | 27,)) + struct.pack(">Q", n)


def _encode(value, out: list) -> None:
    if value is None:
        out.append(b"\xf6")
    elif value is True or value is False:
        out.append(b"\xf5" if value else b"\xf4")
    elif isinstance(value, int):
        out.append(_head(0, value) if value >= 0 else _head(1, -1 - value))
    elif isinstance(value, Link):
        out.append(b"\xd8\x2a" + _head(2, len(value) + 1) + b"\x00" + bytes(value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        out.append(_head(2, len(value)))
        out.append(bytes(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        out.append(_head(3, len(raw)))
        out.append(raw)
    elif isinstance(value, (list, tuple)):
        out.append(_head(4, len(value)))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        # DAG-CBOR map key order: shorter keys first, then bytewise.
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        out.append(_head(5, len(keys)))
        for k in keys:
            _encode(k, out)
            _encode(value[k], out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as DAG-CBOR")


def encode_dag_cbor(value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _header(root: bytes) -> bytes:
    body = encode_dag_cbor({"roots": [Link(root)], "version": 1})
    return _uvarint(len(body)) + body


_PLACEHOLDER_ROOT = b"\x01\x71\x12\x20" + bytes(32)


class CarWriter:
    """Write one epoch's CAR file slot by slot (slots strictly increasing, all in one epoch).

    max_frame_bytes: payloads (transaction or metadata) longer than this are split into several
    DataFrames linked from the first, with a CRC-64/ISO hash; small values force multi-frame data.
    """

    def __init__(self, path: str | os.PathLike, *, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                 txs_per_entry: int = 64, ticks_per_slot: int = 1, blocks_per_subset: int = 1000,
                 write_epoch_node: bool = True, epoch: int | None = None):
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be at least 1")
        self.path = Path(path)
        self.max_frame_bytes = max_frame_bytes
        self.txs_per_entry = max(1, txs_per_entry)
        self.ticks_per_slot = max(0, ticks_per_slot)
        self.blocks_per_subset = max(1, blocks_per_subset)
        self.write_epoch_node = write_epoch_node
        self.epoch = epoch
        self.slot_ranges: dict[int, tuple[int, int]] = {}
        self.transactions_written = 0
        self._last_slot: int | None = None
        self._subset_blocks: list[tuple[int, bytes]] = []  # (slot, block cid) of the open subset
        self._subsets: list[bytes] = []
        self._root: bytes | None = None
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "wb")
        self._f.write(_header(_PLACEHOLDER_ROOT))
        self._offset = self._f.tell()

    # -- low level
    def _write_node(self, node) -> bytes:
        data = encode_dag_cbor(node)
        cid = cid_for(data)
        self._f.write(_uvarint(CID_LEN + len(data)))
        self._f.write(cid)
        self._f.write(data)
        self._offset += len(_uvarint(CID_LEN + len(data))) + CID_LEN + len(data)
        return cid

    def _frame(self, payload: bytes) -> list:
        """The DataFrame embedded in a node; continuation frames are written first (bottom-up)."""
        if len(payload) <= self.max_frame_bytes:
            return [KIND_DATAFRAME, None, None, None, payload, None]
        step = self.max_frame_bytes
        chunks = [payload[i:i + step] for i in range(0, len(payload), step)]
        crc = crc_to_cbor_int(crc64_iso(payload))
        total = len(chunks)
        links = [Link(self._write_node([KIND_DATAFRAME, crc, i, total, chunk, []]))
                 for i, chunk in enumerate(chunks[1:], start=1)]
        return [KIND_DATAFRAME, crc, 0, total, chunks[0], links]

    # -- public
    def add_slot(self, slot: int, parent_slot: int | None, block_time: int | None, block_height: int | None,
                 txs: Sequence[tuple[bytes | VersionedTransaction, TxMeta]]) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")
        if self._last_slot is not None and slot <= self._last_slot:
            raise ValueError(f"{self.path}: slot {slot} is not after slot {self._last_slot}")
        if self.epoch is None:
            self.epoch = epoch_of(slot)
        elif epoch_of(slot) != self.epoch:
            raise ValueError(f"{self.path}: slot {slot} is not in epoch {self.epoch}")
        start = self._offset
        entry_links: list[Link] = []
        batch: list[Link] = []
        for index, (tx, meta) in enumerate(txs):
            wire = bytes(tx)
            node = [KIND_TRANSACTION, self._frame(wire), self._frame(encode_meta(meta)), slot, index]
            batch.append(Link(self._write_node(node)))
            if len(batch) == self.txs_per_entry:
                entry_links.append(self._entry(slot, len(entry_links), batch))
                batch = []
        if batch:
            entry_links.append(self._entry(slot, len(entry_links), batch))
        for _ in range(self.ticks_per_slot):
            entry_links.append(self._entry(slot, len(entry_links), []))
        shredding = [[i, i] for i in range(len(entry_links))]
        block = [KIND_BLOCK, slot, shredding, entry_links,
                 [parent_slot if parent_slot is not None else max(slot - 1, 0), block_time or 0, block_height],
                 Link(IDENTITY_EMPTY_CID)]
        block_cid = self._write_node(block)
        self.slot_ranges[slot] = (start, self._offset - start)
        self.transactions_written += len(txs)
        self._last_slot = slot
        self._subset_blocks.append((slot, block_cid))
        if len(self._subset_blocks) >= self.blocks_per_subset:
            self._flush_subset()

    def _entry(self, slot: int, n: int, tx_links: list[Link]) -> Link:
        digest = hashlib.sha256(b"entry" + struct.pack("<QI", slot, n)).digest()
        return Link(self._write_node([KIND_ENTRY, _TICK_HASHES if not tx_links else 1, digest, list(tx_links)]))

    def _flush_subset(self) -> None:
        if not self._subset_blocks:
            return
        first, last = self._subset_blocks[0][0], self._subset_blocks[-1][0]
        cid = self._write_node([KIND_SUBSET, first, last, [Link(c) for _, c in self._subset_blocks]])
        self._subsets.append(cid)
        self._root = cid
        self._subset_blocks = []

    def close(self) -> Path:
        """Finish the CAR (subset, epoch node, header root) and write the slot-ranges index next to it."""
        if self._closed:
            return self.path
        try:
            if self.epoch is None:
                raise ValueError(f"{self.path}: no slots written and no epoch given")
            self._flush_subset()
            if self.write_epoch_node:
                self._root = self._write_node([KIND_EPOCH, self.epoch, [Link(c) for c in self._subsets]])
            if self._root is not None:
                self._f.seek(0)
                self._f.write(_header(self._root))  # same length as the placeholder
        finally:
            self._f.close()
            self._closed = True
        write_slot_ranges(self.path.with_name(slot_ranges_name(self.epoch)), self.epoch, self.slot_ranges)
        return self.path

    def __enter__(self) -> "CarWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._f.close()
            self._closed = True


def write_car(path: str | os.PathLike, blocks: Iterable[tuple[int, int | None, int | None, int | None, list]],
              **options) -> Path:
    """Convenience: write (slot, parent_slot, block_time, block_height, txs) tuples to one CAR."""
    with CarWriter(path, **options) as writer:
        for slot, parent, block_time, height, txs in blocks:
            writer.add_slot(slot, parent, block_time, height, txs)
    return writer.path
