"""The ingest stage: chain source → filtered, decoded IQ rows in ClickHouse.

The wanted slot ranges are cut into sub-ranges. Each sub-range is scanned, its rows written in
batches (each with an insert_deduplication_token derived from the rows' content, so a retried batch
is not stored twice), and only then recorded as `done` in `iq.scan_ranges`. A crash or Ctrl-C leaves
the sub-range unmarked (or `partial`); rerunning the same command skips `done` sub-ranges and redoes
the rest. Finished sub-ranges are recorded in groups (`_Settler`: one flush, then one ledger insert for
the group, at most SETTLE_INTERVAL_S or a batch of rows apart), in this process as in a fan-out: each
chDB insert costs milliseconds of fixed work, which once cost as much as the scan (bench/RESULTS.md). Raw tables are ReplacingMergeTree on the instruction's identity, so redone rows replace
themselves: no row is lost or duplicated (read with FINAL).

Parallelism: sub-ranges go to a fan-out (iq_etl.ingest.fanout). With `threads > 1`, `PoolFanout`: CAR
sub-ranges in worker *processes* (started before the set-up so their start overlaps it), RPC
sub-ranges in threads; `worker_kind="thread"|"process"` overrides the choice. Measured (bench/RESULTS.md,
"6 threads"; docs/SCALING.md): with the native walker the parent's inserts and ledger became the serial
part, so finished sub-ranges are settled in groups (`_run_fanout`); --threads 2 then ran 1.74x --threads 1
on the 10x chain on a quiet 2-core machine (1.2-1.3x with one flush and ledger insert each). A thread pool
never beat one thread for CAR: the Python parts run under one GIL. The caller may pass another fan-out,
e.g. the Dask one of iq_etl.orchestration.backfill (Prefect tasks on a Dask cluster), whose jobs insert
their own rows when the warehouse is remote. With the embedded warehouse every row is written through
the one client of this process.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from clickhouse_connect.driver import Client

from iq_etl.errors import IQEtlError, SourceError, SourceMissing
from iq_etl.ingest.decode import Extracted, InstructionFilter
from iq_etl.ingest.fanout import Fanout, PoolFanout, SubrangeJob, process_pool, scan_range  # noqa: F401 - scan_range, process_pool: this module's public names
from iq_etl.ingest.progress import IngestProgress
from iq_etl.ingest.request import IngestRequest
from iq_etl.ingest.sources.base import SOURCES, SourceSpec, open_source
from iq_etl.settings import MAX_THREADS, Settings
from iq_etl.solana.slots import SlotRange, covered, epoch_of, merge_ranges, parse_slot_spec, split_range
from iq_etl.warehouse.catalog import count_by_kind
from iq_etl.warehouse.client import get_client
from iq_etl.warehouse.scan_ledger import (
    RangeStats,
    ScanScope,
    done_with_archives,
    ledger_row,
    mark_stale,
    record_range,
    record_rows,
)
from iq_etl.warehouse.schema import migrate
from iq_etl.warehouse.writer import RowWriter

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    run_id: str
    source: str
    warehouse: str = ""              # where the rows went (Settings.warehouse_name: path, or DSN without password)
    ranges: list[dict[str, Any]] = field(default_factory=list)
    transactions_seen: int = 0
    matches: int = 0
    rows_written: int = 0
    remote_rows_written: int = 0     # of rows_written: inserted by fan-out workers into a remote warehouse
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
    car_http: dict[str, Any] | None = None   # HTTP CAR reads of this process: bytes, MB/s, connections (None: none)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- the stage --------------------------------------------------------------------------------

def run_ingest(settings: Settings, request: IngestRequest, *, client: Client | None = None,
               fanout: Fanout | None = None) -> IngestSummary:
    """Ingest the slot ranges of the request's slot spec (or its explicit ranges, or the window discovered
    for its session PDAs) from its source into the warehouse. Returns the run's summary.

    Two steps: `plan_ingest` (what to read: URLs, discovered windows, sub-ranges left to do, preflight)
    and `execute_plan` (scan them, in this process or a fan-out, write rows, keep the ledger).

    `fanout`: where sub-ranges are scanned (e.g. the Dask fan-out of iq_etl.orchestration); default: in
    this process, or `PoolFanout` with `threads > 1`. A fan-out with `writes_remotely` lets its jobs
    insert their own rows when the warehouse is remote; with the embedded one rows always come back here."""
    if request.source not in SOURCES:
        raise IQEtlError(f"unknown source {request.source!r}; use one of {', '.join(SOURCES)}")
    started = time.perf_counter()
    threads = request.threads or settings.threads
    if not 1 <= threads <= MAX_THREADS:
        raise IQEtlError(f"--threads: must be between 1 and {MAX_THREADS}, got {threads}")
    own_pool: PoolFanout | None = None
    if fanout is None and threads > 1 and _several_subranges(request):
        # Started now: the workers' interpreter start and imports overlap the planning below.
        own_pool = make_fanout(threads, request.worker_kind, request.source).start()
    try:
        client = client or get_client(settings)
        migrate(client, settings.clickhouse_cluster)
        plan = plan_ingest(settings, request, client)
        if fanout is None and plan.threads > 1 and len(plan.todo) > 1:
            own_pool = own_pool or make_fanout(plan.threads, request.worker_kind, request.source).start()
            fanout = own_pool
        return execute_plan(plan, client, fanout, started)
    finally:
        if own_pool is not None:
            own_pool.close()


@dataclass
class IngestPlan:
    """What one ingest will do, decided before any block is read: the source to open (URLs, the
    signatures to fetch), what the run looks for (filter, scope), the sub-ranges left to scan, and
    what was found on the way (discovery, tails whose cursors are committed after success)."""

    settings: Settings
    request: IngestRequest
    run_id: str
    spec: SourceSpec
    filt: InstructionFilter
    scope: ScanScope
    threads: int
    todo: list[SlotRange]
    skipped_ranges: int = 0
    discovery: dict[str, Any] | None = None
    tails: list[Any] = field(default_factory=list)
    archives: dict[int, str] = field(default_factory=dict)   # epoch -> archive identity (CAR scans)

    def archive_of(self, first_slot: int, last_slot: int) -> str:
        """What a sub-range's ledger row records as the archive(s) it was read from."""
        return archive_text(self.archives, first_slot, last_slot)

    @property
    def total_slots(self) -> int:
        return sum(r.slot_count for r in self.todo)


