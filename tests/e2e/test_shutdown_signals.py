"""How `iq-etl run` and `iq-etl backfill --dask-workers 2` end (operations issues 21 item 4, 22 items 1 and 9):

- Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGTERM mid-ingest: exit 130
  within seconds, one line on stderr (no traceback), the sub-ranges that finished recorded (a rerun
  skips them), and no process the command started left behind (Prefect's temporary API server, the Dask
  workers).
- SIGKILL mid-ingest: within seconds no process it started remains, and a reader of its stdout pipe
  sees EOF (`iq-etl run | tee log` ends).

Real processes: the iq-etl command line, its real temporary Prefect API and local Dask cluster, a
development chain served over JSON-RPC on loopback with a delay per answer (so that the ingest lasts
long enough to be interrupted; the server's request counter says when it is under way)."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from iq_etl.devchain.servers.rpc import serve_rpc
from iq_etl.devchain.servers.rpc_faults import Faults
from tests.support.prefect import build_devchain, subprocess_env

SLOTS = 1200
SUBRANGE = 10
DELAY_S = 0.2
BOUND_S = 60   # a generous bound for "within a few seconds": shared CI machines


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


@pytest.fixture
def rpc(chain):
    server = serve_rpc(chain[0], faults=Faults(delay=DELAY_S))
    yield server
    server.shutdown()


def _spec(manifest) -> str:
    return f"{manifest.first_slot}:{manifest.first_slot + SLOTS - 1}"


def _args(command: str, manifest, rpc_url: str, tmp_path: Path) -> list[str]:
    extra = [a for p in manifest.extra_program_ids for a in ("--program-id", p)]
    common = [_spec(manifest), "--source", "rpc-blocks", "--rpc-url", rpc_url, *extra]
    if command == "run":
        return ["--log-level", "warn", "run", *common, "--target", (tmp_path / "exports").as_uri()]
    return ["--log-level", "warn", "backfill", *common, "--dask-workers", "2", "--subrange-slots", str(SUBRANGE)]


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=tmp_path,
                            env=subprocess_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _wait_for_calls(proc: subprocess.Popen, rpc, calls: int, seen: dict[int, psutil.Process],
                    limit_s: float = 400) -> None:
    """Until the RPC server answered `calls` calls (the ingest is under way); meanwhile note every
    process below `proc`."""
    deadline = time.monotonic() + limit_s
    while rpc.counters.rpc_calls < calls:
        assert proc.poll() is None, f"exited {proc.returncode} early: {proc.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, f"only {rpc.counters.rpc_calls} RPC calls in {limit_s}s"
        _note_children(proc, seen)
        time.sleep(0.2)
    _note_children(proc, seen)


CMDLINES: dict[int, str] = {}


def _note_children(proc: subprocess.Popen, seen: dict[int, psutil.Process]) -> None:
    try:
        for child in psutil.Process(proc.pid).children(recursive=True):
            if child.pid not in seen:
                seen[child.pid] = child
                CMDLINES[child.pid] = " ".join(child.cmdline())
    except psutil.Error:
        pass


def _survivors(seen: dict[int, psutil.Process], limit_s: float = 20) -> list[str]:
    """The noted processes still alive after up to `limit_s` (the same processes: psutil checks their
    start time, so a reused pid does not count)."""
    deadline = time.monotonic() + limit_s
    while True:
        alive = [p for p in seen.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    out = []
    for p in alive:
        try:
            out.append(f"{p.pid} {CMDLINES.get(p.pid, '')[:200]}")
            p.kill()
        except psutil.Error:
            pass
    return out


def _iq(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=tmp_path,
                          env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command,sig,group", [("run", signal.SIGINT, True), ("backfill", signal.SIGINT, True),
                                               ("backfill", signal.SIGTERM, False)],
                         ids=["run-ctrl-c", "backfill-ctrl-c", "backfill-sigterm"])
def test_interrupted_mid_ingest_stops_in_seconds_with_one_line_and_keeps_finished_work(
        chain, rpc, tmp_path, command, sig, group):
    chain_dir, manifest = chain
    proc = _start(_args(command, manifest, rpc.url, tmp_path), tmp_path)
    seen: dict[int, psutil.Process] = {}
    try:
        # run: one sub-range of the range, under way; backfill: 10-slot sub-ranges, some 40 of 120 asked for.
        _wait_for_calls(proc, rpc, 100 if command == "run" else int(0.4 * SLOTS), seen)
        if command == "backfill":
            time.sleep(3)   # their results reach the flow process
        (os.killpg if group else os.kill)(proc.pid, sig)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=300)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    print(f"{command}: exit {proc.returncode} {took:.1f}s after {signal.Signals(sig).name}")
    lines = err.decode(errors="replace").splitlines()
    assert proc.returncode == 130, lines[-40:]
    assert lines == [f"iq-etl {command}: interrupted"], lines[-40:]
    assert took < BOUND_S
    assert any("uvicorn" in CMDLINES.get(pid, "") for pid in seen), "no temporary Prefect API seen"
    assert not _survivors(seen)

    rpc.faults = Faults()   # the rerun at full speed
    if command == "run":
        res = _iq(["sql", "SELECT status, count() FROM iq.scan_ranges GROUP BY status", "--format", "json"], tmp_path)
        assert res.returncode == 0, res.stderr
        by_status = {r["status"]: int(r["count()"]) for r in json.loads(res.stdout)}
        assert by_status.get("partial", 0) + by_status.get("done", 0) >= 1, by_status
        return
    extra = [a for p in manifest.extra_program_ids for a in ("--program-id", p)]
    res = _iq(["backfill", _spec(manifest), "--source", "rpc-blocks", "--rpc-url", rpc.url, *extra,
               "--subrange-slots", str(SUBRANGE), "--json"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    (epoch,) = json.loads(res.stdout)["epochs"]
    total = SLOTS // SUBRANGE
    print(f"backfill: {epoch['already done']} of {total} sub-ranges recorded before the {signal.Signals(sig).name}")
    assert 0 < epoch["already done"] < total, epoch
    assert epoch["already done"] + epoch["sub-ranges"] == total and epoch["status"] == "done", epoch


@pytest.mark.parametrize("command", ["run", "backfill"])
def test_sigkill_leaves_no_process_and_ends_the_pipe(chain, rpc, tmp_path, command):
    chain_dir, manifest = chain
    proc = _start(_args(command, manifest, rpc.url, tmp_path), tmp_path)
    seen: dict[int, psutil.Process] = {}
    try:
        _wait_for_calls(proc, rpc, 100, seen)
        assert any("uvicorn" in CMDLINES.get(pid, "") for pid in seen), "no temporary Prefect API seen"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        killed = time.monotonic()
        eof = False
        poller = select.poll()   # not select(): a long suite may hold over 1024 descriptors
        poller.register(proc.stdout, select.POLLIN | select.POLLHUP)
        while time.monotonic() - killed < 20 and not eof:
            ready = poller.poll(500)
            eof = bool(ready) and proc.stdout.read1(4096) == b""
        print(f"{command}: stdout EOF {time.monotonic() - killed:.1f}s after SIGKILL")
        assert eof, "stdout still held open after SIGKILL"
        assert not _survivors(seen)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
