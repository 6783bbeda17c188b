"""`iq-etl ingest`: chain history → IQ rows in the warehouse (the seed runner's interface).

Which source when:
  car             dense history from Old Faithful CAR archives (file, folder template or HTTP); no RPC
                  limits, the fastest way through whole epochs.
  rpc-signatures  a few known sessions: discovers their signatures (--session-pda) and fetches each
                  transaction; cheapest when the uploads are few and scattered.
  rpc-blocks      small recent windows (not yet in Old Faithful), block by block over getBlock.
"""
from __future__ import annotations

import json
import sys

from iq_etl.cli.flow_commands import add_ingest_arguments
from iq_etl.errors import IQEtlError
from iq_etl.ingest.request import DEFAULTS, IngestRequest
from iq_etl.ingest.run import IngestSummary, run_ingest
from iq_etl.settings import load_settings
from iq_etl.warehouse.client import close_client


def register(sub) -> None:
    p = sub.add_parser("ingest", help="load IQ instructions from chain history into the warehouse",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    add_ingest_arguments(p)  # the options `iq-etl run` shares, declared once
    p.add_argument("--subrange-slots", type=int, default=DEFAULTS.subrange_slots, help="slots per resumable sub-range")
    p.add_argument("--batch-rows", type=int, default=DEFAULTS.batch_rows, help="rows per insert")
    p.add_argument("--flush-interval", type=float, default=DEFAULTS.flush_interval_s, help="seconds between flushes at most")
    p.add_argument("--rpc-rps", type=float, default=None,
                   help="requests/s over all methods (default for a public host 9: under public mainnet RPC's 10/s "
                        "per IP; for loopback/private hosts unlimited; 0: unlimited)")
    p.add_argument("--rpc-method-rps", type=float, default=None,
                   help="requests/s per method (default for a public host 3.5: public mainnet's heavy-method "
                        "budget; loopback/private: unlimited; 0: unlimited)")
    p.add_argument("--rpc-concurrency", type=int, default=None,
                   help="requests in flight (default 4 for a public host, 16 for loopback/private)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(handler=run)


def run(args) -> int:
    settings = load_settings()
    pdas = [p.strip() for p in (args.session_pda or "").split(",") if p.strip()]
    for name in ("slot_padding", "max_signature_pages", "subrange_slots", "batch_rows"):
        if getattr(args, name) < (0 if name == "slot_padding" else 1):
            raise IQEtlError(f"--{name.replace('_', '-')} must be positive")
    if args.threads is not None and args.threads < 1:
        raise IQEtlError("--threads must be at least 1")
    try:
        summary = run_ingest(
            settings, IngestRequest(slot_spec=args.slot_spec, source=args.source, car_url=args.car_url, rpc_url=args.rpc_url,
            session_pdas=tuple(pdas), slot_padding=args.slot_padding, max_signature_pages=args.max_signature_pages,
            threads=args.threads, resume=args.resume, progress=not args.json and sys.stderr.isatty(),
            subrange_slots=args.subrange_slots, batch_rows=args.batch_rows, flush_interval_s=args.flush_interval,
            extra_program_ids=args.program_id, rpc_options=rpc_options(args)),
        )
    finally:
        close_client()
    if args.json:
        json.dump(summary.to_json(), sys.stdout, indent=2)
        print()
    else:
        print_summary(summary)
    return 1 if summary.incomplete else 0


def rpc_options(args) -> dict:
    """RpcClient keyword arguments from the --rpc-* flags (only those given)."""
    options = {"rps": args.rpc_rps, "method_rps": args.rpc_method_rps, "concurrency": args.rpc_concurrency}
    for name, value in options.items():
        # a rate of 0 means unlimited (a private endpoint); concurrency needs at least one request
        if value is not None and (value < 0 or (name == "concurrency" and value < 1)):
            raise IQEtlError(f"--rpc-{name.replace('_', '-')} must be {'at least 1' if name == 'concurrency' else '0 (unlimited) or more'}")
    return {k: v for k, v in options.items() if v is not None}


def print_summary(s: IngestSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title=f"ingest run {s.run_id} ({s.source})", show_header=False)
    t.add_row("warehouse", s.warehouse)
    t.add_row("sub-ranges scanned", f"{len(s.ranges)} ({s.skipped_ranges} already done, skipped)")
    t.add_row("transactions", f"{s.transactions_seen:,}")
    t.add_row("IQ instructions", f"{s.matches:,} ({s.rows_written:,} decoded rows, {s.undecoded:,} undecoded)")
    t.add_row("skipped slots", f"{s.skipped_slots:,}")
    for k, n in s.by_kind.items():
        t.add_row(f"  {k}", f"{n:,}")
    t.add_row("seconds", f"{s.seconds:.1f} (read {s.read_s:.1f}, decode {s.extract_s:.1f}, insert {s.insert_s:.1f})")
    if s.car_http:
        h = s.car_http
        t.add_row("CAR over HTTP", f"{h['bytes_fetched'] / 1e6:,.1f} MB at {h['mb_per_s']:,.1f} MB/s, up to "
                  f"{h['connections_peak']} connection(s), {h['connections_replaced']} replaced, "
                  f"{h['throttle_pauses']} 429/503 pause(s)")
    if s.discovery:
        t.add_row("discovered windows", json.dumps(s.discovery.get("merged_ranges", s.discovery))[:200])
    if s.incomplete:
        t.add_row("[red]incomplete[/red]", ", ".join(f"{r['first_slot']}:{r['last_slot']} {r['status']}"
                                                for r in s.ranges if r["status"] != "done"))
    console.print(t)
