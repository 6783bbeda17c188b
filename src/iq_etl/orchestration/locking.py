"""Serialising the runs that touch the warehouse.

chDB lets one process hold its folder at a time; a second process opening it fails (`WarehouseBusy`).
A scheduled reconcile that starts while a pipeline run is still going must therefore wait, not fail.
Two layers, both entered by every flow of `iq_etl.orchestration.flows` through `warehouse_session`:

1. A run lock file next to the embedded warehouse folder (`<folder>.run.lock`, `fcntl.flock`).
   Every iq-etl flow run on this machine takes it for the whole run, whether it came from
   `iq-etl run`, `iq-etl serve`, a Prefect worker or a test. A waiting run polls it until
   `timeout_s` (then `WarehouseBusy` naming the holder). The kernel drops the lock when the
   holding process dies, so a crashed run never leaves a stale lock. Remote DSNs skip it: a
   ClickHouse server takes concurrent clients (two ingests of disjoint ranges, `sql` and `status`
   during a run). Only what must be serial there is: a dbt build and an export to one target take
   their own lock where they run (iq_etl.warehouse.serial), waiting up to the flow's `timeout_s`.
2. A Prefect global concurrency limit named `iq-etl-warehouse`, used only when it exists on the
   Prefect server (`prefect gcl create iq-etl-warehouse --limit 1`). That serialises runs across
   machines and workers (several workers against one remote warehouse). It is opt-in because a
   missing limit would otherwise make Prefect log a warning on every run.

The lock is re-entrant within one execution context (a flow that calls another flow's body under the
same lock does not wait for itself), but not across threads or processes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any, Iterator

from iq_etl.settings import Settings
from iq_etl.warehouse import client as wh
from iq_etl.warehouse import serial
from iq_etl.warehouse.schema import migrate

log = logging.getLogger(__name__)

GLOBAL_LIMIT_NAME = "iq-etl-warehouse"
DEFAULT_TIMEOUT_S = 3600.0


def run_lock_path(settings: Settings) -> Path | None:
    """The run lock file for an embedded warehouse (`None` for a remote DSN)."""
    if not settings.embedded:
        return None
    folder = wh.chdb_path(settings.clickhouse_dsn)
    return folder.parent / f"{folder.name}.run.lock"


@contextlib.contextmanager
def run_lock(path: Path, holder: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[float]:
    """Hold the exclusive run lock at `path`; yields the seconds spent waiting for it."""
    with serial.file_lock(path, holder, timeout_s) as waited:
        yield waited


def _global_limit_exists(name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        return False
    return True


@contextlib.contextmanager
def prefect_global_limit(name: str | None, timeout_s: float) -> Iterator[bool]:
    """Hold one slot of the Prefect global concurrency limit `name` if it exists; yields whether it did."""
    if not name or not _global_limit_exists(name):
        yield False
        return
    from prefect.concurrency.sync import concurrency

    with concurrency(name, occupy=1, timeout_seconds=timeout_s, strict=True):
        yield True


@contextlib.contextmanager
def warehouse_session(settings: Settings, holder: str, timeout_s: float = DEFAULT_TIMEOUT_S,
                      global_limit: str | None = GLOBAL_LIMIT_NAME) -> Iterator[Any]:
    """For one flow run: wait for the run locks, open and migrate the shared client, and close it
    at the end (so the chDB folder is free between runs). Yields the client."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(serial.patience(timeout_s))  # a remote run's serial sections wait as long
        if global_limit:
            stack.enter_context(prefect_global_limit(global_limit, timeout_s))
        path = run_lock_path(settings)
        if path is not None:
            waited = stack.enter_context(run_lock(path, holder, timeout_s))
            if waited > 1:
                log.info("%s waited %.1fs for the warehouse run lock", holder, waited)
        # A non-flow process (an `iq-etl sql` in another terminal) may still hold the chDB folder
        # without the run lock: wait for it too, within the same budget.
        opening = dataclasses.replace(settings, warehouse_lock_wait_s=max(settings.warehouse_lock_wait_s, timeout_s))
        # Warehouse() closes the client on exit only if this run opened it (a caller that already
        # holds it, like a test fixture, keeps it).
        with wh.Warehouse(opening) as client:
            migrate(client, settings.clickhouse_cluster)
            yield client
