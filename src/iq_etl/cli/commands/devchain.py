"""`iq-etl devchain build|serve|serve-car|serve-reader`: the deterministic development chain and its
loopback servers.

    build         write DIR/{epoch}/epoch-{epoch}.car (+ slot-ranges index), DIR/manifest.json, DIR/files/
    serve         the same chain as Solana JSON-RPC on loopback (with optional injected faults)
    serve-car     the CAR files over a Range-capable HTTP server, laid out like the Old Faithful bucket
    serve-reader  a reader backend speaking the IQ ingest protocol (`iq-etl export --target` its URL)
    serve-clickhouse  a TEST ClickHouse HTTP server over chDB on loopback (the remote warehouse path in tests)
"""
from __future__ import annotations

import argparse
import errno
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from iq_etl.devchain.build import (
    DEFAULT_FIRST_SLOT,
    DEFAULT_NOISE_TX_PER_SLOT,
    DEFAULT_SESSIONS,
    DEFAULT_SLOTS,
    build_chain,  # cheap: the generator itself loads on first build
)
from iq_etl.errors import IQEtlError


def register(sub) -> None:
    p = sub.add_parser("devchain", help="build or serve the deterministic development chain",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    dsub = p.add_subparsers(dest="devchain_command", metavar="SUBCOMMAND")

    b = dsub.add_parser("build", help="generate the chain (same seed, same bytes)",
                        description="Generate the development chain into a folder: CAR files with their slot-ranges "
                                    "indexes, manifest.json and the uploaded files (same seed, same bytes).")
    b.add_argument("--out", type=Path, required=True, help="output folder (empty, or a previous chain to replace)")
    b.add_argument("--seed", type=int, default=0, help="chain seed (default 0)")
    b.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS,
                   help=f"uploads in total, hard-case catalogue included (default {DEFAULT_SESSIONS})")
    b.add_argument("--noise-tx-per-slot", type=int, default=DEFAULT_NOISE_TX_PER_SLOT,
                   help=f"unrelated transactions per block, on average (default {DEFAULT_NOISE_TX_PER_SLOT})")
    b.add_argument("--slots", type=int, default=DEFAULT_SLOTS,
                   help=f"slots in the chain, skipped ones included (default {DEFAULT_SLOTS})")
    b.add_argument("--first-slot", type=int, default=DEFAULT_FIRST_SLOT,
                   help=f"first slot (default {DEFAULT_FIRST_SLOT}, the start of epoch 923); "
                        "choose one shortly before an epoch boundary to span two epochs")
    b.set_defaults(handler=run_build)

    s = dsub.add_parser("serve", help="serve the chain as Solana JSON-RPC on loopback until Ctrl-C",
                        description="Serve a built chain as Solana JSON-RPC on loopback until Ctrl-C, optionally "
                                    "with injected faults (429s, 5xx, delays, dropped connections).")
    s.add_argument("dir", type=Path, help="a built chain folder")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8899, help="port (default 8899, as solana-test-validator; 0 = any)")
    s.add_argument("--rate-limit", type=int, default=None, metavar="N",
                   help="answer HTTP 429 with Retry-After beyond N requests per second")
    s.add_argument("--error-rate", type=float, default=0.0, metavar="P", help="probability of an HTTP 5xx answer")
    s.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="wait before answering")
    s.add_argument("--drop-rate", type=float, default=0.0, metavar="P",
                   help="probability of closing the connection without an answer")
    s.set_defaults(handler=run_serve)

    c = dsub.add_parser("serve-car", help="serve the CAR files over HTTP (Range requests) until Ctrl-C",
                        description="Serve a built chain's CAR files over HTTP with Range requests, laid out like "
                                    "the Old Faithful bucket, until Ctrl-C.")
    c.add_argument("dir", type=Path, help="a built chain folder")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8900, help="port (default 8900; 0 = any)")
    c.set_defaults(handler=run_serve_car)

    r = dsub.add_parser("serve-reader", help="serve a loopback reader backend (IQ ingest protocol) until Ctrl-C",
                        description="Serve a reader backend on loopback that speaks the IQ ingest protocol until "
                                    "Ctrl-C: checks each body, deduplicates by Idempotency-Key, keeps what it stored "
                                    "(and writes it to --out). It requires the bearer token in IQ_READER_TOKEN when "
                                    "that is set (read from the environment, never from the command line).")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, default=8089, help="port (default 8089; 0 = any)")
    r.add_argument("--path", default=None, metavar="PATH",
                   help="endpoint path (default /api/v2/inscribe/ingest, as IQ_READER_ENDPOINT_PATH)")
    r.add_argument("--out", type=Path, default=None, metavar="DIR", help="also write every stored body to this folder")
    r.set_defaults(handler=run_serve_reader)

    ch = dsub.add_parser("serve-clickhouse", help="TEST TOOL: a ClickHouse HTTP server over chDB on loopback until Ctrl-C",
                         description="TEST TOOL, never the product's warehouse: serve ClickHouse's HTTP interface over "
                                     "an embedded chDB engine on loopback until Ctrl-C, so the remote warehouse path "
                                     "(IQ_CLICKHOUSE_DSN=http://USER:PASSWORD@127.0.0.1:PORT/iq) runs where no ClickHouse "
                                     "server can be installed. One chDB folder, one query at a time, one user.")
    ch.add_argument("--data", type=Path, required=True, metavar="DIR", help="the chDB folder it serves (created if missing)")
    ch.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1; others are refused)")
    ch.add_argument("--port", type=int, default=8123, help="port (default 8123, as ClickHouse; 0 = any)")
    ch.add_argument("--user", default="default", help="the one user it accepts (default: default)")
    ch.add_argument("--password", default="", help="that user's password (default: empty)")
    ch.add_argument("--verbose", action="store_true", help="log every request to stderr")
    ch.set_defaults(handler=run_serve_clickhouse)

    p.set_defaults(handler=lambda args: (p.print_help(), 2)[1])


