"""The development ClickHouse HTTP server (`iq-etl devchain serve-clickhouse`) as a separate process
on loopback, for the remote warehouse tests: started on a free port, ready once `/ping` answers,
stopped with Ctrl-C (SIGINT) so chDB closes its folder."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.support.net import http_ready, wait_until

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ClickHouseServer:
    process: subprocess.Popen
    url: str          # http://127.0.0.1:PORT
    data: Path
    user: str
    password: str

    def dsn(self, database: str = "iq", *, user: str | None = None, password: str | None = None) -> str:
        """An IQ_CLICKHOUSE_DSN for this server, user and password percent-encoded."""
        name = quote(self.user if user is None else user, safe="")
        secret = quote(self.password if password is None else password, safe="")
        return f"http://{name}:{secret}@{self.url.split('://', 1)[1]}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_clickhouse_server(data: Path, user: str = "u", password: str = "p@ss", timeout: float = 60.0,
                            extra: list[str] | None = None) -> ClickHouseServer:
    """Start `iq-etl devchain serve-clickhouse --data DATA --port 0` and wait until `/ping` answers."""
    args = [sys.executable, "-m", "iq_etl.cli.main", "devchain", "serve-clickhouse", "--data", str(data),
            "--port", "0", "--user", user, "--password", password, *(extra or [])]
    log = open(Path(data).parent / f"{Path(data).name}.server.log", "w")  # noqa: SIM115 - the child's stderr
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.close()
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    url = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line:
            break
        lines.append(line)
        m = re.search(r" on (http://127\.0\.0\.1:\d+)/", line)
        if m:
            url = m.group(1)
            break
    server = ClickHouseServer(proc, url or "", data, user, password)
    if url:
        with contextlib.suppress(AssertionError):
            wait_until(http_ready(f"{url}/ping", "Ok.\n"), "the development ClickHouse server's /ping",
                       limit_s=max(1.0, deadline - time.monotonic()), every_s=0.1)
            return server
    proc.kill()
    server.stop()
    err = (Path(data).parent / f"{Path(data).name}.server.log").read_text(errors="replace")
    raise AssertionError(f"the development ClickHouse server did not start: {''.join(lines)} {err}")
