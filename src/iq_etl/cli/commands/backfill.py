"""`iq-etl backfill SLOT_SPEC`: ingest an epoch range as a Prefect flow run (`backfill_flow`), epoch by
epoch, each epoch's sub-ranges fanned out as Prefect tasks on a Dask cluster.

    iq-etl backfill 700-720 --dask-address tcp://scheduler:8786     # an existing cluster (or IQ_DASK_ADDRESS)
    iq-etl backfill 930 --dask-workers 4                            # a local cluster of 4 processes
    iq-etl backfill 930                                             # no cluster: in this process

Progress per epoch is the Prefect artifact `iq-etl-backfill` (and one line per epoch here). Rerunning
the same command resumes: finished sub-ranges are skipped. An epoch that fails (an archive not found, a
source error) does not stop the next ones; the run then fails and names them (exit status 1).
Transform and export are separate (`iq-etl transform`, `iq-etl export`, or `iq-etl run` without a slot
spec). How to run N workers against one ClickHouse: docs/SCALING.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from iq_etl.cli.flow_commands import add_dask_arguments, check_numbers, ingest_params, prepare_prefect
from iq_etl.ingest.request import DEFAULTS
from iq_etl.settings import load_settings

if TYPE_CHECKING:
    from iq_etl.orchestration.backfill import BackfillReport


def register(sub) -> None:
    p = sub.add_parser("backfill", help="ingest an epoch range on a Dask cluster as a Prefect flow (progress per epoch)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("slot_spec", metavar="SLOT_SPEC", help="A-B (inclusive epochs), N (an epoch) or S:E (slots, cut at "
                                                         "epoch boundaries)")
    p.add_argument("--source", choices=("car", "rpc-blocks"), default=DEFAULTS.source)
    p.add_argument("--car-url", metavar="TEMPLATE", help="CAR path/URL with {epoch} (default IQ_CAR_URL or Old Faithful); "
                   "every Dask worker must be able to read it")
    p.add_argument("--rpc-url", help="Solana JSON-RPC URL for --source rpc-blocks")
    add_dask_arguments(p)
    p.add_argument("--subrange-slots", type=int, default=DEFAULTS.subrange_slots,
                   help=f"slots per task and per resumable sub-range (default {DEFAULTS.subrange_slots})")
    p.add_argument("--program-id", action="append", default=[], metavar="ID",
                   help="also ingest this program id (e.g. a development chain's extra program); repeatable")
    p.add_argument("--resume", action=argparse.BooleanOptionalAction, default=DEFAULTS.resume,
                   help="skip sub-ranges an earlier run completed (default on)")
    p.add_argument("--lock-timeout", type=float, default=3600.0,
                   help="seconds to wait for another run holding the warehouse (default 3600)")
    p.add_argument("--json", action="store_true", help="print the per-epoch report as JSON")
    p.set_defaults(handler=run)


def print_report(report: BackfillReport, as_json: bool) -> None:
    if as_json:
        json.dump(report.to_json(), sys.stdout, indent=2)
        print()
        return
    print(f"backfill {report.slot_spec} on {report.where}:")
    for e in report.epochs:
        line = (f"  epoch {e.epoch} ({e.first_slot}:{e.last_slot}): {e.status}, {e.subranges} sub-range(s) "
                f"({e.skipped} already done), {e.transactions:,} transactions, {e.rows:,} IQ rows, "
                f"{round(e.seconds, 1)}s")
        print(line + (f": {e.error[:200]}" if e.error else ""))


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_numbers(args)
    prepare_prefect(settings, "backfill")
    from iq_etl.orchestration.backfill import BackfillIncomplete, backfill_flow
    from iq_etl.orchestration.shutdown import raise_if_interrupted

    state: Any = backfill_flow(slot_spec=args.slot_spec, ingest=ingest_params(args), lock_timeout_s=args.lock_timeout,
                               return_state=True)
    raise_if_interrupted()
    data = state.result(raise_on_failure=False)
    if isinstance(data, BackfillIncomplete):
        print_report(data.report, args.json)
        print(f"flow run failed: {data}", file=sys.stderr)
        return 1
    if isinstance(data, BaseException):
        raise data
    print_report(data, args.json)
    return 0
