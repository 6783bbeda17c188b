"""7. CAR scan over HTTP: one iq-etl process reading the 10x benchmark chain (one 1.4 GB CAR with its
slot-ranges index) from a loopback file server that caps every connection at 25 MB/s and waits 50 ms
before the first byte of every answer (a CDN like files.old-faithful.net, which gives about 15-31 MB/s
per connection), with 1, 4, 16 and 32 parallel ranged connections (IQ_CAR_CONNECTIONS), against the
local scan of the same file in the same run.

The server runs in its own process (it is not the process measured). Each variant is a fresh child
process scanning with the IQ pre-filter (what ingest does); its MB/s is the bytes the walker read over
the wall time. Target per K: >= 0.8 x min(local scan rate, K x 25 MB/s). Rows must equal the local
scan's (blocks, transactions seen, matched).

Where the time goes, per variant: the CPU seconds of the scanning process (client) and of the server
process over the same run, the cores they used together (the machine has `nproc`), and, for K >= 16,
the same transfer without the walker ("transport only": the bytes read and dropped), which shows what
the connections alone give. The load average before and after says whether the machine was shared.

    .venv/bin/python bench/bench_http.py [--quick] [--repeats N]
"""
from __future__ import annotations

import os
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
    cpu = os.times()
    started = time.perf_counter()
    for block in src.iter_blocks(first, last):
        if block.skipped:
            continue
        blocks += 1
        seen += block.transactions_seen
        matched += len(block.transactions)
    seconds = time.perf_counter() - started
    cpu_s = _cpu_since(cpu)
    after = STATS.snapshot()
    return {"seconds": seconds, "bytes": after["delivered"] - before["delivered"], "blocks": blocks, "seen": seen,
            "matched": matched, "fetched": after["fetched"] - before["fetched"], "peak": after["peak"], "cpu_s": cpu_s,
            "replaced": after["replaced_stalled"] + after["replaced_slow"] - before["replaced_stalled"]
            - before["replaced_slow"]}


def transfer(url: str, connections: int) -> dict:
    """The same bytes as a scan of the whole file, fetched by `connections` connections and dropped
    (no walker): what the transport alone gives."""
    from iq_etl.ingest.sources.car.byte_range import HttpSource

    src = HttpSource(url, connections=connections)
    size = src.size()
    buf = memoryview(bytearray(2 << 20))
    got = 0
    cpu = os.times()
    started = time.perf_counter()
    stream = src.open(0, size)
    try:
        while n := stream.readinto(buf):
            got += n
    finally:
        stream.close()
    return {"seconds": time.perf_counter() - started, "bytes": got, "cpu_s": _cpu_since(cpu)}


def _cpu_since(t: os.times_result) -> float:
    now = os.times()
    return now.user + now.system - t.user - t.system


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
                f"{local[0]['bytes'] / 1e6:,.0f} MB in {median([r['seconds'] for r in local]):.2f} s; CPU: scanner "
                f"{median([r['cpu_s'] for r in local]):.2f} s")]
    proc, port = _start_server(chain.dir, RATE, LATENCY)
    url = f"http://127.0.0.1:{port}/" + chain.template[len(chain.dir):].lstrip("/")
    car_url = f"http://127.0.0.1:{port}/" + chain.car_paths[0][len(chain.dir):].lstrip("/")
    load = os.getloadavg()[0]
    try:
        for k in CONNECTIONS:
            last = k1_last if k == 1 else chain.last_slot
            got, server_cpu = [], []
            for _ in range(n):
                before = _proc_cpu(proc.pid)
                got.append(run_child("bench_http:scan", location=url, first=chain.first_slot, last=last, keys=keys,
                                     connections=k))
                server_cpu.append(_proc_cpu(proc.pid) - before)
            if k != 1:
                same = all((g["blocks"], g["seen"], g["matched"]) ==
                           (local[0]["blocks"], local[0]["seen"], local[0]["matched"]) for g in got)
            else:
                same = True  # a quarter of the chain: checked against the local scan by the tests
            rate = median([g["bytes"] / g["seconds"] for g in got]) / 1e6
            seconds = median([g["seconds"] for g in got])
            ceiling = min(local_rate, k * RATE / 1e6)
            ratio = rate / ceiling
            cpu = median([g["cpu_s"] for g in got])
            srv = median(server_cpu)
            rows.append(Row("7 HTTP scan", f"{k} connection(s), {RATE / 1e6:.0f} MB/s each, {LATENCY * 1e3:.0f} ms",
                            f"{rate:,.0f} MB/s",
                            f"{rate / local_rate:.2f}x the local scan; {ratio:.2f}x min(local, K x cap) = "
                            f"{ceiling:,.0f} MB/s; {seconds:.1f} s, "
                            f"{got[0]['fetched'] / 1e6:,.0f} MB fetched for {got[0]['bytes'] / 1e6:,.0f} MB read, "
                            f"peak {max(got[0]['peak'], 1)} connections; CPU: scanner {cpu:.1f} s, server "
                            f"{srv:.1f} s = {(cpu + srv) / seconds:.2f} cores; the scanner's CPU alone allows "
                            f"{got[0]['bytes'] / 1e6 / max(cpu, 1e-9):,.0f} MB/s on a free core"
                            + ("" if same else "; ROWS DIFFER from the local scan"),
                            f">= {TARGET} x min(local, K x cap)", met=ratio >= TARGET and same))
            if k >= 16:
                before = _proc_cpu(proc.pid)
                raw = [run_child("bench_http:transfer", url=car_url, connections=k) for _ in range(n)]
                srv = (_proc_cpu(proc.pid) - before) / n
                t_rate = median([r["bytes"] / r["seconds"] for r in raw]) / 1e6
                t_s = median([r["seconds"] for r in raw])
                t_cpu = median([r["cpu_s"] for r in raw])
                rows.append(Row("7 HTTP scan", f"{k} connections, transport only (bytes dropped, no walker)",
                                f"{t_rate:,.0f} MB/s",
                                f"{t_rate / (k * RATE / 1e6):.2f}x K x cap; {t_s:.1f} s; CPU: reader "
                                f"{t_cpu:.1f} s, server {srv:.1f} s = {(t_cpu + srv) / t_s:.2f} cores"))
    finally:
        _stop(proc)
    rows.append(Row("7 HTTP scan", "load average (1 min) before / after", f"{load:.1f} / {os.getloadavg()[0]:.1f}",
                    f"nproc {os.cpu_count()}: above it the machine was shared and the figures are low"))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
