"""The row writer: batches IQ instruction rows into `iq.raw_instructions` / `iq.undecoded_instructions`
with a dedup token derived from the batch's content, so a retried or re-run insert is a no-op."""
from __future__ import annotations

import hashlib
import time
from collections import Counter
from typing import Iterable, Sequence

from clickhouse_connect.driver import Client

from iq_etl.warehouse.rows import RAW_COLUMNS, UNDECODED_COLUMNS, RawInstruction, UndecodedInstruction, dedup_key


class RowWriter:
    """Batches rows for the warehouse; a batch's dedup token is derived from its content."""

    def __init__(self, client: Client, batch_rows: int = 5000, flush_interval_s: float = 5.0):
        self.client = client
        self.batch_rows = batch_rows
        self.flush_interval_s = flush_interval_s
        self.rows: list[RawInstruction] = []
        self.undecoded: list[UndecodedInstruction] = []
        self.last_flush = time.monotonic()
        self.insert_s = 0.0
        self.rows_written = 0
        self.undecoded_written = 0
        self.kinds: Counter[tuple[str, str]] = Counter()   # (generation, kind) -> decoded rows written

    def add(self, rows: Iterable[RawInstruction], undecoded: Iterable[UndecodedInstruction]) -> None:
        self.rows.extend(rows)
        self.undecoded.extend(undecoded)
        if (len(self.rows) + len(self.undecoded) >= self.batch_rows
                or time.monotonic() - self.last_flush >= self.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        started = time.perf_counter()
        for table, columns, rows in (("iq.raw_instructions", RAW_COLUMNS, self.rows),
                                     ("iq.undecoded_instructions", UNDECODED_COLUMNS, self.undecoded)):
            for i in range(0, len(rows), self.batch_rows):
                batch = rows[i:i + self.batch_rows]
                token = content_token([table.encode()] + [dedup_key(r) for r in batch])
                self.client.insert(table, batch, column_names=columns,
                                   settings={"insert_deduplication_token": token})
        self.rows_written += len(self.rows)
        self.kinds.update((r.generation, r.kind) for r in self.rows)
        self.undecoded_written += len(self.undecoded)
        self.rows, self.undecoded = [], []
        self.last_flush = time.monotonic()
        self.insert_s += time.perf_counter() - started

    def by_kind(self) -> dict[str, int]:
        """`generation/kind` -> decoded rows this writer wrote (what `catalog.count_by_kind` would count for
        the run, without a query over the table)."""
        return dict(sorted((f"{g}/{k}", n) for (g, k), n in self.kinds.items()))


def content_token(parts: Sequence[bytes | str]) -> str:
    """A deterministic insert_deduplication_token for a batch: sha256 over its rows' keys."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\x1f")
    return h.hexdigest()
