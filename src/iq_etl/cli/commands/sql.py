"""`iq-etl sql`: ad-hoc SQL against the configured warehouse, e.g. chunk coverage questions.

One statement per call (a trailing `;` is fine; text after it that is more SQL is refused). The query is
the positional argument, `--file PATH`, or `--file -` (standard input). Parameters fill `{NAME:Type}`
placeholders: `--param NAME=VALUE`, or as clickhouse-client spells them, `--param_NAME=VALUE`.
Output: `--format`, or a trailing `FORMAT` clause with ClickHouse's meaning (`CSV`/`TSV` have no header
row, `CSVWithNames`/`TSVWithNames` have one). `table` and `vertical` are for people: control
characters in values are escaped and long values cut; the other formats keep values exact.
"""
from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from iq_etl.errors import IQEtlError
from iq_etl.settings import load_settings
from iq_etl.warehouse.client import Warehouse

# --format → how it is printed: our own renderers, or ClickHouse's output format written as it comes.
OWN_FORMATS = ("table", "csv", "json", "vertical")
CLICKHOUSE_FORMATS = {"tsv": "TabSeparatedWithNames", "jsoneachrow": "JSONEachRow", "parquet": "Parquet"}
_NO_HEADER = {"tsv": "TabSeparated"}  # ClickHouse's format when the FORMAT clause asks for no header row
FORMATS = ("table", "csv", "json", "tsv", "vertical", "jsoneachrow", "parquet")
# A trailing FORMAT clause in the query names one of these (→ --format, header row): the query runs
# without it, printed so. CSV and TSV have no header row, as in ClickHouse.
_CLAUSE_FORMATS = {"vertical": ("vertical", True), "tabseparated": ("tsv", False), "tsv": ("tsv", False),
                   "tabseparatedwithnames": ("tsv", True), "tsvwithnames": ("tsv", True),
                   "jsoneachrow": ("jsoneachrow", True), "parquet": ("parquet", True), "csv": ("csv", False),
                   "csvwithnames": ("csv", True), "json": ("json", True), "pretty": ("table", True),
                   "prettycompact": ("table", True)}
_FORMAT_CLAUSE = re.compile(r"\s+FORMAT\s+([A-Za-z]+)\s*;?\s*$", re.IGNORECASE)
_PARAM_PREFIX = "--param_"
_HEREDOC = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


class _ClickHouseClientParams(argparse.ArgumentParser):
    """Also reads clickhouse-client's `--param_NAME=VALUE` (and `--param_NAME VALUE`) as `--param NAME=VALUE`."""

    def parse_known_args(self, args=None, namespace=None):
        try:
            respelled = None if args is None else respell_params(list(args))
        except ValueError as exc:
            self.error(str(exc))  # a usage error: one line and exit 2, as argparse's own
        return super().parse_known_args(respelled, namespace)


