"""The ingest stage: chain source → filtered, decoded IQ rows in ClickHouse.

The wanted slot ranges are cut into sub-ranges. Each sub-range is scanned, its rows written in
batches (each with an insert_deduplication_token derived from the rows' content, so a retried batch
is not stored twice), and only then recorded as `done` in `iq.scan_ranges`. A crash or Ctrl-C leaves
the sub-range unmarked (or `partial`); rerunning the same command skips `done` sub-ranges and redoes
the rest. Raw tables are ReplacingMergeTree on the instruction's identity, so redone rows replace
themselves: no row is lost or duplicated (read with FINAL).

Parallelism: with `threads > 1` CAR sub-ranges are scanned in worker *processes* and RPC
sub-ranges in threads. Measured (bench/RESULTS.md, "6 threads", quiet 10:27 run on 2 cores):
--threads 2 with processes ran 1.14x --threads 1 on the benchmark chain and 1.54x on the 10x chain,
while a thread pool never beat one thread (0.83-0.98x): the reader's section walk is Python under
one GIL. Processes pay ~1 s of start-up and pickle their rows back, so they only pay off when a core
is free and sub-ranges are large; RPC work is I/O-bound, where threads overlap well.
`worker_kind="thread"|"process"` overrides the choice. All writes go through the one warehouse
client in the caller.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import logging
import multiprocessing
import os
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from clickhouse_connect.driver import Client

from iq_etl.errors import IQEtlError, SourceError
from iq_etl.ingest.decode import Extracted, InstructionFilter, extract
from iq_etl.ingest.progress import IngestProgress
from iq_etl.ingest.request import IngestRequest
from iq_etl.ingest.sources.base import SOURCES, Source, SourceSpec, open_source
from iq_etl.settings import Settings
from iq_etl.solana.slots import SlotRange, covered, merge_ranges, parse_slot_spec, split_range
from iq_etl.warehouse.client import get_client
from iq_etl.warehouse.schema import migrate
from iq_etl.warehouse.scan_ledger import RangeStats, done_ranges, record_range
from iq_etl.warehouse.writer import RowWriter
from iq_etl.warehouse.catalog import count_by_kind

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    run_id: str
    source: str
    ranges: list[dict[str, Any]] = field(default_factory=list)
    transactions_seen: int = 0
    matches: int = 0
    rows_written: int = 0
    undecoded: int = 0
    skipped_slots: int = 0
    skipped_ranges: int = 0          # sub-ranges already done by an earlier run (resume)
    by_kind: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    read_s: float = 0.0
    extract_s: float = 0.0
    insert_s: float = 0.0
    incomplete: bool = False
    discovery: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- sources ----------------------------------------------------------------------------------


def scan_range(source: Source, rng: SlotRange, filt: InstructionFilter, source_name: str, run_id: str,
               sink: Callable[[Extracted, RangeStats], None], batch_rows: int) -> RangeStats:
    """Scan one sub-range, handing rows to `sink` every `batch_rows` rows and at the end."""
    stats = RangeStats(rng.first_slot, rng.last_slot)
    out = Extracted()
    t_read = time.perf_counter()
    blocks: Iterator = iter(source.iter_blocks(rng.first_slot, rng.last_slot))
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
        if len(out.rows) + len(out.undecoded) >= batch_rows:
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


def _scan_in_worker(spec: SourceSpec, wanted: frozenset[bytes], rng: SlotRange, filt: InstructionFilter,
                    run_id: str) -> tuple[Extracted, RangeStats]:
    """Process/thread entry point: scan a whole sub-range and return its rows to the writer."""
    source = open_source(spec, wanted)
    collected = Extracted()

    def keep(out: Extracted, _stats: RangeStats) -> None:
        collected.rows.extend(out.rows)
        collected.undecoded.extend(out.undecoded)

    stats = scan_range(source, rng, filt, spec.kind, run_id, keep, batch_rows=1 << 62)
    return collected, stats


# --- the stage --------------------------------------------------------------------------------

def run_ingest(settings: Settings, request: IngestRequest, *, client: Client | None = None) -> IngestSummary:
    """Ingest the slot ranges of the request's slot spec (or its explicit ranges, or the window discovered
    for its session PDAs) from its source into the warehouse. Returns the run's summary."""
    source, slot_spec, session_pdas = request.source, request.slot_spec, list(request.session_pdas) or None
    slot_padding, max_signature_pages, resume = request.slot_padding, request.max_signature_pages, request.resume
    subrange_slots, batch_rows, rpc_options = request.subrange_slots, request.batch_rows, request.rpc_options
    if source not in SOURCES:
        raise IQEtlError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    started = time.perf_counter()
    run_id = request.run_id or uuid.uuid4().hex[:12]
    threads = request.threads or settings.threads
    rpc_url = request.rpc_url or settings.rpc_url
    car_url = request.car_url or settings.car_url
    if session_pdas:
        settings = _with_session_pdas(settings, session_pdas)
    filt = InstructionFilter.from_settings(settings, request.extra_program_ids)
    summary = IngestSummary(run_id=run_id, source=source)

    wanted_ranges: list[SlotRange] = list(request.ranges)
    sig_slots: dict[str, int] = {}
    tails: list[Any] = []
    if slot_spec:
        wanted_ranges.append(parse_slot_spec(slot_spec))
    client = client or get_client(settings)
    migrate(client, settings.clickhouse_cluster)
    if session_pdas and (not wanted_ranges or source == "rpc-signatures"):
        # Seed semantics: the window (and, for rpc-signatures, the transactions) come from the PDAs.
        found = _discover(rpc_url, session_pdas, max_signature_pages, slot_padding, rpc_options)
        summary.discovery = found.to_json()
        sig_slots = found.signature_slots()
        if not wanted_ranges:
            wanted_ranges = [SlotRange(a, b) for a, b in found.merged_ranges()]
    elif source == "rpc-signatures" and not wanted_ranges:
        # Live tail: new signatures of every IQ program since the cursors stored in iq.cursors.
        tails = _discover_tail(rpc_url, filt.program_ids, client, max_signature_pages, rpc_options)
        summary.discovery = {"tail": [t.to_json() for t in tails]}
        for t in tails:
            sig_slots.update(t.signature_slots())
        wanted_ranges = [SlotRange(s, s) for s in sorted(set(sig_slots.values()))]
    elif source == "rpc-signatures":
        raise IQEtlError("--source rpc-signatures with a slot spec needs --session-pda; without either it "
                         "tails the IQ programs from their stored cursors")
    if not wanted_ranges and not tails:
        raise IQEtlError("give a slot spec (S:E, N or A-B), or --session-pda to discover the window")
    spec = SourceSpec(kind=source, car_url=car_url, rpc_url=rpc_url,
                      rpc_options=tuple(sorted((rpc_options or {}).items())),
                      signatures=tuple(sorted(sig_slots.items())))
    done = done_ranges(client, source) if resume else []
    todo: list[SlotRange] = []
    for rng in merge_ranges(wanted_ranges):
        for sub in split_range(rng, subrange_slots):
            if source == "rpc-signatures" and not any(sub.first_slot <= v <= sub.last_slot
                                                       for v in sig_slots.values()):
                continue  # nothing to fetch there: not scanned, so not recorded as covered
            if resume and covered(sub, done):
                summary.skipped_ranges += 1
            else:
                todo.append(sub)
    total_slots = sum(r.slot_count for r in todo)
    log.info("ingest run %s: %d sub-range(s), %d slots from %s (%d already done)", run_id, len(todo),
             total_slots, source, summary.skipped_ranges)
    if todo:
        preflight(spec, todo[0].first_slot)

    writer = RowWriter(client, batch_rows=batch_rows, flush_interval_s=request.flush_interval_s)
    wanted = filt.wanted_keys()
    with IngestProgress(request.progress, total_slots, heartbeat_s=request.heartbeat_s,
                        on_progress=request.on_progress) as bar:
        if threads <= 1 or len(todo) <= 1:
            src = open_source(spec, wanted)
            for sub in todo:
                _run_subrange_inline(src, sub, filt, spec, run_id, client, writer, summary, bar, batch_rows)
        else:
            _run_parallel(spec, wanted, todo, filt, run_id, client, writer, summary, bar, threads, request.worker_kind)
    summary.rows_written = writer.rows_written
    summary.insert_s = writer.insert_s
    summary.by_kind = count_by_kind(client, run_id)
    summary.seconds = time.perf_counter() - started
    summary.incomplete = any(r["status"] != "done" for r in summary.ranges)
    if tails and not summary.incomplete:
        from iq_etl.warehouse.cursors import CursorStore

        store = CursorStore(client)
        for t in tails:  # only after every row is written: a crash before this re-discovers, loses nothing
            t.commit(store)
    return summary


