"""The Dask fan-out: ingest sub-ranges as Prefect tasks on a Dask cluster (prefect-dask's
DaskTaskRunner), on an existing cluster (`IQ_DASK_ADDRESS` / `--dask-address tcp://HOST:PORT`) or a
temporary local one of N worker processes (`--dask-workers N`). Used by `backfill_flow`
(iq_etl.orchestration.backfill) and by the ingest and pipeline flows (`dask_fanout`).

Where the rows go (see iq_etl.ingest.fanout): with the embedded warehouse every task returns its rows
to the flow process, the one process that opens chDB, which writes them; with a remote ClickHouse each
task inserts its rows with its own client (content dedup tokens) and the flow process keeps the
ledger. Either way a sub-range is recorded `done` in `iq.scan_ranges` only after its task returned.
A worker lost mid-run is Dask's business: the scheduler reruns its tasks on the workers left (rows are
deduplicated; the sub-range is recorded once, by the flow).
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Iterator, Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from iq_etl.errors import IQEtlError
from iq_etl.ingest.fanout import SubrangeJob, SubrangeOutcome
from iq_etl.orchestration.shutdown import children_without_sigint
from iq_etl.settings import Settings, check_dask_address
from iq_etl.solana.slots import SlotRange

log = logging.getLogger(__name__)


def _worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    from iq_etl.orchestration.run_context import worth_retrying as worth

    return worth(task, task_run, state)


SUBRANGE_TASK = "scan-subrange"
PROGRESS_EVERY_S = 5.0   # the flow's "sub-ranges done" line at most this often (and once at the end)


class _QuietSubranges(logging.Filter):
    """Drops the INFO records of sub-range task runs ("Finished in state Completed()", one per
    sub-range: 217 lines for one mainnet epoch); warnings, errors and retries still pass. The flow logs
    a throttled progress line instead (DaskFanout.run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or getattr(record, "task_name", None) != SUBRANGE_TASK


def quiet_subrange_logs() -> None:
    """Install the filter on Prefect's task-run logger of this process (once)."""
    logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _QuietSubranges) for f in logger.filters):
        logger.addFilter(_QuietSubranges())


@task(name=SUBRANGE_TASK, task_run_name="scan-{first_slot}-{last_slot}", retries=1, retry_delay_seconds=5,
      retry_condition_fn=_worth_retrying, cache_policy=NO_CACHE, persist_result=False)
def scan_subrange_task(job: SubrangeJob, first_slot: int, last_slot: int) -> SubrangeOutcome:
    """One sub-range on a Dask worker: its rows come back (embedded warehouse) or are inserted here
    (remote warehouse, `job.write_settings`). Idempotent, so Prefect may retry it and Dask may run it
    again after losing a worker."""
    quiet_subrange_logs()   # in the worker process, before the engine logs this run's end
    return job(SlotRange(first_slot, last_slot))


class _Progress:
    """The flow's line per finished sub-range, at most every PROGRESS_EVERY_S seconds and at the end:
    `scan: 40 of 217 sub-range(s) done (80,000 of 434,000 slots), 0 failed`."""

    def __init__(self, todo: Sequence[SlotRange], every_s: float = PROGRESS_EVERY_S):
        self.total, self.slots = len(todo), sum(r.slot_count for r in todo)
        self.done = self.failed = self.done_slots = 0
        self.every_s, self.last = every_s, time.monotonic()
        self.logger = _flow_logger()

    def finished(self, sub: SlotRange, ok: bool) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self.done_slots += sub.slot_count
        now = time.monotonic()
        if self.done == self.total or now - self.last >= self.every_s:
            self.last = now
            self.logger.info("scan: %d of %d sub-range(s) done (%s of %s slots), %d failed", self.done, self.total,
                             f"{self.done_slots:,}", f"{self.slots:,}", self.failed)


def _flow_logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (the Prefect UI), or this module's outside a run."""
    from prefect import get_run_logger

    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - no run context
        return log


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
        quiet_subrange_logs()
        progress = _Progress(todo)
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
                    outcome = fut.result()
                except Exception as exc:  # noqa: BLE001 - handed to run_ingest, which records and raises
                    progress.finished(futures[fut], ok=False)
                    yield futures[fut], exc
                else:
                    progress.finished(futures[fut], ok=True)
                    yield futures[fut], outcome
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
