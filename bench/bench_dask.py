"""7. Dask fan-out: the end-to-end ingest of the 10x chain with its sub-ranges as Prefect tasks on a Dask
cluster (iq_etl.orchestration.backfill.DaskFanout), 2 Dask workers versus 1, beside `--threads 1` (in
process) and `--threads 2` (worker processes) measured in the same interleaved runs.

The cluster is what an operator runs: `dask scheduler` and `dask worker --nthreads 1 --no-nanny` processes
(distributed's CLI) on loopback, started before the run and warmed (iq_etl and Prefect's task engine
imported on each worker), as a standing cluster would be. Each run is a fresh child process and
warehouse, timed from after the warehouse is open and the Dask client connected; the rows every run
writes must equal the --threads 1 rows. The child's own temporary Prefect API takes the task runs.
No target: the ratio is recorded (docs/SCALING.md uses it).

    .venv/bin/python bench/bench_dask.py [--quick] [--repeats N]
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Chain, Row, fmt, median, ratio_row, run_child, seconds_text, timed  # noqa: E402

DASK = str(Path(sys.executable).with_name("dask"))


# --- child function -----------------------------------------------------------------------------

def ingest_dask(chain: dict, address: str) -> dict:
    """One run_ingest of the chain with the Dask fan-out on the cluster at `address`."""
    import iq_etl.ingest.decode  # noqa: F401 - loaded before timing, as bench_ingest does
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.orchestration import prefect_env

    c = Chain.from_json(chain)
    with common.fresh_warehouse() as (settings, client):
        prefect_env.configure(settings.home)
        from iq_etl.orchestration.backfill import DaskFanout

        with DaskFanout(address=address) as fanout:
            _warm_prefect(fanout)
            summary, wall, cpu = timed(lambda: run_ingest(
                settings, IngestRequest(slot_spec=f"{c.first_slot}:{c.last_slot}", source="car", car_url=c.template,
                                        extra_program_ids=c.extra_program_ids, resume=False),
                client=client, fanout=fanout))
        stored = client.query("SELECT count() FROM iq.raw_instructions FINAL").result_rows[0][0]
    if summary.incomplete or stored != summary.rows_written or not summary.rows_written:
        raise AssertionError(f"ingest wrote {summary.rows_written} rows, the table holds {stored}")
    return {"seconds": wall, "cpu_s": cpu, "transactions": summary.transactions_seen, "rows": summary.rows_written,
            "undecoded": summary.undecoded, "ranges": len(summary.ranges)}


def _noop(i: int) -> int:
    return i


def _warm_prefect(fanout, tasks: int = 8) -> None:
    """A standing cluster's workers have run Prefect tasks before: the first task run in a worker process
    sets up its Prefect client (seconds, measured: docs/SCALING.md). Pay that before timing."""
    import cloudpickle
    from prefect import task

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    noop = task(name="warm-up", persist_result=False)(_noop)
    for fut in [fanout._runner.submit(noop, {"i": i}) for i in range(tasks)]:
        fut.result()


# --- the cluster ----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`dask scheduler` + `workers` single-threaded `dask worker`s on loopback, warmed; stopped on exit."""

    def __init__(self, workers: int):
        self.workers = workers
        self.procs: list[subprocess.Popen] = []
        self.folder = Path(tempfile.mkdtemp(prefix="iq-bench-dask-"))

    def __enter__(self) -> str:
        port = _free_port()
        self.address = f"tcp://127.0.0.1:{port}"
        out = open(self.folder / "cluster.log", "ab")
        env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false")
        self.procs.append(subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                            "--no-dashboard"], stdout=out, stderr=out, env=env,
                                           start_new_session=True))
        for i in range(self.workers):
            self.procs.append(subprocess.Popen(
                [DASK, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                 "--local-directory", str(self.folder / f"w{i}")], stdout=out, stderr=out, env=env,
                start_new_session=True))
        from distributed import Client

        try:
            with Client(self.address, timeout=120) as client:
                client.wait_for_workers(self.workers, timeout=120)
                client.run(_warm)
        except BaseException:
            self.__exit__()
            raise
        return self.address

    def __exit__(self, *exc) -> None:
        """SIGTERM, then SIGKILL after 20 s: no process outlives the measurement."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _warm() -> None:
    import prefect.task_engine  # noqa: F401

    import iq_etl.ingest.fanout  # noqa: F401
    import iq_etl.ingest.sources.car.source  # noqa: F401


# --- the measurement ----------------------------------------------------------------------------

VARIANTS = ("--threads 1", "--threads 2 (worker processes)", "1 Dask worker", "2 Dask workers")


def measure(chain: Chain, repeats: int) -> dict[str, list[dict]]:
    common.warm_page_cache(chain.car_paths)
    timeout = 120 + chain.transactions / 10_000
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for label in VARIANTS:
            try:
                if label.startswith("--threads"):
                    threads = 1 if label == "--threads 1" else 2
                    r = run_child("bench_ingest:ingest", timeout=timeout, chain=chain.to_json(), threads=threads,
                                  worker_kind=None if threads == 1 else "process")
                else:
                    with Cluster(1 if label.startswith("1") else 2) as address:
                        r = run_child("bench_dask:ingest_dask", timeout=timeout, chain=chain.to_json(), address=address)
                runs[label].append(r)
            except (common.ChildFailed, OSError, TimeoutError) as exc:
                runs[label].append({"error": str(exc).strip().splitlines()[-1][:300]})
            time.sleep(0.5)
    return runs


def rows_from(chain: Chain, runs: dict[str, list[dict]], prefix: str) -> list[Row]:
    m = "7 dask"
    rows: list[Row] = []
    ok = {k: [r for r in v if "error" not in r] for k, v in runs.items()}
    reference = {r["rows"] for r in ok["--threads 1"]}
    seconds = {k: median([r["seconds"] for r in v]) for k, v in ok.items() if v}
    for label, rs in runs.items():
        good, bad = ok[label], [r["error"] for r in rs if "error" in r]
        problems = [f"{len(bad)} of {len(rs)} runs failed: {bad[0]}"] if bad else []
        if any(r["rows"] not in reference for r in good):
            problems.append(f"rows differ from --threads 1 ({sorted({r['rows'] for r in good})} vs {sorted(reference)})")
        if not good:
            rows.append(Row(m, f"{prefix}ingest, {label}", "FAILED", "; ".join(problems)))
            continue
        rows.append(Row(m, f"{prefix}ingest, {label}",
                        f"{fmt(median([r['transactions'] / r['seconds'] for r in good]))} tx/s"
                        + (" (PROBLEM)" if problems else ""),
                        "; ".join(problems + [f"{seconds_text([r['seconds'] for r in good])}; {good[0]['ranges']} "
                                              f"sub-ranges; {good[0]['rows']:,} rows"])))
    pairs = [("2 Dask workers", "1 Dask worker"), ("2 Dask workers", "--threads 1"),
             ("2 Dask workers", "--threads 2 (worker processes)"), ("--threads 2 (worker processes)", "--threads 1")]
    for fast, slow in pairs:
        if fast in seconds and slow in seconds:
            rows.append(ratio_row(m, f"{prefix}speedup {fast} vs {slow} (time {slow} / time {fast})",
                                  seconds[slow] / seconds[fast], detail=f"nproc {os.cpu_count()}"))
    return rows


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    """On the 10x chain (the small chain with --quick)."""
    chain = common.ensure_chain(quick)
    prefix = ""
    if not quick:
        chain = common.ensure_scaled_chain(chain, common.SCALE)
        prefix = f"{common.SCALE}x chain: "
    return rows_from(chain, measure(chain, common.repeats_for(quick, repeats, default=3)), prefix)


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
