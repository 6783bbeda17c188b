"""What must run one at a time against one warehouse, and the file lock that makes it so.

Embedded chDB lets one process hold its folder: everything is serial already (a second process gets
`WarehouseBusy`). A remote ClickHouse server takes any number of clients, so ingest (disjoint slot
ranges, each sub-range claimed in the scan ledger), `sql`, `status` and reports run side by side;
only two things must not overlap:

- a dbt build (two builds of the same incremental models would each delete+insert the same groups);
- an export to one target (two runs reading the same "not yet delivered" ledger rows would both send
  them: the ledger gives exactly-once only when one run per target reads and writes it).

`serial(settings, name)` holds an exclusive `fcntl` lock for `name` on that warehouse for the block:
a file under `<IQ_ETL_HOME>/locks/`, keyed by the server, port and database (never the password). The
kernel drops it when the holder dies, so a crashed run leaves no stale lock. It serialises the
processes of one machine (one IQ_ETL_HOME); across machines, the Prefect global concurrency limit
`iq-etl-warehouse` serialises whole runs (orchestration/locking.py).

A waiting process waits `IQ_WAREHOUSE_LOCK_WAIT` seconds (0: fails at once naming the holder, as a busy
embedded warehouse does), or the flow's `lock_timeout_s` inside a flow run (`patience`).
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlsplit

from iq_etl.errors import WarehouseBusy
from iq_etl.settings import Settings

log = logging.getLogger(__name__)

POLL_S = 0.25
DBT_BUILD = "dbt-build"


def export_section(target_id: str) -> str:
    """The serial section of exporting to one target (its id as recorded in iq.exports)."""
    return f"export {target_id}"


_held: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("iq_etl_file_locks", default=frozenset())
_patience: contextvars.ContextVar[float] = contextvars.ContextVar("iq_etl_serial_patience", default=0.0)


@contextlib.contextmanager
def patience(seconds: float) -> Iterator[None]:
    """Within the block, a serial section waits at least `seconds` for its lock (a flow's lock_timeout_s)."""
    token = _patience.set(max(_patience.get(), seconds))
    try:
        yield
    finally:
        _patience.reset(token)


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid', '?')} ({info.get('holder', '?')} since {info.get('since', '?')})"


@contextlib.contextmanager
def file_lock(path: Path, holder: str, timeout_s: float, what: str = "the warehouse run lock",
              advice: str = "raise the flow's lock_timeout_s or wait for that run to finish") -> Iterator[float]:
    """Hold the exclusive lock at `path`; yields the seconds spent waiting for it. Re-entrant within
    one execution context (a flow calling another flow's body does not wait for itself), not across
    threads or processes. After `timeout_s`: `WarehouseBusy` naming the holder."""
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
                raise WarehouseBusy(f"{what} {path} is held by {_read_holder(fd)}"
                                    + (f"; gave up after {waited:.0f}s" if timeout_s > 0 else "") + f" ({advice})")
            if not announced:
                log.info("waiting for %s %s held by %s", what, path, _read_holder(fd))
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


def section_path(settings: Settings, name: str) -> Path:
    """The lock file of section `name` on the remote warehouse of `settings`."""
    parts = urlsplit(settings.clickhouse_dsn)
    database = unquote(parts.path.strip("/")) or "default"
    where = f"{(parts.hostname or '').lower()}:{parts.port or ''}/{database}"
    digest = hashlib.sha256(f"{where}\0{name}".encode()).hexdigest()[:16]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return settings.home / "locks" / f"{slug}-{digest}.lock"


@contextlib.contextmanager
def serial(settings: Settings, name: str) -> Iterator[float]:
    """Run the block as the only holder of section `name` on this remote warehouse (a no-op for the
    embedded one, serial already). Yields the seconds waited."""
    if settings.embedded:
        yield 0.0
        return
    wait_s = max(settings.warehouse_lock_wait_s, _patience.get())
    with file_lock(section_path(settings, name), name, wait_s, what=f"{name} on {settings.dsn_redacted}: the lock",
                   advice="another process is doing it now; wait for it, or set IQ_WAREHOUSE_LOCK_WAIT=SECONDS "
                          "to wait") as waited:
        if waited > 1:
            log.info("%s waited %.1fs for its turn on %s", name, waited, settings.dsn_redacted)
        yield waited