def plan_ingest(settings: Settings, request: IngestRequest, client: Client) -> IngestPlan:
    """Decide what to read (module docstring): the wanted slot ranges (given, or discovered from session
    PDAs / the program tail), minus the sub-ranges a scan of a superset of this run's scope finished;
    every reachable endpoint checked once (preflight) before any long work."""
    source, session_pdas = request.source, list(request.session_pdas) or None
    rpc_url = request.rpc_url or settings.rpc_url
    rpc_options = tuple(sorted((request.rpc_options or {}).items()))
    if session_pdas:
        settings = _with_session_pdas(settings, session_pdas)
    filt = InstructionFilter.from_settings(settings, request.extra_program_ids)
    wanted_ranges: list[SlotRange] = list(request.ranges)
    if request.slot_spec:
        wanted_ranges.append(parse_slot_spec(request.slot_spec))
    sig_slots: dict[str, int] = {}
    tails: list[Any] = []
    discovery: dict[str, Any] | None = None
    discovers = bool(session_pdas and (not wanted_ranges or source == "rpc-signatures")) or (
        source == "rpc-signatures" and not wanted_ranges)
    if discovers:
        # Discovery pages getSignaturesForAddress with retries: a dead endpoint must fail in seconds,
        # with its cause named, before that (it took a minute to say "connection dropped").
        preflight(SourceSpec(kind="rpc-signatures", rpc_url=rpc_url, rpc_options=rpc_options), 0)
    if session_pdas and discovers:
        # Seed semantics: the window (and, for rpc-signatures, the transactions) come from the PDAs.
        found = _discover(rpc_url, session_pdas, request.max_signature_pages, request.slot_padding,
                          request.rpc_options)
        discovery = found.to_json()
        sig_slots = found.signature_slots()
        if not wanted_ranges:
            wanted_ranges = [SlotRange(a, b) for a, b in found.merged_ranges()]
    elif discovers:
        # Live tail: new signatures of every IQ program since the cursors stored in iq.cursors.
        tails = _discover_tail(rpc_url, filt.program_ids, client, request.max_signature_pages, request.rpc_options)
        discovery = {"tail": [t.to_json() for t in tails]}
        for t in tails:
            sig_slots.update(t.signature_slots())
        wanted_ranges = [SlotRange(s, s) for s in sorted(set(sig_slots.values()))]
    elif source == "rpc-signatures":
        raise IQEtlError("--source rpc-signatures with a slot spec needs --session-pda; without either it "
                         "tails the IQ programs from their stored cursors")
    if not wanted_ranges and not tails:
        raise IQEtlError("give a slot spec (S:E, N or A-B), or --session-pda to discover the window")
    spec = SourceSpec(kind=source, car_url=request.car_url or settings.car_url, rpc_url=rpc_url,
                      rpc_options=rpc_options, signatures=tuple(sorted(sig_slots.items())),
                      car_patience_s=settings.car_patience_s, car_connections=settings.car_connections)
    # What this run looks for: only a done scan of a superset of it lets a sub-range be skipped.
    scope = ScanScope.of(source, filt.program_ids, filt.session_pdas)
    if source == "car":
        # The archive is asked for its identity below (a HEAD with retries): a host that cannot be
        # reached must fail first, in seconds and with its cause named.
        preflight(spec, min(r.first_slot for r in wanted_ranges))
    archives = _archive_identities(spec, wanted_ranges) if source == "car" else {}
    done = _current_done(client, scope, archives) if request.resume else []
    signature_slots = sorted(set(sig_slots.values()))
    todo: list[SlotRange] = []
    skipped = 0
    for rng in merge_ranges(wanted_ranges):
        for sub in split_range(rng, request.subrange_slots):
            if source == "rpc-signatures" and not _holds_any(sub, signature_slots):
                continue  # nothing to fetch there: not scanned, so not recorded as covered
            if request.resume and covered(sub, done):
                skipped += 1
            else:
                todo.append(sub)
    if source == "car" and len(todo) > 1:
        todo = _one_pass_where_unindexed(spec, todo, set(archives))
    plan = IngestPlan(settings=settings, request=request, run_id=request.run_id or uuid.uuid4().hex[:12],
                      spec=spec, filt=filt, scope=scope, threads=request.threads or settings.threads, todo=todo,
                      skipped_ranges=skipped, discovery=discovery, tails=tails, archives=archives)
    log.info("ingest run %s: %d sub-range(s), %d slots from %s (%d already done)", plan.run_id, len(todo),
             plan.total_slots, source, skipped)
    if todo and source != "car" and not discovers:   # CAR: checked above; RPC after discovery: checked before it
        preflight(spec, todo[0].first_slot)
    return plan


