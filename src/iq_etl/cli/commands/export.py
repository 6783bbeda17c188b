"""`iq-etl export`: deliver complete uploads (iq.sessions_ready_to_export) to the reader backend or
a file:// folder, once each, recording every attempt in iq.exports."""
from __future__ import annotations

import json

from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse
from iq_etl.warehouse.schema import migrate


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="send complete uploads to the reader backend (or a file:// folder) exactly once",
        description="Send every complete upload not yet delivered to the target. Default target: "
                    "IQ_READER_BASE_URL + IQ_READER_ENDPOINT_PATH (bearer token from IQ_READER_TOKEN). "
                    "Limits: IQ_EXPORT_MAX_BYTES, IQ_EXPORT_MAX_ATTEMPTS, IQ_EXPORT_TIMEOUT, IQ_EXPORT_BACKOFF.",
    )
    p.add_argument("--target", metavar="URL",
                   help="http(s):// endpoint or file:///abs/dir, file://./rel/dir (default: the reader backend)")
    p.add_argument("--dry-run", action="store_true", help="record what would be sent (status dry_run); send nothing")
    p.add_argument("--concurrency", type=_positive, default=None,
                   help="uploads sent at once (default: IQ_EXPORT_CONCURRENCY or 8)")
    p.add_argument("--limit", type=_positive, default=None, help="send at most this many uploads")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(handler=run)


def run(args) -> int:
    from iq_etl.export import ExportOptions, export_ready
    from iq_etl.output import print_rows

    settings = load_settings()
    options = ExportOptions.from_settings(settings.export)
    concurrency = args.concurrency if args.concurrency is not None else settings.export.concurrency
    with Warehouse(settings) as client:
        migrate(client, settings.clickhouse_cluster)
        summary = export_ready(settings, client, target=args.target, dry_run=args.dry_run,
                               concurrency=concurrency, limit=args.limit, options=options)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        counts = [("target", summary.target), ("run id", summary.run_id), ("selected", summary.selected)]
        if summary.dry_run:
            counts += [("would send", summary.would_send), ("would refuse", summary.refused)]
        else:
            counts += [("delivered", summary.delivered), ("failed", summary.failed), ("refused", summary.refused),
                       ("attempts", summary.attempts), ("retries", summary.retries),
                       ("payload bytes delivered", summary.bytes_delivered)]
        print_rows(["", "value"], counts, "table", title="export" + (" (dry run)" if summary.dry_run else ""))
        if summary.failures:
            shown = summary.failures[:20]
            print_rows(["upload_key", "status", "http_status", "error"],
                       [(f["upload_key"], f["status"], f["http_status"], f["error"]) for f in shown], "table",
                       title=f"not delivered ({len(summary.failures)})")
    return 0 if summary.ok else 1
