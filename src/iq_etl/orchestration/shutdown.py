"""How the commands that run Prefect flows end: on Ctrl-C / SIGTERM, and when they are SIGKILLed.

Ctrl-C / SIGTERM (`install_interrupt_handlers`, called by the CLI before a flow starts):

- The first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C always did, SIGTERM
  included: the ingest stage records the sub-ranges that finished (`done` in iq.scan_ranges, after their
  rows), the run lock and the Dask cluster are released by their `finally` blocks, and `iq-etl` prints
  one line (`iq-etl run: interrupted`) and exits 130. Prefect's own SIGTERM bridge (a TerminationSignal
  that bypasses the ingest's KeyboardInterrupt handling, then re-kills the process) is not installed in
  these CLI processes; it is meant for flow runs a Prefect runner may cancel, which `iq-etl serve`'s
  runs still are.
- From then on the console is quiet: Prefect's crash reports and tracebacks of the interrupted run
  still reach its API, not the terminal.
- If the orderly stop takes longer than GRACE_S, or on a second SIGINT/SIGTERM, the process stops at
  once: every process it started is killed, one line is printed, exit status 130. Sub-ranges that
  finished before are recorded already or redone by the next run (never half-recorded).

Children die with their parent (`preexec_die_with_parent`: Linux's prctl(PR_SET_PDEATHSIG, SIGKILL)),
so that a SIGKILLed `iq-etl run | tee log` leaves nothing behind that holds the pipe:

- Prefect's temporary API server (`own_ephemeral_api`): started by us, in the main thread, as Prefect
  would (same command, its SubprocessASGIServer bookkeeping, stopped at exit by Prefect), but in its
  own session (a terminal's Ctrl-C no longer kills it before the flow run has reported its end, which
  made an interrupted run retry the dead API for minutes and print a hundred lines), dying with this
  process, and writing to PREFECT_HOME/ephemeral-api.log instead of the caller's stdout/stderr.
- Dask workers of a local cluster exit when their owner's pipe closes (distributed does that); their
  preload `dask_setup` below keeps a terminal's Ctrl-C away from them (orchestration/backfill.DaskFanout),
  and their stop quiet (a heartbeat in flight as a worker closes is not an error to print).
- `iq-etl serve`'s `prefect server start` (cli/commands/serve.py).
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
GRACE_S = 20.0                 # the longest an orderly stop may take before the process stops at once
API_LOG_NAME = "ephemeral-api.log"

_state: dict[str, Any] = {"signals": 0, "command": "", "installed": False}
_interrupted = threading.Event()


# --- children die with their parent -----------------------------------------------------------

def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def preexec_die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` for subprocess.Popen: the child (and what it executes) is SIGKILLed when this
    process dies. PR_SET_PDEATHSIG survives exec; it follows the thread that started the child, so start
    long-lived children from the main thread."""
    parent_pid = os.getpid()
    try:
        prctl = _libc().prctl   # resolved here, not between fork and exec
    except (OSError, AttributeError):
        prctl = None

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def dask_setup(worker: Any = None) -> None:
    """Preload of the Dask workers of a local cluster (DaskFanout): leave SIGINT to the iq-etl process that
    owns the cluster. A terminal's Ctrl-C reaches every process of the foreground group; the workers'
    tracebacks and lost tasks helped nobody, the owner stops the cluster in order. (A worker dies with
    its owner already: distributed's AsyncProcess exits the child when the parent's pipe closes.)"""
    with contextlib.suppress(ValueError):  # only a main thread may set signal handlers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").addFilter(_NotCancelled())
    if worker is not None:
        logging.getLogger("distributed.worker").addFilter(_NoHeartbeatErrorWhileClosing(worker))


