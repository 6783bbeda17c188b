"""A loopback reader backend in its own process for the export benchmark (the real backend is
remote: its request handling must not share the exporter's interpreter and GIL).

    python bench/_backend.py LATENCY_S

Prints `URL <endpoint url>` once listening; serves until its stdin closes, then prints
`BENCH-RESULT {"received": n, "requests": m}` and exits."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULT_MARK  # noqa: E402


def main(argv: list[str]) -> int:
    from iq_etl.devchain.servers.reader_backend import Faults, serve_reader_backend

    latency = float(argv[0]) if argv else 0.0
    server = serve_reader_backend(faults=Faults(latency_s=latency))
    try:
        print(f"URL {server.url}", flush=True)
        sys.stdin.read()  # until the benchmark closes our stdin
        result = {"received": len(server.received), "requests": len(server.requests)}
    finally:
        server.shutdown()
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
