"""`iq-etl sql`: ad-hoc SQL against the configured warehouse, e.g. chunk coverage questions."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from iq_etl.errors import IQEtlError
from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse

# --format → how it is printed: our own renderers, or ClickHouse's output format written as it comes.
OWN_FORMATS = ("table", "csv", "json")
CLICKHOUSE_FORMATS = {"vertical": "Vertical", "tsv": "TabSeparatedWithNames", "jsoneachrow": "JSONEachRow",
                      "parquet": "Parquet"}
FORMATS = OWN_FORMATS + tuple(CLICKHOUSE_FORMATS)
# A trailing FORMAT clause in the query names one of these: the query runs without it, printed so.
_CLAUSE_FORMATS = {"vertical": "vertical", "tabseparated": "tsv", "tabseparatedwithnames": "tsv", "tsv": "tsv",
                   "tsvwithnames": "tsv", "jsoneachrow": "jsoneachrow", "parquet": "parquet", "csv": "csv",
                   "csvwithnames": "csv", "json": "json", "pretty": "table", "prettycompact": "table"}
_FORMAT_CLAUSE = re.compile(r"\s+FORMAT\s+([A-Za-z]+)\s*;?\s*$", re.IGNORECASE)


def register(sub) -> None:
    p = sub.add_parser("sql", help="run an ad-hoc query and print the result")
    p.add_argument("query", nargs="?", help="SQL text (or use --file); a trailing FORMAT clause sets --format")
    p.add_argument("--file", type=Path, help="read the query from a file, e.g. sql/queries/coverage_summary.sql")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default), csv, json, or ClickHouse's vertical, tsv, jsoneachrow, parquet")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="query parameter for {NAME:Type} placeholders (repeatable)")
    p.set_defaults(handler=run)


def split_format_clause(text: str, flag: str | None) -> tuple[str, str]:
    """(the query without a trailing FORMAT clause, the output format). The clause may not contradict --format."""
    m = _FORMAT_CLAUSE.search(text)
    if not m:
        return text.rstrip().rstrip(";"), flag or "table"
    named = _CLAUSE_FORMATS.get(m.group(1).lower())
    if named is None:
        raise IQEtlError(f"FORMAT {m.group(1)} is not supported here; drop the clause and use --format "
                         f"({', '.join(FORMATS)})")
    if flag and flag != named:
        raise IQEtlError(f"the query says FORMAT {m.group(1)} but --format is {flag}: keep one")
    return text[:m.start()], named


def _hint(text: str) -> str:
    if "UNKNOWN_DATABASE" in text:
        return "; the warehouse has no iq schema yet: run `iq-etl migrate` (raw tables) and `iq-etl transform` (models)"
    if "UNKNOWN_TABLE" in text and "iq." in text:
        return "; models (session_completeness, ...) exist after `iq-etl transform`, raw tables after `iq-etl migrate`"
    return ""


def run(args) -> int:
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from iq_etl.output import print_rows

    if bool(args.query) == bool(args.file):
        raise IQEtlError("give either a query or --file")
    text = args.file.read_text(encoding="utf-8") if args.file else args.query
    text, fmt = split_format_clause(text, args.format)
    if fmt == "parquet" and sys.stdout.isatty():
        raise IQEtlError("parquet is binary: redirect the output to a file (iq-etl sql ... --format parquet > out.parquet)")
    params = {}
    for item in args.param:
        if "=" not in item:
            raise IQEtlError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        params[k] = v
    settings = load_settings()
    with Warehouse(settings) as client:
        try:
            if fmt in CLICKHOUSE_FORMATS:
                data = client.raw_query(text, parameters=params or None, fmt=CLICKHOUSE_FORMATS[fmt])
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
                return 0
            result = client.query(text, parameters=params or None)
        except ClickHouseError as exc:
            first = str(exc).strip().splitlines()[0][:500]
            raise IQEtlError(first + _hint(first)) from None
        print_rows(result.column_names, result.result_rows, fmt)
    return 0
