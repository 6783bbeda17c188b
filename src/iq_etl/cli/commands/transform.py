"""`iq-etl transform`: run the dbt models (dbt_project/) against the configured warehouse:
order chunks, validate completeness, reconstruct payloads. `dbt build` in-process; a dbt failure
exits non-zero with dbt's message.

A plain build is incremental: it recomputes the upload groups with rows ingested since the last
build and runs the data tests on those groups only. `--full-tests` runs every data test over
everything (the nightly deployment does); `--full-refresh` rebuilds and tests everything. Each query
is capped at IQ_TRANSFORM_MAX_MEMORY (default 4G; group-bys, sorts and joins spill to disk before
it); a build that would need more stops with one line saying so."""
from __future__ import annotations

import argparse
import json

from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse
from iq_etl.warehouse.schema import migrate


def register(sub) -> None:
    p = sub.add_parser("transform", help="run the dbt models (dbt build): completeness and payloads",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--select", nargs="+", default=None, metavar="SELECTOR",
                   help="dbt node selection, e.g. session_completeness+ (default: everything)")
    p.add_argument("--exclude", nargs="+", default=None, metavar="SELECTOR", help="dbt nodes to leave out")
    p.add_argument("--full-refresh", action="store_true", help="rebuild incremental models from scratch")
    p.add_argument("--full-tests", action="store_true",
                   help="run every data test over all uploads (default: only the groups this build recomputed)")
    p.add_argument("--dbt-command", dest="dbt_command", choices=["build", "run", "test", "compile"], default="build",
                   help="dbt command (default build: models and their tests)")
    p.add_argument("--freshness", action="store_true",
                   help="dbt source freshness of the raw tables (newest block time, last finished scan) instead of a build")
    p.add_argument("--unit-tests", action="store_true",
                   help="also run the dbt unit tests (fixed fixtures; left out of normal runs)")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--quiet", action="store_true", help="only dbt's errors, then the summary")
    p.set_defaults(handler=run)


def run(args) -> int:
    from iq_etl.transform.runner import run_dbt

    settings = load_settings()
    with Warehouse(settings) as client:
        migrate(client, settings.clickhouse_cluster)  # the sources must exist before dbt reads them
        result = run_dbt(settings, select=args.select, full_refresh=args.full_refresh,
                         command="source freshness" if args.freshness else args.dbt_command,
                         exclude=args.exclude, unit_tests=args.unit_tests, quiet=args.quiet or args.json,
                         full_tests=args.full_tests)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(result.counts().items()))
        print(f"dbt {result.command} on {result.target}: {counts or 'nothing to do'} in {result.elapsed_s:.1f}s")
        if result.full_refresh_reason:
            print(f"  every model rebuilt (full refresh): {result.full_refresh_reason}")
        for node in result.warnings():
            print(f"  warning: {node.resource_type} {node.name}: {node.message}")
    return 0
