"""Warehouse failures an operator must act on, as one line (operations issue, item 6): a start-up
failure that is not a lock is never reported as "in use" (nor waited out for IQ_WAREHOUSE_LOCK_WAIT),
and a full disk is a one-line error, not a 46-line traceback. Real chDB on real (tiny, read-only or
full) filesystems mounted for the test."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

# chDB folders on tiny, read-only or full filesystems: nothing a remote server's client sees
pytestmark = pytest.mark.embedded_only("chDB folders on tiny filesystems")


@pytest.fixture
def tiny_fs(tmp_path):
    mount = tmp_path / "fs"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}): needs root, as in CI")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def iq(args, cwd: Path, dsn: str, **env):
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "IQ_CLICKHOUSE_DSN": dsn, "IQ_ETL_HOME": str(cwd / "home"), **env},
                          timeout=300)


def test_a_start_up_failure_is_not_called_busy_and_is_not_waited_for(tiny_fs, tmp_path):
    (tiny_fs / "w").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    started = time.monotonic()
    out = iq(["sql", "SELECT 1"], tmp_path, f"chdb://{tiny_fs / 'w'}", IQ_WAREHOUSE_LOCK_WAIT="60")
    assert time.monotonic() - started < 30  # not the 60 s lock wait
    assert out.returncode == 1
    assert "in use" not in out.stderr
    assert "Read-only file system" in out.stderr and "no other process holds it" in out.stderr
    assert "Code: " not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_a_full_disk_during_ingest_is_one_line(tiny_fs, tmp_path):
    from iq_etl.devchain.build import build_chain
    from iq_etl.devchain.chain import car_template

    manifest = build_chain(tmp_path / "chain", seed=3)
    dsn = f"chdb://{tiny_fs / 'w'}"
    assert iq(["migrate"], tmp_path, dsn).returncode == 0
    # fill the disk; unbuffered, so closing the file has no half-written buffer left to flush (that
    # raised ENOSPC from the `with` when the last write stopped part way)
    with open(tiny_fs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
        except OSError:
            pass
    out = iq(["ingest", f"{manifest.first_slot}:{manifest.last_slot}", "--car-url", car_template(tmp_path / "chain")],
             tmp_path, dsn)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
    assert last.startswith("iq-etl ingest: warehouse error: ") and "disk holding the warehouse is full" in last
    assert "Code: 243" not in last
