"""Printing query results for people (a table) or programs (csv, json)."""
from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import json
import sys
from typing import Any, Sequence


def jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.hex()
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", title: str | None = None,
               file=None) -> None:
    out = file or sys.stdout
    if fmt == "json":
        json.dump([dict(zip(columns, (jsonable(v) for v in row))) for row in rows], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else jsonable(v) for v in row])
        out.write(buf.getvalue())
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for col in columns:
            table.add_column(str(col), overflow="fold")  # a narrow terminal wraps a cell, never cuts it
        for row in rows:
            table.add_row(*("" if v is None else str(jsonable(v)) for v in row))
        # Not a terminal (a pipe, a file, a log): no width to fit, so no 80-column default either.
        tty = getattr(out, "isatty", lambda: False)()
        Console(file=out, width=None if tty else 100_000).print(table)
