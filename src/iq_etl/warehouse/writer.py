"""The row writer: batches IQ instruction rows into `iq.raw_instructions` / `iq.undecoded_instructions`
with a dedup token derived from the batch's content, so a retried or re-run insert is a no-op."""
from __future__ import annotations

import hashlib
import time
from typing import Any, Sequence

from iq_etl.ingest.decode import RAW_COLUMNS, UNDECODED_COLUMNS, Extracted

_RAW_DATA = RAW_COLUMNS.index("data")


_UNDECODED_DATA = UNDECODED_COLUMNS.index("data")


def _row_key(row: Sequence[Any], data_index: int) -> bytes:
    # slot, signature, ix_index, inner_index + a digest of the raw data: the instruction's content.
    return f"{row[0]}|{row[2]}|{row[4]}|{row[5]}|".encode() + hashlib.sha256(row[data_index]).digest()


class RowWriter:
    """Batches rows for the warehouse; a batch's dedup token is derived from its content."""

    def __init__(self, client: Any, batch_rows: int = 5000, flush_interval_s: float = 5.0):
        self.client = client
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.rows: list[list[Any]] = []
        self.undecoded: list[list[Any]] = []
        self.last_flush = time.monotonic()
        self.insert_s = 0.0
        self.rows_written = 0
        self.undecoded_written = 0

    def add(self, out: Extracted) -> None:
        self.rows.extend(out.rows)
        self.undecoded.extend(out.undecoded)
        if (len(self.rows) + len(self.undecoded) >= self.batch_rows
                or time.monotonic() - self.last_flush >= self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        started = time.perf_counter()
        for table, columns, rows, data_index in (
                ("iq.raw_instructions", RAW_COLUMNS, self.rows, _RAW_DATA),
                ("iq.undecoded_instructions", UNDECODED_COLUMNS, self.undecoded, _UNDECODED_DATA)):
            for i in range(0, len(rows), self.batch_rows):
                batch = rows[i:i + self.batch_rows]
                token = content_token([table.encode()] + [_row_key(r, data_index) for r in batch])
                self.client.insert(table, batch, column_names=columns,
                                   settings={"insert_deduplication_token": token})
        self.rows_written += len(self.rows)
        self.undecoded_written += len(self.undecoded)
        self.rows, self.undecoded = [], []
        self.last_flush = time.monotonic()
        self.insert_s += time.perf_counter() - started


def content_token(parts: Sequence[bytes | str]) -> str:
    """A deterministic insert_deduplication_token for a batch: sha256 over its rows' keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\x1f")
    return h.hexdigest()
