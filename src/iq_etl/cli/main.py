"""`iq-etl` command line. Each command lives in its own module under `cli/commands/` and exposes
`register(subparsers)`; this module only discovers them, sets up logging and turns user errors
(`IQEtlError`) into one line on stderr and a non-zero exit, without a traceback."""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import logging
import os
import pkgutil
import sys

from iq_etl.cli import commands
from iq_etl.errors import IQEtlError

LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iq-etl",
        description="Recover IQ Labs uploads from Solana history into ClickHouse and deliver them.",
    )
    parser.add_argument("--log-level", default=None, choices=sorted(LEVELS),
                        help="logging verbosity (default: IQ_LOG_LEVEL or info)")
    parser.add_argument("--log-format", default=None, choices=("text", "json"),
                        help="log lines as text or one JSON object per line (default: IQ_LOG_FORMAT or text)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (+ exception, flow/task run names)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _dt.datetime.fromtimestamp(record.created, _dt.timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key in ("flow_run_name", "task_run_name"):
            if getattr(record, key, None):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def log_format(choice: str | None = None) -> str:
    return (choice or os.environ.get("IQ_LOG_FORMAT") or "text").strip().lower()


def apply_log_format(choice: str | None = None) -> None:
    """With `json`, every console handler (ours and Prefect's) writes JSON lines. Called again once
    Prefect has set up its own handlers."""
    if log_format(choice) != "json":
        return
    formatter = JsonLogFormatter()
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setFormatter(formatter)


def setup_logging(level_name: str | None, format_name: str | None = None) -> None:
    from iq_etl.settings import logging_settings

    configured_level, configured_format = logging_settings()   # IQ_LOG_LEVEL / RUST_LOG / IQ_LOG_FORMAT (+ .env)
    level = LEVELS.get((level_name or configured_level).lower(), logging.INFO)
    fmt = (format_name or configured_format).strip().lower()
    if fmt not in ("text", "json"):
        raise IQEtlError(f"IQ_LOG_FORMAT: {fmt!r} is not one of text, json")
    os.environ["IQ_LOG_FORMAT"] = fmt  # flows started from this process log the same way
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    apply_log_format(fmt)


def check_settings() -> None:
    """Every setting, read and checked before any work, whatever the command: a malformed value (or
    `IQ_SCANNER=fast`, `IQ_EXPORT_TIMEOUT=abc`) stops the command now, not after ingest and dbt ran.
    Unknown IQ_* / JETSTREAMER_* names are warned about here too (once)."""
    from iq_etl.ingest.sources.car.scanner import resolve as resolve_scanner
    from iq_etl.settings import load_settings

    load_settings()           # every IQ_* / JETSTREAMER_* value, the export limits and the scanner name
    resolve_scanner(None)     # and IQ_SCANNER=native when the compiled walker is not built


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        setup_logging(args.log_level, args.log_format)
        check_settings()
        code = args.handler(args)
    except IQEtlError as exc:
        print(f"iq-etl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - only the warehouse's own errors become one line; the rest re-raise
        from clickhouse_connect.driver.exceptions import ClickHouseError

        if isinstance(exc, ClickHouseError) or (isinstance(exc, OSError) and exc.errno == 28):  # 28: ENOSPC
            from iq_etl.warehouse.client import clean_error

            print(f"iq-etl {args.command}: warehouse error: {clean_error(exc)}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print(f"iq-etl {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
