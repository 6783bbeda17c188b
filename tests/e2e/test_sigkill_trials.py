"""Crash safety under SIGKILL (operations issue, fault suites): `iq-etl ingest`, `transform` and
`export` are killed at random points (seeded, so a failure replays), then rerun to completion. Every
trial must end with the same FINAL rows (hashes of the raw tables and the marts) as an undisturbed
run, every complete upload delivered to the reader backend exactly once (its Idempotency-Key
dedup) and the export ledger agreeing with what the backend stored. Real processes, a real chDB
folder (or, with IQ_TEST_WAREHOUSE=remote, a ClickHouse server over HTTP: fewer trials), a
real loopback reader backend."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iq_etl.devchain.build import build_chain
from iq_etl.devchain.chain import car_template
from iq_etl.devchain.servers.reader_backend import Faults, serve_reader_backend
from tests.support.warehouse import remote_mode

# 12 kills in all; one per stage against a remote warehouse (CI's remote step has ~15 minutes for
# every warehouse path; the kill points differ, the checks do not)
TRIALS = {stage: 1 if remote_mode() else 4 for stage in ("ingest", "transform", "export")}
SEED = 20261201
# Every backend answer 0.1 s late (a real backend is no faster): an export of the chain's 40 uploads is
# then mostly work, not interpreter start-up, so a kill point drawn from the reference run's time lands
# while it works even when the trial runs a little faster than the reference did.
BACKEND = Faults(latency_s=0.1)

ROW_HASHES = {
    "raw": "SELECT count(), sum(cityHash64(slot, signature, ix_index, inner_index, data)) FROM iq.raw_instructions FINAL",
    "undecoded": "SELECT count(), sum(cityHash64(slot, signature, ix_index, inner_index, reason)) "
                 "FROM iq.undecoded_instructions FINAL",
    "completeness": "SELECT count(), sum(cityHash64(upload_key, status, chunks_present)) FROM iq.session_completeness",
    "payloads": "SELECT count(), sum(cityHash64(upload_key, sha256)) FROM iq.sessions_ready_to_export",
    "delivered": "SELECT groupUniqArray(session_key) FROM iq.exports WHERE status = 'delivered' AND target = {t:String}",
}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    manifest = build_chain(root / "devchain", seed=11)
    return root / "devchain", manifest


def _env(warehouses, folder: Path) -> dict[str, str]:
    """A fresh warehouse (tests/support/warehouse.py) and home for the run in `folder`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IQ_", "JETSTREAMER_"))}
    env.update(warehouses.env(f"{folder.name}/warehouse"), IQ_ETL_HOME=str(folder / "home"),
               IQ_WAREHOUSE_LOCK_WAIT="60", IQ_EXPORT_BACKOFF="0.05")
    return env


def _commands(chain_dir: Path, manifest, backend_url: str) -> dict[str, list[str]]:
    extra = [a for p in manifest.extra_program_ids for a in ("--program-id", p)]
    return {
        "ingest": ["ingest", f"{manifest.first_slot}:{manifest.last_slot}", "--car-url", car_template(chain_dir),
                   "--subrange-slots", "200", *extra],
        "transform": ["transform"],
        "export": ["export", "--target", backend_url, "--concurrency", "2"],
    }


def _iq(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def _killed(args: list[str], cwd: Path, env: dict[str, str], after_s: float) -> bool:
    """Start the command, SIGKILL it after `after_s`; True if it was still running (a real kill)."""
    proc = subprocess.Popen([sys.executable, "-m", "iq_etl.cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(after_s)
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return alive


def _hashes(cwd: Path, env: dict[str, str], target: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, sql in ROW_HASHES.items():
        args = ["sql", sql, "--format", "json"] + (["--param", f"t={target}"] if "{t:" in sql else [])
        res = _iq(args, cwd, env)
        assert res.returncode == 0, res.stderr
        (row,) = json.loads(res.stdout)
        values = list(row.values())
        out[name] = sorted(values[0]) if name == "delivered" else values
    return out


def _complete_run(folder: Path, env: dict[str, str], commands: dict[str, list[str]]) -> dict[str, float]:
    """Run every stage to completion; seconds each took."""
    took = {}
    for stage in ("ingest", "transform", "export"):
        started = time.monotonic()
        res = _iq(commands[stage], folder, env)
        took[stage] = time.monotonic() - started
        assert res.returncode == 0, f"{stage}: {res.stderr[-2000:]}"
    return took


# 12 trials, each a reference run plus a killed run and its rerun of every stage (real subprocesses):
# 472 s alone on this machine, past the suite's 600 s default when the machine is loaded.
@pytest.mark.timeout(1800)
def test_sigkill_at_random_points_loses_nothing_and_delivers_once(chain, tmp_path, warehouses):
    chain_dir, manifest = chain
    complete = sorted(u.upload_key for u in manifest.uploads if u.expected_status == "complete")
    reference_backend = serve_reader_backend(faults=BACKEND)
    try:
        ref = tmp_path / "reference"
        ref.mkdir()
        env = _env(warehouses, ref)
        took = _complete_run(ref, env, _commands(chain_dir, manifest, reference_backend.url))
        expected = _hashes(ref, env, reference_backend.url)
        assert sorted({b["upload_key"] for b in reference_backend.received}) == complete
    finally:
        reference_backend.shutdown()
        warehouses.release(f"{ref.name}/warehouse")

    rnd = random.Random(SEED)
    real_kills = 0
    for stage, trials in TRIALS.items():
        for trial in range(trials):
            backend = serve_reader_backend(faults=BACKEND)
            try:
                folder = tmp_path / f"{stage}-{trial}"
                folder.mkdir()
                env = _env(warehouses, folder)
                commands = _commands(chain_dir, manifest, backend.url)
                for earlier in ("ingest", "transform", "export")[:("ingest", "transform", "export").index(stage)]:
                    assert _iq(commands[earlier], folder, env).returncode == 0
                # Kill at a random point of the stage's own run time (measured on the reference run,
                # start-up included): most kills land while it works, a few during start-up. Not in its
                # last fifth: a trial may run ~10-15% faster than the reference (warm caches, less load)
                # and a kill after its end tests nothing.
                real_kills += _killed(commands[stage], folder, env, after_s=rnd.uniform(0.3, 0.8 * took[stage]))
                _complete_run(folder, env, commands)  # every stage again: resumes, skips what is done
                got = _hashes(folder, env, backend.url)
                for name in ("raw", "undecoded", "completeness", "payloads"):
                    assert got[name] == expected[name], f"{stage} trial {trial}: {name} differs"
                stored = [b["upload_key"] for b in backend.received]
                assert sorted(stored) == complete, f"{stage} trial {trial}: backend stored {len(stored)} bodies"
                assert got["delivered"] == complete, f"{stage} trial {trial}: ledger != backend"
            finally:
                backend.shutdown()
                warehouses.release(f"{folder.name}/warehouse")
    total = sum(TRIALS.values())
    assert real_kills >= total - max(1, total // 6), f"only {real_kills} of the {total} kills hit a running process"
