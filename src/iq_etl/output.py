"""Printing query results for people (a table, vertical records) or programs (csv, json).

Human output never writes a warehouse value as it comes: `visible` turns control characters (C0, DEL,
C1) and Unicode bidi/line controls into escapes like `\\x1b` / `\\u202e` (a hostile upload key cannot
move the cursor, clear the screen or reverse the text around it) and cuts a long value with a visible
`…(N chars)` marker (a 100 KB cell cannot make a table 300,000 characters wide). Clean text, e.g. an
upload key people paste, comes out unchanged. Machine formats (csv, json) keep exact values.
"""
from __future__ import annotations

import csv
import datetime as _dt
import decimal
import io
import itertools
import json
import re
import sys
from typing import Any, Sequence

CELL_LIMIT = 200  # characters of one value shown in human output (escapes counted), then `…(N chars)`

# C0 controls, DEL, C1 controls, Arabic letter mark, LRM/RLM, line/paragraph separators, the bidi
# embeddings/overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return _SHORT.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible(value: Any, limit: int | None = CELL_LIMIT) -> str:
    """`value` as text safe to show a person: control characters escaped, cut after `limit`
    characters (None: never) with `…(N chars)`, N the length of the whole value."""
    text = "" if value is None else str(value)
    if (limit is None or len(text) <= limit) and not _UNSAFE.search(text):
        return text  # the common case: clean and short, unchanged
    out: list[str] = []
    width = 0
    pos = 0
    for m in itertools.chain(_UNSAFE.finditer(text), (None,)):
        plain = text[pos:] if m is None else text[pos:m.start()]
        for piece, escape in ((plain, False), ("" if m is None else _escape_char(m.group()), True)):
            if limit is not None and width + len(piece) > limit:
                if not escape:  # plain text is cut anywhere, an escape is kept whole or left out
                    out.append(piece[: limit - width])
                return "".join(out) + f"…({len(text)} chars)"
            out.append(piece)
            width += len(piece)
        if m is not None:
            pos = m.end()
    return "".join(out)


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


def _human(value: Any, null: str = "") -> str:
    if value is None:
        return null
    return visible(jsonable(value))


def print_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", title: str | None = None,
               file=None, header: bool = True) -> None:
    """fmt: `table` and `vertical` for people (values escaped and cut, see `visible`), `csv` and `json`
    for programs (exact values). `header=False` leaves out the csv header row (ClickHouse's CSV)."""
    out = file or sys.stdout
    if fmt == "json":
        json.dump([dict(zip(columns, (jsonable(v) for v in row))) for row in rows], out, indent=2)
        out.write("\n")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if header:
            writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else jsonable(v) for v in row])
        out.write(buf.getvalue())
    elif fmt == "vertical":
        _print_vertical(columns, rows, out)
    else:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        # Text, not str: a value like "[/red]" is shown as typed, never read as rich markup.
        table = Table(title=None if title is None else Text(visible(title)))
        for col in columns:
            table.add_column(Text(visible(col)), overflow="fold")  # a narrow terminal wraps a cell, never cuts it
        for row in rows:
            table.add_row(*(Text(_human(v)) for v in row))
        # Not a terminal (a pipe, a file, a log): no width to fit, so no 80-column default either.
        tty = getattr(out, "isatty", lambda: False)()
        Console(file=out, width=None if tty else 100_000).print(table)


def _print_vertical(columns: Sequence[str], rows: Sequence[Sequence[Any]], out) -> None:
    """ClickHouse's Vertical layout: one `name: value` line per column, rows numbered."""
    names = [visible(c) for c in columns]
    width = max((len(n) for n in names), default=0)
    for i, row in enumerate(rows, 1):
        if i > 1:
            out.write("\n")
        label = f"Row {i}:"
        out.write(f"{label}\n{'─' * len(label)}\n")
        for name, value in zip(names, row):
            out.write(f"{name}:{' ' * (width - len(name) + 1)}{_human(value, 'ᴺᵁᴸᴸ')}\n")
