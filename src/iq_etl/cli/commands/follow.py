"""`iq-etl follow`: one round of following the chain (iq_etl.ingest.follow): from the start slot
(IQ_START_SLOT, or the first slot of the oldest configured generation) to the finalized tip, whole
epochs the archive serves from CAR (oldest first, --max-epochs per round), the slots past the
archive's edge over RPC (--max-rpc-slots per round); nothing covered by any source is read again.
Prints where the covered frontier stands against the tip (the lag) and what is left for the next
round; records the round in iq.runs. Exit 1 when the lag is above IQ_MAX_LAG (slots).

Scheduled: the pipeline deployment's default (`source: follow`) runs a round, then transform and export."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys

from iq_etl.ingest.follow import DEFAULT_MAX_EPOCHS, DEFAULT_MAX_RPC_SLOTS, follow_chain, lag_verdict
from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse
from iq_etl.warehouse.schema import migrate


def register(sub) -> None:
    p = sub.add_parser("follow", help="one round of following the chain: archived epochs from CAR, the rest over RPC",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start-slot", type=int, default=None, help="first slot to cover (default IQ_START_SLOT, or the "
                   "first slot of the oldest configured generation)")
    p.add_argument("--max-epochs", type=int, default=DEFAULT_MAX_EPOCHS,
                   help=f"archived epochs read from CAR this round (default {DEFAULT_MAX_EPOCHS})")
    p.add_argument("--max-rpc-slots", type=int, default=DEFAULT_MAX_RPC_SLOTS,
                   help=f"slots read over RPC this round (default {DEFAULT_MAX_RPC_SLOTS:,})")
    p.add_argument("--car-url", default=None, help="CAR location template with {epoch} (default IQ_CAR_URL)")
    p.add_argument("--rpc-url", default=None, help="JSON-RPC endpoint (default IQ_RPC_URL)")
    p.add_argument("--program-id", action="append", default=[], metavar="ID", help="also follow this program id")
    p.add_argument("--json", action="store_true", help="print the round's result as JSON")
    p.set_defaults(handler=run)


def run(args) -> int:
    from iq_etl.warehouse.runs import RunRecord, complete_uploads, record_run

    settings = load_settings()
    started = dt.datetime.now(dt.timezone.utc)
    with Warehouse(settings) as client:
        migrate(client, settings.clickhouse_cluster)
        result = follow_chain(settings, client, car_url=args.car_url, rpc_url=args.rpc_url,
                              start_slot=args.start_slot, max_epochs=args.max_epochs,
                              max_rpc_slots=args.max_rpc_slots, extra_program_ids=tuple(args.program_id),
                              progress=not args.json and sys.stderr.isatty())
        over = lag_verdict(result.lag_slots, settings.max_lag)
        record_run(client, RunRecord(
            run_id=started.strftime("follow-%Y%m%dT%H%M%S"), command="follow", started_at=started,
            status="failed" if over else "ok", slots_covered=result.slots_covered, rows_written=result.rows_written,
            uploads_complete=complete_uploads(client), message=over or result.line(), tip_slot=result.tip_slot,
            tip_time=result.tip_time, frontier_slot=result.frontier_slot, frontier_time=result.frontier_time,
            warehouse=settings.warehouse_name))
    if args.json:
        print(json.dumps({**result.to_json(), "warehouse": settings.warehouse_name}, indent=2))
    else:
        print(f"warehouse: {settings.warehouse_name}")
        print(result.line())
    if over:
        print(f"iq-etl follow: {over}", file=sys.stderr)
        return 1
    return 0


__all__ = ["register", "run"]
