"""Serialising the runs that touch the warehouse.

chDB lets one process hold its folder at a time; a second process opening it fails (`WarehouseBusy`).
A scheduled reconcile that starts while a pipeline run is still going must therefore wait, not fail.
Two layers, both entered by every flow of `iq_etl.orchestration.flows` through `warehouse_session`:

1. A run lock file next to the embedded warehouse folder (`<folder>.run.lock`, `fcntl.flock`).
   Every iq-etl flow run on this machine takes it for the whole run, whether it came from
   `iq-etl run`, `iq-etl serve`, a Prefect worker or a test. A waiting run polls it until
   `timeout_s` (then `WarehouseBusy` naming the holder). The kernel drops the lock when the
   holding process dies, so a crashed run never leaves a stale lock. Remote DSNs skip it: a
   ClickHouse server takes concurrent clients, and the lock file could not span machines anyway.
2. A Prefect global concurrency limit named `iq-etl-warehouse`, used only when it exists on the
   Prefect server (`prefect gcl create iq-etl-warehouse --limit 1`). That serialises runs across
   machines and workers (several workers against one remote warehouse). It is opt-in because a
   missing limit would otherwise make Prefect log a warning on every run.

The lock is re-entrant within one execution context (a flow that calls another flow's body under the
same lock does not wait for itself), but not across threads or processes.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import errno
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Iterator

from iq_etl.errors import WarehouseBusy
from iq_etl.settings import Settings
from iq_etl.warehouse import client as wh
from iq_etl.warehouse.schema import migrate

log = logging.getLogger(__name__)

GLOBAL_LIMIT_NAME = "iq-etl-warehouse"
DEFAULT_TIMEOUT_S = 3600.0
POLL_S = 0.25

_held: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("iq_etl_run_locks", default=frozenset())


def run_lock_path(settings: Settings) -> Path | None:
    """The run lock file for an embedded warehouse (`None` for a remote DSN)."""
    if not settings.embedded:
        return None
    folder = wh.chdb_path(settings.clickhouse_dsn)
    return folder.parent / f"{folder.name}.run.lock"


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid', '?')} ({info.get('holder', '?')} since {info.get('since', '?')})"


@contextlib.contextmanager
def run_lock(path: Path, holder: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[float]:
    """Hold the exclusive run lock at `path`; yields the seconds spent waiting for it."""
    key = str(path.resolve())
    if key in _held.get():
        yield 0.0
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    announced = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            waited = time.monotonic() - started
            if waited >= timeout_s:
                raise WarehouseBusy(
                    f"the warehouse run lock {path} is held by {_read_holder(fd)}; gave up after {waited:.0f}s "
                    "(raise the flow's lock_timeout_s or wait for that run to finish)"
                )
            if not announced:
                log.info("waiting for the warehouse run lock %s held by %s", path, _read_holder(fd))
                announced = True
            time.sleep(min(POLL_S, max(0.01, timeout_s - waited)))
        waited = time.monotonic() - started
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps({"pid": os.getpid(), "holder": holder,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        token = _held.set(_held.get() | {key})
        try:
            yield waited
        finally:
            _held.reset(token)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


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
