"""`iq-etl` command line. Each command lives in its own module under `cli/commands/` and exposes
`register(subparsers)`; this module only discovers them, sets up logging and turns user errors
(`IQEtlError`) into one line on stderr and a non-zero exit, without a traceback."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from iq_etl.errors import IQEtlError

from iq_etl.cli import commands
LEVELS = {"trace": 5, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iq-etl",
        description="Recover IQ Labs uploads from Solana history into ClickHouse and deliver them.",
    )
    parser.add_argument("--log-level", default=None, choices=sorted(LEVELS),
                        help="logging verbosity (default: IQ_LOG_LEVEL or info)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def setup_logging(level_name: str | None) -> None:
    import os

    name = (level_name or os.environ.get("IQ_LOG_LEVEL") or os.environ.get("RUST_LOG") or "info").lower()
    level = LEVELS.get(name, logging.INFO)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    setup_logging(args.log_level)
    try:
        code = args.handler(args)
    except IQEtlError as exc:
        print(f"iq-etl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"iq-etl {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