def archive_text(archives: dict[int, str], first_slot: int, last_slot: int) -> str:
    return "|".join(f"{e}={archives[e]}" for e in range(epoch_of(first_slot), epoch_of(last_slot) + 1)
                    if e in archives)


def _archive_identities(spec: SourceSpec, wanted: list[SlotRange]) -> dict[int, str]:
    """epoch -> identity of its archive (one HEAD or stat and the header's root CID per epoch), for the
    epochs of the wanted ranges that exist; a missing one is left out (the scan reports it)."""
    from iq_etl.ingest.sources.car.source import CarSource

    source = CarSource(spec.car_url or "", http_options={"patience": spec.car_patience_s} if spec.car_patience_s else None)
    epochs = sorted({e for r in merge_ranges(wanted) for e in range(epoch_of(r.first_slot), epoch_of(r.last_slot) + 1)})
    if not source.is_template:
        epochs = epochs[:1]
    out: dict[int, str] = {}
    for epoch in epochs:
        try:
            out[epoch] = source.archive_identity(epoch)
        except SourceMissing:
            continue
        except SourceError as exc:   # an unreadable archive: the preflight / scan names it
            log.debug("archive identity of epoch %d: %s", epoch, exc)
    return out


def _one_pass_where_unindexed(spec: SourceSpec, todo: list[SlotRange], present: set[int]) -> list[SlotRange]:
    """Sub-ranges of an epoch whose archive has no index (neither slot-ranges.raw nor the compact pair)
    would each read it from its first byte (a 715 GB epoch in 216 sub-ranges: ~77 TB): such an epoch's
    sub-ranges become one, read in one sequential pass (and, with --threads / Dask, by one worker)."""
    from iq_etl.ingest.sources.car.source import CarSource

    source = CarSource(spec.car_url or "", http_options={"patience": spec.car_patience_s} if spec.car_patience_s else None)
    if not source.is_template:
        return todo
    by_epoch: dict[int, list[SlotRange]] = {}
    for sub in todo:
        by_epoch.setdefault(epoch_of(sub.first_slot), []).append(sub)
    out: list[SlotRange] = []
    for epoch, subs in sorted(by_epoch.items()):
        one_epoch = all(epoch_of(s.last_slot) == epoch for s in subs)
        if len(subs) > 1 and one_epoch and epoch in present and not source.seekable(epoch, subs[0].first_slot):
            log.warning("epoch %d has no index to seek with: its %d sub-ranges are read in one pass (%d:%d)",
                        epoch, len(subs), subs[0].first_slot, subs[-1].last_slot)
            out.append(SlotRange(subs[0].first_slot, subs[-1].last_slot))
        else:
            out.extend(subs)
    return out


