"""7. CAR scan over HTTP: one iq-etl process reading the 10x benchmark chain (one 1.4 GB CAR with its
slot-ranges index) from a loopback file server that caps every connection at 25 MB/s and waits 50 ms
before the first byte of every answer (a CDN like files.old-faithful.net, which gives about 15-31 MB/s
per connection), with 1, 4, 16 and 32 parallel ranged connections (IQ_CAR_CONNECTIONS), against the
local scan of the same file in the same run.

The server runs in its own process (it is not the process measured). Each variant is a fresh child
process scanning with the IQ pre-filter (what ingest does); its MB/s is the bytes the walker read over
the wall time. Target per K: >= 0.8 x min(local scan rate, K x 25 MB/s). Rows must equal the local
scan's (blocks, transactions seen, matched).

    .venv/bin/python bench/bench_http.py [--quick] [--repeats N]
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Row, median, run_child  # noqa: E402

RATE = 25e6          # bytes/s per connection
LATENCY = 0.05       # seconds before the first byte of every answer
CONNECTIONS = (1, 4, 16, 32)
TARGET = 0.8
K1_FRACTION = 4      # K = 1 scans a quarter of the slots (a minute at 25 MB/s instead of four)


# --- child functions ----------------------------------------------------------------------------

def scan(location: str, first: int, last: int, keys: list[str], connections: int) -> dict:
    from solders.pubkey import Pubkey

    from iq_etl.ingest.sources.car.byte_range import STATS, is_url
    from iq_etl.ingest.sources.car.source import CarSource

    wanted = [bytes(Pubkey.from_string(k)) for k in keys]
    opts = {"connections": connections} if is_url(location) else None
    src = CarSource(location, wanted_keys=wanted, http_options=opts)
    blocks = seen = matched = 0
    before = STATS.snapshot()
    started = time.perf_counter()
    for block in src.iter_blocks(first, last):
        if block.skipped:
            continue
        blocks += 1
        seen += block.transactions_seen
        matched += len(block.transactions)
    seconds = time.perf_counter() - started
    after = STATS.snapshot()
    return {"seconds": seconds, "bytes": after["delivered"] - before["delivered"], "blocks": blocks, "seen": seen,
            "matched": matched, "fetched": after["fetched"] - before["fetched"], "peak": after["peak"],
            "replaced": after["replaced_stalled"] + after["replaced_slow"] - before["replaced_stalled"]
            - before["replaced_slow"]}


# --- the server, in its own process ------------------------------------------------------------

_SERVER = """
import sys, time
from iq_etl.devchain.servers.files import Faults, serve_files
srv = serve_files(sys.argv[1], faults=Faults(rate=float(sys.argv[2]), latency=float(sys.argv[3])))
print(srv.server_address[1], flush=True)
sys.stdin.read()
"""


def _start_server(root: str, rate: float, latency: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, root, str(rate), str(latency)], cwd=common.REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().strip())
    return proc, port


def _stop(proc: subprocess.Popen) -> None:
    try:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)
    except (subprocess.TimeoutExpired, OSError):
        proc.kill()
        proc.wait()


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    base = common.ensure_chain(quick)
    chain = base if quick else common.ensure_scaled_chain(base)
    n = common.repeats_for(quick, repeats, default=1)
    common.warm_page_cache(chain.car_paths)
    keys = list(chain.program_ids)
    k1_last = chain.first_slot + (chain.last_slot - chain.first_slot) // K1_FRACTION
    local = [run_child("bench_http:scan", location=chain.template, first=chain.first_slot, last=chain.last_slot,
                       keys=keys, connections=1) for _ in range(n)]
    local_rate = median([r["bytes"] / r["seconds"] for r in local]) / 1e6
    rows = [Row("7 HTTP scan", "local file, same chain (the reference)", f"{local_rate:,.0f} MB/s",
                f"{local[0]['bytes'] / 1e6:,.0f} MB in {median([r['seconds'] for r in local]):.2f} s")]
    proc, port = _start_server(chain.dir, RATE, LATENCY)
    url = f"http://127.0.0.1:{port}/" + chain.template[len(chain.dir):].lstrip("/")
    try:
        for k in CONNECTIONS:
            last = k1_last if k == 1 else chain.last_slot
            got = [run_child("bench_http:scan", location=url, first=chain.first_slot, last=last, keys=keys,
                             connections=k) for _ in range(n)]
            if k != 1:
                same = all((g["blocks"], g["seen"], g["matched"]) ==
                           (local[0]["blocks"], local[0]["seen"], local[0]["matched"]) for g in got)
            else:
                same = True  # a quarter of the chain: checked against the local scan by the tests
            rate = median([g["bytes"] / g["seconds"] for g in got]) / 1e6
            ceiling = min(local_rate, k * RATE / 1e6)
            ratio = rate / ceiling
            rows.append(Row("7 HTTP scan", f"{k} connection(s), {RATE / 1e6:.0f} MB/s each, {LATENCY * 1e3:.0f} ms",
                            f"{rate:,.0f} MB/s",
                            f"{rate / local_rate:.2f}x the local scan; {ratio:.2f}x min(local, K x cap) = "
                            f"{ceiling:,.0f} MB/s; {median([g['seconds'] for g in got]):.1f} s, "
                            f"{got[0]['fetched'] / 1e6:,.0f} MB fetched for {got[0]['bytes'] / 1e6:,.0f} MB read, "
                            f"peak {max(got[0]['peak'], 1)} connections"
                            + ("" if same else "; ROWS DIFFER from the local scan"),
                            f">= {TARGET} x min(local, K x cap)", met=ratio >= TARGET and same))
    finally:
        _stop(proc)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
