"""The benchmarks run (`--quick`: a tiny chain, one run each) and print their tables. Nothing here
looks at the figures: benchmarks are run and compared by people (bench/RESULTS.md), never
asserted on in tests."""
from __future__ import annotations

from tests.support.bench import run_bench, table_rows


def test_scan_and_memory_benchmarks_print_their_rows(bench_env):
    scan = table_rows(run_bench("bench_scan.py", bench_env))
    whats = [r[1] for r in scan]
    assert {"iq-etl reader + IQ pre-filter", "floor: read the bytes", "floor: libipld.decode_car in memory",
            "reader / decode_car (tx/s)"} <= set(whats)
    assert all(r[0] == "1 CAR scan" and r[2] for r in scan)
    ratio = next(r for r in scan if r[1] == "reader / decode_car (tx/s)")
    assert ratio[2].endswith("x") and ratio[4] == "≥ 2.0" and ratio[5] in ("met", "MISSED")

    memory = table_rows(run_bench("bench_memory.py", bench_env))
    assert [r[1] for r in memory][:3] == ["peak RSS, scan of the chain", "peak RSS, scan of the 10x chain",
                                          "10x chain / chain (peak RSS)"]
    assert "13,870 tx" in memory[1][3]  # ten copies of the quick chain's 1,387 transactions, all read back
