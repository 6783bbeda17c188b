"""The warehouse run lock: overlapping runs wait for each other instead of failing with WarehouseBusy.

Real processes (multiprocessing, spawn) on a real chDB folder; ordering is checked through an
event log written by the processes, never through timings."""
from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from iq_etl.errors import WarehouseBusy
from iq_etl.orchestration.locking import run_lock, run_lock_path, warehouse_session
from iq_etl.settings import load_settings
from tests.support.net import wait_until


def _append(log_path: str, line: str) -> None:
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _hold_lock(lock_path: str, log_path: str, name: str, release_file: str) -> None:
    with run_lock(Path(lock_path), name, timeout_s=120):
        _append(log_path, f"{name} acquired")
        while not os.path.exists(release_file):
            time.sleep(0.02)
        _append(log_path, f"{name} released")


def _session_writer(env: dict, log_path: str, name: str, release_file: str) -> None:
    """A whole flow-like session: run lock, open + migrate the embedded warehouse, write, close."""
    settings = load_settings(env, dotenv=Path(env["IQ_ETL_HOME"]) / "no.env")
    with warehouse_session(settings, name, timeout_s=120, global_limit=None) as client:
        _append(log_path, f"{name} acquired")
        client.command("CREATE TABLE IF NOT EXISTS iq.lock_probe (who String) ENGINE = MergeTree ORDER BY who")
        client.insert("iq.lock_probe", [[name]], column_names=["who"])
        while not os.path.exists(release_file):
            time.sleep(0.02)
        _append(log_path, f"{name} released")


def _events(log_path: Path) -> list[str]:
    return log_path.read_text(encoding="utf-8").splitlines() if log_path.exists() else []


def test_second_process_waits_until_first_releases(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    lock, log = tmp_path / "wh.run.lock", tmp_path / "events.log"
    first = ctx.Process(target=_hold_lock, args=(str(lock), str(log), "A", str(tmp_path / "release-A")))
    first.start()
    wait_until(lambda: "A acquired" in _events(log), "A to take the lock")
    second = ctx.Process(target=_hold_lock, args=(str(lock), str(log), "B", str(tmp_path / "release-B")))
    second.start()
    # While A holds it, nobody else gets the lock (a zero-timeout attempt fails, naming A's pid).
    with pytest.raises(WarehouseBusy, match=f"pid {first.pid}"):
        with run_lock(lock, "probe", timeout_s=0):
            pass
    assert "B acquired" not in _events(log)
    (tmp_path / "release-A").touch()
    wait_until(lambda: "B acquired" in _events(log), "B to take the lock after A")
    (tmp_path / "release-B").touch()
    first.join(30), second.join(30)
    assert first.exitcode == 0 and second.exitcode == 0
    assert _events(log) == ["A acquired", "A released", "B acquired", "B released"]


def test_lock_of_a_killed_process_is_free(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    lock, log = tmp_path / "wh.run.lock", tmp_path / "events.log"
    holder = ctx.Process(target=_hold_lock, args=(str(lock), str(log), "A", str(tmp_path / "never")))
    holder.start()
    wait_until(lambda: "A acquired" in _events(log), "A to take the lock")
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    with run_lock(lock, "after-crash", timeout_s=30) as waited:
        assert waited >= 0


def test_lock_is_reentrant_in_one_context(tmp_path):
    lock = tmp_path / "wh.run.lock"
    with run_lock(lock, "outer", timeout_s=0):
        with run_lock(lock, "inner", timeout_s=0) as waited:
            assert waited == 0.0
    with run_lock(lock, "again", timeout_s=0):
        pass


def test_remote_dsn_has_no_lock_file(tmp_path):
    remote = load_settings({"IQ_CLICKHOUSE_DSN": "http://127.0.0.1:9/iq"}, dotenv=tmp_path / "no.env")
    assert run_lock_path(remote) is None
    embedded = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp_path / 'wh'}"}, dotenv=tmp_path / "no.env")
    assert run_lock_path(embedded) == tmp_path / "wh.run.lock"


@pytest.mark.embedded_only("the run lock file of an embedded warehouse folder")
def test_overlapping_warehouse_sessions_in_two_processes_run_serially(tmp_path, warehouses):
    """Two processes each open the same embedded warehouse for a 'run': the second waits, then
    completes; neither fails with WarehouseBusy, and both writes are there afterwards."""
    env = warehouses.env()
    ctx = multiprocessing.get_context("spawn")
    log = tmp_path / "events.log"
    first = ctx.Process(target=_session_writer, args=(env, str(log), "pipeline", str(tmp_path / "release-1")))
    first.start()
    wait_until(lambda: "pipeline acquired" in _events(log), "the first run to open the warehouse")
    second = ctx.Process(target=_session_writer, args=(env, str(log), "reconcile", str(tmp_path / "release-2")))
    second.start()
    (tmp_path / "release-1").touch()
    wait_until(lambda: "reconcile acquired" in _events(log), "the second run to open the warehouse")
    (tmp_path / "release-2").touch()
    first.join(60), second.join(60)
    assert (first.exitcode, second.exitcode) == (0, 0)
    assert _events(log) == ["pipeline acquired", "pipeline released", "reconcile acquired", "reconcile released"]
    settings = warehouses.settings()
    with warehouse_session(settings, "check", timeout_s=30, global_limit=None) as client:
        who = sorted(r[0] for r in client.query("SELECT who FROM iq.lock_probe").result_rows)
    assert who == ["pipeline", "reconcile"]
