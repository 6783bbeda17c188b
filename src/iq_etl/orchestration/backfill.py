"""Scale-out ingest: sub-ranges as Prefect tasks on a Dask cluster (prefect-dask's DaskTaskRunner), and
`backfill_flow`, which ingests an epoch range that way with progress per epoch in a Prefect artifact.

Where the work runs: on an existing Dask cluster given by `IQ_DASK_ADDRESS` / `--dask-address
tcp://HOST:PORT` (`dask scheduler` on one host, `dask worker tcp://HOST:8786 --nthreads 1` on each
machine that can read the CAR archives), or on a temporary local cluster of N worker processes
(`--dask-workers N`, no address). Every worker needs this package installed and the same
environment as the flow (the CAR location, and for a remote warehouse its DSN reaches the tasks as
settings; nothing else is read on a worker).

Where the rows go (see iq_etl.ingest.fanout): with the embedded warehouse every task returns its rows
to the flow process, the one process that opens chDB, which writes them; with a remote ClickHouse each
task inserts its rows with its own client (content dedup tokens) and the flow process keeps the
ledger. Either way a sub-range is recorded `done` in `iq.scan_ranges` only after its task returned,
i.e. after its rows are written.

A worker lost mid-run (killed, its machine gone) is Dask's business: the scheduler runs the worker's
tasks again on the workers left (up to `distributed.scheduler.allowed-failures`, default 3, then the
task fails with KilledWorker and so does the flow run, naming it). Rows are identical either way: a
task run twice inserts the same rows (deduplicated), and its sub-range is recorded once, by the flow.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from iq_etl.errors import IQEtlError
from iq_etl.ingest.fanout import SubrangeJob, SubrangeOutcome
from iq_etl.ingest.request import DEFAULTS
from iq_etl.settings import Settings, check_dask_address
from iq_etl.solana.slots import SlotRange, parse_slot_spec

from iq_etl.orchestration.locking import DEFAULT_TIMEOUT_S, GLOBAL_LIMIT_NAME, warehouse_session
from iq_etl.orchestration.shutdown import children_without_sigint

log = logging.getLogger(__name__)

BACKFILL_ARTIFACT_KEY = "iq-etl-backfill"


class BackfillIncomplete(IQEtlError):
    """The data of a failed backfill run: what failed (the message) and the per-epoch report."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    from iq_etl.orchestration.run_context import worth_retrying as worth

    return worth(task, task_run, state)


@task(name="scan-subrange", task_run_name="scan-{first_slot}-{last_slot}", retries=1, retry_delay_seconds=5,
      retry_condition_fn=_worth_retrying, cache_policy=NO_CACHE, persist_result=False)
def scan_subrange_task(job: SubrangeJob, first_slot: int, last_slot: int) -> SubrangeOutcome:
    """One sub-range on a Dask worker: its rows come back (embedded warehouse) or are inserted here
    (remote warehouse, `job.write_settings`). Idempotent, so Prefect may retry it and Dask may run it
    again after losing a worker."""
    return job(SlotRange(first_slot, last_slot))


