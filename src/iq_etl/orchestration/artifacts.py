"""Prefect artifacts of the coverage report, published by pipeline_flow and reconcile_flow next to
the markdown status artifact (flows.STATUS_ARTIFACT_KEY):

- a table artifact (key `iq-etl-incomplete-uploads`): the incomplete uploads, worst first, with
  what is missing and the slots to rescan;
- a link artifact (key `iq-etl-report`): the file:// URL of the coverage report page written under
  `<iq-etl home>/report/index.html` (see iq_etl.report).

The report is secondary to the run: if writing or publishing it fails, the flow logs a WARNING
(and the task shows Failed in the UI) but the run's own outcome does not change.
"""
from __future__ import annotations

import logging
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from iq_etl.settings import Settings

log = logging.getLogger(__name__)

INCOMPLETE_ARTIFACT_KEY = "iq-etl-incomplete-uploads"
REPORT_ARTIFACT_KEY = "iq-etl-report"
TABLE_COLUMNS = ("upload_key", "generation", "status", "present", "expected", "missing", "missing_ranges",
                 "rescan_slots", "reason")


def incomplete_table(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the table artifact: one per incomplete upload shown in the report (plain values)."""
    return [{column: ("" if row.get(column) is None else row.get(column)) for column in TABLE_COLUMNS}
            for row in data["incomplete"]["rows"]]


@task(name="publish-report", cache_policy=NO_CACHE)
def report_artifacts_task(settings: Settings, title: str) -> dict[str, Any]:
    """Write the coverage report and publish the incomplete-uploads table and a link to the page."""
    from iq_etl.report import default_report_dir, write_report
    from iq_etl.warehouse.client import get_client

    written = write_report(get_client(settings), default_report_dir(settings), settings=settings)
    incomplete = written.data["incomplete"]
    rows = incomplete_table(written.data)
    shown = f"the {len(rows)} worst of {incomplete['total']}" if incomplete["total"] > len(rows) else "all"
    create_table_artifact(table=rows, key=INCOMPLETE_ARTIFACT_KEY,
                          description=f"Incomplete uploads after {title} ({shown}; worst first)")
    create_link_artifact(link=written.url, link_text="iq-etl coverage report", key=REPORT_ARTIFACT_KEY,
                         description=f"Coverage report after {title}: scan runs and gaps per epoch, uploads by "
                                     "status and generation, chunk maps, deliveries per target "
                                     "(a file on the machine that ran the flow)")
    return {"path": str(written.path), "url": written.url, "incomplete": incomplete["total"]}


def publish_report(settings: Settings, title: str) -> dict[str, Any] | None:
    """`report_artifacts_task`, never failing the flow that calls it."""
    try:
        return report_artifacts_task(settings, title)
    except Exception as exc:  # noqa: BLE001 - the report is secondary: say so, keep the run's outcome
        try:
            logger: logging.Logger | logging.LoggerAdapter = get_run_logger()
        except Exception:  # noqa: BLE001 - outside a run
            logger = log
        logger.warning("coverage report not published: %s: %s", type(exc).__name__, exc)
        return None
