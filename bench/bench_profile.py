"""Profiles (cProfile, every thread) of the slowest stage by wall time, the transform's full dbt
build, and of the per-transaction hot path, the CAR scan; printed and, from run_all.py, appended
to bench/RESULTS.md with the run. Each profile runs in a fresh child process.

Time is attributed per package (dbt, jinja2, clickhouse_connect/chdb, ...) by the function's own
time (tottime), which adds up to the profiled total; the top functions follow.

    .venv/bin/python bench/bench_profile.py [--quick] [--top N]
"""
from __future__ import annotations

import cProfile
import pstats
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Chain, run_child, timed  # noqa: E402

TOP = 12


class AllThreads:
    """cProfile in this thread and in every thread started while active (dbt runs its nodes in a
    thread pool; a plain cProfile sees only the main thread waiting)."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, frame, event, arg):  # threading.setprofile hook
        profile = cProfile.Profile()
        with self._lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this hook in the new thread

    def __enter__(self) -> "AllThreads":
        threading.setprofile(self._start_in_thread)
        main = cProfile.Profile()
        self.profiles.append(main)
        main.enable()
        return self

    def __exit__(self, *exc) -> None:
        threading.setprofile(None)
        for p in self.profiles:
            p.disable()  # only stops the calling thread's profiler; the pool threads have ended

    def stats(self) -> pstats.Stats:
        stats = pstats.Stats(self.profiles[0])
        for p in self.profiles[1:]:
            try:
                stats.add(p)
            except TypeError:  # a profiler that never saw a call
                pass
        return stats


def _statement(sql) -> str:
    """The start of a statement without dbt's leading query comment, on one line."""
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)
    text = text.lstrip()
    while text.startswith("/*") and "*/" in text:
        text = text.split("*/", 1)[1].lstrip()
    lines = [ln.split("--", 1)[0] for ln in text.splitlines()]
    return " ".join(" ".join(lines).split())[:160]