class _NotCancelled(logging.Filter):
    """A worker's WARNING that a task it ran was cancelled: what stopping a fan-out early does."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "ended with CancelledError" not in record.getMessage()


HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


class _NoHeartbeatErrorWhileClosing(logging.Filter):
    """A worker's ERROR (with a 30-line traceback) that its heartbeat to the scheduler failed, logged
    while the worker is closing: a heartbeat in flight when the owner stops the cluster (Ctrl-C, SIGTERM)
    meets the worker's own connection pool closing under it (distributed.Worker.close sets `closing`, then
    closes its rpc). The same failure while the worker runs still reaches stderr."""

    CLOSING = ("stopping", "stopped", "closing", "closing_gracefully", "closed", "failed")

    def __init__(self, worker: Any):
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(HEARTBEAT_FAILED):
            return True
        return self.worker.status.name not in self.CLOSING


@contextlib.contextmanager
def children_without_sigint() -> Iterator[None]:
    """SIGINT blocked in this thread while the body runs: the threads it starts, and the processes they
    start (a Dask cluster's loop thread and its worker processes), inherit the mask, so that a terminal's
    Ctrl-C (sent to the whole foreground process group) never reaches them, even while they start up.
    This process still gets it: on another thread during the body, here once the body is done."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def descendants(pid: int | None = None) -> list[Any]:
    """psutil processes below `pid` (default: this process)."""
    import psutil

    try:
        return psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []


def kill_descendants(pid: int | None = None) -> None:
    """SIGKILL every process below `pid` (default: this process)."""
    for child in descendants(pid):
        with contextlib.suppress(Exception):
            child.kill()


# --- Prefect's temporary API server ------------------------------------------------------------

def own_ephemeral_api() -> str | None:
    """Without PREFECT_API_URL: start Prefect's temporary API server now, from the main thread, in its own
    session, dying with this process, its output in PREFECT_HOME/ephemeral-api.log; Prefect then uses
    it as its own (SubprocessASGIServer's instance without a port). Returns its API URL; None with
    PREFECT_API_URL set or when the ephemeral mode is off."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    existing = SubprocessASGIServer._instances.get(None)
    if existing is not None and not isinstance(existing, _owned_server_class()):
        existing.start()   # someone else's (a test harness): used as it is
        return existing.api_url
    server = _owned_server_class()()
    server.start()
    return server.api_url


_OWNED: list[type] = []


def _owned_server_class() -> type:
    if _OWNED:
        return _OWNED[0]
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class OwnedAPIServer(SubprocessASGIServer):
        """Prefect's SubprocessASGIServer, started the same way, but: in its own session, SIGKILLed when
        this process dies, its output in a log file."""

        def _run_uvicorn_command(self) -> Any:
            import subprocess

            home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
            home.mkdir(parents=True, exist_ok=True)
            with open(home / API_LOG_NAME, "ab") as out:
                return subprocess.Popen(
                    args=[sys.executable, "-m", "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
                          "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
                          "--port", str(self.port), "--log-level", "error", "--lifespan", "on"],
                    env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                         "PREFECT__SERVER_FINAL": "1",
                         **get_current_settings().to_environment_variables(exclude_unset=True)},
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=preexec_die_with_parent())

    _OWNED.append(OwnedAPIServer)
    return OwnedAPIServer


# --- SIGINT / SIGTERM --------------------------------------------------------------------------

def interrupted() -> bool:
    """Whether this process got SIGINT or SIGTERM (after `install_interrupt_handlers`)."""
    return _interrupted.is_set()


class _QuietAfterInterrupt(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _interrupted.is_set()


def _quiet_console() -> None:
    """Once interrupted: no more log lines on the terminal (they still reach the Prefect API through
    its own handler, which is not a stream handler)."""
    quiet = _QuietAfterInterrupt()
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(quiet)


def force_exit(reason: str) -> None:
    """Stop now: kill every process this one started, one line, exit status 130."""
    kill_descendants()
    with contextlib.suppress(Exception):
        sys.stderr.write(f"iq-etl {_state['command']}: interrupted ({reason})\n")
        sys.stderr.flush()
    os._exit(130)


def _on_signal(signum: int, frame: Any) -> None:
    _state["signals"] += 1
    if _state["signals"] > 1:
        force_exit(f"{signal.Signals(signum).name} again: stopped at once")
    _interrupted.set()
    _quiet_console()

    def watchdog() -> None:
        time.sleep(GRACE_S)
        force_exit(f"did not stop within {GRACE_S:.0f}s: stopped at once")

    threading.Thread(target=watchdog, name="iq-interrupt-watchdog", daemon=True).start()
    raise KeyboardInterrupt


def install_interrupt_handlers(command: str) -> None:
    """SIGINT and SIGTERM → KeyboardInterrupt once, then a forced stop (see the module docstring). Call
    from the main thread of a CLI process that runs flows in-process, before prefect runs one."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state["command"] = command
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    _state["installed"] = True
    # Prefect's flow engine swaps SIGTERM for a TerminationSignal bridge during a flow run; here the
    # KeyboardInterrupt above is the one way a run ends early.
    try:
        import prefect.flow_engine as engine
    except ImportError:
        return
    if hasattr(engine, "capture_sigterm"):
        engine.capture_sigterm = contextlib.nullcontext  # type: ignore[assignment]


def raise_if_interrupted() -> None:
    """For a CLI handler after a flow run: an interrupted run ends as KeyboardInterrupt (one line, exit
    130), whatever state Prefect made of it."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
