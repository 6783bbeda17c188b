"""2. Memory: peak RSS of the streaming reader (IQ pre-filter on) scanning the benchmark chain
and a chain 10x larger (ten back-to-back copies of its blocks in one CAR, slot numbers shifted;
built once with iq-etl's CarWriter and cached). Each scan is a fresh child process. Target:
ratio <= 1.2, i.e. memory does not grow with the archive.

    .venv/bin/python bench/bench_memory.py [--quick] [--repeats N]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import SCALE, Row, fmt, median, ratio_row, run_child, seconds_text  # noqa: E402

RATIO_TARGET = 1.2


def measure(quick: bool, repeats: int) -> tuple[common.Chain, common.Chain, dict[str, list[dict]]]:
    base = common.ensure_chain(quick)
    big = common.ensure_scaled_chain(base, SCALE)
    common.warm_page_cache(base.car_paths + big.car_paths)  # 1.4 GB: fits this machine's page cache
    runs: dict[str, list[dict]] = {"base": [], "big": [], "epoch": []}
    for _ in range(repeats):
        runs["base"].append(run_child("bench_scan:scan", chain=base.to_json()))
        runs["big"].append(run_child("bench_scan:scan", chain=big.to_json()))
    # Diagnostic, once: the same 10x file scanned as its whole epoch (432,000 slots, most of them
    # empty), the way `iter_blocks` is called for an epoch spec: shows what grows with the slot
    # count rather than with the data.
    epoch = big.first_slot // common.SLOTS_PER_EPOCH
    whole = dict(big.to_json(), first_slot=epoch * common.SLOTS_PER_EPOCH,
                 last_slot=(epoch + 1) * common.SLOTS_PER_EPOCH - 1)
    runs["epoch"].append(run_child("bench_scan:scan", chain=whole))
    return base, big, runs


def rows_from(base: common.Chain, big: common.Chain, runs: dict[str, list[dict]]) -> list[Row]:
    m = "2 memory"
    rss_base = median([r["peak_rss_mb"] for r in runs["base"]])
    rss_big = median([r["peak_rss_mb"] for r in runs["big"]])
    ratio = rss_big / rss_base

    def detail(chain: common.Chain, rs: list[dict]) -> str:
        tx_s = median([r["transactions"] / r["seconds"] for r in rs])
        each = ", ".join(f"{r['peak_rss_mb']:.0f}" for r in rs)
        return (f"{chain.transactions:,} tx, {chain.car_bytes / 1e6:,.0f} MB; scan {seconds_text([r['seconds'] for r in rs])}, "
                f"{fmt(tx_s)} tx/s; RSS of each run {each} MB")

    rows = [
        Row(m, "peak RSS, scan of the chain", f"{rss_base:.0f} MB", detail(base, runs["base"])),
        Row(m, f"peak RSS, scan of the {SCALE}x chain", f"{rss_big:.0f} MB", detail(big, runs["big"])),
        ratio_row(m, f"{SCALE}x chain / chain (peak RSS)", ratio, f"≤ {RATIO_TARGET}", ratio <= RATIO_TARGET),
    ]
    if runs.get("epoch"):
        e = runs["epoch"][0]
        rows.append(Row(m, f"diagnostic: {SCALE}x file scanned as its whole epoch (432,000 slots)",
                        f"{e['peak_rss_mb']:.0f} MB",
                        f"same data as the {SCALE}x scan (its {big.slots:,}-slot range); +{e['peak_rss_mb'] - rss_big:.0f} MB "
                        f"over it: memory that grows with the slot range (one run)"))
    return rows


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    return rows_from(*measure(quick, common.repeats_for(quick, repeats)))


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
