"""`iq-etl demo`: the main job end to end, offline, in about a minute (what `make demo` runs).

Builds (or reuses) a development chain under IQ_ETL_HOME/devchain, runs the pipeline flow over it
(CAR ingest → dbt build → export to ./exports, plus a loopback reader backend if IQ_READER_BASE_URL
points at one), checks the exported files against the chain's manifest, and prints the status table
and where everything is. Running it again exports nothing new.
"""
from __future__ import annotations

import argparse
import os
import time

from iq_etl.errors import IQEtlError
from iq_etl.settings import load_settings


def register(sub) -> None:
    from iq_etl.cli.demo import DEFAULT_SEED, DEFAULT_SESSIONS

    p = sub.add_parser("demo", help="build a development chain and run the whole pipeline on it, offline",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"development chain seed (default {DEFAULT_SEED})")
    p.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS,
                   help=f"uploads in the development chain (default {DEFAULT_SESSIONS})")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.sessions < 1:
        raise IQEtlError(f"--sessions must be at least 1, got {args.sessions}")
    settings = load_settings()
    from iq_etl.cli.flow_commands import prepare_prefect, print_result

    started = time.perf_counter()
    prepare_prefect(settings, "demo")   # starts the temporary Prefect API (without PREFECT_API_URL)
    api_s = time.perf_counter() - started
    from iq_etl.cli.demo import run_demo

    result = run_demo(settings, seed=args.seed, sessions=args.sessions)
    print()
    print_result(result.flow_result, as_json=False)
    complete = len(result.verified) + len(result.mismatched) + len(result.not_exported)
    print()
    if result.ok:
        print(f"exported files: {result.exports_dir}/<upload>/<file name> (+ upload.json): all {complete} complete "
              f"uploads of the development chain match its manifest (sha256 of each file as the gateway serves it)")
    else:
        print(f"exported files: {result.exports_dir}: {len(result.verified)} of {complete} complete uploads match "
              f"the manifest; different bytes: {', '.join(result.mismatched) or 'none'}; "
              f"not exported: {', '.join(result.not_exported) or 'none'}")
    where = settings.dsn_redacted
    if settings.embedded:
        from iq_etl.warehouse.client import chdb_path

        where = f"{chdb_path(settings.clickhouse_dsn)} (embedded ClickHouse via chDB; one process at a time)"
    print(f"warehouse:      {where}")
    print(f"chain:          {result.chain_dir} (manifest.json lists every upload and its expected status)")
    api = os.environ.get("PREFECT_API_URL")
    print(f"prefect:        {api or 'a temporary local API (state in ' + os.environ.get('PREFECT_HOME', '?') + ')'}; "
          "set PREFECT_API_URL to a `prefect server start` to browse runs and their status artifacts")
    print("query it:       iq-etl status")
    print("                iq-etl sql \"SELECT status, count() FROM iq.session_completeness GROUP BY status\"")
    print("                iq-etl sql \"SELECT upload_key, status_reason FROM iq.session_completeness "
          "WHERE status != 'complete'\"")
    print("                iq-etl sql --file sql/queries/<name>.sql   (saved coverage queries)")
    s = result.seconds
    print(f"took {s['total'] + api_s:.0f}s (Prefect API {api_s:.0f}s, chain {s['chain']:.0f}s, "
          f"pipeline flow {s['pipeline']:.0f}s); "
          "run it again: nothing is exported twice")
    return 0 if result.ok else 1
