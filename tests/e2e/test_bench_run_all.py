"""The benchmarks run (`--quick`: a tiny chain, one run each) and print their tables; the whole suite
of stages, slow. Nothing here
looks at the figures: benchmarks are run and compared by people (bench/RESULTS.md), never
asserted on in tests."""
from __future__ import annotations

from tests.support.bench import run_bench, table_rows


def test_run_all_quick_runs_every_stage(bench_env):
    out = run_bench("run_all.py", bench_env, "--no-record", timeout=900)
    rows = table_rows(out)
    measures = {r[0] for r in rows}
    assert {"1 CAR scan", "2 memory", "3 ingest", "4 transform", "5 export", "6 threads"} <= measures
    assert not any(r[1] == "FAILED" for r in rows)
    assert "### Profile: CAR scan" in out and "### Profile: transform, full dbt build" in out
    assert "targets:" in out
