"""`iq-etl sql`: ad-hoc SQL against the configured warehouse, e.g. chunk coverage questions."""
from __future__ import annotations

from pathlib import Path

from iq_etl.errors import IQEtlError
from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse


def register(sub) -> None:
    p = sub.add_parser("sql", help="run an ad-hoc query and print the result")
    p.add_argument("query", nargs="?", help="SQL text (or use --file)")
    p.add_argument("--file", type=Path, help="read the query from a file, e.g. sql/queries/coverage_summary.sql")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="query parameter for {NAME:Type} placeholders (repeatable)")
    p.set_defaults(handler=run)


def run(args) -> int:
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from iq_etl.output import print_rows

    if bool(args.query) == bool(args.file):
        raise IQEtlError("give either a query or --file")
    text = args.file.read_text(encoding="utf-8") if args.file else args.query
    params = {}
    for item in args.param:
        if "=" not in item:
            raise IQEtlError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        params[k] = v
    settings = load_settings()
    with Warehouse(settings) as client:
        try:
            result = client.query(text, parameters=params or None)
        except ClickHouseError as exc:
            raise IQEtlError(str(exc).strip().splitlines()[0][:500]) from None
        print_rows(result.column_names, result.result_rows, args.format)
    return 0
