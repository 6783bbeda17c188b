"""6. Threads: the end-to-end ingest (as in 3) with `--threads 1` versus `--threads 2`.

With threads > 1 the ingest scans CAR sub-ranges (2,000 slots each by default) in worker
processes (its default for CAR) and writes from the parent; where run_ingest offers
`worker_kind`, a thread pool is measured too. Runs alternate between the settings, each in a
fresh child process and warehouse. Target (issue 15): `--threads 2` with worker processes at least
1.7x `--threads 1` on the 10x chain (on the small chain the speedup is reported as measured).
The Dask fan-out (2 Dask workers vs 1) is measured by bench/bench_dask.py.

    .venv/bin/python bench/bench_threads.py [--quick] [--repeats N]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Chain, Row, fmt, median, ratio_row, run_child, seconds_text  # noqa: E402

# (label, threads, worker_kind)
VARIANTS = [("--threads 1", 1, None), ("--threads 2 (worker processes)", 2, "process")]
THREAD_POOL = ("--threads 2 (thread pool)", 2, "thread")


def variants() -> list[tuple[str, int, str | None]]:
    import dataclasses

    from iq_etl.ingest.request import IngestRequest

    has_kind = "worker_kind" in {f.name for f in dataclasses.fields(IngestRequest)}
    if not has_kind:
        return [VARIANTS[0], ("--threads 2", 2, None)]
    return VARIANTS + [THREAD_POOL]


def measure(chain: Chain, repeats: int) -> dict[str, list[dict]]:
    """Runs per variant; a run that crashes is kept as {'error': ...} (a finding, not a reason to
    lose the other variants' figures)."""
    common.warm_page_cache(chain.car_paths)
    todo = variants()
    # A hung run must not eat the whole benchmark's time: a few times what a run normally takes.
    timeout = 60 + chain.transactions / 20_000
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in todo}
    for _ in range(repeats):
        for label, threads, kind in todo:
            try:
                runs[label].append(run_child("bench_ingest:ingest", timeout=timeout, chain=chain.to_json(),
                                             threads=threads, worker_kind=kind))
            except common.ChildFailed as exc:
                lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                runs[label].append({"error": " / ".join(lines[-2:])[:300]})
    return runs


SCALED_TARGET = 1.7   # --threads 2 (worker processes) / --threads 1 on the 10x chain


def rows_from(chain: Chain, runs: dict[str, list[dict]], target: float | None = None) -> list[Row]:
    m = "6 threads"
    rows = []
    labels = list(runs)
    ok = {label: [r for r in rs if "error" not in r] for label, rs in runs.items()}
    reference = {(r["rows"], r["undecoded"]) for r in ok[labels[0]]}
    seconds = {label: median([r["seconds"] for r in rs]) for label, rs in ok.items() if rs}
    for label, rs in runs.items():
        good, bad = ok[label], [r["error"] for r in rs if "error" in r]
        problems = []
        if bad:
            problems.append(f"{len(bad)} of {len(rs)} runs failed: {bad[0]}")
        differing = [r for r in good if (r["rows"], r["undecoded"]) not in reference]
        if differing and label != labels[0]:
            problems.append(f"{len(differing)} run(s) wrote other rows than {labels[0]} "
                            f"({differing[0]['rows']} vs {sorted(reference)[0][0]})")
        if not good:
            rows.append(Row(m, f"ingest {label}", "FAILED", "; ".join(problems)))
            continue
        flag = " (PROBLEM)" if problems else ""
        rows.append(Row(m, f"ingest {label}", f"{fmt(median([r['transactions'] / r['seconds'] for r in good]))} tx/s{flag}",
                        "; ".join(problems + [f"{seconds_text([r['seconds'] for r in good])}; {good[0]['ranges']} "
                                              f"sub-ranges; parent peak RSS "
                                              f"{median([r['peak_rss_mb'] for r in good]):.0f} MB"])))
    if labels[0] in seconds:
        for label in labels[1:]:
            if label in seconds:
                value = seconds[labels[0]] / seconds[label]
                goal = target if target is not None and "processes" in label else None
                rows.append(ratio_row(m, f"speedup {label.removeprefix('--')} vs 1 (time 1 / time 2)", value,
                                      target=f"≥ {goal}" if goal else "", met=(value >= goal) if goal else None,
                                      detail=f"nproc {os.cpu_count()}"))
    return rows


def scaled_rows(base: Chain, repeats: int = 1) -> list[Row]:
    """The same comparison on the 10x chain (30 sub-ranges): whether parallel scanning pays once
    the workers' start-up is spread over more work."""
    big = common.ensure_scaled_chain(base, common.SCALE)
    rows = rows_from(big, measure(big, repeats), target=SCALED_TARGET)
    for row in rows:
        row.what = f"{common.SCALE}x chain: {row.what}"
    return rows


def run(quick: bool = False, repeats: int | None = None, scaled: bool | None = None) -> list[Row]:
    """scaled (default: not in --quick runs): also compare on the 10x chain, one run each."""
    chain = common.ensure_chain(quick)
    rows = rows_from(chain, measure(chain, common.repeats_for(quick, repeats)))
    if scaled if scaled is not None else not quick:
        rows += scaled_rows(chain, repeats=min(3, common.repeats_for(quick, repeats)))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
