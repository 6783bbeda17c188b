"""`backfill_flow`: an epoch range ingested with its sub-ranges as Prefect tasks on a Dask cluster (the
fan-out itself: iq_etl.orchestration.dask_fanout), with progress per epoch in a Prefect artifact.

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

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from iq_etl.errors import IQEtlError
from iq_etl.ingest.request import IngestParams
from iq_etl.orchestration.dask_fanout import DaskFanout, dask_fanout, quiet_distributed_shutdown  # noqa: F401
from iq_etl.orchestration.locking import DEFAULT_TIMEOUT_S, GLOBAL_LIMIT_NAME, warehouse_session
from iq_etl.orchestration.params import INGEST, PARAMS_VERSION, SlotSpec, check_params_version
from iq_etl.orchestration.run_context import spec_text
from iq_etl.solana.slots import SlotRange, parse_slot_spec

log = logging.getLogger(__name__)

BACKFILL_ARTIFACT_KEY = "iq-etl-backfill"


class BackfillIncomplete(IQEtlError):
    """The data of a failed backfill run: what failed (the message) and the per-epoch report."""

    def __init__(self, message: str, report: BackfillReport):
        super().__init__(message)
        self.report = report


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
def backfill_flow(slot_spec: SlotSpec, ingest: IngestParams = INGEST, lock_timeout_s: float = DEFAULT_TIMEOUT_S,
                  params_version: int = PARAMS_VERSION) -> Any:
    """Ingest an epoch range (`A-B`, `N`, or `S:E` cut at epoch boundaries) epoch by epoch, each epoch's
    sub-ranges fanned out as Prefect tasks on a Dask cluster (`ingest.dask_address` / IQ_DASK_ADDRESS; or
    a local cluster of `ingest.dask_workers` processes; with neither, in the flow process). After every
    epoch the artifact `iq-etl-backfill` shows per-epoch progress. Epochs that fail (e.g. an archive not
    found) are reported and the next epoch goes on; the run then fails naming them. Rerunning resumes.
    Returns the BackfillReport (the Failed state's data: BackfillIncomplete, carrying it)."""
    check_params_version("backfill_flow", params_version)
    slot_spec = str(spec_text(slot_spec))   # `-p slot_spec=923` arrives as a number
    from iq_etl.ingest.run import run_ingest
    from iq_etl.orchestration.run_context import flow_settings as _settings
    from iq_etl.orchestration.run_context import run_id as _run_id
    from iq_etl.orchestration.run_context import run_logger as _logger

    settings = _settings()
    logger = _logger()
    if ingest.source not in (None, "car", "rpc-blocks"):
        raise IQEtlError(f"backfill reads slot ranges: source car or rpc-blocks, not {ingest.source!r}")
    parts = epoch_parts(slot_spec)
    fanout = dask_fanout(settings, ingest.dask_address, ingest.dask_workers)
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
                    summary = run_ingest(settings, ingest.request(ranges=(rng,), run_id=run_id), client=client,
                                         fanout=fanout)
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
        return Failed(message=message[:2000], data=BackfillIncomplete(message, report))
    return report
