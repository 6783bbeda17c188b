"""Every benchmark in one run (`make bench`): CAR scan, memory, ingest, transform,
export, threads, CAR scan over HTTP (1/4/16/32 connections at 25 MB/s each), then cProfile of the slowest stage and of the scan's hot path. Prints one table
of medians and in-run ratios and appends it, dated, with nproc and the load average, to
bench/RESULTS.md (history kept; --quick and --no-record runs are not recorded).

The benchmark chain (and its 10x copy) is built on first use and cached in bench/.cache/.
Each script also runs alone: `.venv/bin/python bench/bench_scan.py` etc.

    .venv/bin/python bench/run_all.py [--quick] [--repeats N] [--only scan,ingest,...] [--no-profile] [--no-record]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_export  # noqa: E402
import bench_http  # noqa: E402
import bench_ingest  # noqa: E402
import bench_memory  # noqa: E402
import bench_profile  # noqa: E402
import bench_scan  # noqa: E402
import bench_threads  # noqa: E402
import bench_transform  # noqa: E402
import common  # noqa: E402
from common import Row  # noqa: E402

STAGES = {
    "scan": bench_scan.run,
    "memory": bench_memory.run,
    "ingest": bench_ingest.run,
    "transform": bench_transform.run,
    "export": bench_export.run,
    "threads": bench_threads.run,
    "http": bench_http.run,
}


def _dirty() -> bool:
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "ingest", "flows", "dbt_project", "sql"],
                             cwd=common.REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(out.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny chain, one run each: a smoke run, not figures")
    parser.add_argument("--repeats", type=int, default=None, help=f"runs per variant (default {common.DEFAULT_REPEATS})")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile sections")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in only if s not in STAGES]
    if unknown:
        parser.error(f"--only: unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")

    started = time.perf_counter()
    machine_before = common.machine_line()
    chain = common.ensure_chain(args.quick)
    rows: list[Row] = []
    failures: list[str] = []
    for name, run in STAGES.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            stage_rows = run(args.quick, args.repeats)
        except Exception as exc:  # noqa: BLE001 - one broken stage must not lose the others' figures
            traceback.print_exc()
            message = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
            failures.append(f"{name}: {message}")
            stage_rows = [Row(name, "FAILED", "-", message, met=False)]
        rows += stage_rows
        print(f"   {name} took {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        common.print_rows(stage_rows)

    sections: list[str] = []
    if not args.no_profile and not only:
        print("-- profiles ...", file=sys.stderr, flush=True)
        try:
            sections = bench_profile.run(args.quick)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            failures.append(f"profile: {exc}")
    elapsed = time.perf_counter() - started

    params = common.chain_params(args.quick)
    notes = [
        f"before: {machine_before}; after: {common.machine_line()}",
        f"commit {common.git_head()}{' + uncommitted changes in ingest/flows/dbt_project/sql' if _dirty() else ''}; "
        f"`make bench` took {elapsed / 60:.1f} min",
        f"chain: {chain.transactions:,} transactions ({chain.iq_transactions:,} IQ, "
        f"{chain.iq_transactions / chain.transactions:.2%}), {chain.car_bytes / 1e6:.0f} MB in "
        f"{len(chain.car_paths)} CAR file(s); build_chain{params}",
        f"runs per variant: "
        f"{args.repeats or (1 if args.quick else f'{common.DEFAULT_REPEATS} (transform and export: {bench_transform.REPEATS})')}"
        f" (medians; ranges in parentheses)",
    ]
    title = f"Run {common.now_utc()} · nproc {__import__('os').cpu_count()}" + (" · QUICK (not figures)" if args.quick else "")
    print()
    print(f"## {title}")
    for n in notes:
        print(f"- {n}")
    print()
    common.print_rows(rows)
    for text in sections:
        print()
        print(text)
    targets = [r for r in rows if r.met is not None]
    print(f"\ntargets: {sum(r.met for r in targets)} met, {sum(not r.met for r in targets)} missed "
          f"({'; '.join(f'{r.measure} {r.what}' for r in targets if not r.met) or 'none'})")
    if not args.quick and not args.no_record:
        common.append_results(title, rows, notes, sections)
        print(f"appended to {common.RESULTS_MD}")
    if failures:
        print("FAILED: " + " | ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
