"""`--threads >= 2` worker processes end when the ingest process is SIGKILLed (operations issue, item 4):
before, they lived on under PID 1 holding its stdout, so `iq-etl ingest ... | tee` never ended.
A real parent process builds the pool run_ingest uses, busy workers, a real SIGKILL."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time

PARENT = textwrap.dedent("""
    import os, sys, time
    from iq_etl.ingest.run import process_pool

    pool = process_pool(2)
    futures = [pool.submit(time.sleep, 600) for _ in range(2)]
    time.sleep(0.5)
    while len(pool._processes) < 2:
        time.sleep(0.1)
    print(" ".join(str(p) for p in pool._processes), flush=True)
    time.sleep(600)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_workers_and_the_pipe_end_when_the_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = parent.stdout.readline().decode()
        workers = [int(p) for p in line.split()]
        assert len(workers) == 2 and all(_alive(p) for p in workers)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        # The pipe reaches EOF once every process holding it (workers, resource tracker) is gone.
        deadline = time.monotonic() + 20
        eof = False
        # poll(), not select(): after a long suite this process may hold over 1024 descriptors
        poller = select.poll()
        poller.register(parent.stdout, select.POLLIN | select.POLLHUP)
        while time.monotonic() < deadline and not eof:
            ready = poller.poll(500)
            eof = bool(ready) and parent.stdout.read1(4096) == b""
        assert eof, "stdout still held open after the parent was killed"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not any(_alive(p) for p in workers)
    finally:
        if parent.poll() is None:
            parent.kill()