def _current_done(client: Client, scope: ScanScope, archives: dict[int, str]) -> list[tuple[int, int]]:
    """The done sub-ranges covering `scope`, minus those read from an archive that has changed since:
    these are recorded `stale` (so status and the report show them, and they are rescanned now)."""
    rows = done_with_archives(client, scope)
    if not archives:
        return [(a, b) for a, b, _r, _arc in rows]
    current, stale = [], []
    for row in rows:
        first, last, _run, archive = row
        now = archive_text(archives, first, last)
        if archive and now and archive != now:
            stale.append(row)
        else:
            current.append((first, last))
    if stale:
        epochs = sorted({e for a, b, _r, _arc in stale for e in range(epoch_of(a), epoch_of(b) + 1)})
        log.warning("the archive of epoch(s) %s changed since %d sub-range(s) were scanned from it: recorded stale, "
                    "rescanned now (rows are replaced, not doubled)", ", ".join(map(str, epochs)), len(stale))
        mark_stale(client, stale, scope.source, "stale: the archive changed since this scan "
                   f"(now {archive_text(archives, stale[0][0], stale[0][1])})")
    return current


def _holds_any(sub: SlotRange, sorted_slots: list[int]) -> bool:
    import bisect

    i = bisect.bisect_left(sorted_slots, sub.first_slot)
    return i < len(sorted_slots) and sorted_slots[i] <= sub.last_slot


