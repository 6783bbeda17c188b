"""Shared pieces of the benchmarks: the cached benchmark chain (and its 10x copy), measurements in
fresh child processes (each with its own peak RSS and, when it needs one, its own chDB folder),
medians, and the results table (printed, and appended to bench/RESULTS.md by run_all.py).

Why child processes: chDB allows one open folder per process, and a process's peak RSS
(VmHWM) only ever grows, so every measurement that needs a warehouse or a memory figure runs in
a fresh `python bench/_child.py module:function '{json kwargs}'`.

The cache lives in bench/.cache/ (gitignored; IQ_BENCH_CACHE overrides), one folder per chain
parameter set, built once under a file lock and renamed into place when complete.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
CHILD = BENCH_DIR / "_child.py"
RESULT_MARK = "BENCH-RESULT "
COMPLETE_MARK = ".bench-complete"

# The benchmark chain: >= 200,000 transactions over two epoch files, IQ share about 0.58%, 30% v0
# transactions with lookup tables, votes, multi-instruction transactions (see src/iq_etl/devchain).
FULL_CHAIN = dict(seed=0, sessions=170, noise_tx_per_slot=50, slots=4100, first_slot=398_734_000)
# --quick: the smallest chain the generator accepts with some noise (smoke runs, not figures).
QUICK_CHAIN = dict(seed=0, sessions=39, noise_tx_per_slot=4, slots=300, first_slot=398_734_000)
SCALE = 10                      # the memory benchmark's larger chain is this many copies
SCALED_FIRST_EPOCH = 930        # the copies go into one CAR file starting at this epoch's first slot
SLOTS_PER_EPOCH = 432_000
DEFAULT_REPEATS = 5             # runs per variant; the slow stages (dbt) use fewer


def cache_dir() -> Path:
    return Path(os.environ.get("IQ_BENCH_CACHE", "") or BENCH_DIR / ".cache").resolve()


def _key(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """One builder at a time (make bench and a smoke test may start together)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- the chains ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chain:
    """What the measurements need to know about a chain on disk."""

    dir: str
    template: str                     # `DIR/{epoch}/epoch-{epoch}.car`
    first_slot: int
    last_slot: int
    transactions: int
    car_paths: tuple[str, ...]
    program_ids: tuple[str, ...]      # every IQ program the chain uses (default ones + extra)
    extra_program_ids: tuple[str, ...]
    iq_transactions: int = 0
    slots: int = 0

    @property
    def car_bytes(self) -> int:
        return sum(os.path.getsize(p) for p in self.car_paths)

    def wanted_keys(self) -> list[bytes]:
        from solders.pubkey import Pubkey

        return [bytes(Pubkey.from_string(p)) for p in self.program_ids]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Chain":
        data = dict(data)
        for name in ("car_paths", "program_ids", "extra_program_ids"):
            data[name] = tuple(data[name])
        return cls(**data)


def chain_params(quick: bool) -> dict:
    return dict(QUICK_CHAIN if quick else FULL_CHAIN)


