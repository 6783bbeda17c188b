"""3. Ingest end to end: the benchmark chain's CAR files -> IQ rows in a fresh embedded chDB
warehouse (`run_ingest`, source car, one thread), against the CAR scan alone in the same run.

Prints transactions/s and rows/s, the share of the ingest's time spent reading and decoding
(the CAR reader, pre-filter and candidate decoding), filtering (instruction extraction and IQ
decoding) and inserting, and the ratio ingest time / scan time: what the rest of the stage,
the database included, costs on top of the reader.

    .venv/bin/python bench/bench_ingest.py [--quick] [--repeats N]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Chain, Row, fmt, median, ratio_row, run_child, seconds_text, timed  # noqa: E402

# --- child function -----------------------------------------------------------------------------

def ingest(chain: dict, threads: int = 1, first_slot: int | None = None, last_slot: int | None = None,
           worker_kind: str | None = None) -> dict:
    """One run_ingest of the chain (or of first..last) into a fresh warehouse, timed from after
    the warehouse is open and migrated. worker_kind: run_ingest's choice of pool for threads > 1
    (None: its default)."""
    import iq_etl.ingest.decode  # noqa: F401 - what run_ingest imports on first use: loaded before timing
    import iq_etl.ingest.sources.car.reader  # noqa: F401
    import iq_etl.protocol  # noqa: F401
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest

    c = Chain.from_json(chain)
    options = {"worker_kind": worker_kind} if worker_kind else {}
    first = c.first_slot if first_slot is None else first_slot
    last = c.last_slot if last_slot is None else last_slot
    with common.fresh_warehouse() as (settings, client):
        summary, wall, cpu = timed(lambda: run_ingest(
            settings, IngestRequest(slot_spec=f"{first}:{last}", source="car", car_url=c.template, threads=threads,
            extra_program_ids=c.extra_program_ids, resume=False, **options), client=client))
        stored = client.query("SELECT count() FROM iq.raw_instructions FINAL").result_rows[0][0]
    if summary.incomplete or stored != summary.rows_written or not summary.rows_written:
        raise AssertionError(f"ingest wrote {summary.rows_written} rows, the table holds {stored} "
                             f"(incomplete={summary.incomplete})")
    return {"seconds": wall, "cpu_s": cpu, "summary_s": summary.seconds, "transactions": summary.transactions_seen,
            "rows": summary.rows_written, "undecoded": summary.undecoded, "matches": summary.matches,
            "read_s": summary.read_s, "extract_s": summary.extract_s, "insert_s": summary.insert_s,
            "ranges": len(summary.ranges), "threads": threads, "worker_kind": worker_kind}


# --- the measurement ----------------------------------------------------------------------------

def measure(chain: Chain, repeats: int) -> dict[str, list[dict]]:
    common.warm_page_cache(chain.car_paths)
    runs: dict[str, list[dict]] = {"scan": [], "ingest": []}
    for _ in range(repeats):
        runs["scan"].append(run_child("bench_scan:scan", chain=chain.to_json()))
        runs["ingest"].append(run_child("bench_ingest:ingest", chain=chain.to_json(), threads=1))
    return runs


def shares(r: dict) -> dict[str, float]:
    total = r["seconds"]
    read, extract, insert = r["read_s"] / total, r["extract_s"] / total, r["insert_s"] / total
    return {"read": read, "extract": extract, "insert": insert, "other": max(0.0, 1 - read - extract - insert)}


def rows_from(chain: Chain, runs: dict[str, list[dict]]) -> list[Row]:
    m = "3 ingest"
    ing, scan = runs["ingest"], runs["scan"]
    tx_s = median([r["transactions"] / r["seconds"] for r in ing])
    rows_s = median([r["rows"] / r["seconds"] for r in ing])
    scan_tx_s = median([r["transactions"] / r["seconds"] for r in scan])
    t_ing = median([r["seconds"] for r in ing])
    t_scan = median([r["seconds"] for r in scan])
    sh = {k: median([shares(r)[k] for r in ing]) for k in ("read", "extract", "insert", "other")}
    first = ing[0]
    return [
        Row(m, "CAR → chDB, threads=1", f"{fmt(tx_s)} tx/s",
            f"{fmt(rows_s)} rows/s ({first['rows']:,} rows + {first['undecoded']} undecoded); "
            f"{seconds_text([r['seconds'] for r in ing])}; peak RSS {median([r['peak_rss_mb'] for r in ing]):.0f} MB"),
        Row(m, "time shares of the ingest", f"read {sh['read']:.0%}",
            f"read+decode (reader, pre-filter, candidates) {sh['read']:.0%}, filter (extract + IQ decode) "
            f"{sh['extract']:.0%}, insert {sh['insert']:.0%}, other (ledger, queries) {sh['other']:.0%}"),
        Row(m, "CAR scan alone (same run)", f"{fmt(scan_tx_s)} tx/s", seconds_text([r["seconds"] for r in scan])),
        ratio_row(m, "ingest time / scan time", t_ing / t_scan,
                  detail=f"what extraction, the warehouse and the ledger add on top of the reader; by CPU time "
                         f"{median([r['cpu_s'] for r in ing]) / median([r['cpu_s'] for r in scan]):.2f}x "
                         f"(less sensitive to other load on the machine)"),
    ]


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    chain = common.ensure_chain(quick)
    return rows_from(chain, measure(chain, common.repeats_for(quick, repeats)))


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
