"""Prefect defaults of the CLI: state under the iq-etl home, quiet console, user settings win."""
from __future__ import annotations

import logging

from iq_etl.errors import SourceError
from iq_etl.orchestration.prefect_env import OwnInfoOnly, configure, prefect_home


def test_defaults_go_under_the_iq_etl_home_and_never_override_the_user(tmp_path):
    env = {"PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "DEBUG"}
    applied = configure(tmp_path / "home", env)
    assert env["PREFECT_HOME"] == str(prefect_home(tmp_path / "home")) == str((tmp_path / "home" / "prefect").resolve())
    assert (tmp_path / "home" / "prefect").is_dir()
    assert env["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] == "DEBUG" and "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL" not in applied
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    mine = {"PREFECT_HOME": str(tmp_path / "elsewhere")}
    configure(tmp_path / "home", mine)
    assert mine["PREFECT_HOME"] == str(tmp_path / "elsewhere")


def _record(name: str, level: int, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord(name, level, __file__, 1, "message", (), exc_info)


def test_console_filter_keeps_own_info_and_others_warnings():
    f = OwnInfoOnly()
    assert f.filter(_record("iq_etl.ingest.run", logging.INFO))
    assert f.filter(_record("iq_etl.orchestration.locking", logging.INFO))
    assert not f.filter(_record("prefect.task_runs", logging.INFO))
    assert not f.filter(_record("httpx", logging.INFO))
    assert f.filter(_record("prefect.flow_runs", logging.WARNING))
    assert f.filter(_record("prefect.flow_runs", logging.ERROR, RuntimeError("a bug: keep the traceback")))
    # A user error is printed once as one line by the CLI; Prefect's copy with traceback is dropped.
    assert not f.filter(_record("prefect.task_runs", logging.ERROR, SourceError("x.car: not found")))