def execute_plan(plan: IngestPlan, client: Client, fanout: Fanout | None = None,
                 started: float | None = None) -> IngestSummary:
    """Scan the plan's sub-ranges (inline, or through `fanout`), write their rows, record each in the
    ledger once its rows are written, and commit tail cursors only after every row is in."""
    started = time.perf_counter() if started is None else started
    settings, request = plan.settings, plan.request
    summary = IngestSummary(run_id=plan.run_id, source=plan.spec.kind, warehouse=settings.warehouse_name,
                            skipped_ranges=plan.skipped_ranges, discovery=plan.discovery)
    writer = RowWriter(client, batch_rows=request.batch_rows, flush_interval_s=request.flush_interval_s)
    wanted = plan.filt.wanted_keys()
    from iq_etl.ingest.sources.car.byte_range import STATS as car_transfers

    car_transfers.reset_peak()
    transfers_before = car_transfers.snapshot()
    with IngestProgress(request.progress, plan.total_slots, heartbeat_s=request.heartbeat_s,
                        on_progress=request.on_progress) as bar:
        if fanout is None or (len(plan.todo) <= 1 and isinstance(fanout, PoolFanout)):
            _run_inline(open_source(plan.spec, wanted), plan.todo, plan.filt, plan.spec, plan.scope, plan.run_id,
                        client, writer, summary, bar, request.batch_rows, plan.archives)
        elif plan.todo:
            remote = fanout.writes_remotely and not settings.embedded
            job = SubrangeJob(plan.spec, wanted, plan.filt, plan.run_id, write_settings=settings if remote else None,
                              batch_rows=request.batch_rows)
            _run_fanout(fanout, job, plan.scope, plan.todo, client, writer, summary, bar, plan.archives)
    summary.rows_written = writer.rows_written + summary.remote_rows_written
    summary.insert_s += writer.insert_s
    # Rows written here are counted as they are written; a fan-out writing remotely: ask the table.
    summary.by_kind = count_by_kind(client, plan.run_id) if summary.remote_rows_written else writer.by_kind()
    summary.seconds = time.perf_counter() - started
    summary.incomplete = any(r["status"] != "done" for r in summary.ranges)
    summary.car_http = _transfer_figures(transfers_before, car_transfers.snapshot(), summary.seconds)
    if plan.tails and not summary.incomplete:
        from iq_etl.warehouse.cursors import CursorStore

        store = CursorStore(client)
        for t in plan.tails:  # only after every row is written: a crash before this re-discovers, loses nothing
            t.commit(store)
    return summary


def _transfer_figures(before: dict[str, int], after: dict[str, int], seconds: float) -> dict[str, Any] | None:
    """What this run's HTTP CAR reads in this process did (workers of a process pool keep their own)."""
    fetched = after["fetched"] - before["fetched"]
    if fetched <= 0:
        return None
    return {"bytes_fetched": fetched, "mb_per_s": round(fetched / 1e6 / max(seconds, 1e-9), 1),
            "connections_peak": max(after["peak"], 1),   # a single-stream read is not counted as a lane
            "connections_replaced": (after["replaced_stalled"] + after["replaced_slow"]
                                     - before["replaced_stalled"] - before["replaced_slow"]),
            "throttle_pauses": after["throttle_pauses"] - before["throttle_pauses"]}


def _several_subranges(request: IngestRequest) -> bool:
    """Whether the request's explicit slots make more than one sub-range (discovered windows: unknown
    yet, so no). Only then are `--threads` worker processes started before the sub-ranges are known."""
    wanted = list(request.ranges) + ([parse_slot_spec(request.slot_spec)] if request.slot_spec else [])
    return sum(len(split_range(r, request.subrange_slots)) for r in merge_ranges(wanted)) > 1


class _InlineSink:
    """Where one inline sub-range hands its rows (the writer) and its progress (the bar, by the slots
    done since the last report)."""

    def __init__(self, writer: RowWriter, bar: IngestProgress) -> None:
        self.writer, self.bar, self.reported = writer, bar, 0

    def __call__(self, out: Extracted, stats: RangeStats) -> None:
        self.writer.add(out.rows, out.undecoded)
        self.bar.advance(stats.slots_done - self.reported, stats)
        self.reported = stats.slots_done


