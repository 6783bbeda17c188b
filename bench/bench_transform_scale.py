"""4b. Transform at scale: full and incremental dbt builds on a warehouse of 0.3M / 3M / 10M raw rows.

The demo's development chain (`iq-etl demo`: seed 7, 48 uploads, 294 raw rows) is ingested once,
then its raw rows are multiplied in SQL: copy k gets its own signatures, session accounts,
linked-list links (before_tx, tail_tx, on_chain_path, accounts) and slots, the same mix of
statuses. Per scale point, each step in its own child process (its own peak RSS):
  1. build the warehouse (ingest + multiply; not timed);
  2. `transform --full-refresh` (timed, peak RSS);
  3. one more copy (+294 rows) and a plain incremental `transform` (timed, peak RSS);
  4. `transform --full-refresh` again: the marts must equal the incremental build's (checked by
     hashing every mart row but its timestamps).
Each build also records the rows every model's queries read (chDB's SelectedRows counter around
each dbt query: `--json` prints them, with the slowest queries and the query that raised the peak
RSS), the proof that an incremental build reads the changed groups and not the warehouse.
Targets (issue 27), at 3M raw rows: incremental / full <= 0.15, full build peak RSS <= 2.5 GB;
at 10M, no step above 4 GB.

    .venv/bin/python bench/bench_transform_scale.py [--quick] [--points 0.3,3] [--max-memory 2G]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Row, ratio_row, run_child, timed  # noqa: E402

DEMO_CHAIN = dict(seed=7, sessions=48)
POINTS = (0.3, 3.0)              # millions of raw rows, in `make bench`
SCALE_POINTS = (0.3, 3.0, 10.0)  # `make bench-scale`
RATIO_TARGET = 0.15
FULL_RSS_TARGET_MB = 2500        # at 3M rows
STEP_RSS_TARGET_MB = 4000        # at 10M rows, every step
COPIES_PER_INSERT = 2000
# Every mart row hashed (timestamps left out): the incremental build must equal a full rebuild.
MART_HASHES = {
    "session_completeness": "SELECT count(), sum(cityHash64(toString(tuple(* EXCEPT (source_ingested_at, build_id))))) FROM iq.session_completeness",
    "upload_payloads": "SELECT count(), sum(cityHash64(* EXCEPT (source_ingested_at, built_at, build_id))) FROM iq.upload_payloads "
                       "WHERE upload_key IN (SELECT upload_key FROM iq.session_completeness)",
    "sessions_ready_to_export": "SELECT count(), sum(cityHash64(*)) FROM iq.sessions_ready_to_export",
    "int_uploads": "SELECT count(), sum(cityHash64(toString(tuple(* EXCEPT (source_ingested_at, build_id))))) FROM iq.int_uploads",
    "current_chunks": "SELECT count(), sum(cityHash64(* EXCEPT (source_ingested_at, build_id))) FROM iq.int_session_chunks "
                      "WHERE upload_key IN (SELECT upload_key FROM iq.int_uploads)",
}


def ensure_demo_chain() -> str:
    """The demo's development chain, built once and cached."""
    from iq_etl.devchain.manifest import FORMAT

    out = common.cache_dir() / f"demo-chain-{common._key([FORMAT, DEMO_CHAIN])}"
    if (out / common.COMPLETE_MARK).is_file():
        return str(out)
    with common._cache_lock():
        if not (out / common.COMPLETE_MARK).is_file():
            from iq_etl.devchain.build import build_chain

            building = out.with_name(out.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            build_chain(building, **DEMO_CHAIN)
            (building / common.COMPLETE_MARK).write_text("\n")
            building.rename(out)
    return str(out)


def _settings(folder: str, max_memory: str | None = None):
    from iq_etl.settings import load_settings

    env = {"IQ_CLICKHOUSE_DSN": f"chdb://{folder}/warehouse", "IQ_ETL_HOME": f"{folder}/home"}
    if max_memory:
        env["IQ_TRANSFORM_MAX_MEMORY"] = max_memory
    return load_settings(env, dotenv=Path(folder) / "no.env")


def _mapped(column: str) -> str:
    """A reference column of copy `k`: its own value (signature, account, link), '' and Genesis kept."""
    return f"if({column} IN ('', 'Genesis'), {column}, concat({column}, '_', toString(k)))"


def _copy_sql(first_copy: int, copies: int, span: int) -> str:
    """INSERT of raw copies [first_copy, first_copy + copies) of the base rows (copy 0)."""
    refs = ("signature", "session_account", "on_chain_path", "before_tx", "tail_tx")
    columns = [
        ("slot", f"slot + k * {span}"),
        *[(c, _mapped(c)) for c in refs],
        ("accounts", "arrayMap(a -> if(a = '', a, concat(a, '_', toString(k))), accounts)"),
        ("run_id", "concat('copy-', toString(k))"),
        ("ingested_at", "now64(3)"),
    ]
    return (
        "INSERT INTO iq.raw_instructions SELECT * EXCEPT (k) REPLACE ("
        + ", ".join(f"{expr} AS {name}" for name, expr in columns)
        + ") FROM (SELECT * FROM iq.raw_instructions FINAL WHERE run_id NOT LIKE 'copy-%') AS base "
        f"CROSS JOIN (SELECT toUInt64(number) AS k FROM numbers({first_copy}, {copies})) AS copies"
    )


def _base_info(client) -> tuple[int, int]:
    rows, lo, hi = client.query("SELECT count(), min(slot), max(slot) FROM iq.raw_instructions FINAL "
                                "WHERE run_id NOT LIKE 'copy-%'").result_rows[0]
    return int(rows), int(hi) - int(lo) + 1


def _add_copies(client, first_copy: int, copies: int) -> None:
    _, span = _base_info(client)
    done = 0
    while done < copies:
        n = min(COPIES_PER_INSERT, copies - done)
        client.command(_copy_sql(first_copy + done, n, span))
        done += n


# --- child functions ----------------------------------------------------------------------------

def build(folder: str, chain_dir: str, copies: int) -> dict:
    """Ingest the demo chain and multiply its rows to `copies` copies (copy 0 = the chain itself)."""
    from iq_etl.devchain.chain import car_template, load_manifest
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.warehouse.client import close_client, get_client
    from iq_etl.warehouse.schema import migrate

    settings = _settings(folder)
    client = get_client(settings)
    migrate(client)
    m = load_manifest(Path(chain_dir))
    run_ingest(settings, IngestRequest(slot_spec=f"{m.first_slot}:{m.last_slot}", source="car",
                                       car_url=car_template(Path(chain_dir)),
                                       extra_program_ids=tuple(m.extra_program_ids), resume=False), client=client)
    base_rows, _ = _base_info(client)
    started = time.perf_counter()
    _add_copies(client, 1, copies - 1)
    client.command("OPTIMIZE TABLE iq.raw_instructions FINAL")
    rows = int(client.query("SELECT count() FROM iq.raw_instructions").result_rows[0][0])
    close_client()
    return {"base_rows": base_rows, "rows": rows, "multiply_s": time.perf_counter() - started}


def _node_seconds(result, top: int = 4) -> list[tuple[str, float]]:
    nodes = sorted(((n.name, n.seconds) for n in result.nodes), key=lambda x: -x[1])
    return [(name, round(s, 2)) for name, s in nodes[:top]]


def _by_type(result) -> dict[str, float]:
    out: dict[str, float] = {}
    for node in result.nodes:
        out[node.resource_type] = round(out.get(node.resource_type, 0.0) + node.seconds, 2)
    return out


class ReadRecorder:
    """Rows each dbt model's (and test's) queries read from tables, by the node_id in dbt's query
    comment: chDB's own SelectedRows counter (system.events) before and after each query (its
    per-result rows_read counts result rows, not rows read). The proof that an incremental build
    reads the changed groups and not the warehouse. Wraps the chDB backend's one query entry point
    for the life of the child; dbt runs one query at a time on it."""

    NODE = re.compile(r'"node_id":\s*"([a-z_]+)\.iq_etl\.([^"]+)"')
    COUNTER = "SELECT value FROM system.events WHERE name = 'SelectedRows'"

    def __init__(self) -> None:
        from clickhouse_connect.driver._backend.chdb_backend import ChdbBackend

        self.rows: dict[str, int] = {}
        self.queries: list[tuple[str, int, float, str]] = []
        self.rss_steps: list[tuple[str, int]] = []   # (node, peak RSS MB) whenever a query raised the peak
        original = ChdbBackend._query_locked
        recorder = self

        def selected(backend) -> int:
            text = backend._handle.conn.query(recorder.COUNTER, "CSV").bytes().decode().strip()
            return int(text or 0)

        def query_locked(backend, sql, fmt, params=None):
            text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
            found = recorder.NODE.search(text[:2000])
            if not found:
                return original(backend, sql, fmt, params)
            before = selected(backend)
            result = original(backend, sql, fmt, params)
            rows = selected(backend) - before
            peak = int(common.peak_rss_mb())
            if not recorder.rss_steps or peak > recorder.rss_steps[-1][1] + 50:
                recorder.rss_steps.append((found.group(2)[:60], peak))
            name = found.group(2) if found.group(1) == "model" else "tests"
            recorder.rows[name] = recorder.rows.get(name, 0) + rows
            with contextlib.suppress(Exception):
                recorder.queries.append((found.group(2)[:60], rows, round(float(result.elapsed()), 2),
                                         " ".join(text[text.find("*/") + 2:].split())[:100]))
            return result

        ChdbBackend._query_locked = query_locked


def transform(folder: str, full_refresh: bool, add_copy: int = 0, max_memory: str | None = None,
              hashes: bool = False) -> dict:
    """One `transform` (after adding copy number `add_copy`, when not 0), timed in-process."""
    from iq_etl.transform.runner import run_dbt
    from iq_etl.warehouse.client import close_client, get_client

    settings = _settings(folder, max_memory)
    client = get_client(settings)
    added = 0
    if add_copy:
        before = int(client.query("SELECT count() FROM iq.raw_instructions").result_rows[0][0])
        _add_copies(client, add_copy, 1)
        added = int(client.query("SELECT count() FROM iq.raw_instructions").result_rows[0][0]) - before
    raw_rows = int(client.query("SELECT count() FROM iq.raw_instructions").result_rows[0][0])
    run_dbt(settings, command="parse", quiet=True)   # warm parse: the build's own cost is timed
    reads = ReadRecorder()
    result, seconds, cpu = timed(lambda: run_dbt(settings, full_refresh=full_refresh, quiet=True))
    print(f"{'full' if full_refresh else 'incremental'} build: {seconds:.1f} s, slowest {_node_seconds(result)}",
          file=sys.stderr, flush=True)
    out = {"seconds": seconds, "cpu_s": cpu, "added_rows": added, "nodes": len(result.nodes),
           "slowest": _node_seconds(result), "by_type": _by_type(result), "raw_rows": raw_rows,
           "rows_read": dict(sorted(reads.rows.items(), key=lambda kv: -kv[1])),
           "queries": sorted(reads.queries, key=lambda q: -q[2])[:12], "rss_steps": reads.rss_steps}
    if hashes:
        out["hashes"] = {name: [str(v) for v in client.query(sql).result_rows[0]] for name, sql in MART_HASHES.items()}
        out["uploads"] = int(client.query("SELECT count() FROM iq.session_completeness").result_rows[0][0])
    close_client()
    return out


# --- the measurement ----------------------------------------------------------------------------

def measure_point(million_rows: float, max_memory: str | None = None, base_rows: int = 294) -> dict:
    chain_dir = ensure_demo_chain()
    copies = max(2, round(million_rows * 1e6 / base_rows))
    folder = tempfile.mkdtemp(prefix="iq-bench-scale-")
    try:
        built = run_child("bench_transform_scale:build", timeout=3600, folder=folder, chain_dir=chain_dir, copies=copies)
        full = run_child("bench_transform_scale:transform", timeout=3600, folder=folder, full_refresh=True,
                         max_memory=max_memory)
        inc = run_child("bench_transform_scale:transform", timeout=3600, folder=folder, full_refresh=False,
                        add_copy=copies, max_memory=max_memory, hashes=True)
        check = run_child("bench_transform_scale:transform", timeout=3600, folder=folder, full_refresh=True,
                          max_memory=max_memory, hashes=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"million_rows": million_rows, "copies": copies, "build": built, "full": full, "incremental": inc,
            "refresh": check, "consistent": inc["hashes"] == check["hashes"]}


def rows_from(points: list[dict]) -> list[Row]:
    m = "4b transform scale"
    out: list[Row] = []
    for p in points:
        rows, full, inc = p["build"]["rows"], p["full"], p["incremental"]
        label = f"{rows / 1e6:.2g}M raw rows ({p['refresh']['uploads']:,} uploads)"
        ratio = inc["seconds"] / full["seconds"]
        out.append(Row(m, f"{label}: full build", f"{full['seconds']:.1f} s",
                       f"peak RSS {full['peak_rss_mb']:.0f} MB; nodes {full['by_type']}; slowest {full['slowest']}"))
        out.append(Row(m, f"{label}: incremental after +{inc['added_rows']} rows", f"{inc['seconds']:.1f} s",
                       f"peak RSS {inc['peak_rss_mb']:.0f} MB; nodes {inc['by_type']}; slowest {inc['slowest']}; "
                       f"marts equal to a full rebuild: {'yes' if p['consistent'] else 'NO'} "
                       f"(rebuild {p['refresh']['seconds']:.1f} s, peak RSS {p['refresh']['peak_rss_mb']:.0f} MB)"))
        at3 = abs(p["million_rows"] - 3) < 0.01
        out.append(ratio_row(m, f"{label}: incremental / full", ratio, f"≤ {RATIO_TARGET}" if at3 else "",
                             (ratio <= RATIO_TARGET and p["consistent"]) if at3 else None,
                             f"{inc['seconds']:.1f} s / {full['seconds']:.1f} s"))
        if at3:
            out.append(Row(m, f"{label}: full build peak RSS", f"{full['peak_rss_mb']:.0f} MB", "",
                           f"≤ {FULL_RSS_TARGET_MB} MB", full["peak_rss_mb"] <= FULL_RSS_TARGET_MB))
        if p["million_rows"] >= 10:
            worst = max(full["peak_rss_mb"], inc["peak_rss_mb"], p["refresh"]["peak_rss_mb"])
            out.append(Row(m, f"{label}: largest step peak RSS", f"{worst:.0f} MB", "",
                           f"≤ {STEP_RSS_TARGET_MB} MB", worst <= STEP_RSS_TARGET_MB))
    return out


def run(quick: bool = False, repeats: int | None = None, points: tuple[float, ...] = POINTS,
        max_memory: str | None = None) -> list[Row]:
    if quick:
        points = (0.03,)
    return rows_from([measure_point(p, max_memory) for p in points])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small point (30k rows): a smoke run")
    parser.add_argument("--points", default=",".join(str(p) for p in POINTS),
                        help="millions of raw rows, comma-separated (default 0.3,3; make bench-scale: 0.3,3,10)")
    parser.add_argument("--max-memory", default=None, help="IQ_TRANSFORM_MAX_MEMORY for the builds")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    points = tuple(float(p) for p in args.points.split(",") if p.strip())
    if args.quick:
        points = (0.03,)
    measured = [measure_point(p, args.max_memory) for p in points]
    if args.json:
        print(json.dumps(measured, indent=1))
    common.print_rows(rows_from(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
