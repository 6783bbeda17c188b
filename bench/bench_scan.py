"""1. CAR scan: iq-etl's streaming reader with the IQ pre-filter over the whole benchmark chain, with
each section walker (`IQ_SCANNER=python`, the pure-Python walk; `native`, the compiled walker when it
is built), against two floors measured in the same run:

- reading the CAR files' bytes (8 MiB readinto, page cache warm): MB/s;
- `libipld.decode_car` on each whole file held in memory (decoding only is timed): transactions/s.

Every run is a fresh child process (peak RSS per variant); variants are interleaved so load
changes on the machine hit them alike. Both walkers must keep the same candidates (checked here on
the benchmark chain). Targets: pure-Python reader/decode_car >= 2.0 with flat memory and >= 500,000
transactions/s on one core; compiled walker >= 1 GB/s and >= 5x decode_car. The lookup-table cache's
hit rate (v0 transactions answered without decompressing their metadata) is reported.

    .venv/bin/python bench/bench_scan.py [--quick] [--repeats N]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Chain, Row, fmt, median, ratio_row, run_child, seconds_text, timed  # noqa: E402

DECODE_CAR_TARGET = 2.0
TX_PER_S_TARGET = 500_000
NATIVE_DECODE_CAR_TARGET = 5.0
NATIVE_MB_S_TARGET = 1000.0
OLD_READ_SIZE = 8 << 20  # byte_range.READ_SIZE before the issue-15 addendum (diagnostic rows)


# --- child functions ----------------------------------------------------------------------------

def read_floor(paths: list[str]) -> dict:
    buf = bytearray(8 << 20)

    def read_all() -> int:
        total = 0
        for path in paths:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    total += n
        return total

    nbytes, wall, cpu = timed(read_all)
    return {"seconds": wall, "cpu_s": cpu, "bytes": nbytes}


def decode_car_floor(paths: list[str]) -> dict:
    import libipld

    seconds = cpu = 0.0
    transactions = nbytes = 0
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        (_header, nodes), wall, c = timed(lambda data=data: libipld.decode_car(data))  # bind now: `del data` below
        seconds += wall
        cpu += c
        nbytes += len(data)
        transactions += sum(1 for node in nodes.values() if isinstance(node, list) and node and node[0] == 0)
        del data, nodes
    return {"seconds": seconds, "cpu_s": cpu, "bytes": nbytes, "transactions": transactions}


def scan(chain: dict, wanted: bool = True, without_v0_check: bool = False, scanner: str | None = None,
         read_size: int | None = None) -> dict:
    """The reader as ingest uses it: CarSource over the epoch template, the IQ program ids as
    wanted keys, every block of the chain's slot range. scanner: IQ_SCANNER for this run (None:
    the environment's, default auto). read_size: bytes per read (None: the reader's default,
    byte_range.READ_SIZE; the diagnostic rows run the 8 MiB used before the issue-15 addendum).

    without_v0_check (diagnostic, not a product mode): the reader's check of v0 transactions'
    loaded addresses (lookup-table cache, else their metadata) answers "no", to measure what that
    check costs. It misses IQ calls made through lookup tables; its figures only explain the others."""
    import hashlib
    import os

    if scanner is not None:
        os.environ["IQ_SCANNER"] = scanner
    from iq_etl.ingest.sources.car import prefilter as prefilter_module
    from iq_etl.ingest.sources.car import reader as car_module
    from iq_etl.ingest.sources.car.source import CarSource

    if without_v0_check:
        if not hasattr(car_module, "_lut_verdict"):
            return {"unavailable": True}
        # the Python walk calls the cache check inline and the whole check through _quick_verdict:
        # answer "no" in both places (the compiled walker is not patched: run this with python)
        car_module._lut_verdict = lambda *args, **kwargs: 0
        prefilter_module._v0_verdict = lambda *args, **kwargs: 0
    c = Chain.from_json(chain)
    keys = c.wanted_keys() if wanted else None
    source = CarSource(c.template, wanted_keys=keys, **({"read_size": read_size} if read_size else {}))
    digest = hashlib.sha256()

    def walk() -> tuple[int, int, int]:
        seen = matched = blocks = 0
        for block in source.iter_blocks(c.first_slot, c.last_slot):
            if not block.skipped:
                blocks += 1
            seen += block.transactions_seen
            matched += len(block.transactions)
            for t in block.transactions:
                digest.update(f"{t.slot}:{t.index}:{t.signature};".encode())
        return seen, matched, blocks

    (seen, matched, blocks), wall, cpu = timed(walk)
    if seen != c.transactions:
        raise AssertionError(f"scan saw {seen} transactions, the chain has {c.transactions}")
    used = source.car_file(c.first_slot // common.SLOTS_PER_EPOCH).scanner_used
    lut = prefilter_module.lookup_cache(keys).stats() if keys else {}
    return {"seconds": wall, "cpu_s": cpu, "transactions": seen, "matched": matched, "blocks": blocks,
            "bytes": c.car_bytes, "scanner": used, "candidates_digest": digest.hexdigest()[:16], "lookups": lut}


def key_search_floor(paths: list[str], program_ids: list[str]) -> dict:
    """The pure-Python walk's key search alone: `prefilter._find_all` (one bytes.find pass per
    wanted key) over every chunk of the files, read as the reader reads them (READ_SIZE readinto)."""
    from solders.pubkey import Pubkey

    from iq_etl.ingest.sources.car.byte_range import READ_SIZE
    from iq_etl.ingest.sources.car.prefilter import _find_all

    keys = tuple(bytes(Pubkey.from_string(p)) for p in program_ids)
    buf = bytearray(READ_SIZE)

    def search_all() -> int:
        hits = 0
        for path in paths:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    hits += len(_find_all(buf, keys, n))
        return hits

    hits, wall, cpu = timed(search_all)
    return {"seconds": wall, "cpu_s": cpu, "hits": hits, "keys": len(keys), "read_size": READ_SIZE}


# --- the measurement ----------------------------------------------------------------------------

def native_built() -> dict:
    from iq_etl.ingest.sources.car import scanner

    return {"available": scanner.native_available(), "why": scanner.NATIVE_MISSING}


def measure_scan(chain: Chain, repeats: int) -> dict[str, list[dict]]:
    """Interleaved runs of both walkers and both floors:
    {'read': [...], 'decode_car': [...], 'python': [...], 'native': [...], 'no_v0_check': [...],
    'python_8m': [...], 'native_8m': [...], 'key_search': [...]} (the last three: diagnostics)."""
    common.warm_page_cache(chain.car_paths)
    native = run_child("bench_scan:native_built")["available"]
    runs: dict[str, list[dict]] = {"read": [], "decode_car": [], "python": [], "native": [], "no_v0_check": [],
                                   "python_8m": [], "native_8m": [], "key_search": []}
    for _ in range(repeats):
        runs["read"].append(run_child("bench_scan:read_floor", paths=list(chain.car_paths)))
        runs["decode_car"].append(run_child("bench_scan:decode_car_floor", paths=list(chain.car_paths)))
        runs["python"].append(run_child("bench_scan:scan", chain=chain.to_json(), scanner="python"))
        if native:
            runs["native"].append(run_child("bench_scan:scan", chain=chain.to_json(), scanner="native"))
        diag = run_child("bench_scan:scan", chain=chain.to_json(), without_v0_check=True, scanner="python")
        if not diag.get("unavailable"):
            runs["no_v0_check"].append(diag)
        runs["python_8m"].append(run_child("bench_scan:scan", chain=chain.to_json(), scanner="python",
                                           read_size=OLD_READ_SIZE))
        if native:
            runs["native_8m"].append(run_child("bench_scan:scan", chain=chain.to_json(), scanner="native",
                                               read_size=OLD_READ_SIZE))
        runs["key_search"].append(run_child("bench_scan:key_search_floor", paths=list(chain.car_paths),
                                            program_ids=list(chain.program_ids)))
    return runs


def scan_rates(runs: list[dict]) -> dict[str, float]:
    return {"tx_s": median([r["transactions"] / r["seconds"] for r in runs]),
            "tx_cpu_s": median([r["transactions"] / r["cpu_s"] for r in runs]),
            "mb_s": median([r["bytes"] / r["seconds"] / 1e6 for r in runs]),
            "seconds": median([r["seconds"] for r in runs]),
            "rss": median([r["peak_rss_mb"] for r in runs])}


def rows_from(chain: Chain, runs: dict[str, list[dict]]) -> list[Row]:
    py_r, nat_r, read_r, dec_r = runs["python"], runs["native"], runs["read"], runs["decode_car"]
    s = scan_rates(py_r)
    read_mb_s = median([r["bytes"] / r["seconds"] / 1e6 for r in read_r])
    dec_tx_s = median([r["transactions"] / r["seconds"] for r in dec_r])
    dec_cpu = median([r["transactions"] / r["cpu_s"] for r in dec_r])
    dec_rss = median([r["peak_rss_mb"] for r in dec_r])
    if dec_r and dec_r[0]["transactions"] != chain.transactions:
        raise AssertionError(f"decode_car found {dec_r[0]['transactions']} transactions, chain has {chain.transactions}")
    m = "1 CAR scan"
    n = len(py_r)
    size = f"{chain.transactions:,} tx, {chain.car_bytes / 1e6:.0f} MB, {len(chain.car_paths)} file(s), {n} runs"
    vs_dec = s["tx_s"] / dec_tx_s
    vs_read = s["mb_s"] / read_mb_s
    lut = py_r[0].get("lookups") or {}
    rows = [
        Row(m, "iq-etl reader + IQ pre-filter", f"{fmt(s['tx_s'])} tx/s",
            f"pure-Python walk (IQ_SCANNER=python); {fmt(s['mb_s'])} MB/s; {fmt(s['tx_cpu_s'])} tx per CPU-s; {seconds_text([r['seconds'] for r in py_r])}; peak RSS {s['rss']:.0f} MB; "
            f"{py_r[0]['matched']} candidates kept; {size}",
            f"≥ {TX_PER_S_TARGET:,} tx/s", s["tx_s"] >= TX_PER_S_TARGET),
        Row(m, "floor: read the bytes", f"{fmt(read_mb_s)} MB/s",
            f"{seconds_text([r['seconds'] for r in read_r])} (8 MiB readinto, page cache)"),
        Row(m, "floor: libipld.decode_car in memory", f"{fmt(dec_tx_s)} tx/s",
            f"{fmt(dec_cpu)} tx per CPU-s; {seconds_text([r['seconds'] for r in dec_r])} decoding; "
            f"peak RSS {dec_rss:.0f} MB (whole file in memory)"),
        ratio_row(m, "reader / decode_car (tx/s)", vs_dec, f"≥ {DECODE_CAR_TARGET}",
                  vs_dec >= DECODE_CAR_TARGET, f"pure-Python walk; peak RSS reader {s['rss']:.0f} MB vs decode_car {dec_rss:.0f} MB"),
        ratio_row(m, "reader / read floor (MB/s)", vs_read, detail="share of raw read speed the reader keeps"),
    ]
    if lut:
        rows.append(Row(m, "lookup-table cache hit rate", f"{lut['hit_rate']:.2%}",
                        f"{lut['v0_checked']:,} v0 transactions checked, {lut['metadata_decompressed']:,} needed their "
                        f"metadata decompressed; {lut['tables']} tables learned (one cold scan)"))
    if nat_r:
        nr = scan_rates(nat_r)
        vs_dec_n = nr["tx_s"] / dec_tx_s
        same = {r["candidates_digest"] for r in nat_r} == {r["candidates_digest"] for r in py_r} \
            and nat_r[0]["matched"] == py_r[0]["matched"]
        rows += [
            Row(m, "iq-etl reader + IQ pre-filter, compiled walker (IQ_SCANNER=native)", f"{fmt(nr['mb_s'])} MB/s",
                f"{fmt(nr['tx_s'])} tx/s; {fmt(nr['tx_cpu_s'])} tx per CPU-s; {seconds_text([r['seconds'] for r in nat_r])}; "
                f"peak RSS {nr['rss']:.0f} MB; {nat_r[0]['matched']} candidates kept, "
                f"{'the same as' if same else 'DIFFERENT FROM'} the pure-Python walk's",
                f"≥ {NATIVE_MB_S_TARGET:,.0f} MB/s", nr["mb_s"] >= NATIVE_MB_S_TARGET and same),
            ratio_row(m, "compiled walker / decode_car (tx/s)", vs_dec_n, f"≥ {NATIVE_DECODE_CAR_TARGET}",
                      vs_dec_n >= NATIVE_DECODE_CAR_TARGET,
                      f"compiled / pure Python {nr['tx_s'] / s['tx_s']:.2f}x; compiled / read floor "
                      f"{nr['mb_s'] / read_mb_s:.2f}x"),
        ]
    else:
        rows.append(Row(m, "compiled walker (IQ_SCANNER=native)", "not built", "no C compiler at install time"))
    return rows + _diagnostic_rows(m, runs["no_v0_check"], py_r, dec_tx_s, dec_cpu) \
        + _read_size_rows(m, runs, dec_tx_s)


def _diagnostic_rows(m: str, runs: list[dict], scan_r: list[dict], dec_tx_s: float, dec_cpu: float) -> list[Row]:
    """What the v0 lookup-table check costs the pure-Python walk: the same walk with it answering "no"."""
    if not runs:
        return []
    d = scan_rates(runs)
    share = 1 - median([r["cpu_s"] for r in runs]) / median([r["cpu_s"] for r in scan_r])
    return [Row(m, "diagnostic: pure-Python reader without the v0 lookup-table check", f"{fmt(d['tx_s'])} tx/s",
                f"{fmt(d['tx_cpu_s'])} tx per CPU-s = {d['tx_s'] / dec_tx_s:.2f}x decode_car by wall, "
                f"{d['tx_cpu_s'] / dec_cpu:.2f}x by CPU; the check (lookup-table cache, metadata on a miss) "
                f"takes {share:.0%} of the reader's CPU time. Not a product mode: it would miss IQ "
                f"calls through lookup tables")]


def _read_size_rows(m: str, runs: dict[str, list[dict]], dec_tx_s: float) -> list[Row]:
    """Both walkers with the read size used before (8 MiB), and the key search on its own: what
    the smaller reads gained and what the key search costs, from the same interleaved runs."""
    rows = []
    for key, name in (("python", "pure-Python reader"), ("native", "compiled walker")):
        old, new = runs.get(f"{key}_8m") or [], runs.get(key) or []
        if not old or not new:
            continue
        o, n = scan_rates(old), scan_rates(new)
        same = {r["candidates_digest"] for r in old} == {r["candidates_digest"] for r in new}
        rows.append(Row(m, f"diagnostic: {name} with {OLD_READ_SIZE >> 20} MiB reads (the read size before)",
                        f"{fmt(o['tx_s'])} tx/s",
                        f"{o['tx_s'] / dec_tx_s:.2f}x decode_car by wall ({n['tx_s'] / dec_tx_s:.2f}x with "
                        f"the current reads); current / before: {n['tx_s'] / o['tx_s']:.2f}x by wall, "
                        f"{n['tx_cpu_s'] / o['tx_cpu_s']:.2f}x by CPU; {seconds_text([r['seconds'] for r in old])}; "
                        f"peak RSS {o['rss']:.0f} MB (current {n['rss']:.0f} MB); candidates "
                        f"{'the same' if same else 'DIFFERENT'}"))
    ks, py_r = runs.get("key_search") or [], runs.get("python") or []
    if ks and py_r:
        cpu = median([r["cpu_s"] for r in ks])
        share = cpu / median([r["cpu_s"] for r in py_r])
        rows.append(Row(m, "diagnostic: the pure-Python walk's key search alone", seconds_text([r["seconds"] for r in ks]),
                        f"{ks[0]['keys']} bytes.find passes over every byte ({ks[0]['hits']:,} hits), "
                        f"{ks[0]['read_size'] >> 20} MiB readinto chunks included; {cpu:.3f} CPU-s = {share:.0%} of "
                        f"the pure-Python reader's CPU time"))
    return rows


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    chain = common.ensure_chain(quick)
    return rows_from(chain, measure_scan(chain, common.repeats_for(quick, repeats)))


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