class DaskFanout:
    """A `Fanout` (iq_etl.ingest.fanout) whose jobs are Prefect tasks submitted through prefect-dask's
    DaskTaskRunner: to the scheduler at `address`, or to a local cluster of `workers` processes
    started for the fan-out's lifetime. Use as a context manager around one or more `run_ingest`s."""

    writes_remotely = True

    def __init__(self, address: str | None = None, workers: int | None = None):
        if not address and not workers:
            raise IQEtlError("a Dask fan-out needs a scheduler address (IQ_DASK_ADDRESS / --dask-address) or "
                             "a number of local workers (--dask-workers N)")
        self.address = check_dask_address(address) if address else None
        self.workers = workers
        self._runner: Any = None
        self._api: Any = None

    def describe(self) -> str:
        return f"Dask scheduler {self.address}" if self.address else f"a local Dask cluster of {self.workers} process(es)"

    def __enter__(self) -> "DaskFanout":
        from prefect_dask import DaskTaskRunner

        self._api = _share_api_url(self.address)
        _ship_modules_loaded_by_path()

        if self.address:
            runner = DaskTaskRunner(address=self.address)
        else:
            runner = DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(self.workers or 1))
        entered = False
        try:
            # A local cluster's threads and worker processes never see a terminal's Ctrl-C: this process
            # stops them, in order (iq_etl.orchestration.shutdown).
            with children_without_sigint() if not self.address else contextlib.nullcontext():
                runner.__enter__()
                entered = True
        except BaseException as exc:
            if entered:   # interrupted as the cluster came up
                with quiet_distributed_shutdown():
                    runner.__exit__(None, None, None)
            self._close_api()
            if isinstance(exc, OSError):  # the scheduler is not there: say so in one line
                raise IQEtlError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from exc
            raise
        self._runner = runner
        return self

    def __exit__(self, *exc: Any) -> None:
        runner, self._runner = self._runner, None
        try:
            if runner is not None:
                # The client, then the cluster (prefect-dask's order); what distributed logs while its
                # connections close under it (CommClosedError tracebacks of an orderly stop) is noise.
                with quiet_distributed_shutdown():
                    runner.__exit__(*exc)
        finally:
            self._close_api()

    def _close_api(self) -> None:
        api, self._api = self._api, None
        if api is not None:
            api.__exit__(None, None, None)

    def run(self, job: SubrangeJob, todo: Sequence[SlotRange]) -> Iterator[tuple[SlotRange, SubrangeOutcome | BaseException]]:
        from prefect.futures import as_completed

        if self._runner is None:
            raise RuntimeError("DaskFanout.run outside `with DaskFanout(...)`")
        futures = {}
        for sub in todo:
            fut = self._runner.submit(scan_subrange_task, {"job": job, "first_slot": sub.first_slot,
                                                           "last_slot": sub.last_slot})
            futures[fut] = sub
        handed: set[Any] = set()
        try:
            for fut in as_completed(list(futures)):
                handed.add(fut)
                try:
                    yield futures[fut], fut.result()
                except Exception as exc:  # noqa: BLE001 - handed to run_ingest, which records and raises
                    yield futures[fut], exc
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM (iq_etl.orchestration.shutdown): hand over the tasks that finished on the
            # workers but were not handed over yet, so that run_ingest records them before stopping.
            yield from _finished_results(futures, handed)
            raise
        finally:
            for fut in futures:
                wrapped = getattr(fut, "wrapped_future", None)
                if wrapped is not None and not wrapped.done():
                    wrapped.cancel()


def _finished_results(futures: dict[Any, SlotRange], handed: set[Any],
                      limit_s: float = 5.0) -> Iterator[tuple[SlotRange, SubrangeOutcome]]:
    """(sub-range, outcome) of each future not in `handed` whose Dask task finished, in at most `limit_s`
    (results are fetched from the workers); failed, cancelled and unfinished ones are left out (redone by
    the next run)."""
    deadline = time.monotonic() + limit_s
    for fut, sub in futures.items():
        wrapped = getattr(fut, "wrapped_future", None)
        if fut in handed or wrapped is None or getattr(wrapped, "status", "") != "finished":
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            outcome = fut.result(timeout=remaining)
        except Exception:  # noqa: BLE001 - not recorded: the next run redoes it
            continue
        if isinstance(outcome, SubrangeOutcome):
            yield sub, outcome


