"""4. Transform: a full `dbt build` versus an incremental one after about 1% more slots.

In a fresh warehouse (one child process per run): ingest the chain minus its last ~1% of slots,
`dbt parse` (timed on its own: the first run in a new dbt home parses the whole project), full
`dbt build`, ingest the remaining slots, incremental `dbt build`, and a `--full-refresh` build of
everything as a check: the incremental run must leave the marts exactly as a full rebuild does.
Both builds compared run with a warm parse, so the ratio is the models' own cost. Target:
incremental / full <= 0.2.

Then the scale curve (bench_transform_scale.py): the demo chain's raw rows multiplied in SQL to
0.3M and 3M rows, full and incremental builds with their peak RSS (`make bench-scale`: also 10M).

    .venv/bin/python bench/bench_transform.py [--quick] [--repeats N]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Chain, Row, fmt, median, ratio_row, run_child, seconds_text, timed  # noqa: E402

RATIO_TARGET = 0.2
REPEATS = 3        # each run is three dbt invocations (about 30 s)
TAIL_SHARE = 0.01
# What must not change between the incremental result and a full rebuild.
MART_CHECKS = {
    "session_completeness": "SELECT upload_key, status FROM iq.session_completeness ORDER BY upload_key",
    "sessions_ready_to_export": "SELECT upload_key, sha256 FROM iq.sessions_ready_to_export ORDER BY upload_key",
}


def _ingest(settings, client, c: Chain, first: int, last: int):
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest

    return run_ingest(settings, IngestRequest(slot_spec=f"{first}:{last}", source="car", car_url=c.template,
                      extra_program_ids=c.extra_program_ids, resume=False), client=client)


def _node_seconds(result) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in result.nodes:
        out[node.resource_type] = out.get(node.resource_type, 0.0) + node.seconds
    return out


def _marts(client) -> dict[str, list]:
    return {name: [tuple(r) for r in client.query(sql).result_rows] for name, sql in MART_CHECKS.items()}


# --- child function -----------------------------------------------------------------------------

def transform(chain: dict, tail_share: float = TAIL_SHARE) -> dict:
    from iq_etl.transform.runner import run_dbt

    c = Chain.from_json(chain)
    tail = max(1, round(c.slots * tail_share))
    cut = c.last_slot - tail
    with common.fresh_warehouse() as (settings, client):
        head = _ingest(settings, client, c, c.first_slot, cut)
        _, parse_s, _ = timed(lambda: run_dbt(settings, command="parse", quiet=True))
        full, full_s, _ = timed(lambda: run_dbt(settings, quiet=True))
        rest = _ingest(settings, client, c, cut + 1, c.last_slot)
        inc, inc_s, _ = timed(lambda: run_dbt(settings, quiet=True))
        after_incremental = _marts(client)
        refresh, refresh_s, _ = timed(lambda: run_dbt(settings, quiet=True, full_refresh=True))
        after_refresh = _marts(client)
    return {"parse_s": parse_s, "full_s": full_s, "incremental_s": inc_s, "refresh_s": refresh_s,
            "head_rows": head.rows_written, "tail_rows": rest.rows_written, "tail_slots": tail,
            "nodes": len(full.nodes), "full_nodes_s": _node_seconds(full), "inc_nodes_s": _node_seconds(inc),
            "consistent": after_incremental == after_refresh,
            "uploads": len(after_refresh["session_completeness"]),
            "ready": len(after_refresh["sessions_ready_to_export"])}


# --- the measurement ----------------------------------------------------------------------------

def measure(chain: Chain, repeats: int) -> list[dict]:
    return [run_child("bench_transform:transform", chain=chain.to_json()) for _ in range(repeats)]


def rows_from(chain: Chain, runs: list[dict]) -> list[Row]:
    m = "4 transform"
    full = median([r["full_s"] for r in runs])
    inc = median([r["incremental_s"] for r in runs])
    ratio = median([r["incremental_s"] / r["full_s"] for r in runs])
    r0 = runs[0]
    consistent = all(r["consistent"] for r in runs)

    def nodes(key: str) -> str:
        per = {t: median([r[key].get(t, 0.0) for r in runs]) for t in r0[key]}
        return ", ".join(f"{t}s {v:.1f} s" for t, v in sorted(per.items()))

    return [
        Row(m, "full dbt build (warm parse)", seconds_text([r["full_s"] for r in runs]),
            f"{r0['nodes']} nodes on {r0['head_rows']:,} rows; inside nodes: {nodes('full_nodes_s')}; "
            f"cold `dbt parse` before it {seconds_text([r['parse_s'] for r in runs])}; "
            f"peak RSS {median([r['peak_rss_mb'] for r in runs]):.0f} MB"),
        Row(m, f"incremental build after +{r0['tail_slots']} slots", seconds_text([r["incremental_s"] for r in runs]),
            f"+{r0['tail_rows']} rows; inside nodes: {nodes('inc_nodes_s')}; "
            f"full-refresh rebuild {seconds_text([r['refresh_s'] for r in runs])}; "
            f"marts equal to the rebuild: {'yes' if consistent else 'NO'} ({r0['uploads']} uploads, {r0['ready']} ready)"),
        ratio_row(m, "incremental / full build", ratio, f"≤ {RATIO_TARGET}", ratio <= RATIO_TARGET and consistent,
                  f"medians {fmt(inc)} s / {fmt(full)} s"),
    ]


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    """The benchmark chain's full vs incremental build, then the scale curve (bench_transform_scale:
    0.3M and 3M raw rows here; `make bench-scale` adds 10M)."""
    import bench_transform_scale

    chain = common.ensure_chain(quick)
    rows = rows_from(chain, measure(chain, common.repeats_for(quick, repeats, default=REPEATS)))
    return rows + bench_transform_scale.run(quick)


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
