"""The benchmarks run (`--quick`: a tiny chain, one run each) and print their tables. Nothing here
looks at the figures: benchmarks are run and compared by people (bench/RESULTS.md), never
asserted on in tests. The cache goes to a temporary folder, and quick runs never touch
bench/RESULTS.md."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


@pytest.fixture(scope="module")
def bench_env(tmp_path_factory):
    return {**os.environ, "IQ_BENCH_CACHE": str(tmp_path_factory.mktemp("bench-cache"))}


def _run(script: str, env: dict, *args: str, timeout: float = 300) -> str:
    before = (BENCH / "RESULTS.md").read_bytes()
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (BENCH / "RESULTS.md").read_bytes() == before, "a --quick run must not record results"
    return proc.stdout


def _table_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| # ")]


def test_scan_and_memory_benchmarks_print_their_rows(bench_env):
    scan = _table_rows(_run("bench_scan.py", bench_env))
    whats = [r[1] for r in scan]
    assert {"iq-etl reader + IQ pre-filter", "floor: read the bytes", "floor: libipld.decode_car in memory",
            "reader / decode_car (tx/s)"} <= set(whats)
    assert all(r[0] == "1 CAR scan" and r[2] for r in scan)
    ratio = next(r for r in scan if r[1] == "reader / decode_car (tx/s)")
    assert ratio[2].endswith("x") and ratio[4] == "≥ 2.0" and ratio[5] in ("met", "MISSED")

    memory = _table_rows(_run("bench_memory.py", bench_env))
    assert [r[1] for r in memory][:3] == ["peak RSS, scan of the chain", "peak RSS, scan of the 10x chain",
                                          "10x chain / chain (peak RSS)"]
    assert "13,870 tx" in memory[1][3]  # ten copies of the quick chain's 1,387 transactions, all read back


@pytest.mark.slow
def test_run_all_quick_runs_every_stage(bench_env):
    out = _run("run_all.py", bench_env, "--no-record", timeout=900)
    rows = _table_rows(out)
    measures = {r[0] for r in rows}
    assert {"1 CAR scan", "2 memory", "3 ingest", "4 transform", "5 export", "6 threads"} <= measures
    assert not any(r[1] == "FAILED" for r in rows)
    assert "### Profile: CAR scan" in out and "### Profile: transform, full dbt build" in out
    assert "targets:" in out
