"""`iq-etl reconcile`: search again for the chunks of incomplete uploads, once, as a Prefect flow run.

For every upload `iq.session_completeness` does not call complete: with an RPC endpoint configured
(IQ_RPC_URL or --rpc-url) the signatures of its session account are discovered again; otherwise (and
for linked lists) the slot window where its chunks most likely sit is widened (×--growth per run,
stored per upload, up to --max-padding) and re-read from the CAR archives. Then the models are
rebuilt, what became complete is exported, and failed exports are retried. The summary says which
uploads became complete, which were exported and which are still incomplete. `iq-etl serve` runs this
on a schedule.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from iq_etl.errors import IQEtlError
from iq_etl.ingest.request import DEFAULTS
from iq_etl.settings import load_settings

if TYPE_CHECKING:
    from iq_etl.export.runner import ExportSummary
    from iq_etl.reconcile.plan import ReconcileSummary


def register(sub) -> None:
    p = sub.add_parser("reconcile", help="find the missing chunks of incomplete uploads again, re-export",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--discovery", choices=("auto", "rpc", "window"), default="auto",
                   help="auto: RPC discovery on session accounts when an RPC URL is configured, else windows")
    p.add_argument("--window-source", choices=("car", "rpc-blocks"), default="car",
                   help="where widened slot windows are re-read (default car)")
    p.add_argument("--car-url", metavar="TEMPLATE", help="CAR path/URL, may contain {epoch} (default IQ_CAR_URL)")
    p.add_argument("--rpc-url", help="Solana JSON-RPC URL (default IQ_RPC_URL / SOLANA_RPC_URL)")
    p.add_argument("--initial-padding", type=int, default=2_000, help="slots around an upload's window, first time")
    p.add_argument("--growth", type=int, default=4, help="padding multiplier per run while incomplete (default 4)")
    p.add_argument("--max-padding", type=int, default=432_000, help="padding cap in slots (default one epoch)")
    p.add_argument("--max-scan-slots", type=int, default=2_000_000, help="slots re-scanned per run at most")
    p.add_argument("--max-uploads", type=int, default=1_000, help="uploads searched per run at most")
    p.add_argument("--max-signature-pages", type=int, default=DEFAULTS.max_signature_pages, help="getSignaturesForAddress pages per session")
    p.add_argument("--program-id", action="append", default=[], metavar="ID",
                   help="also ingest this program id (e.g. a development chain's extra program); repeatable")
    p.add_argument("--target", action="append", default=[], metavar="URL",
                   help="export target (http(s):// or file://DIR); repeatable (default: the reader backend)")
    p.add_argument("--export-concurrency", type=int, default=None, help="uploads sent at once per target")
    p.add_argument("--lock-timeout", type=float, default=3600.0,
                   help="seconds to wait for another run holding the warehouse (default 3600)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from iq_etl.cli.flow_commands import prepare_prefect

    settings = load_settings()
    for name, minimum in (("initial_padding", 0), ("growth", 2), ("max_padding", 0), ("max_scan_slots", 1),
                          ("max_uploads", 1), ("max_signature_pages", 1), ("export_concurrency", 1),
                          ("lock_timeout", 0)):
        value = getattr(args, name)
        if value is not None and value < minimum:
            raise IQEtlError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
    if args.max_padding < args.initial_padding:
        raise IQEtlError("--max-padding must be at least --initial-padding")
    prepare_prefect(settings, "reconcile")
    from iq_etl.cli.flow_commands import export_params, ingest_params, run_flow
    from iq_etl.orchestration.flows import reconcile_flow

    result, delivery_failure = run_flow(
        reconcile_flow, discovery=args.discovery, window_source=args.window_source,
        initial_padding=args.initial_padding, growth=args.growth, max_padding=args.max_padding,
        max_scan_slots=args.max_scan_slots, max_uploads=args.max_uploads, ingest=ingest_params(args),
        export=export_params(args), lock_timeout_s=args.lock_timeout,
    )
    summary = result.summary
    if args.json:
        from iq_etl.output import jsonable

        json.dump(jsonable(result.to_json()), sys.stdout, indent=2)
        print()
    else:
        print_summary(summary, result.export)
    if delivery_failure:
        print(f"flow run failed: {delivery_failure}", file=sys.stderr)
    return 0 if summary.export_failures == 0 else 1


def print_summary(summary: ReconcileSummary, exports: list[ExportSummary]) -> None:
    from iq_etl.output import print_rows

    ranges = ", ".join(f"{a}:{b}" for a, b in summary.scanned_ranges) or "none"
    print(f"reconcile: searched {summary.searched} incomplete upload(s) "
          f"({summary.deferred} deferred to the next run, {summary.skipped} not searchable); "
          f"re-scanned slots {ranges}; {summary.rpc_sessions} session(s) re-discovered over RPC; "
          f"{summary.rows_written} row(s) written")
    for ex in exports:
        print(f"export → {ex.target}: {ex.delivered} delivered, {ex.failed} failed, {ex.refused} refused")
    print(f"newly complete: {len(summary.newly_complete)}; exported: {len(summary.exported)}; "
          f"still incomplete: {len(summary.still_missing)}")
    if summary.newly_complete:
        print_rows(["newly complete"], [[k] for k in summary.newly_complete])
    if summary.still_missing:
        print_rows(["still incomplete", "status", "method", "padding", "exhausted"],
                   [[m["upload_key"], m["status"], m["method"], m["padding"], "yes" if m["exhausted"] else ""]
                    for m in summary.still_missing])
