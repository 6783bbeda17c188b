"""Prefect defaults for iq-etl processes, applied before `prefect` is first imported.

Prefect reads its settings from the environment when it is imported, so the CLI commands that run
flows call `configure(settings)` first and import `iq_etl.orchestration.flows` (which imports prefect) after.
Every value is only a default: a variable the user already set wins.

- `PREFECT_HOME` under the iq-etl home (`.iq-etl/prefect`): the ephemeral API's SQLite database and
  Prefect's own files stay next to the warehouse instead of in `~/.prefect`.
- Console quiet: Prefect's console handler shows warnings and errors only; flow and task logs at INFO
  still reach the Prefect API (and its UI) through the API handler. iq-etl's own progress and summary
  go to stdout/stderr through `logging` as usual.
- No telemetry (offline machines would log a DNS error on every ephemeral server start).
- A generous start-up timeout for the ephemeral API server on slow machines.

Without `PREFECT_API_URL`, Prefect 3 starts a temporary API server for each CLI process (a few
seconds, measured in the report of `iq-etl demo`); point `PREFECT_API_URL` at a `prefect server
start` to keep run history across processes and see the UI.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import MutableMapping

DEFAULTS = {
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    # Flow runs of the CLI run in this process; nothing needs Prefect's result store.
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
}


def prefect_home(iq_home: Path) -> Path:
    return (Path(iq_home).expanduser() / "prefect").resolve()


def configure(iq_home: Path, environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Put iq-etl's Prefect defaults into `environ` (default os.environ) where unset; return what was set."""
    env = os.environ if environ is None else environ
    wanted = dict(DEFAULTS)
    wanted["PREFECT_HOME"] = str(prefect_home(iq_home))
    applied = {}
    for key, value in wanted.items():
        if not env.get(key):
            env[key] = value
            applied[key] = value
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    return applied


OWN_LOGGERS = ("iq_etl", "__main__")


class OwnInfoOnly(logging.Filter):
    """For the CLI's console handler: iq-etl's own INFO messages, everyone else's warnings and errors.

    Prefect's run loggers (and httpx under them) log every state change and API request at INFO;
    those still reach the Prefect API through Prefect's own handler, just not the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in OWN_LOGGERS:
            return True
        if record.exc_info and _is_user_error(record.exc_info[1]):
            # Prefect logs a failed task/flow with its traceback; for an error of the input or the
            # configuration the CLI prints the one-line message instead (the API still has both).
            return False
        return record.levelno >= logging.WARNING


def _is_user_error(exc: BaseException | None) -> bool:
    from iq_etl.errors import IQEtlError

    return isinstance(exc, IQEtlError)


def quiet_console() -> None:
    """Attach `OwnInfoOnly` to the root logger's handlers, unless the user asked for debug logs."""
    root = logging.getLogger()
    if root.level and root.level <= logging.DEBUG:
        return
    for handler in root.handlers:
        if not any(isinstance(f, OwnInfoOnly) for f in handler.filters):
            handler.addFilter(OwnInfoOnly())