def local_cluster_kwargs(workers: int) -> dict[str, Any]:
    """distributed.LocalCluster arguments of `--dask-workers N`: N single-threaded worker processes (the
    CAR reader is Python under one GIL) on loopback; no dashboard, and the scheduler's HTTP endpoint
    (health, metrics) on a free loopback port, not on 8787 (taken by any other Dask on the machine:
    "Port 8787 is already in use"); workers that leave SIGINT to this process (a terminal's Ctrl-C reaches
    them too, and the cluster is stopped by its owner, in order: iq_etl.orchestration.shutdown)."""
    return {"n_workers": workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1",
            "dashboard_address": None,
            "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            "preload": ["iq_etl.orchestration.shutdown"]}


DISTRIBUTED_LOGGERS = ("distributed", "tornado", "asyncio")


@contextlib.contextmanager
def quiet_distributed_shutdown() -> Iterator[None]:
    """Only CRITICAL records of distributed (and the tornado / asyncio loops under it) while a cluster
    and its client close; their levels back after."""
    loggers = [logging.getLogger(name) for name in DISTRIBUTED_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ship_modules_loaded_by_path() -> None:
    """Prefect sends the flow (with every task's context) and the task to the workers by reference
    (module + name). A deployment loads its entrypoint from a file path (`src/iq_etl/orchestration/
    backfill.py:backfill_flow`), as a module named `backfill` that no worker can import: send such
    path-loaded copies of iq_etl's own modules by value instead."""
    import sys
    from pathlib import Path

    import cloudpickle
    from prefect.context import FlowRunContext

    import iq_etl

    package = Path(iq_etl.__file__).resolve().parent
    ctx = FlowRunContext.get()
    names = {__name__, getattr(getattr(getattr(ctx, "flow", None), "fn", None), "__module__", "") or ""}
    for name in sorted(n for n in names if n and not n.startswith("iq_etl.")):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if module is not None and file and Path(file).resolve().is_relative_to(package):
            log.debug("sending module %s (%s) to the Dask workers by value", name, file)
            cloudpickle.register_pickle_by_value(module)


def _share_api_url(dask_address: str | None) -> Any:
    """Tasks on Dask workers report their states to the Prefect API of the flow. Without PREFECT_API_URL
    that API is the temporary server Prefect started for this process, which the workers would not know
    of (each would start its own, seconds per task and a second database): name it in the settings the
    tasks' context carries. Returns the settings context to exit, or None when PREFECT_API_URL is set."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        return None
    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    host = (dask_address or "tcp://127.0.0.1:0").split("://", 1)[1].rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "::1") and "127.0.0.1" in url:
        log.warning("the Dask workers at %s report to this process's temporary Prefect API on %s, which other "
                    "machines cannot reach: set PREFECT_API_URL to a `prefect server start` they can reach",
                    dask_address, url)
    settings_context = temporary_settings(updates={PREFECT_API_URL: url})
    settings_context.__enter__()
    return settings_context


def dask_fanout(settings: Settings, address: str | None, workers: int | None) -> DaskFanout | None:
    """The Dask fan-out asked for by a parameter or IQ_DASK_ADDRESS; None when none is."""
    address = address or settings.dask_address
    if not address and not workers:
        return None
    return DaskFanout(address=address, workers=None if address else workers)


# --- backfill ---------------------------------------------------------------------------------

@dataclass
class EpochProgress:
    epoch: int
    first_slot: int
    last_slot: int
    status: str = "waiting"           # waiting | running | done | incomplete | failed
    subranges: int = 0
    skipped: int = 0                  # sub-ranges already done by an earlier run
    transactions: int = 0
    rows: int = 0
    seconds: float = 0.0
    error: str = ""

    def row(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "slots": f"{self.first_slot}:{self.last_slot}", "status": self.status,
                "sub-ranges": self.subranges, "already done": self.skipped, "transactions": self.transactions,
                "IQ rows": self.rows, "seconds": round(self.seconds, 1), "error": self.error[:200]}


@dataclass
class BackfillReport:
    slot_spec: str
    where: str
    epochs: list[EpochProgress] = field(default_factory=list)

    def markdown(self) -> str:
        done = sum(e.status == "done" for e in self.epochs)
        lines = [f"# Backfill {self.slot_spec}", "",
                 f"{done} of {len(self.epochs)} epoch(s) done; sub-ranges on {self.where}.", "",
                 "| epoch | slots | status | sub-ranges | already done | transactions | IQ rows | seconds | error |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for e in self.epochs:
            r = e.row()
            lines.append("| " + " | ".join(str(r[k]).replace("|", "/") for k in r) + " |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"slot_spec": self.slot_spec, "where": self.where, "epochs": [e.row() for e in self.epochs]}


def epoch_parts(slot_spec: str) -> list[tuple[int, SlotRange]]:
    """The slot spec cut at epoch boundaries: (epoch, its part of the range), in order."""
    return list(parse_slot_spec(slot_spec).split_by_epoch())


def _publish(report: BackfillReport) -> None:
    try:
        create_markdown_artifact(markdown=report.markdown(), key=BACKFILL_ARTIFACT_KEY,
                                 description=f"iq-etl backfill {report.slot_spec}: progress per epoch")
    except Exception as exc:  # noqa: BLE001 - the artifact is a view; the ledger is the record
        log.warning("backfill: could not publish the progress artifact: %s", exc)


@flow(name="backfill_flow", log_prints=True)
def backfill_flow(slot_spec: str, source: str = DEFAULTS.source, car_url: str | None = None,
                  rpc_url: str | None = None, dask_address: str | None = None, dask_workers: int | None = None,
                  resume: bool = DEFAULTS.resume, extra_program_ids: list[str] | None = None,
                  subrange_slots: int = DEFAULTS.subrange_slots,
                  lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> Any:
    """Ingest an epoch range (`A-B`, `N`, or `S:E` cut at epoch boundaries) epoch by epoch, each epoch's
    sub-ranges fanned out as Prefect tasks on a Dask cluster (`dask_address` / IQ_DASK_ADDRESS; or a local
    cluster of `dask_workers` processes; with neither, in the flow process). After every epoch the
    artifact `iq-etl-backfill` shows per-epoch progress. Epochs that fail (e.g. an archive not found)
    are reported and the next epoch goes on; the run then fails naming them. Rerunning resumes."""
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.orchestration.run_context import flow_settings as _settings
    from iq_etl.orchestration.run_context import run_id as _run_id
    from iq_etl.orchestration.run_context import run_logger as _logger

    settings = _settings()
    logger = _logger()
    if source not in ("car", "rpc-blocks"):
        raise IQEtlError(f"backfill reads slot ranges: source car or rpc-blocks, not {source!r}")
    if dask_workers is not None and dask_workers < 1:
        raise IQEtlError(f"dask_workers must be at least 1, got {dask_workers}")
    parts = epoch_parts(slot_spec)
    fanout = dask_fanout(settings, dask_address, dask_workers)
    report = BackfillReport(slot_spec, fanout.describe() if fanout else "the flow process (no Dask cluster given)",
                            [EpochProgress(epoch, rng.first_slot, rng.last_slot) for epoch, rng in parts])
    _publish(report)
    run_id = _run_id().replace("-", "")[:12] or None
    with warehouse_session(settings, "backfill_flow", lock_timeout_s, GLOBAL_LIMIT_NAME) as client:
        if fanout is not None:
            fanout.__enter__()
        try:
            for (epoch, rng), progress in zip(parts, report.epochs):
                progress.status = "running"
                _publish(report)
                started = time.perf_counter()
                try:
                    summary = run_ingest(settings, IngestRequest(
                        ranges=(rng,), source=source, car_url=car_url, rpc_url=rpc_url, resume=resume,
                        run_id=run_id, extra_program_ids=tuple(extra_program_ids or ()),
                        subrange_slots=subrange_slots), client=client, fanout=fanout)
                except Exception as exc:  # noqa: BLE001 - one epoch's failure is reported; the next goes on
                    progress.status, progress.error = "failed", str(exc).splitlines()[0] if str(exc) else repr(exc)
                    logger.error("backfill: epoch %d failed: %s", epoch, progress.error)
                    log.warning("backfill: epoch %d failed: %s", epoch, progress.error)
                else:
                    progress.subranges = len(summary.ranges)
                    progress.skipped = summary.skipped_ranges
                    progress.transactions = summary.transactions_seen
                    progress.rows = summary.rows_written
                    progress.status = "incomplete" if summary.incomplete else "done"
                    for say in (logger.info, log.info):  # the run's log (Prefect API) and the terminal
                        say("backfill: epoch %d %s: %d sub-range(s) (%d already done), %d transactions, %d IQ rows",
                            epoch, progress.status, progress.subranges, progress.skipped, progress.transactions,
                            progress.rows)
                progress.seconds = time.perf_counter() - started
                _publish(report)
        finally:
            if fanout is not None:
                fanout.__exit__(None, None, None)
    bad = [e for e in report.epochs if e.status != "done"]
    if bad:
        message = "backfill " + slot_spec + ": " + "; ".join(
            f"epoch {e.epoch} {e.status}" + (f" ({e.error})" if e.error else "") for e in bad)
        logger.error("%s", message)
        return Failed(message=message[:2000], data=BackfillIncomplete(message, report.to_json()))
    return report.to_json()