def run_build(args) -> int:
    started = time.perf_counter()
    manifest = build_chain(args.out, seed=args.seed, sessions=args.sessions,
                           noise_tx_per_slot=args.noise_tx_per_slot, slots=args.slots, first_slot=args.first_slot)
    elapsed = time.perf_counter() - started
    counts = manifest.tx_counts
    statuses = Counter(u.expected_status for u in manifest.uploads)
    generations = Counter(u.generation for u in manifest.uploads)
    print(f"development chain in {args.out} ({elapsed:.1f} s)")
    print(f"  slots      {manifest.first_slot}:{manifest.last_slot}  epochs {', '.join(map(str, manifest.epochs))}"
          f"  blocks {manifest.block_count}  skipped {len(manifest.skipped_slots)}")
    print(f"  txs        {counts['transactions']} total: {counts['iq']} IQ ({counts['iq_failed']} failed), "
          f"{counts['noise']} other; {counts['v0']} v0, {counts['failed']} failed")
    print(f"  uploads    {len(manifest.uploads)}: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
    print("  generation " + ", ".join(f"{k} {v}" for k, v in sorted(generations.items())))
    print(f"  hard cases {len(manifest.hard_cases)}: " + ", ".join(h.name for h in manifest.hard_cases))
    print(f"  programs   IQ_PROGRAM_ID={','.join(manifest.all_program_ids())}")
    print(f"  CAR        IQ_CAR_URL={args.out.resolve() / '{epoch}' / 'epoch-{epoch}.car'}")
    return 0


def _wait(server, what: str) -> int:
    host, port = server.server_address[:2]
    print(f"{what} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        server.shutdown()
    return 0


def _listen(start, host: str, port: int):
    """`start()` binds host:port; a busy port or an unknown host is one line, not a traceback."""
    try:
        return start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise IQEtlError(f"{host}:{port}: port already in use (another server is listening there); "
                             "choose another --port, or --port 0 for any free one") from None
        raise IQEtlError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _check_dir(path: Path) -> None:
    if not (path / "manifest.json").is_file():
        raise IQEtlError(f"{path}: no development chain here (run `iq-etl devchain build --out {path}`)")


def run_serve(args) -> int:
    from iq_etl.devchain.servers.rpc import serve_rpc
    from iq_etl.devchain.servers.rpc_faults import Faults
    from iq_etl.devchain.servers.rpc_index import RpcChain

    _check_dir(args.dir)
    for name in ("error_rate", "drop_rate"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise IQEtlError(f"--{name.replace('_', '-')} {value}: must be between 0 and 1")
    if args.rate_limit is not None and args.rate_limit < 1:
        raise IQEtlError(f"--rate-limit {args.rate_limit}: must be at least 1")
    faults = Faults(rate_limit=args.rate_limit, error_rate=args.error_rate, delay=args.delay, drop_rate=args.drop_rate)
    chain = RpcChain.from_dir(args.dir)  # read before binding: only the bind's errors are about the port
    server = _listen(lambda: serve_rpc(chain, args.host, args.port, faults), args.host, args.port)
    return _wait(server, f"Solana JSON-RPC for {args.dir}")


def run_serve_car(args) -> int:
    from iq_etl.devchain.servers.files import serve_files

    _check_dir(args.dir)
    server = _listen(lambda: serve_files(args.dir, args.host, args.port), args.host, args.port)
    host, port = server.server_address[:2]
    print(f"CAR template: http://{host}:{port}/{{epoch}}/epoch-{{epoch}}.car")
    return _wait(server, f"CAR files of {args.dir}")


def run_serve_reader(args) -> int:
    from iq_etl.devchain.servers.reader_backend import DEFAULT_PATH, serve_reader_backend

    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IQEtlError(f"--out {args.out}: {exc.strerror or exc}") from None
    from iq_etl.settings import load_settings  # the token: IQ_READER_TOKEN (environment or .env)

    path = args.path or DEFAULT_PATH
    server = _listen(lambda: serve_reader_backend(args.host, args.port, path,
                                                  token=load_settings().reader_token,
                                                  store_dir=args.out), args.host, args.port)
    print(f"export target: {server.url}  (iq-etl export --target {server.url}; or "
          f"IQ_READER_BASE_URL={server.base_url} IQ_READER_ENDPOINT_PATH={server.path})", flush=True)
    if args.out is not None:
        print(f"stored bodies: {args.out}", flush=True)
    return _wait(server, "reader backend")


def run_serve_clickhouse(args) -> int:
    from iq_etl.devchain.servers.clickhouse_http import BANNER, LOOPBACK, serve_clickhouse

    if args.host not in LOOPBACK:
        raise IQEtlError(f"--host {args.host}: this test server listens on loopback only (127.0.0.1, ::1)")
    print(BANNER, flush=True)
    server = _listen(lambda: serve_clickhouse(args.data, args.host, args.port, args.user, args.password, args.verbose),
                     args.host, args.port)
    host, port = server.server_address[:2]
    print(f"data: {server.engine.path} (chDB {server.engine.version}); user {args.user}", flush=True)
    print(f"DSN:  IQ_CLICKHOUSE_DSN=http://{args.user}:***@{host}:{port}/iq", flush=True)
    return _wait(server, "ClickHouse HTTP interface (test server)")
