"""Fan-out of ingest sub-ranges: one sub-range is one job, run somewhere, its outcome handed back.

`run_ingest` cuts the wanted slots into sub-ranges and, with more than one worker, gives them to a
`Fanout`: `PoolFanout` (this host: worker processes for CAR, threads for RPC -- `--threads N`) or the
Dask fan-out of `iq_etl.orchestration.backfill` (Prefect tasks on a Dask cluster -- `--dask-address`).
Either way the caller keeps the ledger: a sub-range is recorded `done` in `iq.scan_ranges` only after
its outcome came back and its rows are written.

Where rows are written:
- embedded warehouse (chDB, one process only): the job returns its rows; the caller, the one writer,
  inserts them;
- remote warehouse with `SubrangeJob.write_settings`: the job inserts its rows itself with its own
  client (content dedup tokens, so a job run twice -- a lost Dask worker -- stores nothing twice) and
  returns only its figures.

This module imports only what a worker needs to scan (sources, decoders, the ledger's RangeStats): a
worker process starts by importing it, so every import here is paid once per worker; the warehouse
client and writer are imported only by jobs that write.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence

from iq_etl.ingest.decode import Extracted, InstructionFilter, extract
from iq_etl.ingest.sources.base import Source, SourceSpec, open_source
from iq_etl.settings import Settings
from iq_etl.solana.slots import SlotRange
from iq_etl.warehouse.scan_ledger import RangeStats

PROGRESS_INTERVAL_S = 2.0   # the longest a sub-range runs without handing its progress (and rows) on


def scan_range(source: Source, rng: SlotRange, filt: InstructionFilter, source_name: str, run_id: str,
               sink: Callable[[Extracted, RangeStats], None], batch_rows: int) -> RangeStats:
    """Scan one sub-range, handing rows to `sink` every `batch_rows` rows and at the end."""
    stats = RangeStats(rng.first_slot, rng.last_slot)
    out = Extracted()
    t_read = time.perf_counter()
    blocks: Iterator = iter(source.iter_blocks(rng.first_slot, rng.last_slot))
    last_sink = t_read
    while True:
        try:
            block = next(blocks)
        except StopIteration:
            stats.read_s += time.perf_counter() - t_read
            break
        t_extract = time.perf_counter()
        stats.read_s += t_extract - t_read
        stats.last_slot_seen = block.slot
        stats.slots_done += 1
        if block.skipped:
            stats.skipped_slots.append(block.slot)
        stats.transactions_seen += block.transactions_seen
        for tx in block.transactions:
            stats.iq_matches += extract(tx, filt, source_name, run_id, out)
        # Rows go out every batch, and at least every PROGRESS_INTERVAL_S: a slow source (rpc-blocks at a
        # few slots a second) still moves the progress bar and heartbeat inside one sub-range.
        if len(out.rows) + len(out.undecoded) >= batch_rows or time.perf_counter() - last_sink >= PROGRESS_INTERVAL_S:
            last_sink = time.perf_counter()
            stats.rows += len(out.rows)
            stats.undecoded += len(out.undecoded)
            sink(out, stats)
            out = Extracted()
        t_read = time.perf_counter()
        stats.extract_s += t_read - t_extract
    stats.rows += len(out.rows)
    stats.undecoded += len(out.undecoded)
    sink(out, stats)
    return stats


@dataclass
class SubrangeOutcome:
    """What a job hands back: its rows (empty when it wrote them itself) and its figures."""

    stats: RangeStats
    out: Extracted = field(default_factory=Extracted)
    rows_written: int = 0          # rows the job inserted itself (remote warehouse)
    undecoded_written: int = 0
    insert_s: float = 0.0
    worker: str = ""               # host:pid of the process that ran it


@dataclass(frozen=True)
class SubrangeJob:
    """Scan one sub-range (picklable: sent to worker processes and Dask workers as is)."""

    spec: SourceSpec
    wanted: frozenset[bytes]
    filt: InstructionFilter
    run_id: str
    write_settings: Settings | None = None   # set: insert the rows into this (remote) warehouse here
    batch_rows: int = 5000

    def __call__(self, sub: SlotRange) -> SubrangeOutcome:
        import socket

        worker = f"{socket.gethostname()}:{os.getpid()}"
        source = open_source(self.spec, self.wanted)
        if self.write_settings is None:
            collected = Extracted()

            def keep(out: Extracted, _stats: RangeStats) -> None:
                collected.rows.extend(out.rows)
                collected.undecoded.extend(out.undecoded)

            stats = scan_range(source, sub, self.filt, self.spec.kind, self.run_id, keep, batch_rows=1 << 62)
            return SubrangeOutcome(stats, collected, worker=worker)
        if self.write_settings.embedded:
            raise RuntimeError("a worker must not open the embedded warehouse (one process holds chDB)")
        from iq_etl.warehouse.client import get_client
        from iq_etl.warehouse.writer import RowWriter

        client = get_client(self.write_settings)
        try:
            writer = RowWriter(client, batch_rows=self.batch_rows)
            stats = scan_range(source, sub, self.filt, self.spec.kind, self.run_id,
                               lambda out, _s: writer.add(out.rows, out.undecoded), self.batch_rows)
            writer.flush()
        finally:
            client.close()
        return SubrangeOutcome(stats, rows_written=writer.rows_written,
                               undecoded_written=writer.undecoded_written, insert_s=writer.insert_s, worker=worker)


class Fanout(Protocol):
    """Runs jobs on sub-ranges; yields (sub-range, outcome or the exception it raised) as each ends."""

    writes_remotely: bool   # True: jobs insert their own rows when the warehouse is remote

    def run(self, job: SubrangeJob, todo: Sequence[SlotRange]) -> Iterator[tuple[SlotRange, SubrangeOutcome | BaseException]]:
        ...


def _noop() -> int:
    return os.getpid()


class PoolFanout:
    """`--threads N` on this host: worker processes (CPU-bound CAR scans; the reader is Python under one
    GIL) or threads (I/O-bound RPC). Rows come back to the caller, which writes them.

    Worker processes are started when the fan-out is made (`start()`), so that their interpreter
    start and imports overlap the caller's own set-up (migrations, the ledger read, the preflight)."""

    writes_remotely = False

    def __init__(self, workers: int, kind: str = "process"):
        if kind not in ("process", "thread"):
            raise ValueError(f"worker kind {kind!r}")
        self.workers, self.kind = workers, kind
        self._pool: cf.Executor | None = None
        self._warm: list[cf.Future] = []

    def start(self) -> "PoolFanout":
        if self._pool is None:
            if self.kind == "process":
                self._pool = process_pool(self.workers)
                self._warm = [self._pool.submit(_noop) for _ in range(self.workers)]
            else:
                self._pool = cf.ThreadPoolExecutor(max_workers=self.workers)
        return self

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "PoolFanout":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, job: SubrangeJob, todo: Sequence[SlotRange]) -> Iterator[tuple[SlotRange, SubrangeOutcome | BaseException]]:
        pool = self.start()._pool
        assert pool is not None
        futures = {pool.submit(job, sub): sub for sub in todo}
        try:
            for fut in cf.as_completed(futures):
                try:
                    yield futures[fut], fut.result()
                except Exception as exc:  # noqa: BLE001 - handed to the caller, which records and raises
                    yield futures[fut], exc
        finally:
            for f in futures:
                f.cancel()


def process_pool(workers: int) -> cf.ProcessPoolExecutor:
    """Worker processes that end with this process, even when it is SIGKILLed: otherwise they live on
    under PID 1 holding its stdout/stderr, and `iq-etl ingest ... | tee` never ends."""
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_die_with_parent, initargs=(os.getpid(),))


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: ask Linux for SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG), and, where
    that is not available, watch the parent from a thread. Either way the worker exits with it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="iq-parent-watch", daemon=True).start()
