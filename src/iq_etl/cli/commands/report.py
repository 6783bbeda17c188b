"""`iq-etl report`: the coverage report, one self-contained HTML page (no script, nothing fetched:
it opens offline): scanned slot runs vs gaps per epoch, uploads by status x generation, a chunk map
per incomplete upload, and the delivery state per export target."""
from __future__ import annotations

import argparse
from pathlib import Path

from iq_etl.errors import IQEtlError
from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse
from iq_etl.warehouse.schema import migrate


def register(sub) -> None:
    from iq_etl.report.data import Limits

    defaults = Limits()
    p = sub.add_parser("report", help="write the coverage report: one self-contained HTML page",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder to write index.html into (default: <IQ_ETL_HOME>/report, i.e. ./.iq-etl/report)")
    p.add_argument("--max-uploads", type=int, default=defaults.chunk_maps, metavar="N",
                   help=f"incomplete uploads given a chunk map, the worst first (default {defaults.chunk_maps})")
    p.add_argument("--max-cells", type=int, default=defaults.cells, metavar="N",
                   help=f"chunk indexes drawn per map (default {defaults.cells})")
    p.set_defaults(handler=run)


def run(args) -> int:
    from iq_etl.report import default_report_dir, write_report
    from iq_etl.report.data import Limits

    try:
        limits = Limits(chunk_maps=args.max_uploads, cells=args.max_cells)
    except ValueError as exc:
        raise IQEtlError(str(exc)) from None
    settings = load_settings()
    out_dir = args.out if args.out is not None else default_report_dir(settings)
    with Warehouse(settings) as client:
        migrate(client, settings.clickhouse_cluster)
        written = write_report(client, out_dir, limits, settings=settings)
    print(f"warehouse: {settings.warehouse_name}")
    print(f"report: {written.path}")
    print(f"open:   {written.url}")
    return 0
