"""`iq-etl docs`: dbt's documentation site for the models (lineage, descriptions, tests), with every
column's type read from the configured warehouse: `dbt docs generate` in-process, through the chDB
seam on the embedded warehouse. `--serve` then serves the site on 127.0.0.1 until Ctrl-C (the
warehouse is released first); without it, open `static_index.html` (works from a file:// URL)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from iq_etl.errors import IQEtlError
from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse
from iq_etl.warehouse.schema import migrate


def register(sub) -> None:
    p = sub.add_parser("docs", help="generate (and optionally serve) the dbt docs site, typed from the warehouse",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="folder for the site (default: <IQ_ETL_HOME>/dbt/docs)")
    p.add_argument("--serve", action="store_true", help="serve the site on 127.0.0.1 until interrupted")
    p.add_argument("--port", type=int, default=8080, help="port for --serve (default 8080; 0 picks a free one)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from iq_etl.transform.docs import generate_docs, serve_docs

    if not 0 <= args.port <= 65535:
        raise IQEtlError(f"--port {args.port}: not a TCP port")
    settings = load_settings()
    with Warehouse(settings) as client:
        migrate(client, settings.clickhouse_cluster)  # dbt's sources must exist
        site = generate_docs(settings, args.out)
    print(f"docs: {site.path} ({site.nodes} models and sources, {site.columns} typed columns in catalog.json)")
    print(f"open: {site.static_index.as_uri()}")
    if not args.serve:
        return 0
    try:
        with serve_docs(site.path, port=args.port) as url:
            print(f"serving {url} (Ctrl-C stops)", flush=True)
            while True:
                time.sleep(3600)
    except OSError as exc:
        raise IQEtlError(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        print("stopped")
    return 0