def _run_inline(src, todo, filt, spec, scope, run_id, client, writer, summary, bar, batch_rows,
                archives: dict[int, str] | None = None) -> None:
    """Scan the sub-ranges one after the other in this process. Finished sub-ranges are settled in groups
    (`_Settler`: their rows flushed, then their `done` rows in one ledger insert) when SETTLE_INTERVAL_S
    passed or they made a batch of rows, and at the end: a run of a few short sub-ranges costs one insert
    per table, not one each per sub-range. An interrupted or failing sub-range settles what finished, then
    is recorded `partial` / `failed` after its rows so far are written."""
    archives = archives or {}
    settler = _Settler(client, writer, scope, run_id, summary, batch_rows, archives)
    for sub in todo:
        started_at = dt.datetime.now(dt.timezone.utc)
        sink = _InlineSink(writer, bar)

        stats = RangeStats(sub.first_slot, sub.last_slot)
        try:
            stats = scan_range(src, sub, filt, spec.kind, run_id, sink, batch_rows)
        except KeyboardInterrupt:
            settler.settle()   # also writes this sub-range's rows so far
            record_range(client, scope, run_id, stats, "partial", started_at, "interrupted",
                         archive_text(archives, sub.first_slot, sub.last_slot))
            raise
        except SourceError as exc:
            settler.settle()
            record_range(client, scope, run_id, stats, "failed", started_at, str(exc),
                         archive_text(archives, sub.first_slot, sub.last_slot))
            _add(summary, stats, "failed", str(exc))
            raise
        except BaseException:
            settler.settle_quietly()
            raise
        bar.advance(sub.slot_count - sink.reported, stats)
        settler.add(sub, stats, started_at)
    settler.settle()


def preflight(spec: SourceSpec, first_slot: int) -> None:
    """Fail fast, in seconds and with the cause named (refused, DNS, timeout, HTTP status), when the
    source cannot be reached at all, instead of minutes of retries ending in "connection dropped".
    A missing CAR archive is not fatal here: the scan reports the range incomplete, as before."""
    if spec.kind == "car":
        if not str(spec.car_url or "").startswith(("http://", "https://")):
            return  # a local path: the scan says which file is missing, at once
        from iq_etl.ingest.sources.car.source import CarSource

        try:
            CarSource(str(spec.car_url)).preflight(first_slot)
        except SourceMissing as exc:   # not fatal here: the scan reports the range incomplete
            log.warning("%s", exc)
            return
        return
    if spec.rpc_url:
        from iq_etl.ingest.sources.rpc.client import RpcClient

        with RpcClient(spec.rpc_url, **dict(spec.rpc_options)) as client:
            client.preflight()


def make_fanout(threads: int, worker_kind: str, source_kind: str) -> PoolFanout:
    """The `--threads N` fan-out: processes for CAR (CPU-bound), threads for RPC (I/O-bound); see the
    module docstring. `worker_kind` "process" / "thread" overrides the choice."""
    if worker_kind == "process" or (worker_kind == "auto" and source_kind == "car"):
        return PoolFanout(threads, "process")
    return PoolFanout(threads, "thread")


SETTLE_INTERVAL_S = 1.0   # the longest a finished sub-range waits for its rows' insert and ledger row


class _Settler:
    """Finished sub-ranges waiting to be settled: `settle()` flushes the writer (their rows), then records
    them `done` with one ledger insert -- never before their rows are written. A crash before that leaves
    them unrecorded: the next run redoes them, and the content dedup tokens / ReplacingMergeTree keep the
    rows once. `due()`: SETTLE_INTERVAL_S passed since the last settle, or the waiting sub-ranges made a
    batch of rows (the writer is flushing anyway)."""

    def __init__(self, client: Client, writer: RowWriter, scope: ScanScope, run_id: str, summary: IngestSummary,
                 batch_rows: int, archives: dict[int, str] | None = None) -> None:
        self.archives = archives or {}
        self.client, self.writer, self.scope, self.run_id, self.summary = client, writer, scope, run_id, summary
        self.batch_rows = batch_rows
        self.pending: list[tuple[SlotRange, RangeStats, dt.datetime, str]] = []
        self.pending_rows = 0
        self.last_settle = time.monotonic()

    def add(self, sub: SlotRange, stats: RangeStats, started_at: dt.datetime, worker: str = "") -> None:
        self.pending.append((sub, stats, started_at, worker))
        self.pending_rows += stats.rows + stats.undecoded
        if self.due():
            self.settle()

    def due(self) -> bool:
        return (time.monotonic() - self.last_settle >= SETTLE_INTERVAL_S
                or self.pending_rows >= self.batch_rows)

    def settle(self) -> None:
        self.writer.flush()   # the rows first, always (also those of an unfinished sub-range: harmless)
        self.last_settle = time.monotonic()
        if not self.pending:
            return
        # Only now, after their rows: the group's `done` rows in one insert.
        record_rows(self.client, [ledger_row(self.scope, self.run_id, stats, "done", started_at, "",
                                             archive_text(self.archives, stats.first_slot, stats.last_slot))
                                  for _sub, stats, started_at, _worker in self.pending])
        for sub, stats, _started_at, worker in self.pending:
            log.debug("sub-range %s done%s: %d transactions, %d IQ matches", sub, f" on {worker}" if worker else "",
                      stats.transactions_seen, stats.iq_matches)
            _add(self.summary, stats, "done")
        self.pending.clear()
        self.pending_rows = 0

    def settle_quietly(self) -> None:
        """On an unexpected error: settle what finished if the warehouse still takes it; the error wins."""
        try:
            self.settle()
        except Exception:  # noqa: BLE001 - the original error is the one raised
            log.warning("could not record the finished sub-ranges; the next run redoes them", exc_info=True)