def _run_subrange_inline(src, sub, filt, spec, run_id, client, writer, summary, bar, batch_rows) -> None:
    started_at = dt.datetime.now(dt.timezone.utc)
    last_reported = [0]

    def sink(out: Extracted, stats: RangeStats) -> None:
        writer.add(out.rows, out.undecoded)
        bar.advance(stats.slots_done - last_reported[0], stats)
        last_reported[0] = stats.slots_done

    stats = RangeStats(sub.first_slot, sub.last_slot)
    try:
        stats = scan_range(src, sub, filt, spec.kind, run_id, sink, batch_rows)
        writer.flush()
    except KeyboardInterrupt:
        writer.flush()
        record_range(client, spec.kind, run_id, stats, "partial", started_at, "interrupted")
        raise
    except SourceError as exc:
        writer.flush()
        record_range(client, spec.kind, run_id, stats, "failed", started_at, str(exc))
        _add(summary, stats, "failed", str(exc))
        raise
    bar.advance(sub.slot_count - last_reported[0], stats)
    record_range(client, spec.kind, run_id, stats, "done", started_at)
    log.debug("sub-range %s done: %d transactions, %d IQ matches", sub, stats.transactions_seen, stats.iq_matches)
    _add(summary, stats, "done")


def preflight(spec: SourceSpec, first_slot: int) -> None:
    """Fail fast, in seconds and with the cause named (refused, DNS, timeout, HTTP status), when the
    source cannot be reached at all, instead of minutes of retries ending in "connection dropped".
    A missing CAR archive is not fatal here: the scan reports the range incomplete, as before."""
    if spec.kind == "car":
        if not str(spec.car_url or "").startswith(("http://", "https://")):
            return  # a local path: the scan says which file is missing, at once
        from iq_etl.ingest.sources.car.source import CarSource

        try:
            CarSource(spec.car_url).preflight(first_slot)
        except SourceError as exc:
            if "not found" in str(exc):
                log.warning("%s", exc)
                return
            raise
        return
    if spec.rpc_url:
        from iq_etl.ingest.sources.rpc.client import RpcClient

        with RpcClient(spec.rpc_url, **dict(spec.rpc_options)) as client:
            client.preflight()


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


