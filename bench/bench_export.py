"""5. Export: complete uploads per second to a loopback reader backend that answers every request
after 20 ms, with the default concurrency versus one request at a time.

One child process: ingest the chain into a fresh warehouse and `dbt build` once, then every run
exports all of `iq.sessions_ready_to_export` to a new backend (a new port is a new target, so
every upload is pending again) and checks that each one arrived exactly once. The backend runs
in a process of its own (bench/_backend.py), as the real one is remote: in the exporter's process
its request handling (JSON, base64 and sha256 checks) would compete for the same GIL. Target:
default concurrency / 1 >= 5.

    .venv/bin/python bench/bench_export.py [--quick] [--repeats N]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import Chain, Row, fmt, median, ratio_row, run_child, seconds_text, timed  # noqa: E402

RATIO_TARGET = 5.0
REPEATS = 3        # runs of each concurrency, in one child (the warehouse is built once)
LATENCY_S = 0.020


class Backend:
    """bench/_backend.py as a subprocess: `.base_url`, `.path`; `close()` returns what it received."""

    def __init__(self, latency_s: float):
        import subprocess
        from urllib.parse import urlsplit

        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_backend.py")), str(latency_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if not line.startswith("URL "):
            self.proc.kill()
            raise RuntimeError(f"reader backend did not start: {line!r}")
        parts = urlsplit(line[4:])
        self.base_url, self.path = f"{parts.scheme}://{parts.netloc}", parts.path

    def close(self) -> dict:
        out, _ = self.proc.communicate(timeout=30)
        for text in out.splitlines():
            if text.startswith(common.RESULT_MARK):
                return json.loads(text[len(common.RESULT_MARK):])
        raise RuntimeError(f"reader backend exited {self.proc.returncode} without a result")


# --- child function -----------------------------------------------------------------------------

def export(chain: dict, repeats: int, latency_s: float = LATENCY_S) -> dict:
    import dataclasses

    from iq_etl.export.runner import DEFAULT_CONCURRENCY, ExportOptions, export_ready
    from iq_etl.ingest.request import IngestRequest
    from iq_etl.ingest.run import run_ingest
    from iq_etl.transform.runner import run_dbt

    c = Chain.from_json(chain)
    runs: list[dict] = []
    with common.fresh_warehouse() as (settings, client):
        run_ingest(settings, IngestRequest(slot_spec=f"{c.first_slot}:{c.last_slot}", source="car", car_url=c.template,
                   extra_program_ids=c.extra_program_ids, resume=False), client=client)
        run_dbt(settings, quiet=True)
        ready = client.query("SELECT count() FROM iq.sessions_ready_to_export").result_rows[0][0]
        if not ready:
            raise AssertionError("no complete upload to export")
        for _ in range(repeats):
            for concurrency in (DEFAULT_CONCURRENCY, 1):
                server = Backend(latency_s)
                try:
                    target = dataclasses.replace(settings, reader_base_url=server.base_url,
                                                 reader_endpoint_path=server.path, reader_token=None)
                    summary, wall, _ = timed(lambda target=target, concurrency=concurrency: export_ready(
                        target, client, concurrency=concurrency, options=ExportOptions()))
                finally:
                    received = server.close()["received"]
                if summary.delivered != ready or received != ready or not summary.ok:
                    raise AssertionError(f"concurrency {concurrency}: {summary.delivered} delivered, backend got "
                                         f"{received}, {ready} ready, failures {summary.failures[:3]}")
                runs.append({"concurrency": concurrency, "seconds": wall, "uploads": ready,
                             "attempts": summary.attempts, "bytes": summary.bytes_delivered})
    return {"runs": runs, "default_concurrency": DEFAULT_CONCURRENCY, "latency_s": latency_s}


# --- the measurement ----------------------------------------------------------------------------

def rows_from(result: dict) -> list[Row]:
    m = "5 export"
    default = result["default_concurrency"]
    by = {c: [r for r in result["runs"] if r["concurrency"] == c] for c in (default, 1)}
    rate = {c: median([r["uploads"] / r["seconds"] for r in rs]) for c, rs in by.items()}
    ratio = rate[default] / rate[1]
    n = by[1][0]["uploads"]
    floor = 1 / result["latency_s"]
    return [
        Row(m, f"concurrency {default} (default), backend +{result['latency_s'] * 1000:.0f} ms",
            f"{fmt(rate[default])} uploads/s",
            f"{n} uploads per run; {seconds_text([r['seconds'] for r in by[default]])}; "
            f"ideal {fmt(floor * default)}/s"),
        Row(m, "concurrency 1", f"{fmt(rate[1])} uploads/s",
            f"{seconds_text([r['seconds'] for r in by[1]])}; ideal {fmt(floor)}/s (one request per 20 ms)"),
        ratio_row(m, f"concurrency {default} / 1 (uploads/s)", ratio, f"≥ {RATIO_TARGET:.0f}", ratio >= RATIO_TARGET,
                  f"peak RSS {result['peak_rss_mb']:.0f} MB"),
    ]


def run(quick: bool = False, repeats: int | None = None) -> list[Row]:
    chain = common.ensure_chain(quick)
    result = run_child("bench_export:export", chain=chain.to_json(),
                       repeats=common.repeats_for(quick, repeats, default=REPEATS))
    return rows_from(result)


def main(argv: list[str] | None = None) -> int:
    args = common.standard_args(__doc__.splitlines()[0], argv)
    common.print_rows(run(args.quick, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