def respell_params(args: list[str]) -> list[str]:
    """`--param_NAME=VALUE` and `--param_NAME VALUE` → `--param NAME=VALUE` (ValueError: no value)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return out + args[i:]
        if arg.startswith(_PARAM_PREFIX) and len(arg) > len(_PARAM_PREFIX):
            name, eq, value = arg[len(_PARAM_PREFIX):].partition("=")
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"{arg}: expected {arg}=VALUE")
                i += 1
                value = args[i]
            out += ["--param", f"{name}={value}"]
        else:
            out.append(arg)
        i += 1
    return out


def register(sub) -> None:
    p = sub.add_parser("sql", help="run an ad-hoc query and print the result",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if type(p) is argparse.ArgumentParser:  # subclassed to accept --param_NAME=VALUE
        p.__class__ = _ClickHouseClientParams
    p.add_argument("query", nargs="?", help="SQL text (or use --file); a trailing FORMAT clause sets --format")
    p.add_argument("--file", metavar="PATH",
                   help="read the query from a file (e.g. sql/queries/coverage_summary.sql), or from stdin with -")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="table (default), csv, json, tsv, vertical, jsoneachrow, parquet")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="query parameter for {NAME:Type} placeholders (repeatable; --param_NAME=VALUE works too)")
    p.set_defaults(handler=run)


def split_statements(text: str) -> list[str]:
    """The statements in `text`, split at `;` outside string literals ('…', with \\ and '' escapes),
    quoted identifiers ("…", `…`), heredocs ($tag$…$tag$) and comments (--, # , #!, /* */ nested).
    Pieces holding only whitespace and comments are left out; each statement keeps its comments."""
    statements: list[str] = []
    start, i, n = 0, 0, len(text)
    significant = False
    while i < n:
        ch = text[i]
        if ch in "'\"`":
            i += 1
            while i < n and text[i] != ch:
                i += 2 if text[i] == "\\" else 1
            i += 1
            significant = True
            continue
        if text.startswith(("--", "# ", "#!"), i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        if ch == "$":
            m = _HEREDOC.match(text, i)
            if m:
                end = text.find(m.group(), m.end())
                i = n if end < 0 else end + len(m.group())
                significant = True
                continue
        if ch == ";":
            if significant:
                statements.append(text[start:i])
            start, significant = i + 1, False
        elif not ch.isspace():
            significant = True
        i += 1
    if significant:
        statements.append(text[start:])
    return statements


def one_statement(text: str) -> str:
    """The one statement in `text` (without its `;`); several are refused in one line."""
    statements = split_statements(text)
    if not statements:
        raise IQEtlError("the query is empty")
    if len(statements) > 1:
        raise IQEtlError(f"{len(statements)} statements in one query: iq-etl sql runs one at a time "
                         "(a `;` outside quotes ends a statement)")
    return statements[0].strip()


def split_format_clause(text: str, flag: str | None) -> tuple[str, str, bool]:
    """(the query without a trailing FORMAT clause, the output format, whether it has a header row).
    The clause may not contradict --format."""
    m = _FORMAT_CLAUSE.search(text)
    if not m:
        return text.rstrip().rstrip(";"), flag or "table", True
    named = _CLAUSE_FORMATS.get(m.group(1).lower())
    if named is None:
        raise IQEtlError(f"FORMAT {m.group(1)} is not supported here; drop the clause and use --format "
                         f"({', '.join(FORMATS)})")
    if flag and flag != named[0]:
        raise IQEtlError(f"the query says FORMAT {m.group(1)} but --format is {flag}: keep one")
    return text[:m.start()], named[0], named[1]


def _hint(text: str) -> str:
    if "UNKNOWN_DATABASE" in text:
        return "; the warehouse has no iq schema yet: run `iq-etl migrate` (raw tables) and `iq-etl transform` (models)"
    if "UNKNOWN_TABLE" in text and "iq." in text:
        return "; models (session_completeness, ...) exist after `iq-etl transform`, raw tables after `iq-etl migrate`"
    return ""


def read_query(args) -> str:
    if (args.query is not None) == (args.file is not None):
        raise IQEtlError("give either a query or --file")
    if args.file is None:
        return str(args.query)
    if args.file == "-":
        return sys.stdin.read()
    try:
        with open(args.file, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise IQEtlError(f"--file {args.file}: no such file (`--file -` reads standard input)") from None
    except IsADirectoryError:
        raise IQEtlError(f"--file {args.file}: a folder, not a file") from None
    except UnicodeDecodeError:
        raise IQEtlError(f"--file {args.file}: not UTF-8 text") from None
    except OSError as exc:
        raise IQEtlError(f"--file {args.file}: {exc.strerror or exc}") from None


def run(args) -> int:
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from iq_etl.output import print_rows

    text, fmt, header = split_format_clause(one_statement(read_query(args)), args.format)
    if fmt == "parquet" and sys.stdout.isatty():
        raise IQEtlError("parquet is binary: redirect the output to a file (iq-etl sql ... --format parquet > out.parquet)")
    params: dict[str, Any] = {}
    for item in args.param:
        if "=" not in item:
            raise IQEtlError(f"--param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        params[k] = v
    settings = load_settings()
    with Warehouse(settings) as client:
        try:
            if fmt in CLICKHOUSE_FORMATS:
                ch_format = CLICKHOUSE_FORMATS[fmt] if header else _NO_HEADER.get(fmt, CLICKHOUSE_FORMATS[fmt])
                data = client.raw_query(text, parameters=params or None, fmt=ch_format)
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
                return 0
            result = client.query(text, parameters=params or None)
        except ClickHouseError as exc:
            first = str(exc).strip().splitlines()[0][:500]
            raise IQEtlError(first + _hint(first)) from None
        print_rows(result.column_names, result.result_rows, fmt, header=header)
    return 0
