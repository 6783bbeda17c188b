"""`iq-etl status`: uploads by status and generation, the top incomplete uploads with their missing
chunk ranges and where to rescan, and scan coverage gaps (from the dbt marts)."""
from __future__ import annotations

import argparse

from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse
from iq_etl.warehouse.schema import migrate


def register(sub) -> None:
    p = sub.add_parser("status", help="uploads by status, incomplete uploads with missing ranges, scan gaps",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--markdown", action="store_true", help="print the report as markdown")
    p.add_argument("--limit", type=int, default=20, help="incomplete uploads and gaps to list (default 20)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from iq_etl.status import print_status, render_status, status_report

    if args.limit < 1:
        raise SystemExit("iq-etl status: --limit must be at least 1")
    settings = load_settings()
    with Warehouse(settings) as client:
        migrate(client, settings.clickhouse_cluster)
        report = status_report(client, warehouse=settings.warehouse_name, program_ids=settings.program_ids,
                               incomplete_limit=args.limit, gap_limit=args.limit)
    if args.json:
        print(render_status(report, "json"))
    elif args.markdown:
        print(render_status(report, "markdown"))
    else:
        print_status(report)
    return 0