def _run_parallel(spec, wanted, todo, filt, run_id, client, writer, summary, bar, threads, worker_kind) -> None:
    # auto: processes for CAR (CPU-bound), threads for RPC (I/O-bound); see the module docstring.
    if worker_kind == "process" or (worker_kind == "auto" and spec.kind == "car"):
        pool: cf.Executor = process_pool(threads)
    else:
        pool = cf.ThreadPoolExecutor(max_workers=threads)
    started_at = dt.datetime.now(dt.timezone.utc)
    with pool:
        futures = {pool.submit(_scan_in_worker, spec, wanted, sub, filt, run_id): sub for sub in todo}
        try:
            for fut in cf.as_completed(futures):
                sub = futures[fut]
                try:
                    out, stats = fut.result()
                except SourceError as exc:
                    stats = RangeStats(sub.first_slot, sub.last_slot)
                    record_range(client, spec.kind, run_id, stats, "failed", started_at, str(exc))
                    _add(summary, stats, "failed", str(exc))
                    raise
                writer.add(out.rows, out.undecoded)
                writer.flush()
                record_range(client, spec.kind, run_id, stats, "done", started_at)
                log.debug("sub-range %s done: %d transactions, %d IQ matches", sub, stats.transactions_seen,
                          stats.iq_matches)
                _add(summary, stats, "done")
                bar.advance(sub.slot_count, stats)
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _add(summary: IngestSummary, stats: RangeStats, status: str, error: str = "") -> None:
    summary.ranges.append({"first_slot": stats.first_slot, "last_slot": stats.last_slot, "status": status,
                           "transactions_seen": stats.transactions_seen, "matches": stats.iq_matches,
                           **({"error": error} if error else {})})
    summary.transactions_seen += stats.transactions_seen
    summary.matches += stats.iq_matches
    summary.undecoded += stats.undecoded
    summary.skipped_slots += len(stats.skipped_slots)
    summary.read_s += stats.read_s
    summary.extract_s += stats.extract_s


def _with_session_pdas(settings: Settings, pdas: Sequence[str]) -> Settings:
    import dataclasses

    from iq_etl.settings import is_pubkey

    for pda in pdas:
        if not is_pubkey(pda):
            raise IQEtlError(f"--session-pda: {pda!r} is not a base58 32-byte public key")
    return dataclasses.replace(settings, session_pdas=tuple(dict.fromkeys(pdas)))


def _discover(rpc_url: str, pdas: Sequence[str], max_pages: int, padding: int,
              rpc_options: dict[str, Any] | None) -> Any:
    from iq_etl.ingest.sources.rpc.discovery import discover_windows
    from iq_etl.ingest.sources.rpc.client import RpcClient

    found = discover_windows(RpcClient(rpc_url, **(rpc_options or {})), list(pdas), max_pages=max_pages,
                             padding=padding)
    for window in found.windows:
        if window.truncated:
            log.warning("discovery for %s stopped at %d pages: older signatures were not read "
                        "(raise --max-signature-pages)", window.pda, max_pages)
    return found


def _discover_tail(rpc_url: str, program_ids: Iterable[str], warehouse: Client, max_pages: int,
                   rpc_options: dict[str, Any] | None) -> list[Any]:
    from iq_etl.ingest.sources.rpc.discovery import discover_program
    from iq_etl.ingest.sources.rpc.client import RpcClient
    from iq_etl.warehouse.cursors import CursorStore

    rpc = RpcClient(rpc_url, **(rpc_options or {}))
    store = CursorStore(warehouse)
    return [discover_program(rpc, pid, store, first_run_max_pages=max_pages) for pid in sorted(program_ids)]