class EngineCalls:
    """Every call into the chDB engine made through clickhouse-connect's chDB backend (ingest,
    dbt and export all go through it), with its statement kind and time. Patches the backend
    class for the duration, in this process only."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    @staticmethod
    def kind(sql) -> str:
        text = (sql.decode(errors="replace") if isinstance(sql, bytes) else str(sql)).lstrip()
        while text.startswith("/*") and "*/" in text:  # dbt's query comment
            text = text.split("*/", 1)[1].lstrip()
        text = text.lstrip("(").lstrip()
        head = " ".join(text.split()[:2]).upper()
        upper = text[:400].upper()
        if upper.startswith("SELECT NAME, VALUE, CHANGED FROM SYSTEM.SETTINGS"):
            return "settings snapshot (per-call settings)"
        if head.startswith("SET "):
            return "SET (per-call settings)"
        if " SYSTEM." in upper or upper.startswith("SHOW") or upper.startswith("DESCRIBE"):
            return "metadata (system tables, describe)"
        word = head.split(" ", 1)[0]
        if word in ("WITH", "SELECT"):
            return "SELECT"
        if word == "CREATE":
            return "CREATE " + ("VIEW" if " VIEW " in upper[:200] else "TABLE")
        if word == "INSERT":
            return "INSERT ... SELECT" if "SELECT" in upper else "INSERT"
        return word or "?"

    def __enter__(self) -> "EngineCalls":
        from clickhouse_connect.driver._backend.chdb_backend import ChdbBackend

        self._cls = ChdbBackend
        self._orig_query, self._orig_stream = ChdbBackend._query_locked, ChdbBackend._open_stream
        calls, kind, perf = self.calls, self.kind, __import__("time").perf_counter
        orig_query, orig_stream = self._orig_query, self._orig_stream

        def query_locked(backend, sql, fmt, params=None):
            t0 = perf()
            try:
                return orig_query(backend, sql, fmt, params)
            finally:
                calls.append((kind(sql), perf() - t0, _statement(sql)))

        def open_stream(backend, sql, fmt, params, database):
            t0 = perf()
            try:
                return orig_stream(backend, sql, fmt, params, database)
            finally:
                calls.append((kind(sql), perf() - t0, _statement(sql)))

        ChdbBackend._query_locked, ChdbBackend._open_stream = query_locked, open_stream
        return self

    def __exit__(self, *exc) -> None:
        self._cls._query_locked, self._cls._open_stream = self._orig_query, self._orig_stream

    def summary(self, top: int = 8) -> dict:
        by_kind: dict[str, list[float]] = {}
        for kind, seconds, _ in self.calls:
            by_kind.setdefault(kind, []).append(seconds)
        kinds = sorted(((k, len(v), sum(v)) for k, v in by_kind.items()), key=lambda r: -r[2])
        slowest = sorted(self.calls, key=lambda c: -c[1])[:top]
        return {"engine_calls": len(self.calls), "engine_s": sum(c[1] for c in self.calls),
                "engine_kinds": kinds[:top], "engine_slowest": [(k, t, sql) for k, t, sql in slowest]}


def _package(filename: str, name: str) -> str:
    """Who owns a function: the top-level package under site-packages, `iq-etl`, the stdlib, or
    for C functions the object they are a method of."""
    if filename == "~":
        for owner in ("_walker", "chdb", "zstandard", "libipld", "solders", "_hashlib", "_json", "_io", "_thread", "select",
                      "_socket", "_pickle", "re", "posix", "msgpack"):
            if owner in name:
                return f"C: {owner}"
        return "C: builtins"
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/work/main/" in filename or str(common.REPO) in filename:
        return "iq-etl: " + filename.split(str(common.REPO) + "/", 1)[-1]
    return "stdlib"


# Threads blocked waiting for another one: their time is idle, not work (reported apart).
_WAITS = ("acquire' of '_thread", "get' of '_queue.SimpleQueue", "poll' of 'select", "time.sleep", "_handle_tasks",
          "_handle_workers", "_handle_results", "select' of 'select", "epoll' objects")


def _is_wait(filename: str, name: str) -> bool:
    text = f"{filename}:{name}"
    return any(w in text for w in _WAITS)


def summarize(stats: pstats.Stats, top: int) -> dict:
    by_package: dict[str, float] = {}
    total = idle = 0.0
    rows = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():
        if _is_wait(filename, name):
            idle += tt
            continue
        total += tt
        pkg = _package(filename, name)
        by_package[pkg] = by_package.get(pkg, 0.0) + tt
        where = name if filename == "~" else f"{filename.split('site-packages/')[-1].replace(str(common.REPO) + '/', '')}:{line}({name})"
        rows.append((tt, ct, nc, where))
    rows.sort(reverse=True)
    # Blocking waits (lock acquire, select) are threads idling while another works: shown, not hidden.
    return {"total_s": total, "idle_s": idle,
            "packages": sorted(by_package.items(), key=lambda kv: -kv[1])[:top],
            "functions": [{"tottime": tt, "cumtime": ct, "calls": nc, "where": where} for tt, ct, nc, where in rows[:top]]}


# --- child functions ----------------------------------------------------------------------------

def profile_scan(chain: dict, top: int = TOP, scanner: str | None = None) -> dict:
    """scanner: IQ_SCANNER for this run (python, native; None: the environment's)."""
    import os

    if scanner is not None:
        os.environ["IQ_SCANNER"] = scanner
    from iq_etl.ingest.sources.car.source import CarSource

    c = Chain.from_json(chain)
    source = CarSource(c.template, wanted_keys=c.wanted_keys())
    used = source.car_file(c.first_slot // common.SLOTS_PER_EPOCH).scanner_used

    def walk() -> int:
        return sum(b.transactions_seen for b in source.iter_blocks(c.first_slot, c.last_slot))

    with AllThreads() as prof:
        seen, wall, _ = timed(walk)
    return {"stage": f"CAR scan (reader + IQ pre-filter, IQ_SCANNER={used})", "wall_s": wall, "transactions": seen,
            **summarize(prof.stats(), top)}


def profile_transform(chain: dict, top: int = TOP) -> dict:
    """Both builds of the transform benchmark, each profiled: full (warm parse), then incremental
    after the last ~1% of slots."""
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.transform.runner import run_dbt

    c = Chain.from_json(chain)
    cut = c.last_slot - max(1, round(c.slots * 0.01))
    out = {}
    with common.fresh_warehouse() as (settings, client):
        def ingest(first: int, last: int) -> None:
            run_ingest(settings, IngestRequest(slot_spec=f"{first}:{last}", source="car", car_url=c.template,
                       extra_program_ids=c.extra_program_ids, resume=False), client=client)

        ingest(c.first_slot, cut)
        run_dbt(settings, command="parse", quiet=True)
        for name, before in (("full dbt build (warm parse)", None), ("incremental dbt build after +1% slots",
                                                                     lambda: ingest(cut + 1, c.last_slot))):
            if before:
                before()
            with EngineCalls() as engine, AllThreads() as prof:
                result, wall, _ = timed(lambda: run_dbt(settings, quiet=True))
            slow_nodes = sorted(result.nodes, key=lambda n: -n.seconds)[:5]
            out[name] = {"stage": f"transform, {name}", "wall_s": wall, "nodes": len(result.nodes),
                         "node_s": sum(n.seconds for n in result.nodes),
                         "node_kinds": {t: sum(n.seconds for n in result.nodes if n.resource_type == t)
                                        for t in sorted({n.resource_type for n in result.nodes})},
                         "slow_nodes": [(n.name, n.resource_type, n.seconds) for n in slow_nodes],
                         **engine.summary(), **summarize(prof.stats(), top)}
    return out


# --- text ---------------------------------------------------------------------------------------

def as_markdown(p: dict) -> str:
    lines = [f"### Profile: {p['stage']}", ""]
    extra = ""
    if "nodes" in p:
        extra = f"; dbt reports {p['node_s']:.1f} s inside its {p['nodes']} nodes"
    if "transactions" in p:
        extra = f"; {p['transactions']:,} transactions"
    lines.append(f"Wall {p['wall_s']:.2f} s under cProfile (every thread): {p['total_s']:.2f} s of work, shares below "
                 f"are of that; {p['idle_s']:.1f} s of threads blocked waiting left out{extra}.")
    lines += ["", "| own time by package | s | share |", "|---|---|---|"]
    for pkg, t in p["packages"]:
        lines.append(f"| {pkg} | {t:.2f} | {t / p['total_s']:.0%} |")
    lines += ["", "| function | own s | cumulative s | calls |", "|---|---|---|---|"]
    for f in p["functions"]:
        lines.append(f"| `{f['where']}` | {f['tottime']:.2f} | {f['cumtime']:.2f} | {f['calls']:,} |")
    if "engine_calls" in p:
        kinds = ", ".join(f"{t} {s:.2f} s" for t, s in p["node_kinds"].items())
        lines += ["", f"dbt node time by type: {kinds}. Slowest nodes: "
                  + ", ".join(f"{name} ({kind}) {s:.2f} s" for name, kind, s in p["slow_nodes"]) + ".", "",
                  f"chDB engine calls: {p['engine_calls']} taking {p['engine_s']:.2f} s in all.", "",
                  "| engine call kind | calls | s |", "|---|---|---|"]
        for kind, n, s in p["engine_kinds"]:
            lines.append(f"| {kind} | {n} | {s:.2f} |")
        lines += ["", "Slowest engine calls: " + "; ".join(
            f"{t:.2f} s `{sql[:100]}`" for _, t, sql in p["engine_slowest"][:4])]
    return "\n".join(lines) + "\n"


def run(quick: bool = False, top: int = TOP) -> list[str]:
    chain = common.ensure_chain(quick)
    common.warm_page_cache(chain.car_paths)
    transform = run_child("bench_profile:profile_transform", chain=chain.to_json(), top=top)
    scans = [run_child("bench_profile:profile_scan", chain=chain.to_json(), top=top, scanner="python")]
    if run_child("bench_scan:native_built")["available"]:
        scans.append(run_child("bench_profile:profile_scan", chain=chain.to_json(), top=top, scanner="native"))
    return [as_markdown(p) for name, p in transform.items() if isinstance(p, dict)] + [as_markdown(p) for p in scans]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--top", type=int, default=TOP)
    args = parser.parse_args(argv)
    for text in run(args.quick, args.top):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
