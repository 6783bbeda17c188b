"""The preload of a local cluster's Dask workers (iq_etl.orchestration.shutdown.dask_setup): a heartbeat
that fails while the worker closes (a heartbeat in flight when `iq-etl backfill` stops its cluster on
Ctrl-C / SIGTERM) prints nothing; the same failure while the worker runs still reaches the log.

A real scheduler and worker, in this process, on loopback; the record is the one distributed's
Worker.heartbeat logs (`logger.exception("Failed to communicate with scheduler during heartbeat.")`)."""
from __future__ import annotations

import asyncio
import logging

from iq_etl.orchestration.shutdown import HEARTBEAT_FAILED


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_heartbeat_failure_is_quiet_only_while_the_worker_closes():
    from distributed import Scheduler, Worker

    worker_log = logging.getLogger("distributed.worker")
    seen = _Records()
    filters_before = list(worker_log.filters)

    def heartbeat_failed() -> None:
        try:
            raise OSError("Stream is closed")
        except OSError:
            worker_log.exception(HEARTBEAT_FAILED + ".")

    async def scenario() -> tuple[list[str], list[str], str]:
        async with Scheduler(host="127.0.0.1", dashboard_address=None, dashboard=False) as scheduler:
            worker = Worker(scheduler.address, host="127.0.0.1", nthreads=1, heartbeat_interval="1h",
                            preload=["iq_etl.orchestration.shutdown"])
            await worker
            heartbeat_failed()
            while_running = [m for m in seen.messages if m.startswith(HEARTBEAT_FAILED)]
            seen.messages.clear()
            await worker.close()
            heartbeat_failed()
            while_closed = [m for m in seen.messages if m.startswith(HEARTBEAT_FAILED)]
            return while_running, while_closed, worker.status.name

    worker_log.addHandler(seen)
    try:
        while_running, while_closed, status = asyncio.run(scenario())
    finally:
        worker_log.removeHandler(seen)
        for added in [f for f in worker_log.filters if f not in filters_before]:
            worker_log.removeFilter(added)
    assert while_running == [HEARTBEAT_FAILED + "."]
    assert status == "closed"
    assert while_closed == []
