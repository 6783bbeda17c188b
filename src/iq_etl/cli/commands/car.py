"""`iq-etl car`: look inside Old Faithful CAR files.

  inspect <path or URL> [--slots S:E] [--json]   node counts, slots (as S:E), transactions per slot
  index <path or URL> [--out PATH] [--force]    write epoch-{N}-slot-ranges.raw for seeking (next to a
                                                local CAR; in the current folder for an http(s) URL)
  scan <path, URL or template> --slots SPEC     stream blocks with the IQ pre-filter, print throughput and the
                                                section walker that ran (IQ_SCANNER=python|native|auto)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from iq_etl.errors import IQEtlError

_PROGRESS_MIN_BYTES = 64 << 20  # show a progress bar for files at least this large


def register(sub) -> None:
    p = sub.add_parser("car", help="inspect, index and scan Old Faithful CAR files",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    csub = p.add_subparsers(dest="car_command", metavar="SUBCOMMAND")

    ins = csub.add_parser("inspect", help="node counts by kind, slots, transactions per slot, first signatures",
                          description="Read a CAR file (local or over HTTP) and print its node counts by kind, the "
                                      "slots it covers (S:E), transactions per slot and the first signatures.")
    ins.add_argument("location", help="CAR path or http(s) URL")
    ins.add_argument("--slots", help="only these slots: S:E, N (epoch) or A-B (epochs)")
    ins.add_argument("--json", action="store_true", help="print one JSON object")
    ins.set_defaults(handler=run_inspect)

    idx = csub.add_parser("index", help="write epoch-{N}-slot-ranges.raw next to a CAR that lacks one",
                          description="Walk a CAR file (local path, file:// or http(s) URL) and write its "
                                      "epoch-{N}-slot-ranges.raw index, which ingest uses to seek: next to a local "
                                      "CAR, in the current folder for an http(s) URL, or where --out says.")
    idx.add_argument("location", metavar="path", help="CAR path, file:// or http(s) URL")
    idx.add_argument("--out", type=Path, default=None, metavar="PATH",
                     help="index file or folder to write it in (default: next to a local CAR, the current folder "
                          "for an http(s) URL)")
    idx.add_argument("--force", action="store_true", help="overwrite an existing index")
    idx.set_defaults(handler=run_index)

    scan = csub.add_parser("scan", help="stream blocks through the reader and pre-filter; print throughput",
                           description="Stream the blocks of a slot range through the CAR reader and the IQ "
                                       "pre-filter and print throughput and the section walker that ran "
                                       "(IQ_SCANNER=python|native|auto).")
    scan.add_argument("location", help="CAR path, URL, or template with {epoch}")
    scan.add_argument("--slots", required=True, help="S:E, N (epoch) or A-B (epochs)")
    scan.add_argument("--key", action="append", default=None, metavar="BASE58",
                      help="wanted account key (repeatable; default: the configured IQ program ids)")
    scan.add_argument("--no-filter", action="store_true", help="decode every transaction")
    scan.add_argument("--no-index", action="store_true", help="ignore slot-ranges indexes")
    scan.add_argument("--car-connections", type=int, default=None, metavar="K",
                      help="parallel ranged GETs per HTTP stream, 1-64 (default IQ_CAR_CONNECTIONS, 16)")
    scan.add_argument("--json", action="store_true")
    scan.set_defaults(handler=run_scan)

    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def _progress_for(size: int | None, label: str):
    """A rich progress bar on stderr for large inputs; (callback, finish) no-ops otherwise."""
    if size is None or size < _PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        return None, lambda: None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True)
    task = bar.add_task(label, total=size)
    bar.start()
    return (lambda offset: bar.update(task, completed=offset)), bar.stop


def run_inspect(args) -> int:
    from iq_etl.ingest.sources.car.inspect import summarize
    from iq_etl.ingest.sources.car.reader import CarFile
    from iq_etl.solana.slots import parse_slot_spec

    car = CarFile(args.location)
    first = last = None
    if args.slots:
        first, last = parse_slot_spec(args.slots)
    size = None
    if not args.json:
        size = car.source.size()
    progress, finish = _progress_for(size, "inspect")
    try:
        summary = summarize(car, first, last, progress=progress)
    finally:
        finish()
    if args.json:
        json.dump(summary.as_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True, markup=False, highlight=False)
    console.print(f"{car.name}" + (f" (slots {args.slots})" if args.slots else ""))
    table = Table()
    table.add_column("kind")
    table.add_column("nodes", justify="right")
    for kind, count in summary.kinds.items():
        table.add_row(kind, f"{count:,}")
    console.print(table)
    tx_total = sum(summary.transactions_per_slot.values())
    # S:E, the slot-spec syntax: paste it into `car inspect --slots`, `car scan --slots` or `iq-etl ingest`
    console.print(f"slots {summary.first_slot}:{summary.last_slot}: {len(summary.transactions_per_slot):,} blocks, "
                  f"{tx_total:,} transactions")
    busiest = sorted(summary.transactions_per_slot.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    if busiest:
        console.print("busiest slots: " + ", ".join(f"{s} ({n})" for s, n in busiest))
    if summary.first_signatures:
        console.print("first signatures: " + ", ".join(summary.first_signatures))
    return 0


def run_index(args) -> int:
    from iq_etl.ingest.sources.car.byte_range import is_url, sibling
    from iq_etl.ingest.sources.car.format import slot_ranges_name, write_slot_ranges
    from iq_etl.ingest.sources.car.inspect import build_slot_ranges
    from iq_etl.ingest.sources.car.reader import CarFile

    location = args.location  # a str: a URL keeps its `//` (a Path would make http:// into http:/)
    local: Path | None = None
    if not is_url(location):
        local = Path(unquote(urlparse(location).path)) if location.startswith("file://") else Path(location)
        if not local.is_file():
            raise IQEtlError(f"{location}: no such file")
    car = CarFile(location)
    progress, finish = _progress_for(car.source.size(), "index")
    try:
        epoch, ranges = build_slot_ranges(car, progress=progress)
    finally:
        finish()
    name = slot_ranges_name(epoch)
    if args.out is not None:
        out = args.out / name if args.out.is_dir() else args.out
    else:
        out = local.with_name(name) if local is not None else Path(name)
    if out.exists() and not args.force:
        raise IQEtlError(f"{out} already exists (use --force to overwrite)")
    try:
        write_slot_ranges(out, epoch, ranges)
    except OSError as exc:
        raise IQEtlError(f"{out}: {exc.strerror or exc}") from None
    print(f"{out}: {len(ranges):,} blocks indexed for epoch {epoch}")
    if local is None:
        print(f"ingest seeks with it where the CAR is: {sibling(car.name, name)}")
    return 0


def run_scan(args) -> int:
    from solders.pubkey import Pubkey

    from iq_etl.ingest.sources.car.reader import IncompleteRange
    from iq_etl.ingest.sources.car.source import CarSource
    from iq_etl.solana.slots import epoch_of, parse_slot_spec

    first, last = parse_slot_spec(args.slots)
    from iq_etl.ingest.sources.car.byte_range import MAX_CONNECTIONS, STATS, is_url

    connections = args.car_connections
    if connections is not None and not 1 <= connections <= MAX_CONNECTIONS:
        raise IQEtlError(f"--car-connections: must be between 1 and {MAX_CONNECTIONS}, got {connections}")
    keys = None
    if not args.no_filter:
        if args.key:
            try:
                keys = [bytes(Pubkey.from_string(k)) for k in args.key]
            except ValueError:
                raise IQEtlError(f"--key: not a base58 public key in {args.key}") from None
        else:
            from iq_etl.settings import load_settings

            settings = load_settings()
            keys = [bytes(Pubkey.from_string(k)) for k in settings.program_ids]
            if connections is None:
                connections = settings.car_connections
    if connections is None:
        from iq_etl.settings import load_settings

        connections = load_settings().car_connections
    remote = is_url(args.location)
    source = CarSource(args.location, wanted_keys=keys, use_index=not args.no_index,
                       http_options={"connections": connections} if remote else None)
    from iq_etl.ingest.sources.car import prefilter

    scanner = source.car_file(epoch_of(first) if source.is_template else None).scanner_used
    blocks = skipped = seen = matched = 0
    incomplete = None
    from iq_etl.ingest.sources.car.parallel import lane_seconds

    STATS.reset_peak()
    before = STATS.snapshot()
    lanes_before = lane_seconds()
    started = time.perf_counter()
    try:
        for block in source.iter_blocks(first, last):
            if block.skipped:
                skipped += 1
                continue
            blocks += 1
            seen += block.transactions_seen
            matched += len(block.transactions)
    except IncompleteRange as exc:
        incomplete = str(exc)
    seconds = time.perf_counter() - started
    after = STATS.snapshot()
    lane_s = lane_seconds() - lanes_before   # seconds of requests of the parallel connections, summed
    nbytes = after["delivered"] - before["delivered"]
    transfer = {"bytes": nbytes, "mb_per_second": round(nbytes / seconds / 1e6, 1) if seconds else None,
                "connections": connections if remote else None,
                "connections_peak": max(after["peak"], 1 if after["fetched"] > before["fetched"] else 0)
                if remote else None,
                # mean connections in use over the scan (a sequential stream: one while it read)
                "connections_mean": (round(lane_s / seconds, 1) if lane_s > 0 else
                                     1.0 if after["fetched"] > before["fetched"] else 0.0) if remote and seconds else None,
                "fetched_bytes": after["fetched"] - before["fetched"] if remote else None,
                "replaced_connections": (after["replaced_stalled"] + after["replaced_slow"]
                                         - before["replaced_stalled"] - before["replaced_slow"]) if remote else None,
                "throttle_pauses": after["throttle_pauses"] - before["throttle_pauses"] if remote else None}
    result: dict[str, Any] = {"blocks": blocks, "skipped_slots": skipped, "transactions_seen": seen, "transactions_matched": matched,
              "seconds": round(seconds, 3), "transactions_per_second": round(seen / seconds) if seconds else None,
              "scanner": scanner, "incomplete": incomplete, **transfer}
    if keys:
        result["lookup_tables"] = prefilter.lookup_cache(keys).stats()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{blocks:,} blocks, {skipped:,} skipped slots, {seen:,} transactions seen, {matched:,} matched "
              f"in {seconds:.2f}s ({result['transactions_per_second'] or 0:,} tx/s; scanner {scanner})")
        line = f"{nbytes / 1e6:,.1f} MB read at {transfer['mb_per_second'] or 0:,.1f} MB/s"
        if remote:
            line += (f" over HTTP: {connections} connection(s) per stream, {transfer['connections_peak']} in use "
                     f"at most ({transfer['connections_mean'] or 0:.1f} on average), "
                     f"{transfer['fetched_bytes'] / 1e6:,.1f} MB fetched")
            if transfer["replaced_connections"]:
                line += f", {transfer['replaced_connections']} connection(s) replaced"
            if transfer["throttle_pauses"]:
                line += f", {transfer['throttle_pauses']} pause(s) for 429/503"
        print(line)
        lut = result.get("lookup_tables")
        if lut and lut["v0_checked"]:
            print(f"lookup-table cache: {lut['hit_rate']:.1%} of {lut['v0_checked']:,} v0 transactions answered "
                  f"without decompressing their metadata ({lut['tables']:,} tables learned)")
        if incomplete:
            print(f"incomplete: {incomplete}")
    return 1 if incomplete else 0

