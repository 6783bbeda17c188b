"""Run the benchmarks in `--quick` mode (a tiny chain, one run each, a temporary cache): nothing
here looks at the figures, and quick runs never touch bench/RESULTS.md."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"


def run_bench(script: str, env: dict, *args: str, timeout: float = 300) -> str:
    before = (BENCH / "RESULTS.md").read_bytes()
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (BENCH / "RESULTS.md").read_bytes() == before, "a --quick run must not record results"
    return proc.stdout


def table_rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| # ")]
