"""One export run: every complete upload not yet delivered to a target is sent once.

The coordinating thread (the caller's) reads the warehouse and writes the ledger; a thread pool
of `concurrency` workers does the sending (HTTP or file writes). Workers hand each attempt back
through a queue and the coordinator appends them to iq.exports in small batches, so the shared
warehouse client is only ever used from one thread.

Exactly once: an upload is selected only if no 'delivered' row exists for (upload_key, sha256,
target); the delivered row is written right after the target confirmed. If the process dies in
between, the next run sends it again with the same Idempotency-Key and the backend answers as for
the first. Failures are retried within the run only when transient (see http_target). A failed
upload, including a permanent 4xx, is tried again by the next run (once per run): the usual causes
of a 4xx (a wrong token, path or backend version) are fixed by configuration, not by the data.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol
from urllib.parse import urlsplit

from clickhouse_connect.driver import Client

from iq_etl.errors import IQEtlError, SettingsError
from iq_etl.export import ledger
from iq_etl.export.body import ReadyUpload, payload_problem, verification_problem
from iq_etl.export.file_target import FileTarget
from iq_etl.export.http_target import HttpTarget, RetryPolicy
from iq_etl.export.ledger import (
    DELIVERED,
    DRY_RUN,
    EXCERPT_LIMIT,
    FAILED,
    NOT_ATTEMPTED,
    REFUSED,
    RETRYING,
    AttemptOutcome,
    AttemptRecord,
    Candidate,
)
from iq_etl.settings import ExportLimits, Settings, load_settings
from iq_etl.warehouse.serial import export_section, serial

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = ExportLimits().concurrency
DEFAULT_MAX_BYTES = ExportLimits().max_bytes
DEFAULT_RUN_BUDGET_S = ExportLimits().run_budget_s
DEFAULT_BREAKER_AFTER = ExportLimits().breaker_after   # consecutive attempts without an HTTP answer before a target is taken as down
FLUSH_INTERVAL_S = 0.25      # how long attempt rows may wait before they are written
FLUSH_ROWS = 200
FETCH_BYTES_BUDGET = 64 * 1024 * 1024  # payload bytes loaded from the warehouse per batch
# Uploads per load: each load evaluates the ready-to-export view (tens of ms) while senders wait, so
# batches are bounded by bytes first; this cap only keeps the key list of one query reasonable.
MAX_BATCH_UPLOADS = 1000


class Target(Protocol):
    target_id: str

    def deliver(self, upload: ReadyUpload, report: Any) -> AttemptOutcome: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ExportOptions:
    """Limits of an export run, from the IQ_EXPORT_* settings (`from_settings`; their meaning and
    defaults: iq_etl.settings.ExportLimits). IQ_EXPORT_TIMEOUT is the wall-clock deadline of one HTTP
    attempt, plus one second per MiB of request body (RetryPolicy.deadline_s)."""

    max_bytes: int = DEFAULT_MAX_BYTES   # payload (joined bytes) above this is refused, not sent
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Circuit breaker: after this many consecutive attempts without any HTTP answer (refused, DNS,
    # timeout, reset, deadline), the target is taken as down: the run's other uploads are left for the
    # next run (ledger status not_attempted) instead of costing max_attempts each.
    breaker_after: int = DEFAULT_BREAKER_AFTER
    # IQ_EXPORT_RUN_BUDGET: wall-clock seconds of one export run; past it no new upload is started and
    # the rest are left for the next run (not_attempted), so a slow backend cannot hold a scheduled run.
    run_budget_s: float = DEFAULT_RUN_BUDGET_S

    @classmethod
    def from_settings(cls, limits: ExportLimits) -> "ExportOptions":
        """The run's options from the checked IQ_EXPORT_* settings (iq_etl.settings.ExportLimits)."""
        return cls(
            max_bytes=limits.max_bytes,
            retry=RetryPolicy(max_attempts=limits.max_attempts, timeout_s=limits.timeout_s,
                              backoff_base_s=limits.backoff_s, retry_after_cap_s=limits.retry_after_cap_s,
                              upload_budget_s=limits.upload_budget_s),
            run_budget_s=limits.run_budget_s,
            breaker_after=limits.breaker_after,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> "ExportOptions":
        """`from_settings` of the environment over `.env` (read by iq_etl.settings, like every setting)."""
        return cls.from_settings(load_settings(env, dotenv).export)


def concurrency_from_env(env: Mapping[str, str] | None = None, dotenv: Path | None = None) -> int:
    """IQ_EXPORT_CONCURRENCY (senders per export run), read with every other setting."""
    return load_settings(env, dotenv).export.concurrency


@dataclass
class ExportSummary:
    target: str                 # as recorded in iq.exports (no credentials)
    run_id: str
    dry_run: bool
    selected: int = 0           # complete uploads not yet delivered to the target
    delivered: int = 0
    failed: int = 0
    refused: int = 0            # over the size limit, content not matching its hash, or a verification
                                # mismatch (bytes not what the chain commits to); not sent
    would_send: int = 0         # dry run: uploads that a real run would send
    attempts: int = 0           # sends tried (HTTP requests or file writes), retries included
    retries: int = 0            # attempts that ended in 'retrying'
    bytes_delivered: int = 0    # payload bytes (joined bytes) of the delivered uploads
    failures: list[dict[str, Any]] = field(default_factory=list)  # one per failed/refused upload
    warehouse: str = ""         # where the uploads were read and the ledger written (Settings.warehouse_name)
    not_attempted: int = 0      # left for the next run: the circuit breaker opened (see `breaker`)
    breaker: str = ""           # why the run stopped sending, when the target stopped answering

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.refused == 0 and self.not_attempted == 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def open_target(spec: str, settings: Settings, options: ExportOptions, stop: threading.Event | None = None) -> Target:
    """A target from a URL. The bearer token (IQ_READER_TOKEN) is only sent to the configured
    reader backend's origin, never to another --target."""
    scheme = urlsplit(spec).scheme
    if scheme == "file":
        return FileTarget(spec)
    if scheme in ("http", "https"):
        token = settings.reader_token if _same_origin(spec, settings.reader_url) else None
        return HttpTarget(spec, token=token, retry=options.retry, stop=stop,
                          token_withheld=bool(settings.reader_token) and token is None)
    raise SettingsError(f"export target: unsupported scheme {scheme!r}; use http(s):// or file://")


def export_ready(settings: Settings, client: Client, target: str | None = None, dry_run: bool = False,
                 concurrency: int = DEFAULT_CONCURRENCY, limit: int | None = None, *,
                 options: ExportOptions | None = None) -> ExportSummary:
    """Deliver every complete upload not yet delivered to `target` (default: the reader backend
    at settings.reader_url) and record every attempt in iq.exports."""
    if concurrency < 1:
        raise SettingsError(f"export concurrency must be at least 1, got {concurrency}")
    if limit is not None and limit < 0:
        raise SettingsError(f"export limit must be >= 0, got {limit}")
    options = options or ExportOptions.from_settings(settings.export)
    if not ledger.mart_exists(client):
        raise IQEtlError("iq.sessions_ready_to_export does not exist yet: run `iq-etl transform` first")
    stop = threading.Event()
    tgt = open_target(target or settings.reader_url, settings, options, stop)
    summary = ExportSummary(target=tgt.target_id, run_id=uuid.uuid4().hex, dry_run=dry_run,
                            warehouse=settings.warehouse_name)
    try:
        # remote: one run per target reads and writes its ledger rows at a time (exactly once)
        with serial(settings, export_section(tgt.target_id)):
            candidates = ledger.pending_uploads(client, tgt.target_id, limit)
            summary.selected = len(candidates)
            log.info("export run %s: %d upload(s) to %s%s", summary.run_id, len(candidates), tgt.target_id,
                     " (dry run)" if dry_run else "")
            _Run(client, tgt, summary, options, concurrency, stop).run(candidates)
    finally:
        tgt.close()
    log.info("export run %s: %d delivered, %d failed, %d refused, %d attempt(s)", summary.run_id,
             summary.delivered, summary.failed, summary.refused, summary.attempts)
    return summary


class _Run:
    def __init__(self, client: Client, target: Target, summary: ExportSummary, options: ExportOptions,
                 concurrency: int, stop: threading.Event):
        self.client = client
        self.target = target
        self.summary = summary
        self.options = options
        self.concurrency = concurrency
        self.stop = stop
        self.events: "queue.Queue[AttemptRecord]" = queue.Queue()
        self.pending_rows: list[AttemptRecord] = []
        self.last_flush = time.monotonic()
        self.breaker_lock = threading.Lock()
        self.unanswered = 0            # consecutive attempts without an HTTP answer (any upload)

    # -- ledger -------------------------------------------------------------------------------
    def record(self, upload_key: str, sha256: str, payload_bytes: int, attempt: int, outcome: AttemptOutcome) -> None:
        """Called from worker threads: queue one attempt row for the coordinator (and count it for the
        circuit breaker)."""
        if attempt > 0 and outcome.status in (DELIVERED, FAILED, RETRYING):
            self._count_for_breaker(outcome)
        self.events.put(AttemptRecord(
            session_key=upload_key, sha256=sha256, target=self.target.target_id, attempt=attempt,
            status=outcome.status, http_status=outcome.http_status, response_excerpt=outcome.response_excerpt,
            error=outcome.error, payload_bytes=payload_bytes, run_id=self.summary.run_id,
        ))

    def _count_for_breaker(self, outcome: AttemptOutcome) -> None:
        answered = outcome.status == DELIVERED or outcome.http_status is not None
        with self.breaker_lock:
            if answered:
                self.unanswered = 0
                return
            if self.stop.is_set():   # attempts cut short by the stop itself say nothing about the target
                return
            self.unanswered += 1
            if self.unanswered >= self.options.breaker_after and not self.summary.breaker:
                self.summary.breaker = (
                    f"{self.target.target_id} did not answer {self.unanswered} attempts in a row "
                    f"(last: {(outcome.error or 'no answer')[:200]}); the other uploads are left for the next run "
                    f"(IQ_EXPORT_BREAKER={self.options.breaker_after})")
                log.warning("export run %s: %s", self.summary.run_id, self.summary.breaker)
                self.stop.set()   # ends the retry waits of the uploads in flight

    def drain(self, force: bool = False) -> None:
        while True:
            try:
                row = self.events.get_nowait()
            except queue.Empty:
                break
            self.pending_rows.append(row)
            if row.status not in (DRY_RUN, REFUSED, NOT_ATTEMPTED):
                self.summary.attempts += 1
            if row.status == RETRYING:
                self.summary.retries += 1
        due = time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S or len(self.pending_rows) >= FLUSH_ROWS
        if self.pending_rows and (force or due):
            rows, self.pending_rows = self.pending_rows, []
            ledger.record_attempts(self.client, rows)
            self.last_flush = time.monotonic()

    def finish(self, candidate: Candidate, outcome: AttemptOutcome) -> None:
        s = self.summary
        if outcome.status == DELIVERED:
            s.delivered += 1
            s.bytes_delivered += candidate.payload_length
            return
        if outcome.status == DRY_RUN:
            s.would_send += 1
        elif outcome.status == REFUSED:
            s.refused += 1
        else:
            s.failed += 1
        if outcome.status != DRY_RUN or outcome.error:
            s.failures.append({"upload_key": candidate.upload_key, "sha256": candidate.sha256, "status": outcome.status,
                               "http_status": outcome.http_status, "error": outcome.error})

    # -- the run ------------------------------------------------------------------------------
    def run(self, candidates: list[Candidate]) -> None:
        todo: deque[Candidate] = deque()
        for candidate in candidates:
            unverified = verification_problem(candidate.verification, candidate.verification_reason,
                                              candidate.upload_key)
            if unverified or candidate.payload_length > self.options.max_bytes:
                reason = unverified or \
                    f"payload of {candidate.payload_length} bytes exceeds the export limit of {self.options.max_bytes} bytes"
                if self.summary.dry_run:
                    outcome = AttemptOutcome(DRY_RUN, error=f"would be refused: {reason}")
                    self.summary.refused += 1
                    self.summary.failures.append({"upload_key": candidate.upload_key, "sha256": candidate.sha256,
                                                  "status": REFUSED, "http_status": None, "error": reason})
                    self.record(candidate.upload_key, candidate.sha256, candidate.payload_length, 0, outcome)
                    continue
                outcome = AttemptOutcome(REFUSED, error=reason)
                self.record(candidate.upload_key, candidate.sha256, candidate.payload_length, 0, outcome)
                self.finish(candidate, outcome)
            elif self.summary.dry_run:
                outcome = AttemptOutcome(DRY_RUN)
                self.record(candidate.upload_key, candidate.sha256, candidate.payload_length, 0, outcome)
                self.finish(candidate, outcome)
            else:
                todo.append(candidate)
        try:
            if todo:
                self._send_all(todo)
        finally:
            self.drain(force=True)

    def _deliver(self, candidate: Candidate, upload: ReadyUpload) -> AttemptOutcome:
        def report(attempt: int, outcome: AttemptOutcome) -> None:
            self.record(candidate.upload_key, candidate.sha256, candidate.payload_length, attempt, outcome)

        # The content must be what its hash says before anything leaves; a mismatch is a bug
        # upstream, and sending it would deliver the wrong bytes under a "stable" key. A
        # verification mismatch (checked when selected, again here in case the mart changed) is
        # bytes the chain does not commit to: never sent.
        problem = verification_problem(upload.verification, upload.verification_reason, upload.upload_key) \
            or payload_problem(upload)
        if problem:
            refused = AttemptOutcome(REFUSED, error=problem)
            report(0, refused)
            return refused
        return self.target.deliver(upload, report)

    def _leave_for_next_run(self, todo: deque[Candidate], loaded: deque[tuple[Candidate, ReadyUpload]]) -> None:
        """The circuit breaker opened: record every upload not sent as not attempted (still pending: the
        next run selects it again) and count it, so the run fails with the breaker's message."""
        left = [c for c, _upload in loaded] + list(todo)
        loaded.clear()
        todo.clear()
        for candidate in left:
            outcome = AttemptOutcome(NOT_ATTEMPTED, error=f"not attempted: {self.summary.breaker}"[:EXCERPT_LIMIT])
            self.record(candidate.upload_key, candidate.sha256, candidate.payload_length, 0, outcome)
            self.summary.not_attempted += 1

    def _load_batch(self, todo: deque[Candidate], loaded: deque[tuple[Candidate, ReadyUpload]]) -> None:
        batch: list[Candidate] = []
        budget = FETCH_BYTES_BUDGET
        while todo and len(batch) < MAX_BATCH_UPLOADS:
            # Base64 payload and file text together are about 2.7x the joined bytes.
            cost = todo[0].payload_length * 3
            if batch and cost > budget:
                break
            budget -= cost
            batch.append(todo.popleft())
        found = ledger.load_uploads(self.client, batch)
        for candidate in batch:
            upload = found.get((candidate.upload_key, candidate.sha256))
            if upload is None:
                # The mart changed between the selection and now (a transform ran meanwhile).
                outcome = AttemptOutcome(FAILED, error="upload left sessions_ready_to_export during the run; not sent")
                log.warning("export %s: %s", candidate.upload_key, outcome.error)
                self.record(candidate.upload_key, candidate.sha256, candidate.payload_length, 0, outcome)
                self.finish(candidate, outcome)
            else:
                loaded.append((candidate, upload))

    def _send_all(self, todo: deque[Candidate]) -> None:
        loaded: deque[tuple[Candidate, ReadyUpload]] = deque()
        in_flight: dict[Future, Candidate] = {}
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="iq-export")
        try:
            run_ends = time.monotonic() + self.options.run_budget_s
            while todo or loaded or in_flight:
                if not self.summary.breaker and time.monotonic() > run_ends and (todo or loaded):
                    self.summary.breaker = (f"the run's budget of {self.options.run_budget_s:g} s "
                                            "(IQ_EXPORT_RUN_BUDGET) is spent; the other uploads are left for the next run")
                    log.warning("export run %s: %s", self.summary.run_id, self.summary.breaker)
                if self.summary.breaker:
                    if not in_flight:
                        self._leave_for_next_run(todo, loaded)
                        break
                while not self.summary.breaker and len(in_flight) < self.concurrency and (todo or loaded):
                    if not loaded:
                        self._load_batch(todo, loaded)
                        continue
                    candidate, upload = loaded.popleft()
                    in_flight[pool.submit(self._deliver, candidate, upload)] = candidate
                if not in_flight:
                    continue
                done, _ = wait(in_flight, timeout=FLUSH_INTERVAL_S, return_when=FIRST_COMPLETED)
                for future in done:
                    candidate = in_flight.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as exc:  # noqa: BLE001 - a bug in one delivery must not lose the others' records
                        log.exception("export %s: unexpected error", candidate.upload_key)
                        outcome = AttemptOutcome(FAILED, error=f"internal error: {type(exc).__name__}: {exc}"[:300])
                        self.record(candidate.upload_key, candidate.sha256, candidate.payload_length, 0, outcome)
                    self.finish(candidate, outcome)
                self.drain()
        except BaseException:
            # Interrupted (Ctrl-C, warehouse error): stop retry waits, let requests in flight end,
            # and keep their records (drained by run()).
            self.stop.set()
            for future in list(in_flight):
                future.cancel()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
