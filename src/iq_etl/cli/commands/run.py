"""`iq-etl run`: the whole pipeline once (ingest → transform → export) as a Prefect flow run.

Without PREFECT_API_URL, Prefect starts a temporary local API for the run (a few seconds; state under
IQ_ETL_HOME/prefect). With PREFECT_API_URL pointing at a `prefect server start`, the run, its logs and
its status artifact show up in the Prefect UI. Runs that touch the embedded warehouse wait for each
other (see orchestration/locking.py) instead of failing.

Without SLOT_SPEC and without session PDAs (--session-pda or IQ_SESSION_PDA_LIST) nothing is
ingested: the run transforms what is already in the warehouse and exports it.
"""
from __future__ import annotations

import argparse
import sys

from iq_etl.cli.flow_commands import (
    add_dask_arguments,
    add_export_arguments,
    add_ingest_arguments,
    check_numbers,
    export_params,
    ingest_params,
    prepare_prefect,
    print_result,
    run_flow,
)
from iq_etl.ingest.request import DEFAULT_MAX_EPOCHS, DEFAULT_MAX_RPC_SLOTS, SOURCES
from iq_etl.settings import load_settings


def register(sub) -> None:
    p = sub.add_parser("run", help="run the pipeline once (ingest → transform → export) as a Prefect flow",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ingest_arguments(p, SOURCES + ("follow",))
    add_dask_arguments(p)
    add_export_arguments(p)
    p.add_argument("--max-epochs", type=int, default=None, metavar="N",
                   help=f"--source follow: archived epochs read from CAR this run (default {DEFAULT_MAX_EPOCHS})")
    p.add_argument("--max-rpc-slots", type=int, default=None, metavar="N",
                   help=f"--source follow: slots read over RPC this run (default {DEFAULT_MAX_RPC_SLOTS:,})")
    p.add_argument("--dry-run", action="store_true", help="export: record what would be sent, send nothing")
    p.add_argument("--full-refresh", action="store_true", help="transform: rebuild incremental models")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_numbers(args)
    prepare_prefect(settings, "run")
    from iq_etl.orchestration.flows import pipeline_flow

    result, delivery_failure = run_flow(
        pipeline_flow, slot_spec=args.slot_spec, ingest=ingest_params(args), export=export_params(args),
        full_refresh=args.full_refresh, lock_timeout_s=args.lock_timeout, progress=not args.json and sys.stderr.isatty())
    print_result(result, args.json)
    if delivery_failure:
        print(f"flow run failed: {delivery_failure}", file=sys.stderr)
    failed = any(not ex.ok for ex in result.export)
    incomplete = result.ingest is not None and result.ingest.incomplete
    return 1 if failed or incomplete else 0