def ensure_chain(quick: bool = False) -> Chain:
    """The benchmark chain, built on first use and cached by its parameters."""
    from iq_etl.devchain.manifest import FORMAT

    params = chain_params(quick)
    out = cache_dir() / f"chain-{_key([FORMAT, params])}"
    if (out / COMPLETE_MARK).is_file():
        return chain_info(out)
    with _cache_lock():
        if not (out / COMPLETE_MARK).is_file():
            from iq_etl.devchain.build import build_chain

            building = out.with_name(out.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            _note(f"building the benchmark chain {params} in {out} (once; cached)")
            started = time.perf_counter()
            build_chain(building, **params)
            (building / COMPLETE_MARK).write_text(json.dumps(params) + "\n")
            building.rename(out)
            _note(f"  built in {time.perf_counter() - started:.0f} s")
    return chain_info(out)


def chain_info(chain_dir: Path) -> Chain:
    from iq_etl.devchain.chain import car_template, chain_car_paths, load_manifest

    m = load_manifest(chain_dir)
    return Chain(dir=str(chain_dir), template=car_template(chain_dir), first_slot=m.first_slot,
                 last_slot=m.last_slot, transactions=m.tx_counts["transactions"],
                 car_paths=tuple(str(p) for p in chain_car_paths(chain_dir).values()),
                 program_ids=tuple(m.all_program_ids()), extra_program_ids=tuple(m.extra_program_ids),
                 iq_transactions=m.tx_counts["iq"], slots=m.last_slot - m.first_slot + 1)


def ensure_scaled_chain(base: Chain, copies: int = SCALE) -> Chain:
    """`copies` back-to-back copies of `base`'s blocks in one CAR file (with its slot-ranges
    index), slot numbers shifted so the copies follow each other, written through iq-etl's own
    CarWriter: a valid Old Faithful-style CAR the reader treats like any other. Cached."""
    out = Path(base.dir).with_name(Path(base.dir).name + f"-x{copies}")
    info = out / "chain.json"
    if (out / COMPLETE_MARK).is_file():
        return Chain.from_json(json.loads(info.read_text()))
    with _cache_lock():
        if not (out / COMPLETE_MARK).is_file():
            building = out.with_name(out.name + ".building")
            shutil.rmtree(building, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            _note(f"writing the {copies}x chain in {out} (once; cached)")
            started = time.perf_counter()
            chain = _write_scaled(base, copies, building, out)
            (building / "chain.json").write_text(json.dumps(chain.to_json(), indent=1) + "\n")
            (building / COMPLETE_MARK).write_text("\n")
            building.rename(out)
            _note(f"  written in {time.perf_counter() - started:.0f} s")
    return Chain.from_json(json.loads(info.read_text()))


def _base_blocks(base: Chain) -> list[tuple[int, list, list]]:
    """[(slot, block meta [parent, time, height], [(tx wire, TxMeta)])] of every block of `base`,
    decoded once. Sections are walked with the reader's generic section walk and decoded with
    libipld; multi-frame payloads are joined from the slot's DataFrames."""
    import libipld

    from iq_etl.ingest.sources.car.format import KIND_BLOCK, KIND_DATAFRAME, KIND_TRANSACTION
    from iq_etl.ingest.sources.car.reader import CarFile
    from iq_etl.ingest.sources.car.tx_meta import decode_meta

    def payload(frame, frames) -> bytes:
        data = frame[4]
        links = frame[5] if len(frame) > 5 else None
        if not links:
            return data
        parts = [(frame[2] or 0, data)]
        stack = list(links)
        while stack:
            sub = libipld.decode_dag_cbor(frames[stack.pop()])
            parts.append((sub[2], sub[4]))
            stack.extend(sub[5] or ())
        return b"".join(d for _, d in sorted(parts, key=lambda p: p[0]))

    blocks = []
    for path in base.car_paths:
        txs: list = []
        frames: dict = {}
        for section in CarFile(path).iter_sections():
            if section.kind == KIND_DATAFRAME:
                frames[section.cid] = section.data
            elif section.kind == KIND_TRANSACTION:
                node = libipld.decode_dag_cbor(section.data)
                txs.append((payload(node[1], frames), decode_meta(payload(node[2], frames))))
            elif section.kind == KIND_BLOCK:
                node = libipld.decode_dag_cbor(section.data)
                blocks.append((node[1], node[4], txs))
                txs, frames = [], {}
    return blocks


def _write_scaled(base: Chain, copies: int, building: Path, final: Path) -> Chain:
    from iq_etl.devchain.build import DEFAULT_MAX_FRAME_BYTES
    from iq_etl.devchain.car_writer import CarWriter

    blocks = _base_blocks(base)
    span = base.last_slot - base.first_slot + 1
    first = SCALED_FIRST_EPOCH * SLOTS_PER_EPOCH
    if span * copies > SLOTS_PER_EPOCH:
        raise ValueError(f"{copies} copies of {span} slots do not fit one epoch")
    epoch = SCALED_FIRST_EPOCH
    car = building / str(epoch) / f"epoch-{epoch}.car"
    transactions = 0
    parent = first - 1
    with CarWriter(car, max_frame_bytes=DEFAULT_MAX_FRAME_BYTES) as writer:
        for k in range(copies):
            for slot, meta, txs in blocks:
                new_slot = first + k * span + (slot - base.first_slot)
                block_time = (meta[1] or 0) + k * span * 2 // 5
                height = meta[2] + k * span if meta[2] is not None else None
                writer.add_slot(new_slot, parent, block_time, height, txs)
                parent = new_slot
                transactions += len(txs)
    last = first + copies * span - 1
    return Chain(dir=str(final), template=str(final / "{epoch}" / "epoch-{epoch}.car"), first_slot=first,
                 last_slot=last, transactions=transactions,
                 car_paths=(str(final / str(epoch) / f"epoch-{epoch}.car"),), program_ids=base.program_ids,
                 extra_program_ids=base.extra_program_ids, iq_transactions=base.iq_transactions * copies,
                 slots=copies * span)


def warm_page_cache(paths: Iterable[str]) -> None:
    """Read files once so every timed run reads them from the page cache alike."""
    buf = bytearray(8 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


# --- child processes ----------------------------------------------------------------------------

class ChildFailed(RuntimeError):
    pass


def run_child(target: str, timeout: float = 1800, **kwargs: Any) -> dict:
    """Run `module:function(**kwargs)` (a module in bench/) in a fresh Python process and return
    its dict result, plus `peak_rss_mb` (the child's VmHWM) and `child_wall_s`."""
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(CHILD), target, json.dumps(kwargs)], cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ChildFailed(f"{target} did not finish within {timeout:.0f} s (killed)") from None
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK):])
    if proc.returncode != 0 or result is None:
        how = f"exit {proc.returncode}"
        if proc.returncode < 0:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-proc.returncode).name}"
        if result is not None:
            raise ChildFailed(f"{target}: {how} after finishing its work (while shutting down)")
        tail = "\n".join(proc.stderr.strip().splitlines()[-25:])
        raise ChildFailed(f"{target} failed ({how}):\n{tail}")
    result["child_wall_s"] = time.perf_counter() - started
    return result


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def fresh_warehouse(prefix: str = "iq-bench-") -> Iterator[Any]:
    """Settings for an embedded chDB warehouse in a new temporary folder (removed afterwards),
    with the client opened and migrated before anything is timed."""
    from iq_etl.settings import load_settings
    from iq_etl.warehouse.client import close_client, get_client
    from iq_etl.warehouse.schema import migrate

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        settings = load_settings({"IQ_CLICKHOUSE_DSN": f"chdb://{tmp / 'warehouse'}",
                                  "IQ_ETL_HOME": str(tmp / "home")}, dotenv=tmp / "no.env")
        client = get_client(settings)
        migrate(client)
        try:
            yield settings, client
        finally:
            close_client()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of this process)."""
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


# --- numbers and tables -------------------------------------------------------------------------

def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def seconds_text(values: Sequence[float]) -> str:
    """`1.23 s (1.20-1.31)`: the median of the runs and their range, to show how noisy it is."""
    text = f"{fmt(median(values))} s"
    if len(values) > 1:
        text += f" ({fmt(min(values))}-{fmt(max(values))})"
    return text


def fmt(x: float, digits: int = 3) -> str:
    """Human number: 1,234,567 / 12,345 / 123 / 12.3 / 1.23 / 0.123."""
    if x != x:  # NaN
        return "n/a"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    return f"{x:.{digits}f}"


@dataclass
class Row:
    """One line of the results table."""

    measure: str          # "1 CAR scan"
    what: str             # "iq-etl reader, IQ pre-filter"
    result: str           # "512,340 tx/s" (the median)
    detail: str = ""      # other figures of the same runs
    target: str = ""      # "≥ 2.0" when the benchmark sets one
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.met is None else ("met" if self.met else "MISSED")


def ratio_row(measure: str, what: str, value: float, target: str = "", met: bool | None = None,
              detail: str = "") -> Row:
    return Row(measure, what, f"{value:.2f}x", detail, target, met)


def markdown_table(rows: Sequence[Row]) -> str:
    head = ["#", "measurement", "median", "details (same runs)", "target", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        cells = [r.measure, r.what, r.result, r.detail, r.target, r.verdict]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def machine_line() -> str:
    load = os.getloadavg()
    return (f"nproc {os.cpu_count()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
            f"Python {platform.python_version()}, {platform.machine()}")


def git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def append_results(title: str, rows: Sequence[Row], notes: Sequence[str] = (), sections: Sequence[str] = ()) -> None:
    """Append one run (date, nproc, table, notes) to bench/RESULTS.md; history is kept."""
    parts = [f"\n## {title}\n"]
    parts += [f"- {n}" for n in notes]
    parts += ["", markdown_table(rows), ""]
    parts += list(sections)
    with open(RESULTS_MD, "a", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def print_rows(rows: Sequence[Row], header: str | None = None) -> None:
    if header:
        print(header)
    print(markdown_table(rows), flush=True)


def standard_args(description: str, argv: Sequence[str] | None = None):
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny chain, one run: a smoke run, not figures")
    parser.add_argument("--repeats", type=int, default=None, help=f"runs per variant (default {DEFAULT_REPEATS})")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def repeats_for(quick: bool, repeats: int | None, default: int = DEFAULT_REPEATS) -> int:
    if repeats is not None:
        return repeats
    return 1 if quick else default