def _run_fanout(fanout: Fanout, job: SubrangeJob, scope: ScanScope, todo, client, writer, summary, bar,
                archives: dict[int, str] | None = None) -> None:
    """Hand the sub-ranges to the fan-out and write (or count) each one's rows as it comes back. Finished
    sub-ranges are settled in groups (`_Settler`) -- their rows flushed, then each recorded `done` -- at
    most every SETTLE_INTERVAL_S and at the end, so that many small sub-ranges cost a few inserts, not one
    each (the writer of an embedded warehouse is the serial part of a parallel ingest). A crash before a
    group is settled leaves its sub-ranges unrecorded: the next run redoes them (rows are deduplicated).
    The first failure settles what finished, is recorded and raised (the other jobs are cancelled)."""
    started_at = dt.datetime.now(dt.timezone.utc)
    settler = _Settler(client, writer, scope, job.run_id, summary, writer.batch_rows, archives)
    settler.batch_rows = 1 << 62   # fan-out: by time only, as before (rows come back a sub-range at a time)
    try:
        for sub, outcome in fanout.run(job, todo):
            if isinstance(outcome, BaseException):
                settler.settle()
                stats = RangeStats(sub.first_slot, sub.last_slot)
                record_range(client, scope, job.run_id, stats, "failed", started_at, str(outcome))
                _add(summary, stats, "failed", str(outcome))
                raise outcome
            if outcome.out.rows or outcome.out.undecoded:
                writer.add(outcome.out.rows, outcome.out.undecoded)
            summary.remote_rows_written += outcome.rows_written
            summary.insert_s += outcome.insert_s
            bar.advance(sub.slot_count, outcome.stats)
            settler.add(sub, outcome.stats, started_at, outcome.worker or "?")
    except KeyboardInterrupt:
        settler.settle()   # what finished is written and recorded; the rest is redone by the next run
        raise
    settler.settle()


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
              rpc_options: Mapping[str, Any] | None) -> Any:
    from iq_etl.ingest.sources.rpc.client import RpcClient
    from iq_etl.ingest.sources.rpc.discovery import discover_windows

    found = discover_windows(RpcClient(rpc_url, **(rpc_options or {})), list(pdas), max_pages=max_pages,
                             padding=padding)
    for window in found.windows:
        if window.truncated:
            log.warning("discovery for %s stopped at %d pages: older signatures were not read "
                        "(raise --max-signature-pages)", window.pda, max_pages)
    return found


def _discover_tail(rpc_url: str, program_ids: Iterable[str], warehouse: Client, max_pages: int,
                   rpc_options: Mapping[str, Any] | None) -> list[Any]:
    from iq_etl.ingest.sources.rpc.client import RpcClient
    from iq_etl.ingest.sources.rpc.discovery import discover_program
    from iq_etl.warehouse.cursors import CursorStore

    rpc = RpcClient(rpc_url, **(rpc_options or {}))
    store = CursorStore(warehouse)
    return [discover_program(rpc, pid, store, first_run_max_pages=max_pages) for pid in sorted(program_ids)]
