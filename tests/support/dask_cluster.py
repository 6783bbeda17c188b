"""A real Dask cluster on loopback for tests: `dask scheduler` and `dask worker` processes started with the
distributed package's own command line (the one operators use), stopped at the end.

Workers run without a nanny (`--no-nanny`): the worker process is the one the test may SIGKILL, and no
nanny starts a replacement behind its back."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port  # noqa: F401 - also imported from here by the Dask tests

DASK = str(Path(sys.executable).with_name("dask"))


@dataclass
class LoopbackCluster:
    address: str
    folder: Path
    scheduler: subprocess.Popen
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = (self.folder / f"worker-{name}.log").open("wb")
        proc = subprocess.Popen(
            [DASK, "worker", self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--local-directory", str(self.folder / f"w-{name}"), "--death-timeout", "60"],
            stdout=log, stderr=subprocess.STDOUT, env=env or _env(), start_new_session=True)
        self.workers[name] = proc
        return proc

    def wait_for_workers(self, n: int, limit_s: float = 120) -> None:
        from distributed import Client

        with Client(self.address, timeout=limit_s) as client:
            client.wait_for_workers(n, timeout=limit_s)

    def worker_pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.workers.items()}

    def log(self, name: str) -> str:
        path = self.folder / (f"worker-{name}.log" if name != "scheduler" else "scheduler.log")
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers.values(), self.scheduler]:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    """The test's environment; the repository on the path, so that flows defined in test modules (which
    Prefect sends along with each task's context, by reference) import on the workers as they do here."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_cluster(folder: Path, workers: int = 2, limit_s: float = 120) -> LoopbackCluster:
    """`dask scheduler` on a free loopback port and `workers` single-threaded `dask worker`s."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (folder / "scheduler.log").open("wb")
    scheduler = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    cluster = LoopbackCluster(f"tcp://127.0.0.1:{port}", folder, scheduler)
    deadline = time.monotonic() + limit_s
    while True:
        if scheduler.poll() is not None:
            raise RuntimeError(f"dask scheduler exited {scheduler.returncode}: {cluster.log('scheduler')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                cluster.stop()
                raise RuntimeError(
                    f"dask scheduler not listening after {limit_s}s: {cluster.log('scheduler')}") from None
            time.sleep(0.2)
    try:
        for i in range(workers):
            cluster.start_worker(f"w{i + 1}")
        cluster.wait_for_workers(workers, limit_s)
    except BaseException:
        cluster.stop()
        raise
    return cluster
