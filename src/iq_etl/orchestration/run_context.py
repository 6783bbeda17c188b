"""What every flow module asks of the run it is in: its id, its logger, the settings of the process
running it, and which failures are worth a Prefect retry. Shared by flows.py and backfill.py (so
neither imports the other for them)."""
from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger
from prefect.context import get_run_context

from iq_etl.settings import Settings, load_settings

log = logging.getLogger("iq_etl.orchestration.flows")


def run_id() -> str:
    """The Prefect flow run id, used as the ingest run id and reconcile state run id so rows trace
    back to the run ('' outside a run)."""
    try:
        ctx = get_run_context()
    except Exception:  # noqa: BLE001 - outside a run context there is simply no id
        return ""
    flow_run = getattr(ctx, "flow_run", None)
    if flow_run is not None:
        return str(flow_run.id)
    task_run = getattr(ctx, "task_run", None)
    return str(task_run.flow_run_id) if task_run is not None and task_run.flow_run_id else ""


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - called outside a run (plain Python use of a task's .fn)
        return log


def worth_retrying(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: not for errors a retry cannot fix (bad settings, an archive or file
    that does not exist); yes for the rest (network, a busy or briefly unreachable warehouse)."""
    from iq_etl.errors import SettingsError, SourceMissing

    exc = getattr(state, "data", None)
    if isinstance(exc, (SettingsError, SourceMissing)):
        return False
    return True


def flow_settings() -> Settings:
    """Settings of the process running the flow (environment over `.env`); never flow parameters.
    `extra_program_ids` parameters are added to IQ_PROGRAM_ID by the ingest stage itself."""
    return load_settings()


def spec_text(slot_spec: str | int | None) -> str | None:
    """A flow's slot spec as text: Prefect's CLI reads `-p slot_spec=923` as the number 923 (JSON), which
    a `str` parameter would refuse; an epoch number is a valid slot spec."""
    if slot_spec is None or isinstance(slot_spec, str):
        return slot_spec
    if isinstance(slot_spec, bool) or not isinstance(slot_spec, int) or slot_spec < 0:
        from iq_etl.errors import SettingsError

        raise SettingsError(f"slot_spec {slot_spec!r}: give S:E, N or A-B")
    return str(slot_spec)
